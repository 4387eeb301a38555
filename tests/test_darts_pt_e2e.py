"""DARTS-PT end to end on the synthetic data: the search as a user types it, the perturbation-based
selection on its run folder, training the result; the blank super-net on NAS-Bench-201 with a
projection killed and resumed."""
import json

import pytest
import torch

from common.genotypes import load
from common.utils import MetricsLog
from conftest import SMALL, run
from darts_pt import projection, train, train_search

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
    assert load(str(search / "genotype.json")).kind == "darts"


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
            assert len(d["kept"]) == 2 and len(d["steps"]) == d["node"] - 2
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
    full = projection.main(args + ["--save", str(tmp_path / "full")])

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
    assert len(rounds) == 6 and len(MetricsLog.read(tmp_path / "full" / "metrics.jsonl")) == 5 * 2
    assert "benchmark accuracy skipped" in (tmp_path / "full" / "log.txt").read_text()
    assert load(str(tmp_path / "full" / "genotype.json")) == full


def test_projection_refuses_what_is_not_a_finished_search(tmp_path):
    with pytest.raises(SystemExit) as e:
        projection.main(["--search_dir", str(tmp_path)])
    assert e.value.code == 2
