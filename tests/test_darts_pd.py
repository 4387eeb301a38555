"""DARTS-PD: PC-DARTS super-net and soft pruning, path-wise strict fairness, the evolution of
paths with buckets, and the three stages end to end (DDP, resume of each stage, train.py)."""
import copy
import json
import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from common.genotypes import derive_darts
from common.network import build_network
from common.utils import MetricsLog, count_madds, count_params, load_checkpoint
from conftest import SMALL, run
from darts_pd import train as train_script
from darts_pd import train_search as ts
from darts_pd.model_search import (NUM_EDGES, PRIMITIVES, Evolution, PartialMixedOp, PathCost, PathGroups,
                                   PrunedNetwork, SearchNetwork, edge_weights, generation, path_genotype, prune,
                                   pruned_edges, random_pruned)

# Three stages in seconds: 3 cells of 4 channels on 16x16 images; 2 epochs of 2 steps in stages 1
# and 2 (alpha trained in epoch 2); 2 generations of 6 paths, costed on a 3-cell evaluation network.
TINY = [*SMALL, "--subset", "64", "--layers", "3", "--init_channels", "4", "--batch_size", "16", "--epochs", "2",
        "--begin", "1", "--population", "6", "--parents", "2", "--mutations", "3", "--crossovers", "3",
        "--bn_batches", "1", "--eval_layers", "3", "--eval_init_channels", "4", "--buckets", "0", "0.0077", "inf"]


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


def test_stage1_step_trains_weights_then_alpha_after_begin():
    torch.manual_seed(0)
    searcher = ts.Searcher(ts.parse_args([*TINY, "--begin", "1"]), 10, torch.device("cpu"))
    batch = (torch.randn(4, 3, 16, 16), torch.randint(10, (4,)))
    arch0, w0 = [p.detach().clone() for p in searcher.arch], [p.detach().clone() for p in searcher.weights]
    searcher.start_epoch(0)
    assert "valid_loss" not in searcher.step(batch, batch)  # epoch 0 < begin: alpha and beta frozen
    assert all(torch.equal(a, p) for a, p in zip(arch0, searcher.arch))
    assert not all(torch.equal(w, p) for w, p in zip(w0, searcher.weights))
    searcher.start_epoch(1)
    assert "valid_loss" in searcher.step(batch, batch)
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
        passes.append(paths)
    assert passes[0] != passes[1]  # reshuffled after a full pass
    resumed = PathGroups(num_edges, k, seed=0)
    resumed.load_state_dict(groups.state_dict() | {"passes": 1, "index": 3})
    assert [p for g in (next(resumed), next(resumed)) for p in g] == passes[1][3 * k:5 * k]


def _eval_state_of_path(pruned_net, path):
    """The weights of the path of S' under the names of common.network's evaluation network."""
    out = {}
    for name, t in pruned_net.state_dict().items():
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
    torch.manual_seed(0)
    pruned = random_pruned(2, seed=0)
    net = PrunedNetwork(pruned, 4, 10, 5).eval()
    x = torch.randn(2, 3, 16, 16)
    g = torch.Generator().manual_seed(0)
    cost = PathCost(pruned, "cifar10", 4, 5, 10, 16)
    for _ in range(3):
        path = tuple(torch.randint(2, (16,), generator=g).tolist())
        ref = build_network(path_genotype(pruned, path), "cifar10", 4, 5, 10).eval()
        ref.load_state_dict(_eval_state_of_path(net, path))
        assert torch.allclose(net(x, path), ref(x)[0], atol=1e-6)
        params, madds = cost(path)
        assert params == pytest.approx(count_params(ref), abs=1e-9)
        assert madds == pytest.approx(count_madds(ref, (1, 3, 16, 16)), abs=1e-9)


def test_fair_step_accumulates_the_k_paths_then_steps_once():
    torch.manual_seed(0)
    args = ts.parse_args([*TINY, "--pruned", "random", "--grad_clip", "0", "--weight_decay", "0"])
    trainer = ts.FairTrainer(args, 10, torch.device("cpu"))
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

def test_evolution_respects_buckets_never_repeats_and_finds_the_planted_optimum():
    target = (1, 0, 1, 1, 0, 1, 0, 1, 1, 0, 1, 0, 0, 1, 1, 0)  # 9 ones
    calls = []

    def fitness(path):  # planted: the number of genes equal to the target's
        calls.append(path)
        return float(sum(a == b for a, b in zip(path, target)))

    # "parameters" = the number of ones; buckets [0, 6) and [6, 10); 10 ones or more is out of range
    evo = Evolution(16, 2, lambda p: (float(sum(p)), 0.0), [0, 6, 10], seed=0)  # SPOS: 50, 10, 25, 25, 0.1
    for _ in range(20):
        generation(evo, fitness)
    assert len(calls) == len(set(calls)) == len(evo.fitness) == 1000  # no path evaluated twice
    assert max(sum(p) for p in calls) < 10  # nothing outside the buckets is evaluated
    best = evo.best()
    assert best[0] == (1, target, 16.0)  # the optimum
    assert best[1][0] == 0 and best[1][2] == 12.0 and sum(best[1][1]) == 5  # the best with at most 5 ones
    state = evo.state_dict()
    again = Evolution(16, 2, lambda p: (float(sum(p)), 0.0), [0, 6, 10], seed=5)
    again.load_state_dict(state)
    assert again.propose() == evo.propose()  # the checkpoint continues the same evolution
    small = Evolution(3, 2, lambda p: (0.0, 0.0), [0, 1], seed=0)
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
            "genotypes": json.loads((save / "genotypes.json").read_text())}


