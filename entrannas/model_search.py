"""The EnTranNAS super-net (Yang et al., "Towards Improving the Consistency, Efficiency, and
Flexibility of Differentiable Neural Architecture Search", Sec. 2).

- Engine-cells hold the whole DAG and mix every candidate op with coefficients from the
  architecture parameters: softmax(alpha / tau) for EnTranNAS (Eq. 5), q_hat for EnTranNAS-DST
  (Eq. 7-9). Transit-cells compute only the sub-graph derived from the current alpha, as a plain
  sum (Eq. 6, second line). Derivation runs at every forward pass, without gradient (Sec. 2.2).
- Feature sharing (Sec. 2.3): one instance of each op per input state, w_k^(i); its output is
  computed once per cell and reused by every later node.
- Bottleneck (Sec. 2.5): a 1x1 conv reduces a state's channels before the candidate ops; another
  1x1 conv restores them to form each intermediate node.

The cell states follow DARTS: 0 and 1 are the cell inputs (outputs of cells k-2 and k-1), 2..5 the
intermediate nodes; node j takes every state i < j. The paper's "6 nodes per cell" are these.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.genotypes import Cell, Genotype, derive_darts
from common.network import imagenet_stems
from common.operations import FactorizedReduce, ReLUConvBN, get_space, search_op

ENGINE_PLACEMENTS = ("first", "last", "half", "all")


def dst_coefficients(alpha_node, beta_node, tau):
    """EnTranNAS-DST coefficients q_hat of one intermediate node j (Sec. 2.4).

    alpha_node: [num_inputs, num_ops], the alpha of every edge (i, j); beta_node: beta^(j), a
    scalar tensor. Returns q_hat, same shape: zero for pruned connections, rows of kept edges
    summing to 1. Eq. (8) is evaluated as ReLU(sigmoid(-beta) - (1 - p_hat)), which equals
    ReLU(p_hat - t) with t = sigmoid(beta) but keeps the strongest connection (p_hat = 1) alive
    even where sigmoid(beta) rounds to 1 in floating point.
    """
    p = F.softmax(alpha_node / tau, dim=-1)                       # Eq. (5), per edge over the ops
    p_hat = p / p.max()                                           # Eq. (7), over all inputs and ops
    q = F.relu(torch.sigmoid(-beta_node) - (1 - p_hat))           # Eq. (8), t^(j) = sigmoid(beta^(j))
    s = q.sum(dim=-1, keepdim=True)
    return q / torch.where(s > 0, s, torch.ones_like(s))          # Eq. (9), on edges with a non-zero q


def sparsity_loss(beta):
    """(1 / (n-1)) sum_j -log t^(j) of Eq. (11): the mean of -log t^(j) over the thresholds in
    `beta` (t = sigmoid(beta), so -log t = softplus(-beta))."""
    return F.softplus(-beta).mean()                               # Eq. (11), the regulariser


def engine_layers(layers, reductions, placement):
    """Indices of the Engine-cells (Sec. 2.5, Table 1): the first normal and the first reduction
    cell ("first", the paper's choice), the last of each ("last"), the first half of the normal and
    of the reduction cells ("half"), or every cell ("all"; with no sharing, bottleneck or annealing
    too, the super-net of DARTS)."""
    normal = [i for i in range(layers) if i not in reductions]
    reduce = [i for i in range(layers) if i in reductions]
    pick = {"first": lambda c: c[:1], "last": lambda c: c[-1:],
            "half": lambda c: c[:math.ceil(len(c) / 2)], "all": lambda c: c}[placement]
    return set(pick(normal)) | set(pick(reduce))


def node_slices(steps, num_inputs=2):
    """Rows of node j (0-based) in an alpha of shape [num_edges, num_ops]: its edges from every state i < j."""
    start, out = 0, []
    for j in range(steps):
        out.append(slice(start, start + num_inputs + j))
        start += num_inputs + j
    return out


class SearchCell(nn.Module):
    """One cell of the super-net. `forward` computes, for each node j, the listed (i, k) pairs
    (input state i, op k), weighted by `weights[j][i, k]` in an Engine-cell (Eq. 6, first line)
    or summed plainly in a Transit-cell (Eq. 6, second line).

    With feature sharing the op k applied to state i is one module `ops[i][k]` for every node
    (w_k^(i), Sec. 2.3) and its output is cached for the cell's forward pass; without it, every
    edge (i, j) has its own modules `ops[edge][k]` (w_k^(i,j), as in DARTS).
    """

    def __init__(self, space, steps, C_prev_prev, C_prev, C, reduction, reduction_prev,
                 feature_sharing=True, bottleneck=1):
        super().__init__()
        space = get_space(space)
        op_names = space.ops(reduction, 0)
        self.reduction, self.steps, self.feature_sharing = reduction, steps, feature_sharing
        self.preprocess0 = (FactorizedReduce(C_prev_prev, C, affine=False) if reduction_prev
                            else ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False))
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        C_op = max(1, C // bottleneck)
        if bottleneck > 1:  # Sec. 2.5: 1x1 convs into and out of the candidate ops
            self.squeeze = nn.ModuleList(_conv1x1(C, C_op) for _ in range(steps + 1))
            self.expand = nn.ModuleList(_conv1x1(C_op, C) for _ in range(steps))
        else:
            self.squeeze = self.expand = None

        def candidate_ops(i):
            stride = 2 if reduction and i < 2 else 1
            return nn.ModuleList(search_op(space, name, C_op, stride) for name in op_names)

        if feature_sharing:  # states 0..steps feed later nodes; the last node feeds none
            self.ops = nn.ModuleList(candidate_ops(i) for i in range(steps + 1))
        else:
            self.ops = nn.ModuleList(candidate_ops(i) for j in range(steps) for i in range(2 + j))
        self.edge_index = {(i, j): e for e, (i, j) in
                           enumerate((i, j) for j in range(steps) for i in range(2 + j))}

    def op(self, i, j, k):
        """The module of op k from state i to node j (0-based intermediate node)."""
        return self.ops[i][k] if self.feature_sharing else self.ops[self.edge_index[i, j]][k]

    def forward(self, s0, s1, paths, weights=None):
        """paths[j]: the (i, k) pairs node j computes; weights[j]: a [2 + j, num_ops] tensor of
        coefficients (Engine-cell) or `weights` None (Transit-cell)."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        inputs, shared = {}, {}
        for j, pairs in enumerate(paths):
            node = 0
            for i, k in pairs:
                if i not in inputs:
                    inputs[i] = self.squeeze[i](states[i]) if self.squeeze is not None else states[i]
                if self.feature_sharing:  # Sec. 2.3: o_k(w_k^(i), x_i) once per cell
                    if (i, k) not in shared:
                        shared[i, k] = self.ops[i][k](inputs[i])
                    h = shared[i, k]
                else:
                    h = self.op(i, j, k)(inputs[i])
                node = node + (h if weights is None else weights[j][i, k].to(h.dtype) * h)   # Eq. (6)
            states.append(self.expand[j](node) if self.expand is not None else node)
        return torch.cat(states[2:], dim=1)


def _conv1x1(C_in, C_out):
    return nn.Sequential(nn.Conv2d(C_in, C_out, 1, bias=False), nn.BatchNorm2d(C_out, affine=False))


class Network(nn.Module):
    """The search super-net (Fig. 4): a stem, `layers` cells with reduction cells at 1/3 and 2/3
    of the depth, global pooling and a classifier. `alpha_normal` / `alpha_reduce` ([14, K]) and,
    for DST, `beta_normal` / `beta_reduce` ([4]) are shared by every cell of their type.

    ImageNet (Sec. 4.3): three stride-2 convs take 224x224 to 28x28 before the cells (PC-DARTS).
    """

    def __init__(self, C, num_classes, layers, space="darts_no_none", steps=4, stem_multiplier=3,
                 engine="first", feature_sharing=True, bottleneck=4, dst=False, imagenet=False):
        super().__init__()
        self.space, self.steps, self.dst = space, steps, dst
        self.op_names = get_space(space).ops(False, 0)
        if get_space(space).ops(True, 0) != self.op_names:
            raise ValueError(f"search space {space!r} must use the same ops on every edge")
        self.reductions = (layers // 3, 2 * layers // 3)
        self.engines = engine_layers(layers, self.reductions, engine)
        self.slices = node_slices(steps)
        self.tau = 1.0  # set every epoch by the searcher (Sec. 2.2)
        if imagenet:
            self.stem0, self.stem1 = imagenet_stems(C)
            C_prev_prev, C_prev, C_curr, reduction_prev = C, C, C, True
        else:
            self.stem = nn.Sequential(nn.Conv2d(3, stem_multiplier * C, 3, padding=1, bias=False),
                                      nn.BatchNorm2d(stem_multiplier * C))
            C_prev_prev, C_prev, C_curr, reduction_prev = stem_multiplier * C, stem_multiplier * C, C, False
        self.imagenet = imagenet
        self.cells = nn.ModuleList()
        for i in range(layers):
            reduction = i in self.reductions
            if reduction:
                C_curr *= 2
                if bottleneck > 1 and max(1, C_curr // bottleneck) % 2:
                    raise ValueError(f"the reduction cells' bottleneck width {C_curr}/{bottleneck} must be even "
                                     "(FactorizedReduce halves it): change --init_channels or --bottleneck")
            self.cells.append(SearchCell(space, steps, C_prev_prev, C_prev, C_curr, reduction, reduction_prev,
                                         feature_sharing, bottleneck))
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, steps * C_curr
        self.classifier = nn.Linear(C_prev, num_classes)
        num_edges, K = sum(2 + j for j in range(steps)), len(self.op_names)
        self.alpha_normal = nn.Parameter(1e-3 * torch.randn(num_edges, K))
        self.alpha_reduce = nn.Parameter(1e-3 * torch.randn(num_edges, K))
        if dst:  # thresholds t^(j) = sigmoid(beta^(j)) start at 0.5
            self.beta_normal = nn.Parameter(torch.zeros(steps))
            self.beta_reduce = nn.Parameter(torch.zeros(steps))

    # ------------------------------------------------------------ architecture parameters

    def arch_parameters(self):
        return [p for n, p in self.named_parameters() if n.startswith(("alpha_", "beta_"))]

    def weight_parameters(self):
        return [p for n, p in self.named_parameters() if not n.startswith(("alpha_", "beta_"))]

    def coefficients(self, reduction):
        """Per node j, the Engine-cell coefficients: softmax(alpha / tau) (Eq. 5) or q_hat (Eq. 7-9)."""
        alpha = self.alpha_reduce if reduction else self.alpha_normal
        if self.dst:
            beta = self.beta_reduce if reduction else self.beta_normal
            return [dst_coefficients(alpha[s], beta[j], self.tau) for j, s in enumerate(self.slices)]
        p = F.softmax(alpha / self.tau, dim=-1)                   # Eq. (5)
        return [p[s] for s in self.slices]

    @torch.no_grad()
    def derive(self, reduction, coefficients=None):
        """The current sub-graph S_j of every node, as lists of (i, k): the DARTS rule on p (Eq. 4:
        the 2 strongest inputs, the strongest op on each) or, with DST, every connection with
        q_hat > 0 (Eq. 10)."""
        coeffs = coefficients or self.coefficients(reduction)
        if self.dst:
            return [[(i, k) for i, k in (w > 0).nonzero().tolist()] for w in coeffs]     # Eq. (10)
        p = torch.cat(coeffs).detach().cpu()
        cell = derive_darts(p, [self.op_names] * len(p), self.steps)                  # Eq. (4)
        return [[(i, self.op_names.index(op)) for op, i in node] for node in cell.nodes]

    def genotype(self):
        """The derived architecture (Eq. 4 or Eq. 10) as a genotype."""
        def cell(reduction):
            paths = self.derive(reduction)
            nodes = tuple(tuple((self.op_names[k], i) for i, k in node) for node in paths)
            return Cell(nodes, tuple(range(2, 2 + self.steps)))
        return Genotype(cell(False), cell(True))

    def sparsity_loss(self):
        """The regulariser of Eq. (11) for the super-net: one mean of -log t^(j) over the intermediate
        nodes of the normal and of the reduction cell together (8 thresholds), so that lambda weighs
        the average node as in the paper's one-cell formula. (The sum of a mean per cell type, the
        other reading, is this with 2 lambda.)"""
        return sparsity_loss(torch.cat([self.beta_normal, self.beta_reduce]))

    # ------------------------------------------------------------ forward

    def derived(self):
        """The current sub-graphs, {reduction: `derive(reduction)`}: what `forward` derives, for a
        caller that needs them beforehand (a search step recorded per sub-graph)."""
        return {reduction: self.derive(reduction) for reduction in (False, True)}

    def forward(self, x, child=False, derived=None):
        """Logits of the super-net; `child=True` runs every cell as a Transit-cell, i.e. only the
        derived paths (the child-net of Table 1). `derived`: the sub-graphs of the current alpha
        (`derived()`), derived here when not given."""
        arch = {}
        for reduction in (False, True):
            coeffs = self.coefficients(reduction)
            # derived every iteration, no gradient (Sec. 2.2)
            paths = derived[reduction] if derived is not None else self.derive(reduction, coeffs)
            engine_paths = paths if self.dst else [[(i, k) for i in range(2 + j) for k in range(len(self.op_names))]
                                                   for j in range(self.steps)]
            arch[reduction] = (coeffs, paths, engine_paths)
        if self.imagenet:
            s0 = self.stem0(x)
            s1 = self.stem1(s0)
        else:
            s0 = s1 = self.stem(x)
        for layer, cell in enumerate(self.cells):
            coeffs, paths, engine_paths = arch[cell.reduction]
            if layer in self.engines and not child:
                s0, s1 = s1, cell(s0, s1, engine_paths, coeffs)    # Engine-cell: Eq. (6), first line
            else:
                s0, s1 = s1, cell(s0, s1, paths)                   # Transit-cell: Eq. (6), second line
        return self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))


class ChildNet(nn.Module):
    """The super-net's child-net of Table 1: every cell computes only the derived paths, as a
    plain sum, with the super-net's weights (the target-net's architecture, not retrained)."""

    def __init__(self, supernet):
        super().__init__()
        self.supernet = supernet

    def forward(self, x):
        return self.supernet(x, child=True)
