"""The MSG-DAS super-net (Tan et al., "Mutually-aware Sub-Graphs Differentiable Architecture Search").

- `gumbel_topk`: the Gumbel-TopK sampler of K mutually exclusive single-path cells (Sec. 3.1,
  Eq. 1-3, Alg. 1), with straight-through gradients to alpha;
- `dropblock_mask`, `DropBlockIdentity`: the skip-connect of Sec. 3.2, identity times an unscaled
  DropBlock mask (Eq. 4), which scales the expected alpha_id gradient by the keep rate (Eq. 6);
- `Network`: the DARTS search network (8 cells, reduction cells at 1/3 and 2/3, Sec. 4.2) over
  the DARTS ops with `none`. It runs either one sub-graph single-path (on each edge only the
  sampled op, scaled by its straight-through weight; Fig. 2) or the whole super-net with every
  op mixed by softmax(alpha), which gives the soft labels of the guidance (Sec. 3.3, Eq. 7).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from common.genotypes import Genotype, derive_darts
from common.operations import FactorizedReduce, ReLUConvBN, get_space, search_op


def gumbel_noise(like):
    """Gumbel(0, 1) samples shaped like `like`: -log(-log(u)). `u` is kept inside (0, 1), so no
    draw is +-inf (u = 0 or u = 1) and nothing downstream can become NaN."""
    finfo = torch.finfo(like.dtype)
    u = torch.rand_like(like).clamp_(finfo.tiny, 1.0 - finfo.eps)
    return -torch.log(-torch.log(u))


def gumbel_topk(alpha, k, tau):
    """Alg. 1: `k` mutually exclusive one-hot picks per row of `alpha` [num_edges, num_ops].

    Returns [k, num_edges, num_ops]. In the forward pass pick k is the one-hot h_hat^k: the k-th
    largest entry of the perturbed scores r = (alpha + g) / tau, with ONE Gumbel draw g for all k
    picks, i.e. sampling k ops without replacement (the first is distributed as softmax(alpha)).
    In the backward pass pick k has the gradient of its relaxed h^k (Eq. 2), straight-through.
    """
    num_ops = alpha.shape[-1]
    if not 1 <= k <= num_ops:
        raise ValueError(f"K={k} sub-graphs cannot be mutually exclusive over {num_ops} candidate ops; "
                         f"choose 1 <= K <= {num_ops}")
    r = (alpha + gumbel_noise(alpha)) / tau  # r^1 (Eq. 1)
    picks = []
    for _ in range(k):
        h = F.softmax(r, dim=-1)  # Eq. (2): the ops picked before are at -inf, out of O^{k+1}
        h_hat = F.one_hot(r.argmax(-1), num_ops).to(h.dtype)  # Alg. 1, line 2
        picks.append(h_hat + (h - h.detach()))  # value h_hat exactly, gradient of h
        r = r + torch.log1p(-h_hat)  # Eq. (3): r^{k+1} = r^k + log(1 - h_hat^k)
    return torch.stack(picks)


def dropblock_mask(x, rate, block_size):
    """The mask m~ of Eq. (4): 0 on square blocks of side `block_size` (DropBlock, Ghiasi et al.,
    per sample and channel), 1 elsewhere, with every unit dropped with probability exactly `rate`.

    A block may start at any of the (H + b - 1) x (W + b - 1) positions at which it overlaps the map
    (clipped at the border), so every unit lies in exactly b^2 candidate blocks; each starts with
    probability gamma = 1 - (1 - rate)^(1 / b^2), hence P(unit kept) = (1 - gamma)^(b^2) = 1 - rate:
    the Bernoulli marginal E[m~] = p = 1 - rate of Eq. (6), block-correlated as DropBlock's."""
    N, C, H, W = x.shape
    b = block_size
    gamma = 1.0 - (1.0 - rate) ** (1.0 / (b * b))
    starts = torch.empty(N, C, H + b - 1, W + b - 1, dtype=x.dtype, device=x.device).bernoulli_(gamma)
    return 1.0 - F.max_pool2d(starts, b, stride=1)  # unit (i, j) is dropped by the starts of its b x b window


class DropBlockIdentity(nn.Module):
    """Sec. 3.2, Eq. (4): the skip-connect as identity times a DropBlock mask, y = x * m~ (the
    architecture weight g(alpha_id) is applied by the edge). The kept values are not rescaled, so in
    expectation the output, and with it the gradient of alpha_id, shrinks by the keep rate 1 - p
    (Eq. 5-6): this is how the module suppresses skip-connect. `p` (the drop rate) is set by the
    search schedule; in evaluation mode the module is the identity."""

    def __init__(self, block_size):
        super().__init__()
        self.block_size = block_size
        self.p = 0.0

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        return x * dropblock_mask(x, self.p, self.block_size)  # Eq. (4): x * m~, no rescaling (Eq. 6)


class MixedOp(nn.Module):
    """All candidate ops of one edge."""

    def __init__(self, op_names, C, stride, block_size):
        super().__init__()
        self.ops = nn.ModuleList(
            DropBlockIdentity(block_size) if name == "skip_connect" and stride == 1
            else search_op(get_space("darts"), name, C, stride) for name in op_names)

    def forward(self, x, w, index=None):
        if index is not None:  # single path: only the sampled op runs, scaled by its (straight-through) weight
            return w[index] * self.ops[index](x)
        return sum(w_o * op(x) for w_o, op in zip(w, self.ops))  # the super-net: every op, mixed


