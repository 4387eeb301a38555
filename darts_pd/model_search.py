"""DARTS-PD (Cai et al.): the three stages of Sec. 3.2 / Alg. 1.

Stage 1, super-net pruning: the PC-DARTS super-net (Xu et al., 2020): partial channel
  connections, edge normalisation; soft pruning keeps the top-k ops of every kept edge (Eq. 3).
Stage 2, path-wise weight sharing: the pruned super-net S' and its paths; `PathGroups`, the
  groups of k paths that make training path-wise strictly fair (Eq. 4-5).
Stage 3, derivation: the cost of a path's evaluation network, and the evolutionary search of
  paths (Eq. 6, SPOS-style) with parameter-count buckets.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from common.genotypes import Cell, Genotype
from common.network import build_network, drop_path, imagenet_stems
from common.operations import OPS, FactorizedReduce, Identity, ReLUConvBN, get_space, search_op
from common.utils import count_madds, count_params

SPACE = get_space("darts")
PRIMITIVES = SPACE.ops(False, 0)  # the 8 DARTS ops, `none` included (Sec. 4.1)
STEPS = 4  # intermediate nodes per cell
NUM_EDGES = sum(2 + i for i in range(STEPS))  # 14 edges per cell in the super-net S


def reduction_layers(layers):
    """The DARTS macro-architecture: reduction cells at 1/3 and 2/3 of the depth."""
    return (layers // 3, 2 * layers // 3)


# ---------------------------------------------------------------- stage 1: the PC-DARTS super-net S

class PartialMixedOp(nn.Module):
    """A PC-DARTS edge: only the first C/K channels go through the softmax-weighted candidate ops
    (Eq. 3); the other channels bypass them (max-pooled on a stride-2 edge), are concatenated
    back, and a channel shuffle with K groups mixes the two parts for the next edge."""

    def __init__(self, C, stride, K):
        super().__init__()
        self.C_op = C // K
        self.ops = nn.ModuleList(search_op(SPACE, name, self.C_op, stride) for name in PRIMITIVES)
        self.bypass = nn.MaxPool2d(2, 2) if stride == 2 else nn.Identity()
        self.shuffle = nn.ChannelShuffle(K)

    def forward(self, x, weights):
        x_op, x_bypass = x[:, :self.C_op], x[:, self.C_op:]
        y = sum(w * op(x_op) for w, op in zip(weights, self.ops))  # Eq. (3) on the sampled channels
        return self.shuffle(torch.cat([y, self.bypass(x_bypass)], dim=1))


class SearchCell(nn.Module):
    """A super-net cell: node j sums its incoming edges weighted by the normalised beta."""

    def __init__(self, C_prev_prev, C_prev, C, reduction, reduction_prev, K):
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = (FactorizedReduce(C_prev_prev, C, affine=False) if reduction_prev
                            else ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False))
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self.edges = nn.ModuleList(PartialMixedOp(C, 2 if reduction and j < 2 else 1, K)
                                   for i in range(STEPS) for j in range(2 + i))

    def forward(self, s0, s1, weights, edge_w):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        e = 0
        for _ in range(STEPS):  # Eq. (2), each edge scaled by its normalised beta
            s = sum(edge_w[e + j] * self.edges[e + j](h, weights[e + j]) for j, h in enumerate(states))
            e += len(states)
            states.append(s)
        return torch.cat(states[2:], dim=1)


def edge_weights(beta):
    """PC-DARTS edge normalisation: a softmax over the incoming edges of each node."""
    out, e = [], 0
    for i in range(STEPS):
        out.append(F.softmax(beta[e:e + 2 + i], dim=-1))
        e += 2 + i
    return torch.cat(out)


class SearchNetwork(nn.Module):
    """The super-net S of stage 1 (PC-DARTS). `imagenet` uses the PC-DARTS ImageNet stem: three
    stride-2 convolutions. alpha (14 x 8) and beta (14) per cell type start at 1e-3 * N(0, 1)."""

    def __init__(self, C, num_classes, layers, K, imagenet=False, stem_multiplier=3):
        super().__init__()
        C_stem = stem_multiplier * C
        if imagenet:
            self.stem0 = nn.Sequential(
                nn.Conv2d(3, C_stem // 2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C_stem // 2),
                nn.ReLU(inplace=True),
                nn.Conv2d(C_stem // 2, C_stem, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C_stem))
            self.stem1 = nn.Sequential(nn.ReLU(inplace=True),
                                       nn.Conv2d(C_stem, C_stem, 3, stride=2, padding=1, bias=False),
                                       nn.BatchNorm2d(C_stem))
        else:
            self.stem0 = nn.Sequential(nn.Conv2d(3, C_stem, 3, padding=1, bias=False), nn.BatchNorm2d(C_stem))
            self.stem1 = None
        self.cells = nn.ModuleList()
        C_prev_prev, C_prev, C_curr, reduction_prev = C_stem, C_stem, C, imagenet
        for i in range(layers):
            reduction = i in reduction_layers(layers)
            C_curr *= 2 if reduction else 1
            self.cells.append(SearchCell(C_prev_prev, C_prev, C_curr, reduction, reduction_prev, K))
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, STEPS * C_curr
        self.classifier = nn.Linear(C_prev, num_classes)
        num_ops = len(PRIMITIVES)
        self.alpha_normal = nn.Parameter(1e-3 * torch.randn(NUM_EDGES, num_ops))
        self.alpha_reduce = nn.Parameter(1e-3 * torch.randn(NUM_EDGES, num_ops))
        self.beta_normal = nn.Parameter(1e-3 * torch.randn(NUM_EDGES))
        self.beta_reduce = nn.Parameter(1e-3 * torch.randn(NUM_EDGES))

    def arch_parameters(self):
        return [p for n, p in self.named_parameters() if n.startswith(("alpha", "beta"))]

    def weights(self):
        return [p for n, p in self.named_parameters() if not n.startswith(("alpha", "beta"))]

    def forward(self, x):
        s0 = self.stem0(x)
        s1 = self.stem1(s0) if self.stem1 is not None else s0
        w = {False: (F.softmax(self.alpha_normal, dim=-1), edge_weights(self.beta_normal)),
             True: (F.softmax(self.alpha_reduce, dim=-1), edge_weights(self.beta_reduce))}
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, *w[cell.reduction])
        return self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))

    def pruned(self, k):
        """S': the soft pruning of the current alpha and beta with k ops per kept edge (Eq. 3), with
        the weights of its ops (`pruned_genotype`)."""
        return pruned_genotype(self.alpha_normal, self.beta_normal, self.alpha_reduce, self.beta_reduce, k)


@torch.no_grad()
def op_weights(alpha, beta):
    """W[e][o]: the weight of op o on edge e in the super-net, softmax(alpha) over all the ops of
    the edge (Eq. 3) times the edge's normalised beta (PC-DARTS edge normalisation)."""
    return (F.softmax(alpha.float(), dim=-1) * edge_weights(beta.float()).unsqueeze(1)).tolist()


