"""Evaluation networks of any depth from a few searched cells (Sec. 4.3, Alg. 1).

The network itself is `common.network`'s DARTS evaluation network; what D-DARTS adds is which
searched cell each layer copies.
"""
from common.genotypes import GenotypeError


def derive_layers(num_cells, num_layers):
    """Alg. 1: for each of `num_layers` layers, the index of the searched cell it copies.

    Reductions go to layers n//3 and 2n//3 (copies of the searched reduction cells |C|//3 and
    2|C|//3); the layers of each third repeat the normal cells of the same third of the searched
    net, indexed by the layer number modulo their count. With num_layers <= num_cells the layers
    are the first searched cells, in order.
    """
    n = num_layers
    if n <= num_cells:
        return list(range(n))  # Alg. 1: c <- i
    m, m2 = num_cells // 3, 2 * num_cells // 3  # Alg. 1: m, m2

    def repeat(i, count, first, third):
        if count < 1:
            raise GenotypeError(f"cannot derive {n} layers from {num_cells} cells: the {third} third of "
                                "the searched network has no normal cell to repeat")
        return i % count + first

    layers = []
    for i in range(n):
        if i < n // 3:
            c = repeat(i, m, 0, "first")  # c <- i mod m
        elif i == n // 3:
            c = m  # the first reduction cell
        elif i < 2 * n // 3:
            c = repeat(i, m2 - 1 - m, m + 1, "second")  # c <- (i mod (m2 - 1 - m)) + m + 1
        elif i == 2 * n // 3:
            c = m2  # the second reduction cell
        else:
            c = repeat(i, num_cells - 1 - m2, m2 + 1, "last")  # c <- (i mod (|C| - 1 - m2)) + m2 + 1
        layers.append(c)
    return layers


def derived_layout(genotype, layers):
    """(cell, is_reduction) for each layer of an evaluation network of `layers` layers built from
    a per-cell genotype (for `common.network.build_network(..., layout=...)`)."""
    num_cells = len(genotype.cells)
    if layers > num_cells and tuple(genotype.reductions) != (num_cells // 3, 2 * num_cells // 3):
        raise GenotypeError(f"Alg. 1 needs the reduction cells at {num_cells // 3} and {2 * num_cells // 3} "
                            f"of the {num_cells} searched cells; this genotype has them at "
                            f"{list(genotype.reductions)}")
    return [(genotype.cells[c], c in genotype.reductions) for c in derive_layers(num_cells, layers)]
