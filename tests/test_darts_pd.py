"""DARTS-PD: PC-DARTS super-net and soft pruning, path-wise strict fairness over whole passes, the
frozen architecture weights of S', the evolution of paths with size buckets, and the three stages
end to end (DDP, resume of each stage, train.py on every bucket's path)."""
import collections
import copy
import itertools
import json
import re
import types

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from common.genotypes import Cell, Genotype, derive_darts, save
from common.network import build_network
from common.utils import MetricsLog, count_madds, count_params, load_checkpoint
from conftest import SMALL, run
from darts_pd import train as train_script
from darts_pd import train_search as ts
from darts_pd.model_search import (NUM_EDGES, PRIMITIVES, Evolution, FairSchedule, PartialMixedOp, PathCost,
                                   PathGroups, PrunedNetwork, SearchNetwork, edge_weights, generation, path_genotype,
                                   prune, pruned_edges, pruned_genotype, random_pruned)

# Three stages in seconds: 3 cells of 4 channels on 16x16 images; stage 1: 2 epochs of 2 steps (alpha
# trained in epoch 2); stage 2: 2 epochs of 2 steps (a sliver of a pass); stage 3: 2 generations of 6
# paths, costed on a 3-cell evaluation network, in buckets of 0.0005 M parameters.
TINY = [*SMALL, "--subset", "64", "--layers", "3", "--init_channels", "4", "--batch_size", "16", "--epochs", "2",
        "--begin", "1", "--fair_batch_size", "16", "--fair_epochs", "2", "--no-whole_passes", "--generations", "2",
        "--population", "6", "--parents", "2", "--mutations", "3", "--crossovers", "3", "--bn_batches", "1",
        "--eval_layers", "3", "--eval_init_channels", "4", "--bucket_width", "0.0005"]


# ---------------------------------------------------------------- stage 1: PC-DARTS