def prune(alpha, beta, k):
    """Soft pruning (Sec. 3.2, Eq. 3) of one cell type: per node, the 2 input edges with the largest
    non-`none` weight softmax(alpha) * normalised beta (the PC-DARTS rule), and on each of them the
    k strongest non-`none` ops instead of one. k = 1 gives the PC-DARTS genotype. Ties keep the lower
    index. Returns a Cell whose node lists its kept inputs strongest first (as DARTS and PC-DARTS
    print genotypes) and, per kept input, its k ops strongest first."""
    W = op_weights(alpha, beta)
    cand = [o for o, name in enumerate(PRIMITIVES) if name != "none"]
    nodes, e = [], 0
    for i in range(STEPS):
        kept = sorted(range(2 + i), key=lambda j: (-max(W[e + j][o] for o in cand), j))[:2]
        nodes.append(tuple((PRIMITIVES[o], j) for j in kept
                           for o in sorted(cand, key=lambda o: (-W[e + j][o], o))[:k]))
        e += 2 + i
    return Cell(tuple(nodes), tuple(range(2, 2 + STEPS)))


def pruned_genotype(alpha_normal, beta_normal, alpha_reduce, beta_reduce, k):
    """S' as a genotype (`prune` of both cell types) whose metadata `arch_weights` holds the
    architecture weights of its ops, frozen (Sec. 1, Alg. 1 step 2): one list per edge of
    `pruned_edges`, the `op_weights` of its k ops in their order."""
    cells, frozen = [], []
    first = [sum(2 + n for n in range(i)) for i in range(STEPS)]  # S' edge (node i, input j) is edge first[i] + j of S
    for alpha, beta in ((alpha_normal, beta_normal), (alpha_reduce, beta_reduce)):
        cell, W = prune(alpha, beta, k), op_weights(alpha, beta)
        frozen += [[W[first[i] + j][PRIMITIVES.index(op)] for op in ops] for i, j, ops in cell_edges(cell)]
        cells.append(cell)
    return Genotype(*cells, meta={"arch_weights": frozen})


