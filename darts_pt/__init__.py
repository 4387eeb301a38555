"""DARTS-PT: Rethinking Architecture Selection in Differentiable NAS (Wang et al., ICLR 2021).

The authors' published cells are in `published.json`, by name (`python -m common.genotypes list`).
"""
