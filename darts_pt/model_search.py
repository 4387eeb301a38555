"""The DARTS super-net that DARTS-PT selects from (Sec. 2; Liu et al., 2019), on the DARTS space,
the RobustDARTS spaces S1-S4 (App. A.2) and the NAS-Bench-201 skeleton (Sec. 5.2), together with
the state of the perturbation-based selection (Sec. 4.2, Alg. 1): the op each decided edge was
discretized to, and the input edges the topology phase removed.

Every edge mixes its candidate ops with w = softmax(alpha) (Sec. 2). A decided edge gets the fixed
one-hot weights of its op and a removed edge the weight 0; only the ops with a non-zero weight are
run. `forward(x, weights, active)` accepts other weights (a masked op, SDARTS' perturbed alpha).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from common.genotypes import Cell, Genotype, derive_darts
from common.operations import FactorizedReduce, ReLUConvBN, ResNetBasicBlock, search_op


class MixedOp(nn.Module):
    """m(x) = sum_o w_o * o(x) over the ops of one edge (Sec. 2), run for the ops in `active` only."""

    def __init__(self, space, op_names, C, stride):
        super().__init__()
        self.ops = nn.ModuleList(search_op(space, name, C, stride) for name in op_names)

    def forward(self, x, w, active):
        return sum(w[o] * self.ops[o](x) for o in active)


def cell_edges(num_inputs, steps):
    """(node state, input state) of every edge, node by node (the order of alpha's rows)."""
    return [(num_inputs + i, j) for i in range(steps) for j in range(num_inputs + i)]


def mixed_edge(cell, position, h, weights, active):
    """The mixed op that sits at edge `position` of `cell` applied to `h`: edge `cell.order[position]`
    (its ops and its row of weights) computes there, itself unless the edges were shuffled (Table 1)."""
    e = cell.order[position]
    return cell.edges[e](h, weights[e], active[e])


class DartsSearchCell(nn.Module):
    """A DARTS cell: 2 inputs, 4 nodes, every node fed by all earlier states; output = the 4 nodes."""

    def __init__(self, space, reduction, reduction_prev, C_prev_prev, C_prev, C, steps=4):
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = (FactorizedReduce(C_prev_prev, C, affine=False) if reduction_prev
                            else ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False))
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self.steps = steps
        self.edges = nn.ModuleList(
            MixedOp(space, space.ops(reduction, e), C, 2 if reduction and j < 2 else 1)
            for e, (_, j) in enumerate(cell_edges(2, steps)))
        self.order = list(range(len(self.edges)))

    def swappable(self, a, b):
        """Whether edges `a` and `b` can trade places: the same stride (the reduction cell's edges
        from the two inputs have stride 2, the others 1); every edge outputs C channels."""
        stride = [self.reduction and j < 2 for _, j in cell_edges(2, self.steps)]
        return stride[a] == stride[b]

    def forward(self, s0, s1, weights, active):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        e = 0
        for _ in range(self.steps):
            states.append(sum(mixed_edge(self, e + j, h, weights, active)
                              for j, h in enumerate(states) if active[self.order[e + j]]))
            e += len(states) - 1
        return torch.cat(states[2:], dim=1)


class NB201SearchCell(nn.Module):
    """A NAS-Bench-201 cell: 1 input, 3 nodes, every node fed by all earlier states; output = last node."""

    def __init__(self, space, C, steps=3):
        super().__init__()
        self.steps = steps
        self.edges = nn.ModuleList(MixedOp(space, space.ops(False, e), C, 1)
                                   for e in range(len(cell_edges(1, steps))))
        self.order = list(range(len(self.edges)))

    def swappable(self, a, b):
        """Whether edges `a` and `b` can trade places: always (stride 1, C channels everywhere)."""
        return True

    def forward(self, x, weights, active):
        states = [x]
        e = 0
        for _ in range(self.steps):
            states.append(sum(mixed_edge(self, e + j, h, weights, active)
                              for j, h in enumerate(states) if active[self.order[e + j]]))
            e += len(states) - 1
        return states[-1]