def random_pruned(k, seed):
    """An S' from random alpha and beta: an ablation of stage 1, and S' for stand-alone runs of stage 2."""
    g = torch.Generator().manual_seed(seed)
    draws = [torch.randn(shape, generator=g)
             for _ in range(2) for shape in ((NUM_EDGES, len(PRIMITIVES)), (NUM_EDGES,))]
    return pruned_genotype(*draws, k)


# ---------------------------------------------------------------- stage 2: S' and its paths

def cell_edges(cell):
    """The edges of an S' cell as (node, input, ops) in order: a node's pairs grouped by input."""
    edges = []
    for i, node in enumerate(cell.nodes):
        for j in dict.fromkeys(j for _, j in node):
            edges.append((i, j, tuple(op for op, jj in node if jj == j)))
    return edges


def pruned_edges(pruned):
    """All edges of S', normal cell first: the genes of a path, one op index per edge."""
    return cell_edges(pruned.normal) + cell_edges(pruned.reduce)


def path_genotype(pruned, path):
    """The DARTS genotype of a path: op path[e] on each edge e of S'."""
    cells, e = [], 0
    for cell in (pruned.normal, pruned.reduce):
        nodes = [[] for _ in cell.nodes]
        for i, j, ops in cell_edges(cell):
            nodes[i].append((ops[path[e]], j))
            e += 1
        cells.append(Cell(tuple(tuple(n) for n in nodes), cell.concat))
    return Genotype(*cells)


class PrunedCell(nn.Module):
    """A cell of S' with every kept op of every edge, full channels and affine BN: run with one op
    per edge it is the evaluation cell (common.network.EvalCell) of that path, module for module
    (`ops[node][pair]` there is `ops[node][pair][choice]` here), each op's output scaled by its
    frozen architecture weight (all ones: exactly the evaluation cell)."""

    def __init__(self, cell, C_prev_prev, C_prev, C, reduction, reduction_prev):
        super().__init__()
        self.preprocess0 = FactorizedReduce(C_prev_prev, C) if reduction_prev else ReLUConvBN(C_prev_prev, C, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)
        edges = cell_edges(cell)
        self.inputs = [[j for i, j, _ in edges if i == node] for node in range(len(cell.nodes))]
        self.ops = nn.ModuleList(
            nn.ModuleList(nn.ModuleList(OPS[name](C, 2 if reduction and j < 2 else 1, True) for name in ops)
                          for i, j, ops in edges if i == node)
            for node in range(len(cell.nodes)))
        self.concat = list(cell.concat)

    def forward(self, s0, s1, choice, arch_weights, drop_prob=0.0):
        """`choice[e]`: the op of edge e; `arch_weights[e, c]`: the frozen weight of op c of edge e."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        e = 0
        for edges, inputs in zip(self.ops, self.inputs):
            s = 0
            for ops, j in zip(edges, inputs):
                op = ops[choice[e]]
                h = arch_weights[e, choice[e]] * op(states[j])  # Alg. 1 step 2: P_i(A_i, w'), A frozen
                if self.training and drop_prob > 0 and not isinstance(op, Identity):
                    h = drop_path(h, drop_prob)
                s = s + h
                e += 1
            states.append(s)
        return torch.cat([states[c] for c in self.concat], dim=1)


class PrunedNetwork(nn.Module):
    """S' (stage 2): the DARTS evaluation macro-architecture (common.network, no auxiliary head)
    with the k kept ops on each edge. `forward(x, path)` runs one path: one op index per edge of
    `pruned_edges(pruned)`, normal edges first.

    `frozen`: the architecture weights stay in S', frozen (Sec. 1, Alg. 1 step 2): op c of edge e
    scales its output by `pruned.meta["arch_weights"][e][c]`, softmax(alpha) x normalised beta at the
    end of stage 1 (a buffer, never trained). Without, they are ones: a path is its evaluation network."""

    def __init__(self, pruned, C, num_classes, layers, imagenet=False, frozen=True):
        super().__init__()
        self.pruned = pruned
        self.num_normal = len(cell_edges(pruned.normal))
        edges = pruned_edges(pruned)
        self.num_edges = len(edges)
        ones = [[1.0] * len(ops) for _, _, ops in edges]
        self.register_buffer("arch_weights", torch.tensor(pruned.meta["arch_weights"] if frozen else ones))
        if imagenet:
            self.stem0, self.stem1 = imagenet_stems(C)
            C_prev_prev = C_prev = C
        else:
            self.stem0 = nn.Sequential(nn.Conv2d(3, 3 * C, 3, padding=1, bias=False), nn.BatchNorm2d(3 * C))
            self.stem1 = None
            C_prev_prev = C_prev = 3 * C
        self.cells = nn.ModuleList()
        self.reductions = [i in reduction_layers(layers) for i in range(layers)]
        C_curr, reduction_prev = C, imagenet
        for reduction in self.reductions:
            C_curr *= 2 if reduction else 1
            cell = pruned.reduce if reduction else pruned.normal
            self.cells.append(PrunedCell(cell, C_prev_prev, C_prev, C_curr, reduction, reduction_prev))
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, len(cell.concat) * C_curr
        self.classifier = nn.Linear(C_prev, num_classes)
        self.drop_path_prob = 0.0

    def forward(self, x, path):
        n = self.num_normal
        choice = {False: (path[:n], self.arch_weights[:n]), True: (path[n:], self.arch_weights[n:])}
        s0 = self.stem0(x)
        s1 = self.stem1(s0) if self.stem1 is not None else s0
        for cell, reduction in zip(self.cells, self.reductions):
            s0, s1 = s1, cell(s0, s1, *choice[reduction], self.drop_path_prob)
        return self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))


class PathNet(nn.Module):
    """One path of S' as a plain model (logits = model(x)), sharing S' weights."""

    def __init__(self, net, path):
        super().__init__()
        self.net, self.path = net, tuple(path)

    def forward(self, x):
        return self.net(x, self.path)


_M64 = (1 << 64) - 1


def _mix(x):
    """The splitmix64 finaliser: a well-mixed 64-bit hash of a 64-bit integer."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def permuted_index(i, n, key):
    """The image of i under the pseudo-random permutation of range(n) chosen by `key`: a 4-round
    Feistel network on the smallest even number of bits that holds n - 1, with cycle walking
    (re-applied until the value falls below n), so it is a bijection of range(n) in O(1) memory."""
    half = ((max(n - 1, 1)).bit_length() + 1) // 2
    mask = (1 << half) - 1
    while True:
        left, right = i >> half, i & mask
        for r in range(4):
            left, right = right, left ^ (_mix((key + r * 0x9E3779B97F4A7C15 + right) & _M64) & mask)
        i = (left << half) | right
        if i < n:
            return i


