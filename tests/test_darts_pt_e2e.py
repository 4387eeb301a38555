"""DARTS-PT end to end on the synthetic data: the search as a user types it, the perturbation-based
selection on its run folder, training the result; the blank super-net on NAS-Bench-201 with a
projection killed and resumed; second-order DARTS with snapshots and a selection from one; SGAS+PT;
the NAS-Bench-201 benchmark's accuracies."""
import json
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from common.genotypes import load
from common.data import search_loaders
from common.utils import MetricsLog
from conftest import SMALL, run
from darts_pt import nb201_lookup, projection, train, train_search
from darts_pt.selection import evaluate_supernet

TINY = [*SMALL, "--image_size", "8", "--subset", "16", "--batch_size", "8", "--init_channels", "4", "--epochs", "1"]


@pytest.fixture(scope="module")
def darts_run(tmp_path_factory):
    """A DARTS super-net searched from the command line, then selected with --proj_intv 1."""
    root = tmp_path_factory.mktemp("darts_pt")
    run(["darts_pt/train_search.py", *TINY, "--layers", "3", "--search_space", "s2", "--save", root / "search"])
    genotype = projection.main(["--search_dir", str(root / "search"), "--proj_intv", "1"])
    return root / "search", root / "search" / "projection_pt", genotype


def test_search_run_folder(darts_run):
    search, _, _ = darts_run
    assert {"log.txt", "args.json", "metrics.jsonl", "checkpoint.pt", "genotype.json"} <= {p.name for p in search.iterdir()}
    record = MetricsLog.read(search / "metrics.jsonl")[-1]
    assert {"arch_loss", "train_loss", "valid_top1", "alphas"} <= set(record)
    w = record["alphas"]["normal"]  # Fig. 3 on S2 (skip_connect, sep_conv_3x3): the skip-conv gap
    assert record["mean_skip_minus_conv"]["normal"] == pytest.approx(sum(a - b for a, b in w) / 14)
    both = w + record["alphas"]["reduce"]  # Fig. 3's y: the mean over all 28 edges
    assert record["mean_skip_minus_conv_all"] == pytest.approx(sum(a - b for a, b in both) / 28, abs=1e-6)
    assert load(str(search / "genotype.json")).kind == "darts"


def test_projection_inherits_the_search_flags_but_not_its_speed_flags(darts_run, tmp_path):
    """A search recorded with --compile --channels_last --cuda_graph (on a GPU) projects on a CPU:
    those flags are the projection run's own; data, model and seed flags come from the search."""
    search, _, _ = darts_run
    copy = tmp_path / "search"
    copy.mkdir()
    stored = json.loads((search / "args.json").read_text())
    (copy / "args.json").write_text(json.dumps({**stored, "compile": True, "channels_last": True, "cuda_graph": True}))
    (copy / "summary.json").write_text("{}")
    args = projection.parse_args(["--search_dir", str(copy)])
    assert not (args.compile or args.channels_last or args.cuda_graph)
    assert (args.layers, args.search_space, args.seed) == (stored["layers"], stored["search_space"], stored["seed"])