class SearchCell(nn.Module):
    """A DARTS search cell: two preprocessed inputs, `steps` nodes each summing all earlier states."""

    def __init__(self, op_names, steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev,
                 block_size):
        super().__init__()
        self.reduction = reduction
        self.steps, self.multiplier = steps, multiplier
        self.preprocess0 = (FactorizedReduce(C_prev_prev, C, affine=False) if reduction_prev
                            else ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False))
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self.edges = nn.ModuleList(MixedOp(op_names, C, 2 if reduction and j < 2 else 1, block_size)
                                   for i in range(steps) for j in range(2 + i))

    def forward(self, s0, s1, w, index):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        e = 0  # the first edge into the next node
        for _ in range(self.steps):
            states.append(sum(self.edges[e + j](h, w[e + j], None if index is None else index[e + j])
                              for j, h in enumerate(states)))
            e += len(states) - 1
        return torch.cat(states[-self.multiplier:], dim=1)


class Network(nn.Module):
    """The search network; alpha_normal / alpha_reduce are [14 edges, 8 ops], initialised to zero
    (Sec. 4.2). Every sub-graph and the super-net run on these same weights (Fig. 2)."""

    def __init__(self, C, num_classes, layers, steps=4, multiplier=4, stem_multiplier=3, block_size=3):
        super().__init__()
        self.op_names = get_space("darts").ops(False, 0)
        self.steps = steps
        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(3, C_curr, 3, padding=1, bias=False), nn.BatchNorm2d(C_curr))
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                C_curr *= 2
            self.cells.append(SearchCell(self.op_names, steps, multiplier, C_prev_prev, C_prev, C_curr,
                                         reduction, reduction_prev, block_size))
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, multiplier * C_curr
        self.classifier = nn.Linear(C_prev, num_classes)
        num_edges = sum(2 + i for i in range(steps))
        self.alpha_normal = nn.Parameter(torch.zeros(num_edges, len(self.op_names)))
        self.alpha_reduce = nn.Parameter(torch.zeros(num_edges, len(self.op_names)))

    def arch_parameters(self):
        return [p for n, p in self.named_parameters() if n.startswith("alpha")]

    def weight_parameters(self):
        return [p for n, p in self.named_parameters() if not n.startswith("alpha")]

    def set_drop_block(self, p):
        for m in self.modules():
            if isinstance(m, DropBlockIdentity):
                m.p = p

    def sample(self, k, tau, detach=False):
        """`k` mutually exclusive sub-graphs: pairs (w_normal, w_reduce) of straight-through one-hot
        weights [num_edges, num_ops]; one normal and one reduce cell per sub-graph, shared by all
        cells of that type in it (Fig. 2). `detach` cuts the gradient path to alpha."""
        a_n, a_r = self.alpha_normal, self.alpha_reduce
        if detach:
            a_n, a_r = a_n.detach(), a_r.detach()
        return list(zip(gumbel_topk(a_n, k, tau), gumbel_topk(a_r, k, tau)))

    def supernet_weights(self):
        """softmax(alpha): the super-net mixture of every op on every edge (Sec. 3.3)."""
        return F.softmax(self.alpha_normal, dim=-1), F.softmax(self.alpha_reduce, dim=-1)

    def derived_weights(self):
        """One-hot weights of the derived architecture inside the super-net: on the edges the DARTS
        rule keeps, the op it picks; `none` on every other edge."""
        g, out = self.genotype(), []
        for cell in (g.normal, g.reduce):
            w = torch.zeros(self.alpha_normal.shape, device=self.alpha_normal.device)
            w[:, self.op_names.index("none")] = 1
            first = 0  # the first edge into node i
            for i, node in enumerate(cell.nodes):
                for op, j in node:
                    w[first + j].zero_()[self.op_names.index(op)] = 1
                first += 2 + i
            out.append(w)
        return tuple(out)

    def forward(self, x, w_normal=None, w_reduce=None, single_path=True):
        """Logits of the sub-graph given by one-hot weights (`single_path`), or of the super-net
        mixing every op by the weights (`single_path=False`). Without weights: the derived
        architecture with the super-net's weights (`derived_weights`), validated during the search."""
        if w_normal is None:
            w_normal, w_reduce = self.derived_weights()
        index_n = index_r = None
        if single_path:  # one device sync per cell type, then plain Python indices
            index_n, index_r = w_normal.argmax(-1).tolist(), w_reduce.argmax(-1).tolist()
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            w, index = (w_reduce, index_r) if cell.reduction else (w_normal, index_n)
            s0, s1 = s1, cell(s0, s1, w, index)
        return self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))

    def genotype(self):
        """The DARTS rule on softmax(alpha): per node the two strongest input edges, on each its
        strongest op other than `none` (Sec. 3, Preliminary)."""
        edge_ops = [self.op_names] * self.alpha_normal.shape[0]
        w_n, w_r = (w.detach().cpu() for w in self.supernet_weights())
        return Genotype(derive_darts(w_n, edge_ops, self.steps), derive_darts(w_r, edge_ops, self.steps))