class PathGroups:
    """Path-wise strict fairness (Eq. 4): an endless iterator of groups of k paths.

    A group is a path whose first op index is 0 together with its k-1 cyclic shifts (every op
    index + s mod k, s = 1..k-1), so each op of each edge appears exactly once in a group (FairNAS'
    strict fairness), and the k^(E-1) groups partition all k^E paths. Each pass visits every group
    once, in a seeded pseudo-random order, and the order is drawn anew for the next pass: after
    `passes` whole passes (`index` 0) every path has been trained exactly `passes` times."""

    def __init__(self, num_edges, k, seed=0):
        self.num_edges, self.k, self.seed = num_edges, k, seed
        self.num_groups = k ** (num_edges - 1)
        self.passes, self.index = 0, 0  # whole passes done, groups drawn in the current one

    def __len__(self):
        return self.num_groups

    def __iter__(self):
        return self

    def __next__(self):
        key = _mix((self.seed * 0x100000001B3 + self.passes) & _M64)
        g = permuted_index(self.index, self.num_groups, key)
        self.index += 1
        if self.index == self.num_groups:
            self.passes, self.index = self.passes + 1, 0
        return self.group(g)

    def group(self, g):
        """Group number g: base path (0, digits of g in base k), then its cyclic shifts."""
        base = [0] * self.num_edges
        for e in range(self.num_edges - 1, 0, -1):
            g, base[e] = divmod(g, self.k)
        return [tuple((o + s) % self.k for o in base) for s in range(self.k)]

    def state_dict(self):
        return {"passes": self.passes, "index": self.index}

    def load_state_dict(self, d):
        self.passes, self.index = int(d["passes"]), int(d["index"])


