"""The D-DARTS super-net and what is specific to it (Heuillet et al., 2021).

- `SearchNetwork`: n searched cells, each holding its own architecture parameters
  alpha (Sec. 4.1, Fig. 2); ops mixed by sigmoid(alpha) as in FairDARTS (Sec. 3);
  any one cell can be "removed" for the ablation loss, and a run can restart at
  any cell from stored cell outputs.
- The losses: zero-one loss (Eq. 3), marginal contributions and ablation loss
  (Eq. 6-7), the total loss of a cell (Eq. 9).
- Parsing the per-cell alphas into a genotype: sparse, edge, darts (Sec. 5.1); the share of
  dominant ops (Fig. 4).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.genotypes import Cell, Genotype, compact_cell, derive_darts
from common.operations import FactorizedReduce, ReLUConvBN, get_space, search_op

SPACE = get_space("darts_no_none")
PRIMITIVES = SPACE.ops(False, 0)  # the 7 DARTS ops without `none` (FairDARTS, D-DARTS)
STEPS, MULTIPLIER = 4, 4
NUM_EDGES = sum(2 + i for i in range(STEPS))  # 14
PARSE_METHODS = ("sparse", "edge", "darts")
# What a cell becomes when its parsing keeps no op at all: it passes the previous cell's output on.
PASS_THROUGH = Cell(((("skip_connect", 1),),), (2,))


class MixedOp(nn.Module):
    """One edge: every candidate op, each scaled by its own weight (Eq. 2 with sigmoid(alpha)
    in place of the softmax, FairDARTS)."""

    def __init__(self, C, stride):
        super().__init__()
        self.ops = nn.ModuleList(search_op(SPACE, name, C, stride) for name in PRIMITIVES)

    def forward(self, x, weights):
        return sum(w * op(x) for w, op in zip(weights, self.ops))


class SearchCell(nn.Module):
    """A DARTS search cell that owns its architecture: `alpha` [14, 7] (Sec. 4.1). Zero init,
    i.e. every sigmoid weight starts at 0.5 (FairDARTS and the D-DARTS code)."""

    def __init__(self, C_prev_prev, C_prev, C, reduction, reduction_prev):
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = (FactorizedReduce(C_prev_prev, C, affine=False) if reduction_prev
                            else ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False))
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self.edges = nn.ModuleList(MixedOp(C, 2 if reduction and j < 2 else 1)
                                   for i in range(STEPS) for j in range(2 + i))
        self.alpha = nn.Parameter(torch.zeros(NUM_EDGES, len(PRIMITIVES)))

    def forward(self, s0, s1, weights):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        e = 0
        for _ in range(STEPS):
            s = sum(self.edges[e + j](h, weights[e + j]) for j, h in enumerate(states))
            e += len(states)
            states.append(s)
        return torch.cat(states[-MULTIPLIER:], dim=1)


class SearchNetwork(nn.Module):
    """Stem, n searched cells (reductions at n//3 and 2n//3, Sec. 4.1), global pooling, classifier.

    `share_alphas`: every normal cell uses the alpha of the first normal cell and every reduction
    cell that of the first reduction cell, i.e. the DARTS / FairDARTS super-net of Sec. 3 (Fig. 1)
    instead of one architecture per cell (Fig. 2)."""

    def __init__(self, C, num_classes, layers, stem_multiplier=3, share_alphas=False):
        super().__init__()
        self.reductions = (layers // 3, 2 * layers // 3)
        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(3, C_curr, 3, padding=1, bias=False), nn.BatchNorm2d(C_curr))
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev, shared = False, {}
        for i in range(layers):
            reduction = i in self.reductions
            C_curr = 2 * C_curr if reduction else C_curr
            cell = SearchCell(C_prev_prev, C_prev, C_curr, reduction, reduction_prev)
            if share_alphas:
                cell.alpha = shared.setdefault(reduction, cell.alpha)
            self.cells.append(cell)
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, MULTIPLIER * C_curr
        self.classifier = nn.Linear(C_prev, num_classes)

    def alphas(self):
        """The architecture parameters, in cell order: one per cell, or with `share_alphas` the
        normal cells' and the reduction cells' (each once)."""
        return list({id(cell.alpha): cell.alpha for cell in self.cells}.values())

    def weights(self):
        """The network weights: every parameter that is not an alpha."""
        return [p for name, p in self.named_parameters() if not name.endswith("alpha")]

    def forward(self, x, ablated=None, outputs=None):
        """Logits; cell `ablated` (if any) is removed. `outputs`, a list, receives the stem output
        and then every cell's output."""
        s = self.stem(x)
        if outputs is not None:
            outputs.append(s)
        return self.forward_from(0, s, s, ablated, outputs)

    @staticmethod
    def cell_inputs(outputs, i):
        """The inputs of cell i among stored `outputs` [stem, cell 0, cell 1, ...]: the outputs of
        cells i-2 and i-1 (the stem's output stands for both before the first cell)."""
        return outputs[max(i - 1, 0)], outputs[i]

    def forward_from(self, start, s0, s1, ablated=None, outputs=None):
        """Run cells start, start+1, ... from their inputs (s0, s1). A removed cell keeps its ops but
        mixes them with uniform random weights instead of sigmoid(alpha), so that its searched
        architecture no longer counts (how the D-DARTS code removes a cell for Eq. 6)."""
        for i in range(start, len(self.cells)):
            cell = self.cells[i]
            weights = torch.rand_like(cell.alpha) if i == ablated else torch.sigmoid(cell.alpha)
            s0, s1 = s1, cell(s0, s1, weights)
            if outputs is not None:
                outputs.append(s1)
        return self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))