def test_partial_channels_shuffle_and_bypass():
    torch.manual_seed(0)
    C, K = 8, 4
    x = torch.randn(2, C, 6, 6)
    perm = [0, 2, 4, 6, 1, 3, 5, 7]  # channel shuffle of 8 channels in 4 groups: a permutation
    skip = F.one_hot(torch.tensor(PRIMITIVES.index("skip_connect")), len(PRIMITIVES)).float()
    op = PartialMixedOp(C, 1, K)
    seen = []
    for o in op.ops:
        o.register_forward_hook(lambda m, i, out: seen.append(i[0].shape[1]))
    out = op(x, skip)  # skip on the C/K sampled channels: the edge only shuffles x
    assert seen == [C // K] * len(PRIMITIVES) and sorted(perm) == list(range(C))
    assert torch.equal(out, x[:, perm])
    sep = F.one_hot(torch.tensor(PRIMITIVES.index("sep_conv_3x3")), len(PRIMITIVES)).float()
    x2 = x.clone()
    x2[:, C // K:] += 1.0  # the channels that bypass the ops change only the bypass
    a, b = op(x, sep), op(x2, sep)
    op_part = [i for i, p in enumerate(perm) if p < C // K]
    assert torch.equal(a[:, op_part], b[:, op_part]) and not torch.equal(a, b)
    red = PartialMixedOp(C, 2, K)  # stride 2: the bypass is max-pooled, `none` zeroes the op part
    none = F.one_hot(torch.tensor(PRIMITIVES.index("none")), len(PRIMITIVES)).float()
    out = red(x, none)
    assert out.shape == (2, C, 3, 3)
    expected = torch.cat([torch.zeros(2, C // K, 3, 3), F.max_pool2d(x[:, C // K:], 2)], dim=1)[:, perm]
    assert torch.equal(out, expected)


def test_edge_normalisation_sums_to_one_per_node():
    beta = torch.randn(NUM_EDGES)
    w = edge_weights(beta)
    for lo, hi in ((0, 2), (2, 5), (5, 9), (9, 14)):  # the incoming edges of nodes 2..5
        assert torch.allclose(w[lo:hi], torch.softmax(beta[lo:hi], 0)) and w[lo:hi].sum().item() == pytest.approx(1)


def test_search_network_shapes_and_arch_parameters():
    torch.manual_seed(0)
    for imagenet, size in ((False, 16), (True, 32)):
        net = SearchNetwork(8, 10, 5, 4 if not imagenet else 2, imagenet)
        assert net(torch.randn(2, 3, size, size)).shape == (2, 10)
        names = {n for n, _ in net.named_parameters() if n.startswith(("alpha", "beta"))}
        assert names == {"alpha_normal", "alpha_reduce", "beta_normal", "beta_reduce"}
        assert net.alpha_normal.shape == (NUM_EDGES, 8) and net.beta_reduce.shape == (NUM_EDGES,)
        assert all(p.abs().max() < 1e-2 for p in net.arch_parameters())  # 1e-3 * N(0, 1)
        assert not {id(p) for p in net.arch_parameters()} & {id(p) for p in net.weights()}
    assert sum(isinstance(m, nn.Conv2d) and m.stride == (2, 2) for m in [*net.stem0, *net.stem1]) == 3


def test_stage1_step_trains_w_on_d_train_then_alpha_on_d_val_after_begin():
    """Alg. 1 step 1: w descends grad_w L_train on the training batch, then (after `begin`
    epochs) alpha and beta descend grad_alpha L_val on the validation batch, at the updated w."""
    torch.manual_seed(0)
    args = ts.parse_args([*TINY, "--begin", "1", "--grad_clip", "0"])
    searcher = ts.Searcher(args, 10, torch.device("cpu"))
    net = searcher.net
    names = {"w": [n for n, _ in net.named_parameters() if not n.startswith(("alpha", "beta"))],
             "alpha": [n for n, _ in net.named_parameters() if n.startswith(("alpha", "beta"))]}
    train = (torch.randn(4, 3, 16, 16), torch.randint(10, (4,)))
    valid = (torch.randn(4, 3, 16, 16) + 1, torch.randint(10, (4,)))

    def state():
        return {n: t.detach().clone() for n, t in net.state_dict().items()}

    def grads(at, batch, which):
        """The gradient of the loss on `batch` w.r.t. `which`, with the network in state `at`."""
        at = {n: t.clone().requires_grad_(n in names[which]) for n, t in at.items()}
        loss = F.cross_entropy(torch.func.functional_call(net, at, (batch[0],)), batch[1])
        return torch.autograd.grad(loss, [at[n] for n in names[which]])

    seen = {}
    for which, opt in (("w", searcher.w_opt), ("alpha", searcher.a_opt)):
        def recording_step(*a, _which=which, _step=opt.step, _params=opt.param_groups[0]["params"], **kw):
            seen[_which] = ([p.grad.clone() for p in _params], state())  # the gradient, and the state it is taken at
            return _step(*a, **kw)
        opt.step = recording_step

    arch0 = [p.detach().clone() for p in searcher.arch]
    net.train()
    for epoch in (0, 1):
        before = state()
        searcher.start_epoch(epoch)
        out = searcher.step(train, valid)
        assert all(torch.allclose(g, e, atol=1e-6)  # grad_w L_train(w, alpha) on D_train
                   for g, e in zip(seen["w"][0], grads(before, train, "w")))
        if epoch == 0:  # epoch 0 < begin: alpha and beta frozen
            assert "valid_loss" not in out and "alpha" not in seen
            assert all(torch.equal(a, p) for a, p in zip(arch0, searcher.arch))
    grad_alpha, at = seen["alpha"]
    assert "valid_loss" in out and not all(torch.equal(at[n], before[n]) for n in names["w"])  # w stepped first
    assert all(torch.allclose(g, e, atol=1e-6)  # grad_alpha L_val(w', alpha) on D_val
               for g, e in zip(grad_alpha, grads(at, valid, "alpha")))
    assert all(not torch.equal(a, p) for a, p in zip(arch0, searcher.arch))
    assert searcher.genotype() == searcher.net.pruned(1) and searcher.pruned() == searcher.net.pruned(2)


def test_soft_pruning_keeps_two_edges_per_node_and_top_k_ops():
    torch.manual_seed(0)
    alpha, beta = torch.randn(NUM_EDGES, 8), torch.randn(NUM_EDGES)
    alpha[:, PRIMITIVES.index("none")] = 10.0  # `none` is the strongest everywhere, and never kept
    W = torch.softmax(alpha, -1) * edge_weights(beta)[:, None]
    for k in (1, 2, 3):
        cell = prune(alpha, beta, k)
        e = 0
        for i, node in enumerate(cell.nodes):
            inputs = sorted({j for _, j in node})
            strength = {j: max(W[e + j, o].item() for o in range(1, 8)) for j in range(2 + i)}
            assert inputs == sorted(sorted(strength, key=lambda j: -strength[j])[:2])
            for j in inputs:
                ops = [op for op, jj in node if jj == j]
                top = sorted(range(1, 8), key=lambda o: -W[e + j, o].item())[:k]
                assert ops == [PRIMITIVES[o] for o in top] and "none" not in ops
            e += 2 + i
    # k = 1 is the PC-DARTS genotype: the DARTS rule on softmax(alpha) * normalised beta
    assert prune(alpha, beta, 1) == derive_darts(W.tolist(), [PRIMITIVES] * NUM_EDGES)


def test_s_prime_keeps_the_frozen_weights_of_its_ops():
    """The architecture weights S' keeps (Sec. 1: frozen, not dropped): on S' edge (node i, input j),
    op o weighs softmax(alpha)[e, o] x softmax(beta over node i's inputs)[e], e the edge of S."""
    torch.manual_seed(0)
    a_n, b_n, a_r, b_r = (torch.randn(shape) for _ in range(2) for shape in ((NUM_EDGES, 8), (NUM_EDGES,)))
    g = pruned_genotype(a_n, b_n, a_r, b_r, 2)
    assert (g.normal, g.reduce) == (prune(a_n, b_n, 2), prune(a_r, b_r, 2))
    expected = []
    for alpha, beta, cell in ((a_n, b_n, g.normal), (a_r, b_r, g.reduce)):
        for i, node in enumerate(cell.nodes):
            first = [0, 2, 5, 9][i]  # node i's first incoming edge in S
            for j in dict.fromkeys(j for _, j in node):
                e = first + j
                expected.append([(torch.softmax(alpha[e], 0)[PRIMITIVES.index(op)]
                                  * torch.softmax(beta[first:first + 2 + i], 0)[j]).item()
                                 for op, jj in node if jj == j])
    assert torch.allclose(torch.tensor(g.meta["arch_weights"]), torch.tensor(expected))


# ---------------------------------------------------------------- stage 2: S', paths, fairness

@pytest.mark.parametrize("num_edges,k", [(5, 2), (4, 3)])
def test_path_groups_are_strictly_fair_and_cover_every_path_once_per_pass(num_edges, k):
    groups = PathGroups(num_edges, k, seed=0)
    assert len(groups) == k ** (num_edges - 1)
    passes = []
    for _ in range(2):
        paths = []
        for _ in range(len(groups)):
            group = next(groups)
            assert len(group) == k
            for e in range(num_edges):  # every op of every edge exactly once in a group
                assert sorted(p[e] for p in group) == list(range(k))
            paths += group
        assert len(paths) == len(set(paths)) == k ** num_edges  # Eq. (4): each path once per pass
        assert groups.state_dict() == {"passes": len(passes) + 1, "index": 0}  # a whole pass is counted at once
        passes.append(paths)
    assert passes[0] != passes[1]  # reshuffled after a full pass
    resumed = PathGroups(num_edges, k, seed=0)
    resumed.load_state_dict(groups.state_dict() | {"passes": 1, "index": 3})
    assert [p for g in (next(resumed), next(resumed)) for p in g] == passes[1][3 * k:5 * k]


class _Batches:
    """A stand-in for a training loader: `n` batches an epoch, each the same tiny batch."""

    def __init__(self, n):
        self.n, self.sampler = n, types.SimpleNamespace(set_epoch=lambda epoch: None)
        self.batch = (torch.zeros(1, 3, 8, 8), torch.zeros(1, dtype=torch.long))

    def __len__(self):
        return self.n

    def __iter__(self):
        return itertools.repeat(self.batch, self.n)


def test_a_default_shaped_stage_2_trains_every_path_equally_often():
    """Eq. (4) at the end of stage 2 with the CIFAR defaults: 600 epochs of 98 batches (25,000
    images, batch 256) would be 58,800 groups = 1.79 passes over the 2^15 groups of S' (16 edges,
    k = 2); the schedule runs 2 whole passes (669 epochs, the last of 72 steps) and every one of
    the 2^16 paths is trained exactly twice. The epochs are FairTrainer's own, its steps counted."""
    args = ts.parse_args([*TINY, "--pruned", "random", "--whole_passes", "--fair_epochs", "600"])
    trainer = ts.FairTrainer(args, 10, torch.device("cpu"), steps_per_epoch=98)
    schedule = trainer.schedule
    assert (schedule.passes, schedule.total_steps, schedule.epochs, schedule.steps(668)) == (2, 65536, 669, 72)
    assert trainer.scheduler.T_max == 669  # the cosine schedule spans the epochs actually run
    times = collections.Counter()
    trainer.step = lambda batch: times.update(next(trainer.groups)) or {}
    for epoch in range(schedule.epochs):
        trainer.train_epoch(_Batches(98), epoch)
    assert len(times) == 2 ** 16 and set(times.values()) == {2}
    assert trainer.groups.state_dict() == {"passes": 2, "index": 0}
    # ImageNet, D_train = all but PC-DARTS' 2.5% (about 1.25M images, 610 batches of 2048): 4.65 passes -> 5;
    # on PC-DARTS' 10% subset (63 batches): 0.48 passes -> 1, never 0; --no-whole_passes: as given
    assert (FairSchedule(610, 250, 2 ** 15).passes, FairSchedule(610, 250, 2 ** 15).epochs) == (5, 269)
    assert (FairSchedule(63, 250, 2 ** 15).passes, FairSchedule(63, 250, 2 ** 15).epochs) == (1, 521)
    assert FairSchedule(98, 600, 2 ** 15, whole_passes=False).passes is None
    assert FairSchedule(64, 1024, 2 ** 15, whole_passes=False).passes == 2


def _eval_state_of_path(pruned_net, path):
    """The weights of the path of S' under the names of common.network's evaluation network."""
    out = {}
    for name, t in pruned_net.state_dict().items():
        if name == "arch_weights":
            continue
        m = re.match(r"cells\.(\d+)\.ops\.(\d+)\.(\d+)\.(\d+)\.(.*)", name)
        if m is None:
            out[name.replace("stem0.", "stem.")] = t
            continue
        cell, node, pair, choice, rest = m.groups()
        num_normal = pruned_net.num_normal
        e = 2 * int(node) + int(pair) + (num_normal if pruned_net.reductions[int(cell)] else 0)
        if path[e] == int(choice):
            out[f"cells.{cell}.ops.{node}.{pair}.{rest}"] = t
    return out


def test_a_path_of_s_prime_is_its_evaluation_network_and_its_cost_is_exact():
    """Without the architecture weights, a path of S' is the network train.py trains, module for
    module; with them (frozen, the default), the same network with each op's output scaled by the
    frozen weight of that op. PathCost is exactly count_params / count_madds of that network."""
    torch.manual_seed(0)
    pruned = random_pruned(2, seed=0)
    nets = {frozen: PrunedNetwork(pruned, 4, 10, 5, frozen=frozen).eval() for frozen in (False, True)}
    nets[True].load_state_dict({**nets[False].state_dict(), "arch_weights": nets[True].arch_weights})
    weights = pruned.meta["arch_weights"]
    x = torch.randn(2, 3, 16, 16)
    g = torch.Generator().manual_seed(0)
    cost = PathCost(pruned, "cifar10", 4, 5, 10, 16)
    for _ in range(3):
        path = tuple(torch.randint(2, (16,), generator=g).tolist())
        ref = build_network(path_genotype(pruned, path), "cifar10", 4, 5, 10).eval()
        ref.load_state_dict(_eval_state_of_path(nets[False], path))
        assert torch.allclose(nets[False](x, path), ref(x)[0], atol=1e-6)
        hooks = []
        for cell, reduction in zip(ref.cells, nets[True].reductions):
            first = nets[True].num_normal if reduction else 0
            for node, ops in enumerate(cell.ops):
                for pair, op in enumerate(ops):
                    e = first + 2 * node + pair
                    w = weights[e][path[e]]
                    hooks.append(op.register_forward_hook(lambda m, i, out, w=w: w * out))
        assert torch.allclose(nets[True](x, path), ref(x)[0], atol=1e-6)
        assert not torch.allclose(nets[True](x, path), nets[False](x, path), atol=1e-3)
        for h in hooks:
            h.remove()
        params, madds = cost(path)
        assert params == pytest.approx(count_params(ref), abs=1e-9)
        assert madds == pytest.approx(count_madds(ref, (1, 3, 16, 16)), abs=1e-9)


def test_fair_step_accumulates_the_k_paths_then_steps_once():
    torch.manual_seed(0)
    args = ts.parse_args([*TINY, "--pruned", "random", "--grad_clip", "0", "--fair_weight_decay", "0"])
    trainer = ts.FairTrainer(args, 10, torch.device("cpu"), steps_per_epoch=2)
    x, y = torch.randn(8, 3, 16, 16), torch.randint(10, (8,))
    group = next(copy.deepcopy(trainer.groups))  # the group the step will draw
    w0 = {n: p.detach().clone() for n, p in trainer.net.named_parameters()}
    grads = []
    for path in group:  # the gradient of each path alone, on the same batch
        trainer.net.zero_grad(set_to_none=True)
        F.cross_entropy(trainer.net(x, path), y).backward()
        grads.append({n: p.grad.clone() for n, p in trainer.net.named_parameters() if p.grad is not None})
    op_names = [n for n in w0 if ".ops." in n]
    assert not set(grads[0]) & set(grads[1]) & set(op_names)  # only the ops of a path get its gradient
    assert set(grads[0]) | set(grads[1]) == set(w0)  # the group covers every op of S'
    trainer.net.load_state_dict({**trainer.net.state_dict(), **w0})
    steps, optimizer_step = [], trainer.optimizer.step

    def counted_step(*a, **kw):
        steps.append(1)
        return optimizer_step(*a, **kw)
    trainer.optimizer.step = counted_step
    trainer.step((x, y))
    assert len(steps) == 1
    lr = trainer.optimizer.param_groups[0]["lr"]
    for n, p in trainer.net.named_parameters():  # Eq. (5): one SGD step along the summed gradient
        g = sum(gr.get(n, torch.zeros_like(p)) for gr in grads)
        assert torch.allclose(p.detach(), w0[n] - lr * g, atol=1e-6), n


# ---------------------------------------------------------------- stage 3: evolution

def test_evolution_finds_the_planted_optimum_of_every_size_bucket_and_never_repeats_a_path():
    target = (1, 0, 1, 1, 0, 1, 0, 1, 1, 0, 1, 0, 0, 1, 1, 0)  # 9 ones
    calls = []

    def fitness(path):  # planted: the number of genes equal to the target's
        calls.append(path)
        return float(sum(a == b for a, b in zip(path, target)))

    ones = lambda p: (float(sum(p)), 0.0)  # noqa: E731  "parameters" = the number of ones
    evo = Evolution(16, 2, ones, 5.0, seed=0)  # buckets of 5: 0-4, 5-9, 10-14, 15-16 ones; SPOS' numbers
    for _ in range(20):
        generation(evo, fitness)
    assert len(calls) == len(set(calls)) == len(evo.fitness) == 1000  # no path evaluated twice
    buckets = evo.buckets()
    assert all(int(sum(p)) // 5 == b for b, paths in buckets.items() for p in paths)
    best = evo.best()
    assert best[1] == target  # the optimum, 9 ones
    assert evo.fitness[best[0]] == 11.0 and sum(best[0]) == 4  # the best with at most 4 ones
    assert evo.fitness[best[2]] == 15.0 and sum(best[2]) == 10  # the best with 10 to 14 ones
    assert all(evo.fitness[best[b]] == max(evo.fitness[p] for p in paths) for b, paths in buckets.items())
    kept = evo.kept()  # the parents: the 10 best of every bucket (SPOS keeps 10 of one)
    assert all([p for p in kept if evo.bucket(p) == b] == paths[:10] for b, paths in buckets.items())
    state = evo.state_dict()
    again = Evolution(16, 2, ones, 5.0, seed=5)
    again.load_state_dict(state)
    assert again.propose() == evo.propose()  # the checkpoint continues the same evolution
    small = Evolution(3, 2, lambda p: (0.0, 0.0), 1.0, seed=0)
    assert len(generation(small, fitness)) == 8 and generation(small, fitness) == {}  # space exhausted


# ---------------------------------------------------------------- the scripts end to end

def _crash_on_call(monkeypatch, cls, name, n):
    """Raise KeyboardInterrupt (a kill) at the n-th call of cls.name."""
    original, calls = getattr(cls, name), [0]

    def wrapper(self, *a, **kw):
        calls[0] += 1
        if calls[0] == n:
            raise KeyboardInterrupt
        return original(self, *a, **kw)
    monkeypatch.setattr(cls, name, wrapper)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run of the three stages."""
    save = tmp_path_factory.mktemp("darts_pd") / "full"
    stages = ts.main([*TINY, "--save", str(save)])
    return save, stages


def _stage_outputs(save):
    return {"alpha": {n: t for n, t in load_checkpoint(save / "stage1" / "checkpoint.pt")["searcher"]["net"].items()
                      if n.startswith(("alpha", "beta"))},
            "pruned": json.loads((save / "stage1" / "pruned.json").read_text()),
            "supernet": load_checkpoint(save / "stage2" / "supernet.pt")["state_dict"],
            "metrics": [MetricsLog.read(save / f"stage{s}" / "metrics.jsonl") for s in (1, 2, 3)],
            "paths": (save / "stage3" / "paths.jsonl").read_text(),
            "buckets": json.loads((save / "buckets.json").read_text()),
            "bucket_files": {f.name: f.read_text() for f in (save / "buckets").iterdir()}}


def test_three_stages_write_their_outputs(reference):
    save, stages = reference
    out = _stage_outputs(save)
    assert {"genotype.json", "pruned.json", "checkpoint.pt"} <= {p.name for p in (save / "stage1").iterdir()}
    edges = pruned_edges(stages[1].pruned())
    assert len(edges) == 16 and all(len(ops) == 2 and "none" not in ops for _, _, ops in edges)
    assert out["pruned"]["arch_weights"] == stages[1].pruned().meta["arch_weights"]  # S' keeps them, frozen
    assert torch.equal(stages[2].net.arch_weights, torch.tensor(out["pruned"]["arch_weights"]))
    assert [len(m) for m in out["metrics"]] == [2, 2, 2]
    assert "valid_loss" not in out["metrics"][0][0] and "valid_top1" in out["metrics"][0][1]
    assert out["metrics"][0][1]["pruned"] == str(stages[1].pruned())
    assert out["metrics"][2][-1]["evaluated"] == 12
    summary = json.loads((save / "stage2" / "summary.json").read_text())
    assert (summary["steps"], summary["passes"]) == (4, None)  # --no-whole_passes: 4 groups of 2^15
    paths = [json.loads(line) for line in out["paths"].splitlines()]
    index, entries = out["buckets"], out["buckets"]["entries"]
    assert index["evaluated"] == len(paths) == 12 and len(entries) >= 2
    assert [e["name"] for e in entries] == sorted({p["bucket"] for p in paths}, key=lambda n: float(n.split("-")[0]))
    for e in entries:  # every size bucket: its best path, costed as train.py builds it, in its own file
        lo, hi = e["bucket_M"]
        assert lo <= e["params_M"] < hi and e["name"] == f"{lo:g}-{hi:g}M" and hi - lo == pytest.approx(0.0005)
        assert e["valid_top1"] == max(p["valid_top1"] for p in paths if p["bucket"] == e["name"])
        g = json.loads((save / e["file"]).read_text())
        assert g["text"] == e["text"] == str(path_genotype(stages[3].pruned, e["choices"]))
        assert (g["params_M"], g["mult_adds_M"], g["valid_top1"]) == (e["params_M"], e["mult_adds_M"], e["valid_top1"])
    best = json.loads((save / "genotype.json").read_text())
    top = max(e["valid_top1"] for e in entries)
    assert best["valid_top1"] == top and index["best"] == best["bucket"]
    assert best["text"] == next(e["text"] for e in entries if e["name"] == best["bucket"])
    # every stage folder is a run folder; RUN/summary.json, the run's done-marker, names the best genotype
    assert all((save / f"stage{s}" / "args.json").is_file() for s in (1, 2, 3))
    assert json.loads((save / "summary.json").read_text())["genotype"] == best["text"]
    # the same entries by fitness rank, at names a reproduction plan knows in advance; rank 0 = genotype.json
    ranked = [json.loads((save / "buckets" / f"rank-{i}.json").read_text()) for i in range(len(entries))]
    assert not (save / "buckets" / f"rank-{len(entries)}.json").exists()
    assert [r["valid_top1"] for r in ranked] == sorted((e["valid_top1"] for e in entries), reverse=True)
    assert ranked[0]["text"] == best["text"] and ranked[0]["bucket"] == best["bucket"]
    for i, r in enumerate(ranked):
        e = next(e for e in entries if e["name"] == r["bucket"])
        assert (e["rank"], e["rank_file"], r["rank"], r["text"]) == (i, f"buckets/rank-{i}.json", i, e["text"])


def test_train_py_trains_a_bucket_entry_by_its_file(reference, tmp_path):
    save, _ = reference
    entry = json.loads((save / "buckets.json").read_text())["entries"][1]
    model = train_script.main([*SMALL, "--arch", str(save / entry["file"]), "--subset", "32", "--epochs", "1",
                               "--layers", "3", "--init_channels", "4", "--batch_size", "16",
                               "--save", str(tmp_path / "eval")])
    assert count_params(model) == pytest.approx(entry["params_M"], abs=1e-6)  # the bucket's network, as costed
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["genotype"] == entry["text"] and summary["mult_adds_M"] == pytest.approx(entry["mult_adds_M"], 1e-3)
    args = train_script.parse_args(["--arch", "x"])
    assert (args.drop_path_prob, args.layers, args.init_channels, args.batch_size) == (0.3, 20, 36, 96)
    args = train_script.parse_args(["--arch", "x", "--dataset", "imagenet"])
    assert (args.batch_size, args.learning_rate, args.lr_scheduler, args.linear_tail, args.label_smooth) == \
        (1024, 0.5, "linear", 5, 0.1)


def test_each_stage_resumes_exactly_after_a_kill(reference, tmp_path, monkeypatch):
    ref_save, _ = reference
    save = tmp_path / "killed"
    argv = [*TINY, "--save", str(save)]
    with monkeypatch.context() as m:  # killed in epoch 2 of stage 1
        _crash_on_call(m, ts.Searcher, "step", 3)
        with pytest.raises(KeyboardInterrupt):
            ts.main(argv)
    assert len(MetricsLog.read(save / "stage1" / "metrics.jsonl")) == 1
    with monkeypatch.context() as m:  # resumed, then killed in epoch 2 of stage 2
        _crash_on_call(m, ts.FairTrainer, "step", 3)
        with pytest.raises(KeyboardInterrupt):
            ts.main(argv + ["--resume"])
    assert len(MetricsLog.read(save / "stage2" / "metrics.jsonl")) == 1
    with monkeypatch.context() as m:  # resumed, then killed in generation 2 of stage 3
        _crash_on_call(m, ts.PathSearch, "fitness", 8)
        with pytest.raises(KeyboardInterrupt):
            ts.main(argv + ["--resume"])
    assert len(MetricsLog.read(save / "stage3" / "metrics.jsonl")) == 1
    ts.main(argv + ["--resume"])
    ref, out = _stage_outputs(ref_save), _stage_outputs(save)
    assert all(torch.equal(ref["alpha"][n], out["alpha"][n]) for n in ref["alpha"])
    assert all(torch.equal(ref["supernet"][n], out["supernet"][n]) for n in ref["supernet"])
    for name in ("pruned", "metrics", "paths", "buckets", "bucket_files"):
        assert ref[name] == out[name], name


def test_stage_2_runs_whole_passes_so_every_path_is_trained_equally_often(tmp_path, monkeypatch, capsys):
    """Stage 2 end to end on an S' of one node per cell (4 edges: 2^3 = 8 groups of 2 paths): the
    paper-shaped 2 epochs x 3 batches = 6 steps are 0.75 of a pass; it runs one whole pass (8 steps,
    3 epochs, the last cut to 2 steps), and each of the 16 paths is trained once (Eq. 4)."""
    normal = Cell(((("sep_conv_3x3", 0), ("skip_connect", 0), ("max_pool_3x3", 1), ("dil_conv_3x3", 1)),), (2,))
    reduce = Cell(((("max_pool_3x3", 0), ("sep_conv_3x3", 0), ("avg_pool_3x3", 1), ("skip_connect", 1)),), (2,))
    save(tmp_path / "s.json", Genotype(normal, reduce), arch_weights=[[0.5, 0.25], [0.125, 1.0]] * 2)
    drawn, draw = [], PathGroups.__next__
    monkeypatch.setattr(PathGroups, "__next__", lambda self: drawn.append(draw(self)) or drawn[-1])
    argv = [*TINY, "--subset", "96", "--whole_passes", "--stage", "2", "--pruned", str(tmp_path / "s.json"),
            "--save", str(tmp_path / "run")]
    trainer = ts.main(argv)[2]
    assert len(trainer.groups) == 8 and trainer.groups.state_dict() == {"passes": 1, "index": 0}
    times = collections.Counter(p for group in drawn for p in group)
    assert len(times) == 16 and set(times.values()) == {1}
    assert [round(r["passes"], 3) for r in MetricsLog.read(tmp_path / "run" / "stage2" / "metrics.jsonl")] == \
        [0.375, 0.75, 1.0]
    summary = json.loads((tmp_path / "run" / "stage2" / "summary.json").read_text())
    assert (summary["epochs"], summary["steps"], summary["passes"]) == (3, 8, 1)
    capsys.readouterr()
    (tmp_path / "run" / "stage2" / "summary.json").unlink()  # killed before its done-marker
    with pytest.raises(SystemExit) as e:  # resumed with other batches: another schedule, refused
        ts.main(argv + ["--resume", "--fair_batch_size", "8"])
    assert e.value.code == 2 and "fair_batch_size" in capsys.readouterr().err


def test_stage_2_trains_on_every_training_image_outside_d_val(tmp_path):
    from PIL import Image
    for c in ("cat", "dog"):
        (tmp_path / "train" / c).mkdir(parents=True)
        for i in range(8):
            Image.new("RGB", (20, 20), (i * 30, 0, 0)).save(tmp_path / "train" / c / f"{i}.png")
    argv = ["--dataset", "imagefolder", "--data", str(tmp_path), "--pipeline", "imagenet", "--image_size", "32",
            "--workers", "0", "--imagenet_fractions", "0.25", "0.25", "--fair_batch_size", "4", "--device", "cpu"]
    args = ts.parse_args(argv)  # default --fair_data rest
    d_val = set(ts.fitness_loader(args).dataset.indices)
    d_train = ts.fair_loader(args, cutout=False).dataset.indices
    assert len(d_val) == 4 and sorted(d_train) == sorted(set(range(16)) - d_val)
    search = ts.fair_loader(ts.parse_args(argv + ["--fair_data", "search"]), cutout=False).dataset.indices
    assert len(search) == 4 and set(search) < set(d_train)  # stage 1's D_train: 25% of each class


def test_stage_alone_and_bad_input_is_one_clear_line(reference, tmp_path, capsys):
    save, stages = reference
    bare = tmp_path / "bare.json"  # S' without the weights of its ops
    bare.write_text(json.dumps({k: v for k, v in json.loads((save / "stage1" / "pruned.json").read_text()).items()
                                if k != "arch_weights"}))
    for argv, message in (([*TINY, "--k", "8"], "--k 8"), ([*TINY, "--K", "3"], "--K 3"),
                          ([*TINY, "--stage", "2", "--save", str(tmp_path / "empty")], "run stage 1 first"),
                          ([*TINY, "--bucket_width", "0"], "positive"), ([*TINY, "--fair_epochs", "0"], "at least 1"),
                          ([*TINY, "--stage", "2", "--pruned", str(bare), "--save", str(tmp_path / "b")],
                           "--no-frozen_alpha")):
        with pytest.raises(SystemExit) as e:
            ts.main(argv)
        assert e.value.code == 2 and message in capsys.readouterr().err
    # stage 3 alone on the run's trained S', scoring paths on the test set (Alg. 1)
    alone = tmp_path / "alone"
    for stage in ("stage1", "stage2"):
        (alone / stage).mkdir(parents=True)
        for f in (save / stage).iterdir():
            (alone / stage / f.name).write_bytes(f.read_bytes())
    ts.main([*TINY, "--stage", "3", "--save", str(alone), "--fitness_data", "test", "--generations", "1",
             "--population", "1", "--fair_batch_size", "500"])
    assert json.loads((alone / "buckets.json").read_text())["entries"][0]["test_top1"] >= 0
    search = stages[3]  # BatchNorm is re-estimated for each path: its fitness does not depend on the one before
    p1, p2 = list(search.evolution.fitness)[:2]
    assert search.fitness(p2) == search.evolution.fitness[p2] and search.fitness(p1) == search.evolution.fitness[p1]


def test_torchrun_ranks_hold_the_same_alpha_paths_and_weights(tmp_path):
    run(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29541",
         "tests/_darts_pd_ddp.py", tmp_path, *TINY, "--epochs", "1", "--fair_epochs", "1", "--generations", "1",
         "--begin", "0", "--arch_learning_rate", "0.05", "--population", "2", "--save", tmp_path / "run"], timeout=300)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["arch"].keys() == r1["arch"].keys() and all(torch.equal(r0["arch"][n], r1["arch"][n]) for n in r0["arch"])
    assert all(t.abs().max() > 2e-2 for t in r0["arch"].values())  # trained: 1e-3 * N(0, 1) at the start
    assert r0["groups"] == r1["groups"] and len(r0["groups"]) == 2  # 1 epoch of 2 half batches per rank
    assert all(torch.equal(r0["supernet"][n], r1["supernet"][n]) for n in r0["supernet"])
    assert r0["paths"] == r1["paths"] and r0["fitness"] == r1["fitness"]


def test_command_line_as_typed(tmp_path):
    save = tmp_path / "run"
    proc = run(["darts_pd/train_search.py", *TINY, "--save", save, "--epochs", "1", "--fair_epochs", "1",
                "--generations", "1", "--population", "2"])
    assert "alpha and beta never train (--begin 1 >= --epochs 1)" in proc.stdout  # said, not silent
    entries = json.loads((save / "buckets.json").read_text())["entries"]
    assert (save / "genotype.json").exists() and (save / "stage1" / "pruned.json").exists() and entries
    assert all((save / e["file"]).exists() for e in entries)