def test_three_stages_write_their_outputs(reference):
    save, stages = reference
    out = _stage_outputs(save)
    assert {"genotype.json", "pruned.json", "checkpoint.pt"} <= {p.name for p in (save / "stage1").iterdir()}
    edges = pruned_edges(stages[1].pruned())
    assert len(edges) == 16 and all(len(ops) == 2 and "none" not in ops for _, _, ops in edges)
    assert [len(m) for m in out["metrics"]] == [2, 2, 2]
    assert "valid_loss" not in out["metrics"][0][0] and "valid_top1" in out["metrics"][0][1]
    assert out["metrics"][0][1]["pruned"] == str(stages[1].pruned())
    assert out["metrics"][2][-1]["evaluated"] == 12
    entries = out["genotypes"]["genotypes"]
    tops = [e["valid_top1"] for e in entries]
    assert tops == sorted(tops, reverse=True) and len({tuple(e["bucket_M"]) for e in entries}) == len(entries) == 2
    for e in entries:  # the best path of its bucket, costed as train.py builds it
        lo, hi = e["bucket_M"]
        assert lo <= e["params_M"] < (hi or float("inf"))
        assert e["valid_top1"] == max(json.loads(line)["top1"] for line in out["paths"].splitlines()
                                      if lo <= json.loads(line)["params_M"] < (hi or float("inf")))
    best = json.loads((save / "genotype.json").read_text())
    assert best["normal"] == entries[0]["normal"] and best["reduce"] == entries[0]["reduce"]
    # every stage folder is a run folder; RUN/summary.json, the run's done-marker, names the best genotype
    assert all(json.loads((save / f"stage{s}" / "args.json").read_text())["stage"] == str(s) for s in (1, 2, 3))
    assert json.loads((save / "summary.json").read_text())["genotype"] == best["text"]


def test_train_py_trains_any_entry_of_genotypes_json(reference, tmp_path):
    save, _ = reference
    entry = json.loads((save / "genotypes.json").read_text())["genotypes"][1]
    model = train_script.main([*SMALL, "--arch", str(save / "genotypes.json"), "--index", "1", "--subset", "32",
                               "--epochs", "1", "--layers", "3", "--init_channels", "4", "--batch_size", "16",
                               "--save", str(tmp_path / "eval")])
    assert count_params(model) == pytest.approx(entry["params_M"], abs=1e-6)  # the bucket's network, as costed
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["genotype"] == entry["text"]
    args = train_script.parse_args(["--arch", "x"])
    assert (args.drop_path_prob, args.layers, args.init_channels, args.batch_size) == (0.3, 20, 36, 96)
    args = train_script.parse_args(["--arch", "x", "--dataset", "imagenet"])
    assert (args.batch_size, args.learning_rate, args.lr_scheduler, args.label_smooth) == (1024, 0.5, "linear", 0.1)


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
    for name in ("pruned", "metrics", "paths", "genotypes"):
        assert ref[name] == out[name], name


def test_stage_alone_and_bad_input_is_one_clear_line(reference, tmp_path, capsys):
    save, stages = reference
    for argv, message in (([*TINY, "--k", "8"], "--k 8"), ([*TINY, "--K", "3"], "--K 3"),
                          ([*TINY, "--stage", "2", "--save", str(tmp_path / "empty")], "run stage 1 first"),
                          ([*TINY, "--buckets", "1", "1"], "strictly increasing")):
        with pytest.raises(SystemExit) as e:
            ts.main(argv)
        assert e.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_script.parse_args(["--arch", str(save / "genotypes.json"), "--index", "7"])
    assert "entries 0..1" in capsys.readouterr().err
    # stage 3 alone on the run's trained S', scoring paths on the test set (Alg. 1)
    alone = tmp_path / "alone"
    for stage in ("stage1", "stage2"):
        (alone / stage).mkdir(parents=True)
        for f in (save / stage).iterdir():
            (alone / stage / f.name).write_bytes(f.read_bytes())
    ts.main([*TINY, "--stage", "3", "--save", str(alone), "--fitness_data", "test", "--epochs", "1",
             "--population", "1", "--batch_size", "500"])
    assert json.loads((alone / "genotypes.json").read_text())["genotypes"][0]["test_top1"] >= 0
    search = stages[3]  # BatchNorm is re-estimated for each path: its fitness does not depend on the one before
    p1, p2 = list(search.evolution.fitness)[:2]
    assert search.fitness(p2) == search.evolution.fitness[p2] and search.fitness(p1) == search.evolution.fitness[p1]


def test_torchrun_ranks_hold_the_same_alpha_paths_and_weights(tmp_path):
    run(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29541",
         "tests/_darts_pd_ddp.py", tmp_path, *TINY, "--epochs", "1", "--begin", "0", "--arch_learning_rate", "0.05",
         "--population", "2", "--save", tmp_path / "run"], timeout=300)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["arch"].keys() == r1["arch"].keys() and all(torch.equal(r0["arch"][n], r1["arch"][n]) for n in r0["arch"])
    assert all(t.abs().max() > 2e-2 for t in r0["arch"].values())  # trained: 1e-3 * N(0, 1) at the start
    assert r0["groups"] == r1["groups"] and len(r0["groups"]) == 2  # 1 epoch of 2 half batches per rank
    assert all(torch.equal(r0["supernet"][n], r1["supernet"][n]) for n in r0["supernet"])
    assert r0["paths"] == r1["paths"] and r0["fitness"] == r1["fitness"]


def test_command_line_as_typed(tmp_path):
    save = tmp_path / "run"
    run(["darts_pd/train_search.py", *TINY, "--save", save, "--epochs", "1", "--population", "2"])
    entries = json.loads((save / "genotypes.json").read_text())["genotypes"]
    assert (save / "genotype.json").exists() and (save / "stage1" / "pruned.json").exists() and entries