def test_selection_decides_every_edge_then_the_topology(darts_run):
    _, out, genotype = darts_run
    rounds = json.loads((out / "decisions.json").read_text())
    assert [r["kind"] for r in rounds] == ["op"] * 14 + ["topology"] * 3
    for ct in ("normal", "reduce"):
        decided = {d["edge"]: d["chosen"] for r in rounds[:14] for d in r["decisions"] if d["cell"] == ct}
        assert sorted(decided) == list(range(14))  # every edge once, one edge per cell type per round
        for r in rounds[:14]:
            d = next(d for d in r["decisions"] if d["cell"] == ct)
            assert len(d["scores"]) == 2 and d["measure"] == "acc"
            assert d["chosen"] == d["ops"][min(range(2), key=lambda o: (d["scores"][o], o))]  # arg min ACC\o
        kept = {}
        for r in rounds[14:]:
            d = next(d for d in r["decisions"] if d["cell"] == ct)
            (step,) = d["steps"]  # the authors' rule: each input edge's removal measured once
            assert len(step["scores"]) == d["node"] and d["rule"] == "top2"
            assert d["kept"] == [e for i, e in enumerate(step["edges"])
                                 if i in sorted(range(d["node"]), key=lambda i: (step["scores"][i], i))[:2]]
            kept[d["node"]] = d["kept"]
        assert sorted(kept) == [3, 4, 5]
        cell = genotype.normal if ct == "normal" else genotype.reduce
        edge_names = [f"{i}<-{j}" for i in range(2, 6) for j in range(i)]
        for n, node in enumerate(cell.nodes):  # the genotype is exactly the decisions
            assert len(node) == 2
            names = [f"{n + 2}<-{j}" for _, j in node]
            assert names == kept.get(n + 2, ["2<-0", "2<-1"])
            assert [op for op, _ in node] == [decided[edge_names.index(nm)] for nm in names]
    assert all(r["valid_top1_after_tuning"] is not None for r in rounds[:-1]) and rounds[-1]["valid_top1_after_tuning"] is None
    tuning = MetricsLog.read(out / "metrics.jsonl")
    assert [m["epoch"] for m in tuning] == list(range(16)) and [m["round"] for m in tuning] == list(range(16))
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["done"] == 17 + 16
    extra = state["searcher"]["model"]["_extra_state"]
    assert all(o is not None for ct in extra["decided"] for o in extra["decided"][ct])
    assert [sum(extra["removed"][ct]) for ct in ("normal", "reduce")] == [1 + 2 + 3] * 2
    assert load(str(out / "genotype.json")) == genotype
    summary = json.loads((out / "summary.json").read_text())
    assert summary["valid_top1"] == rounds[-1]["valid_top1_after_decision"] and summary["rounds"] == 17


def test_train_the_selected_genotype(darts_run, tmp_path):
    _, out, genotype = darts_run
    model = train.main(["--arch", str(out / "genotype.json"), *TINY, "--layers", "3", "--save", str(tmp_path)])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["genotype"] == str(genotype) and summary["params_M"] > 0 and model.auxiliary_head is not None


def test_blank_nb201_projection_resumes_exactly_after_a_kill(tmp_path, monkeypatch):
    search = tmp_path / "search"
    train_search.main([*TINY, "--search_space", "nb201", "--nb201_cells", "1", "--method", "blank",
                       "--save", str(search)])
    alphas = torch.load(search / "checkpoint.pt", weights_only=True)["searcher"]["model"]["alphas.cell"]
    assert torch.equal(alphas, torch.zeros(6, 5))  # DARTS+PT (fix alpha): alpha = 0 throughout
    args = ["--search_dir", str(search), "--proj_intv", "2"]
    evaluations, evaluate = [], projection.evaluate_supernet

    def spy(*a, **k):  # the selection's own evaluations, those it logs (not the masked ones of its decisions)
        out = evaluate(*a, **k)
        evaluations.append((k.get("running", False), out[0]))
        return out

    monkeypatch.setattr(projection, "evaluate_supernet", spy)
    full = projection.main(args + ["--save", str(tmp_path / "full")])
    monkeypatch.setattr(projection, "evaluate_supernet", evaluate)

    calls = {"n": 0}
    search_epoch = projection.search_epoch

    def killed(*a):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # killed in round 2's second tuning epoch
        return search_epoch(*a)

    monkeypatch.setattr(projection, "search_epoch", killed)
    with pytest.raises(KeyboardInterrupt):
        projection.main(args + ["--save", str(tmp_path / "killed")])
    monkeypatch.setattr(projection, "search_epoch", search_epoch)
    assert len(json.loads((tmp_path / "killed" / "decisions.json").read_text())) == 2
    resumed = projection.main(args + ["--save", str(tmp_path / "killed"), "--resume"])

    assert resumed == full and full.kind == "nb201" and str(full).count("~") == 6
    for name in ("decisions.json", "metrics.jsonl"):
        assert (tmp_path / "full" / name).read_text() == (tmp_path / "killed" / name).read_text()
    a, b = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=True)["searcher"]["model"] for d in ("full", "killed"))
    assert all(torch.equal(a[k], b[k]) for k in a if torch.is_tensor(a[k]))
    rounds = json.loads((tmp_path / "full" / "decisions.json").read_text())
    metrics = MetricsLog.read(tmp_path / "full" / "metrics.jsonl")
    assert len(rounds) == 6 and len(metrics) == 5 * 2
    # Fig. 6: every accuracy logged, after each decision and each tuning epoch, in evaluation mode (as the authors)
    tuned = [[m["valid_top1"] for m in metrics if m["round"] == r["round"]] for r in rounds]
    assert evaluations == [(True, v) for r, t in zip(rounds, tuned) for v in (r["valid_top1_after_decision"], *t)]
    assert [r["valid_top1_after_tuning"] for r in rounds] == [t[-1] if t else None for t in tuned]
    assert "benchmark accuracy skipped" in (tmp_path / "full" / "log.txt").read_text()
    assert load(str(tmp_path / "full" / "genotype.json")) == full