class SuperNet(nn.Module):
    """Architecture parameters and selection state shared by the DARTS and NAS-Bench-201 super-nets.

    alpha of cell type `ct` is the parameter `alphas.<ct>` (one row per edge, one column per op);
    the selection state (`decided`, `removed`) travels in `state_dict()` as the module's extra state.
    """

    def _init_arch(self, space, cell_types, num_inputs, steps):
        self.space, self.cell_types, self.num_inputs, self.steps = space, cell_types, num_inputs, steps
        self.edges = cell_edges(num_inputs, steps)
        E = len(self.edges)
        self.edge_ops = {ct: [space.ops(ct == "reduce", e) for e in range(E)] for ct in cell_types}
        num_ops = len(self.edge_ops[cell_types[0]][0])
        self.alphas = nn.ParameterDict({ct: nn.Parameter(1e-3 * torch.randn(E, num_ops)) for ct in cell_types})
        self.decided = {ct: [None] * E for ct in cell_types}  # Alg. 1: the op index an edge was discretized to
        self.removed = {ct: [False] * E for ct in cell_types}  # topology: input edges removed from their node
        for ct in cell_types:
            self.register_buffer(f"fixed_{ct}", torch.zeros(E, num_ops), persistent=False)
            self.register_buffer(f"is_fixed_{ct}", torch.zeros(E, 1, dtype=torch.bool), persistent=False)
        self._refresh()

    @property
    def num_edges(self):
        return len(self.edges)

    def node_edges(self, node):
        """The edge indices whose output feeds node state `node`."""
        return [e for e, (i, _) in enumerate(self.edges) if i == node]

    def arch_parameters(self):
        return list(self.alphas.values())

    def weight_parameters(self):
        return [p for name, p in self.named_parameters() if not name.startswith("alphas.")]

    # ---------------------------------------------------------------- selection state

    def project_op(self, ct, edge, op):
        """Discretize `edge` to op index `op`: from now on it has the one-hot weight of that op."""
        self.decided[ct][edge] = int(op)
        self._refresh()

    def remove_edge(self, ct, edge):
        """Drop `edge` from its node (topology phase): from now on it has the weight 0."""
        self.removed[ct][edge] = True
        self._refresh()

    def _refresh(self):
        """Rebuild the fixed weights and the lists of ops to run from `decided` and `removed`."""
        self.active = {}
        for ct in self.cell_types:
            fixed, is_fixed = getattr(self, f"fixed_{ct}"), getattr(self, f"is_fixed_{ct}")
            fixed.zero_()
            is_fixed.zero_()
            active = []
            for e, (op, removed) in enumerate(zip(self.decided[ct], self.removed[ct])):
                if removed:
                    is_fixed[e] = True
                    active.append([])
                elif op is not None:
                    fixed[e, op] = 1.0
                    is_fixed[e] = True
                    active.append([op])
                else:
                    active.append(list(range(fixed.shape[1])))
            self.active[ct] = active
        self._any_fixed = {ct: any(o is not None for o in self.decided[ct]) or any(self.removed[ct])
                           for ct in self.cell_types}

    def get_extra_state(self):
        return {"decided": self.decided, "removed": self.removed}

    def set_extra_state(self, state):
        self.decided = {ct: list(v) for ct, v in state["decided"].items()}
        self.removed = {ct: list(v) for ct, v in state["removed"].items()}
        self._refresh()

    # ---------------------------------------------------------------- weights

    def fixed_rows(self, ct):
        """(E, 1) bool: the decided or removed edges of cell type `ct`; None while there are none."""
        return getattr(self, f"is_fixed_{ct}") if self._any_fixed[ct] else None

    def project(self, ct, w):
        """`w` with the rows of decided / removed edges replaced by their fixed weights."""
        rows = self.fixed_rows(ct)
        if rows is None:
            return w
        return torch.where(rows, getattr(self, f"fixed_{ct}").to(w.dtype), w)

    def arch_weights(self):
        """{cell type: w}, w = softmax(alpha) per edge (Sec. 2), decided edges one-hot, removed edges 0."""
        return {ct: self.project(ct, F.softmax(a, dim=-1)) for ct, a in self.alphas.items()}

    def genotype(self):
        """The architecture the weights select now: after a finished selection, exactly the decided
        ops on the kept edges; before, the DARTS magnitude rule (Sec. 2)."""
        with torch.no_grad():
            w = {ct: v.float().cpu().tolist() for ct, v in self.arch_weights().items()}
        if self.num_inputs == 1:  # NAS-Bench-201: the arg-max op of every edge
            nodes, e = [], 0
            for i in range(self.steps):
                row = w["cell"][e:e + i + 1]
                nodes.append(tuple((self.edge_ops["cell"][e + j][max(range(len(r)), key=r.__getitem__)], j)
                                   for j, r in enumerate(row)))
                e += i + 1
            return Genotype(normal=Cell(tuple(nodes), (self.steps,), num_inputs=1))
        cells = {ct: derive_darts(w[ct], self.edge_ops[ct], self.steps, self.num_inputs) for ct in self.cell_types}
        return Genotype(cells["normal"], cells["reduce"])


class DartsSuperNet(SuperNet):
    """The DARTS search network (Liu et al., 2019): stem, `layers` cells with reduction cells at
    1/3 and 2/3 of the depth, global pooling, classifier; BN without affine parameters in the cells."""

    def __init__(self, space, C, num_classes, layers, steps=4, stem_multiplier=3):
        super().__init__()
        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(3, C_curr, 3, padding=1, bias=False), nn.BatchNorm2d(C_curr))
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            C_curr = C_curr * 2 if reduction else C_curr
            self.cells.append(DartsSearchCell(space, reduction, reduction_prev, C_prev_prev, C_prev, C_curr, steps))
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, steps * C_curr
        self.classifier = nn.Linear(C_prev, num_classes)
        self._init_arch(space, ("normal", "reduce"), num_inputs=2, steps=steps)

    def forward(self, x, weights=None, active=None):
        weights = self.arch_weights() if weights is None else weights
        active = self.active if active is None else active
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            ct = "reduce" if cell.reduction else "normal"
            s0, s1 = s1, cell(s0, s1, weights[ct], active[ct])
        return self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))


class NB201SuperNet(SuperNet):
    """The NAS-Bench-201 skeleton (Dong & Yang, 2020): stem, N cells, residual reduction block,
    N cells, residual reduction block, N cells, BN-ReLU, global pooling, classifier."""

    def __init__(self, space, C, num_classes, N=5, steps=3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        layers, C_prev = [], C
        for stage, C_curr in enumerate((C, 2 * C, 4 * C)):
            if stage:
                layers.append(ResNetBasicBlock(C_prev, C_curr, 2))
            layers += [NB201SearchCell(space, C_curr, steps) for _ in range(N)]
            C_prev = C_curr
        self.cells = nn.ModuleList(layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_prev), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(C_prev, num_classes)
        self._init_arch(space, ("cell",), num_inputs=1, steps=steps)

    def forward(self, x, weights=None, active=None):
        weights = self.arch_weights() if weights is None else weights
        active = self.active if active is None else active
        x = self.stem(x)
        for cell in self.cells:
            x = cell(x, weights["cell"], active["cell"]) if isinstance(cell, NB201SearchCell) else cell(x)
        return self.classifier(F.adaptive_avg_pool2d(self.lastact(x), 1).flatten(1))
