"""DARTS-PT: Rethinking Architecture Selection in Differentiable NAS (Wang et al., ICLR 2021).

Importing the package adds the published DARTS-PT cells on the DARTS space to
`common.genotypes.PUBLISHED`, so `--arch DARTS_PT` works wherever a genotype is expected.
"""
from common.genotypes import PUBLISHED, Cell, Genotype, to_darts_text


def _darts_text(normal, reduce):
    """The DARTS text of two cells written as 'op input, op input, ...' (two pairs per node)."""
    def cell(words):
        pairs = [(op, int(j)) for op, j in (w.split() for w in words.split(","))]
        return Cell(tuple(tuple(pairs[i:i + 2]) for i in range(0, len(pairs), 2)), (2, 3, 4, 5))
    return to_darts_text(Genotype(cell(normal), cell(reduce)))


# CIFAR-10 searches on the DARTS space (7 ops), four seeds each, from the authors' genotypes file
# (ruocwang/darts-pt, sota/cnn/genotypes.py: darts_pt_s5_<seed> and blank_pt_s5_<seed>).
_DARTS_SPACE = {
    "DARTS_PT_0": ("sep_conv_3x3 0, sep_conv_3x3 1, sep_conv_5x5 0, dil_conv_3x3 1, "
                   "skip_connect 0, skip_connect 2, skip_connect 0, max_pool_3x3 4",
                   "sep_conv_3x3 0, avg_pool_3x3 1, dil_conv_5x5 1, dil_conv_3x3 2, "
                   "avg_pool_3x3 0, max_pool_3x3 2, sep_conv_3x3 2, skip_connect 4"),
    "DARTS_PT_1": ("sep_conv_3x3 0, sep_conv_3x3 1, sep_conv_3x3 0, dil_conv_3x3 1, "
                   "max_pool_3x3 0, skip_connect 2, skip_connect 0, dil_conv_3x3 4",
                   "dil_conv_5x5 0, avg_pool_3x3 1, max_pool_3x3 0, sep_conv_5x5 2, "
                   "max_pool_3x3 1, dil_conv_3x3 3, sep_conv_5x5 0, sep_conv_3x3 4"),
    "DARTS_PT_2": ("skip_connect 0, sep_conv_3x3 1, sep_conv_3x3 0, dil_conv_3x3 1, "
                   "skip_connect 2, dil_conv_3x3 3, max_pool_3x3 1, skip_connect 2",
                   "avg_pool_3x3 0, max_pool_3x3 1, avg_pool_3x3 0, sep_conv_3x3 1, "
                   "dil_conv_5x5 2, skip_connect 3, sep_conv_3x3 2, sep_conv_5x5 4"),
    "DARTS_PT_3": ("sep_conv_3x3 0, sep_conv_3x3 1, sep_conv_3x3 0, sep_conv_3x3 1, "
                   "skip_connect 0, skip_connect 2, sep_conv_3x3 1, skip_connect 3",
                   "avg_pool_3x3 0, sep_conv_5x5 1, max_pool_3x3 1, skip_connect 2, "
                   "dil_conv_5x5 1, max_pool_3x3 3, sep_conv_5x5 2, skip_connect 3"),
    "DARTS_PT_FIX_ALPHA_0": ("sep_conv_3x3 0, sep_conv_5x5 1, sep_conv_3x3 0, sep_conv_3x3 1, "
                             "avg_pool_3x3 1, skip_connect 3, max_pool_3x3 0, avg_pool_3x3 2",
                             "skip_connect 0, sep_conv_5x5 1, dil_conv_3x3 1, sep_conv_5x5 2, "
                             "max_pool_3x3 0, skip_connect 3, max_pool_3x3 0, max_pool_3x3 2"),
    "DARTS_PT_FIX_ALPHA_1": ("avg_pool_3x3 0, avg_pool_3x3 1, sep_conv_3x3 0, max_pool_3x3 2, "
                             "skip_connect 2, sep_conv_3x3 3, sep_conv_5x5 0, sep_conv_5x5 1",
                             "max_pool_3x3 0, dil_conv_5x5 1, sep_conv_3x3 0, skip_connect 1, "
                             "avg_pool_3x3 2, max_pool_3x3 3, sep_conv_5x5 3, sep_conv_5x5 4"),
    "DARTS_PT_FIX_ALPHA_2": ("avg_pool_3x3 0, dil_conv_3x3 1, sep_conv_5x5 0, max_pool_3x3 1, "
                             "max_pool_3x3 0, skip_connect 1, sep_conv_5x5 1, avg_pool_3x3 2",
                             "sep_conv_3x3 0, avg_pool_3x3 1, avg_pool_3x3 0, sep_conv_5x5 1, "
                             "max_pool_3x3 0, sep_conv_5x5 3, max_pool_3x3 2, dil_conv_5x5 4"),
    "DARTS_PT_FIX_ALPHA_3": ("sep_conv_3x3 0, sep_conv_3x3 1, sep_conv_3x3 0, skip_connect 1, "
                             "max_pool_3x3 2, sep_conv_3x3 3, avg_pool_3x3 0, sep_conv_5x5 1",
                             "dil_conv_5x5 0, sep_conv_5x5 1, sep_conv_5x5 0, dil_conv_3x3 1, "
                             "avg_pool_3x3 1, skip_connect 2, max_pool_3x3 0, skip_connect 4"),
}
PUBLISHED.update({name: _darts_text(*cells) for name, cells in _DARTS_SPACE.items()})
# The plain names are the seed-2 searches: 2 is the default seed of the authors' scripts and of ours.
PUBLISHED["DARTS_PT"] = PUBLISHED["DARTS_PT_2"]
PUBLISHED["DARTS_PT_FIX_ALPHA"] = PUBLISHED["DARTS_PT_FIX_ALPHA_2"]