def test_projection_refuses_what_is_not_a_finished_search(tmp_path):
    with pytest.raises(SystemExit) as e:
        projection.main(["--search_dir", str(tmp_path)])
    assert e.value.code == 2


def test_unrolled_search_keeps_snapshots_and_the_selection_starts_from_one(tmp_path):
    """--save_epochs keeps the super-net after those epochs (Fig. 4, 8); projection.py --from_epoch selects
    on it. With --unrolled the tuning between decisions takes the second-order step, which raised "not
    used in the graph" once an edge was decided."""
    search = tmp_path / "search"
    train_search.main([*TINY, "--search_space", "nb201", "--nb201_cells", "1", "--unrolled", "--epochs", "2",
                       "--save_epochs", "1", "2", "--save", str(search)])
    first, last = (torch.load(search / f"checkpoint_epoch{e}.pt", weights_only=True) for e in (1, 2))
    record = MetricsLog.read(search / "metrics.jsonl")[0]
    assert first["epoch"] == 1 and torch.allclose(F.softmax(first["searcher"]["model"]["alphas.cell"], -1),
                                                  torch.tensor(record["alphas"]["cell"]))
    final = torch.load(search / "checkpoint.pt", weights_only=True)["searcher"]["model"]
    assert all(torch.equal(v, final[k]) for k, v in last["searcher"]["model"].items() if torch.is_tensor(v))
    genotype = projection.main(["--search_dir", str(search), "--from_epoch", "1", "--proj_intv", "1"])
    out = search / "projection_pt_epoch1"
    assert json.loads((out / "genotype.json").read_text())["from_epoch"] == 1
    assert load(str(out / "genotype.json")) == genotype
    tuning = MetricsLog.read(out / "metrics.jsonl")
    assert len(tuning) == 5 and all("arch_loss" in m for m in tuning)  # alpha trained, second order
    with pytest.raises(SystemExit) as e:
        projection.main(["--search_dir", str(search), "--from_epoch", "3"])
    assert e.value.code == 2 and not (search / "projection_pt_epoch3").exists()


def test_sgas_search_decides_its_edges_by_its_criterion(tmp_path):
    """SGAS (App. A.1.3; with --selection pt, SGAS+PT of Table 2): each epoch's decision takes the open
    edge with the best Criterion-1 score, a node with two decided inputs loses the others, and the
    search's genotype is exactly the decisions; projection.py refuses the run (nothing left to select)."""
    search = tmp_path / "sgas"
    genotype = train_search.main([*TINY, "--layers", "3", "--method", "sgas", "--selection", "mag",
                                  "--warmup_dec_epoch", "0", "--decision_freq", "1", "--epochs", "8",
                                  "--save", str(search)])
    records = MetricsLog.read(search / "metrics.jsonl")
    names = [f"{i}<-{j}" for i in range(2, 6) for j in range(i)]
    for ct, cell in (("normal", genotype.normal), ("reduce", genotype.reduce)):
        open_edges, chosen = set(range(14)), {}
        for r in records:  # a decision at the end of every epoch here
            (d,) = [d for d in r["decisions"] if d["cell"] == ct]
            assert d["edge"] == max(sorted(open_edges), key=lambda e: (d["edge_scores"][e], -e))
            assert d["chosen"] == d["ops"][min(range(1, 8), key=lambda o: (-d["alpha"][o], o))]
            chosen[d["name"]] = d["chosen"]
            open_edges -= {d["edge"], *map(names.index, d["pruned"])}
        assert not open_edges
        assert {f"{n + 2}<-{j}": op for n, node in enumerate(cell.nodes) for op, j in node} == chosen
    assert json.loads((search / "summary.json").read_text())["method"] == "darts_pt/sgas+mag"
    with pytest.raises(SystemExit) as e:
        projection.main(["--search_dir", str(search)])
    assert e.value.code == 2