@dataclass(frozen=True)
class FairSchedule:
    """The length of stage 2 in whole passes over the path groups, so that Eq. (4) holds at its end.

    The paper trains S' for `epochs` epochs of `steps_per_epoch` steps (one group per step), which
    is in general not a whole number of passes over the `num_groups` groups: some paths would be
    trained once more than others, or never. With `whole_passes`, stage 2 runs the whole number of
    passes nearest to the paper's number of steps (at least one), keeping the batch, and as many
    epochs as that takes, the last one cut short. Without, it runs `epochs` epochs as given (short
    trial runs; Eq. (4) then holds only if that happens to be whole passes)."""
    steps_per_epoch: int
    paper_epochs: int
    num_groups: int
    whole_passes: bool = True

    @property
    def passes(self):
        """Whole passes over the groups (Eq. 4), or None when the run is not a whole number of them."""
        if self.whole_passes:
            return max(1, math.floor(self.paper_epochs * self.steps_per_epoch / self.num_groups + 0.5))
        whole, rest = divmod(self.paper_epochs * self.steps_per_epoch, self.num_groups)
        return whole if rest == 0 else None

    @property
    def total_steps(self):
        if self.whole_passes:
            return self.passes * self.num_groups
        return self.paper_epochs * self.steps_per_epoch

    @property
    def epochs(self):
        return -(-self.total_steps // self.steps_per_epoch)

    def steps(self, epoch):
        """The number of steps (groups) of `epoch`."""
        return min(self.steps_per_epoch, self.total_steps - epoch * self.steps_per_epoch)


# ---------------------------------------------------------------- stage 3: cost and evolution of paths

def _op_cost(name, C, stride, shape):
    """(parameters, multiply-adds), in millions, of one evaluation op on an input of `shape`."""
    op = OPS[name](C, stride, True).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        op(torch.zeros(shape))
    return sum(p.numel() for p in op.parameters()) / 1e6, counter.get_total_flops() / 2 / 1e6


class PathCost:
    """Parameters and multiply-adds (millions) of the evaluation network of a path, as train.py
    builds and counts it (common.network, `layers` cells of `C` channels, no auxiliary head).

    Ops are independent modules, so the counts are additive: the network with `none` on every edge,
    plus on each edge the cost of its op in every cell of that type (at that cell's width and
    resolution, read from one forward pass). Exact, and cheap enough for thousands of paths."""

    def __init__(self, pruned, dataset, C, layers, num_classes, image_size):
        edges = pruned_edges(pruned)
        topology = path_genotype(pruned, [0] * len(edges))  # S' topology; then `none` on every edge
        skeleton = Genotype(*(Cell(tuple(tuple(("none", j) for _, j in node) for node in c.nodes), c.concat)
                              for c in (topology.normal, topology.reduce)))
        net = build_network(skeleton, dataset, C, layers, num_classes, auxiliary=False)
        shapes = []  # per cell: the shape of its two (preprocessed) inputs and of its nodes
        hooks = [h for cell in net.cells for h in (
            cell.preprocess1.register_forward_hook(lambda m, i, out: shapes.append([tuple(out.shape)])),
            cell.register_forward_hook(lambda m, i, out: shapes[-1].append(
                (out.shape[0], out.shape[1] // m.multiplier, *out.shape[2:]))))]
        self.base = (count_params(net), count_madds(net, (1, 3, image_size, image_size)))
        for h in hooks:
            h.remove()
        num_normal = len(cell_edges(pruned.normal))
        self.table = [[[0.0, 0.0] for _ in ops] for _, _, ops in edges]
        cache = {}
        for layer, (inputs, nodes) in enumerate(shapes):
            reduction = layer in reduction_layers(layers)
            for e, (_, j, ops) in enumerate(edges):
                if (e >= num_normal) != reduction:
                    continue
                stride, shape = (2, inputs) if reduction and j < 2 else (1, inputs if j < 2 else nodes)
                for c, name in enumerate(ops):
                    if (name, stride, shape) not in cache:
                        cache[name, stride, shape] = _op_cost(name, shape[1], stride, shape)
                    self.table[e][c][0] += cache[name, stride, shape][0]
                    self.table[e][c][1] += cache[name, stride, shape][1]

    def __call__(self, path):
        """(params, mult-adds) in millions of the evaluation network of `path`."""
        return (self.base[0] + sum(self.table[e][c][0] for e, c in enumerate(path)),
                self.base[1] + sum(self.table[e][c][1] for e, c in enumerate(path)))


class Evolution:
    """The evolutionary search of paths (Eq. 6, Alg. 1 step 3), as in SPOS (Guo et al., 2020):
    a first population of random paths, then generations of `mutations` children (each gene
    re-drawn with probability `mutation_prob`) and `crossovers` children (each gene from one of two
    parents) of the kept paths, with random paths filling any shortfall. No path is evaluated twice.

    Several sizes at once (Sec. 1): bucket n holds the paths whose evaluation network has
    n w <= params < (n + 1) w million parameters, w = `bucket_width`. The `parents` best paths of
    every bucket are kept and breed, so the search follows the best path of each size."""

    def __init__(self, num_edges, k, cost, bucket_width, population=50, parents=10, mutations=25, crossovers=25,
                 mutation_prob=0.1, seed=0):
        self.num_edges, self.k, self.cost, self.bucket_width = num_edges, k, cost, bucket_width
        self.population, self.parents, self.mutations, self.crossovers = population, parents, mutations, crossovers
        self.mutation_prob = mutation_prob
        self.g = torch.Generator().manual_seed(seed)
        self.fitness = {}  # path -> fitness, every path evaluated so far
        self.generation = 0

    def bucket(self, path):
        """The bucket n of a path: n w <= params < (n + 1) w."""
        return math.floor(self.cost(path)[0] / self.bucket_width)

    def ranked(self):
        """Evaluated paths, best first (ties: fewer parameters, then path order)."""
        return sorted(self.fitness, key=lambda p: (-self.fitness[p], self.cost(p)[0], p))

    def buckets(self):
        """{bucket: its evaluated paths, best first}, smallest bucket first."""
        out = {}
        for p in self.ranked():
            out.setdefault(self.bucket(p), []).append(p)
        return dict(sorted(out.items()))

    def kept(self):
        """The `parents` best paths of each bucket: the parents of the next generation."""
        return [p for paths in self.buckets().values() for p in paths[:self.parents]]

    def _randint(self, n):
        return int(torch.randint(n, (), generator=self.g))

    def _random(self):
        return tuple(torch.randint(self.k, (self.num_edges,), generator=self.g).tolist())

    def _mutate(self, parents):
        p = parents[self._randint(len(parents))]
        redraw = (torch.rand(self.num_edges, generator=self.g) < self.mutation_prob).tolist()
        genes = torch.randint(self.k, (self.num_edges,), generator=self.g).tolist()
        return tuple(genes[e] if redraw[e] else p[e] for e in range(self.num_edges))

    def _crossover(self, parents):
        p1, p2 = parents[self._randint(len(parents))], parents[self._randint(len(parents))]
        pick = (torch.rand(self.num_edges, generator=self.g) < 0.5).tolist()
        return tuple(p1[e] if pick[e] else p2[e] for e in range(self.num_edges))

    def _collect(self, make, n, new):
        """Up to n new paths from `make()` (10 n tries, as SPOS), appended to `new`."""
        added = 0
        for _ in range(10 * n):
            if added == n:
                break
            p = make()
            if p not in self.fitness and p not in new:
                new.append(p)
                added += 1

    def propose(self):
        """The paths of the next generation, all new."""
        new, parents = [], self.kept()
        if parents:
            self._collect(lambda: self._mutate(parents), self.mutations, new)
            self._collect(lambda: self._crossover(parents), self.crossovers, new)
        self._collect(self._random, self.population - len(new), new)
        return new

    def record(self, results):
        """Add {path: fitness} of the evaluated paths of a generation."""
        self.fitness.update(results)
        self.generation += 1

    def best(self):
        """{bucket: the best path of the bucket}, for every bucket holding an evaluated path (Eq. 6
        within each size), smallest bucket first."""
        return {b: paths[0] for b, paths in self.buckets().items()}

    def state_dict(self):
        return {"generation": self.generation, "paths": [list(p) for p in self.fitness],
                "fitness": [float(f) for f in self.fitness.values()], "rng": self.g.get_state()}

    def load_state_dict(self, d):
        self.generation = int(d["generation"])
        self.fitness = {tuple(int(o) for o in p): float(f) for p, f in zip(d["paths"], d["fitness"])}
        self.g.set_state(d["rng"])


def generation(evolution, fitness):
    """One generation of the evolution: propose new paths, evaluate each once. Returns
    {path: fitness}; empty when no new path can be found."""
    results = {p: fitness(p) for p in evolution.propose()}
    evolution.record(results)
    return results