# ---------------------------------------------------------------- losses

def zero_one_loss(alpha):
    """Eq. (3): L01 = -mean((sigmoid(alpha) - 0.5)^2) over one cell's alphas."""
    return -((torch.sigmoid(alpha) - 0.5) ** 2).mean()


def ablation_loss(L, L_minus):
    """Eq. (6)-(7). `L` = L_CE(C), `L_minus[i]` = L_CE(C without C_i). Returns MC and L_AB per cell.
    The two cases of Eq. (7) are chosen on the device, without reading mean(MC) on the host."""
    mc = L - L_minus  # Eq. (6)
    m = mc.mean()
    zero = m == 0
    return mc, torch.where(zero, 0.0, (mc - m) / torch.where(zero, 1.0, m))  # Eq. (7); its second case: 0


def total_loss(L, l01, l_ab, w01, w_abl):
    """Eq. (9): L_T^i = L_CE + w01 * L01^i + w_abl * L_AB^i (w_abl = 0: FairDARTS' L_F, Eq. 4)."""
    return L + w01 * l01 + w_abl * l_ab


# ---------------------------------------------------------------- parsing (Sec. 5.1)

def _arg_max(row):
    return max(range(len(row)), key=lambda o: (row[o], -o))  # ties: the lower op index


def parse_cell(weights, method, threshold):
    """One cell's sigmoid weights [14][7] -> a Cell, or None when no op is kept.

    sparse: per node, the two edges with the largest weight; on each, its best op, kept only if
            its weight is at least `threshold` (at most one op per edge).
    edge:   on every edge, its two best ops, each kept if at least `threshold`.
    darts:  FairDARTS' plain DARTS rule: per node, the two best edges and their best op, no threshold.
    Ties go to the lower op index, then the lower input. A node left with no input is dropped, with
    the ops that read it (as the D-DARTS evaluation cell does); the cell outputs its remaining nodes.
    """
    rows = [[float(v) for v in row] for row in weights]
    if method == "darts":
        return derive_darts(rows, [PRIMITIVES] * NUM_EDGES, STEPS)
    nodes, e = [], 0
    for i in range(STEPS):
        edges = rows[e:e + 2 + i]
        if method == "sparse":
            best = [_arg_max(r) for r in edges]
            top2 = sorted(range(len(edges)), key=lambda j: (-edges[j][best[j]], j))[:2]
            pairs = [(PRIMITIVES[best[j]], j) for j in sorted(top2) if edges[j][best[j]] >= threshold]
        elif method == "edge":
            pairs = [(PRIMITIVES[o], j) for j, r in enumerate(edges)
                     for o in sorted(range(len(r)), key=lambda o: (-r[o], o))[:2] if r[o] >= threshold]
        else:
            raise ValueError(f"unknown parsing method {method!r}; choose one of {', '.join(PARSE_METHODS)}")
        nodes.append(pairs)
        e += 2 + i
    return compact_cell(nodes)


def parse_genotype(weights, reductions, method, threshold, shared=False):
    """The genotype of the sigmoid weights `weights` (one [14][7] table per cell, or with `shared`
    the normal and the reduction cells' two): one cell per layer with the reduction positions, or
    a normal and a reduce cell. A cell that keeps no op becomes `PASS_THROUGH`; the indices of such
    cells (in `weights`) are in `meta["pass_through_cells"]`, the largest weight of every cell in
    `meta["max_sigmoid"]`."""
    cells = [parse_cell(w, method, threshold) for w in weights]
    meta = {"parse": method, "threshold": None if method == "darts" else threshold,
            "pass_through_cells": [i for i, c in enumerate(cells) if c is None],
            "max_sigmoid": [math.floor(max(max(row) for row in w) * 1e4) / 1e4 for w in weights]}
    cells = [c or PASS_THROUGH for c in cells]
    if shared:
        return Genotype(normal=cells[0], reduce=cells[1], meta=meta).validate()
    return Genotype(cells=tuple(cells), reductions=tuple(reductions), meta=meta).validate()


def dominant_shares(weights):
    """Fig. 4: the percentages of all sigmoid weights above 0.9 ("dominant operations") and below 0.1."""
    w = torch.as_tensor(weights, dtype=torch.float64)
    return 100 * (w > 0.9).double().mean().item(), 100 * (w < 0.1).double().mean().item()