def test_nb201_accuracies_come_from_the_benchmark_when_it_is_installed(tmp_path, monkeypatch):
    """Fig. 4, 8 and Table 4: with the nas-bench-201 package and file, the search records every epoch the
    benchmark's accuracies of its magnitude-selected cell (DARTS' curve), the selection those of its cell;
    without them (Table 4's other way) train.py trains the cell with NAS-Bench-201's protocol."""
    class API:
        def __init__(self, path, verbose):
            pass

        def query_index_by_arch(self, arch):
            return sum(map(ord, arch))

        def get_more_info(self, index, dataset, is_random, hp):
            return {"test-accuracy": index % 97 + len(dataset)}

    def accuracy(arch):
        return {ds: sum(map(ord, arch)) % 97 + len(ds) for ds in ("cifar10", "cifar100", "ImageNet16-120")}

    monkeypatch.setitem(sys.modules, "nas_201_api", types.SimpleNamespace(NASBench201API=API))
    (tmp_path / "nb201.pth").write_bytes(b"")
    search = tmp_path / "search"
    train_search.main([*TINY, "--search_space", "nb201", "--nb201_cells", "1", "--epochs", "2",
                       "--nb201_benchmark", str(tmp_path / "nb201.pth"), "--save", str(search)])
    records = MetricsLog.read(search / "metrics.jsonl")
    assert [r["nb201_test_accuracy"] for r in records] == [accuracy(r["genotype"]) for r in records]
    genotype = projection.main(["--search_dir", str(search), "--proj_intv", "0"])
    assert json.loads((search / "projection_pt" / "genotype.json").read_text())["nb201_test_accuracy"] == \
        accuracy(str(genotype))
    train.main(["--arch", str(search / "projection_pt" / "genotype.json"), *TINY, "--save", str(tmp_path / "eval")])
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["genotype"] == str(genotype)

    # nb201_lookup.py, the reproduction's evaluation when the benchmark is there: the accuracy the selection
    # recorded (the benchmark is not read again: its package is gone here), else one looked up in the file
    def lookup(arch, dataset, *flags):
        nb201_lookup.main(["--arch", str(arch), "--dataset", dataset, *flags, "--save", str(tmp_path / dataset)])
        return json.loads((tmp_path / dataset / "summary.json").read_text())

    monkeypatch.setitem(sys.modules, "nas_201_api", None)
    found = lookup(search / "projection_pt" / "genotype.json", "cifar100")
    assert found["final_top1"] == accuracy(str(genotype))["cifar100"] and found["params_M"] > 0
    assert found["evaluated_by"] == "NAS-Bench-201 (200 epochs)"
    with pytest.raises(SystemExit):  # the search's cell has no recorded accuracy, and there is no benchmark
        lookup(search / "genotype.json", "cifar10", "--nb201_benchmark", str(tmp_path / "nb201.pth"))
    assert not (tmp_path / "cifar10").exists()
    monkeypatch.setitem(sys.modules, "nas_201_api", types.SimpleNamespace(NASBench201API=API))
    found = lookup(search / "genotype.json", "cifar10", "--nb201_benchmark", str(tmp_path / "nb201.pth"))
    assert found["final_top1"] == accuracy(records[-1]["genotype"])["cifar10"]


def test_the_selection_logs_the_super_nets_accuracy_in_evaluation_mode(darts_run):
    """Fig. 6: the validation accuracy the selection logs is the super-net's in evaluation mode (BN's
    running statistics), as the authors' code logs it, not the batch statistics that score a masked op."""
    search, out, _ = darts_run
    args = projection.parse_args(["--search_dir", str(search)])
    _, valid_queue, classes = search_loaders(args)
    searcher = train_search.Searcher(args, classes, torch.device("cpu"))
    searcher.start_tuning(args.proj_lr)
    searcher.load_state_dict(torch.load(out / "checkpoint.pt", weights_only=True)["searcher"])
    running, batch = (evaluate_supernet(searcher.model, valid_queue, running=r)[0] for r in (True, False))
    assert running != batch  # the two readings differ here
    assert json.loads((out / "summary.json").read_text())["valid_top1"] == running  # after the last decision
