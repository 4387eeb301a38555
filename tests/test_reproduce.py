"""The experiment registry: every row and figure of the papers has an entry, and the plan built from
it is a consistent DAG."""
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from reproduce import figures, select, summary
from reproduce.experiments import EXPERIMENTS
from reproduce.registry import Context, Figure, Plan, PlanError, Row, Search, Select, Train, kind, plan

PAPER = summary.paper_results()
ROWS = [e for e in EXPERIMENTS if isinstance(e, Row)]
FIGURES = [e for e in EXPERIMENTS if isinstance(e, Figure)]
FULL = Context(data="/data", imagenet="/imagenet", voc="/voc")


def test_paper_rows_are_unique():
    keys = Counter((p["method"], p["row"], p["dataset"]) for p in PAPER)
    assert [k for k, n in keys.items() if n > 1] == []


def test_every_non_baseline_row_of_the_papers_has_an_experiment():
    ours = {r.key for r in ROWS}
    missing = [(p["method"], p["source"], p["row"], p["dataset"]) for p in PAPER
               if not p["baseline"] and (p["method"], p["row"], p["dataset"]) not in ours]
    assert missing == []


def test_every_experiment_names_a_paper_row_or_a_figure():
    printed = {(p["method"], p["row"], p["dataset"]) for p in PAPER}
    in_figures = {r.key for f in FIGURES for r in f.rows}
    assert [r.key for r in ROWS if r.key not in printed and r.key not in in_figures] == []
    for f in FIGURES:
        assert f.rows and f.kind in ("points", "curves") and f.figure.startswith("Fig.")
        assert all(r in ROWS for r in f.rows), f"{f.figure}: a row of the figure is not in EXPERIMENTS"


def _check_dag(p):
    seen = set()
    for s in p.stages.values():
        assert all(d in seen for d in s.deps), f"{s.name} depends on a stage planned after it"
        seen.add(s.name)
        for a in s.argv:  # every folder a command reads is a stage it depends on
            if a.startswith("{out}/"):
                folder = a[len("{out}/"):]
                assert any(folder == d or folder.startswith(d + "/") for d in s.deps), (s.name, a)


def test_full_plan_is_a_dag_with_every_row():
    p = plan(EXPERIMENTS, FULL)
    _check_dag(p)
    assert set(p.rows) == {r.key for r in ROWS} and p.skipped == []
    searches = [s for s in p.stages.values() if s.kind == "search"]
    assert len({s.name for s in searches}) == len(searches)


def test_without_imagenet_its_rows_are_skipped_not_failed():
    p = plan(EXPERIMENTS, Context(data="/data"))
    skipped = {r.key for r, _ in p.skipped}
    assert skipped == {r.key for r in ROWS if "imagenet" in (r.dataset, r.search and r.search.dataset)
                       or "voc" in (r.dataset,)}


def test_smoke_plan_keeps_one_row_of_every_kind_and_is_small():
    p = plan(EXPERIMENTS, Context(smoke=True))
    _check_dag(p)
    assert {kind(r) for r in ROWS} == {kind(r) for r in ROWS if r.key in p.rows}
    assert all(s.gpus <= 1 for s in p.stages.values())
    for s in p.stages.values():
        if s.kind in ("search", "train"):
            assert "synthetic" in s.argv and "--epochs" in s.argv


def test_two_entries_that_define_one_stage_differently_are_refused():
    a = Row("msg_das", "Table 1", "a", search=Search("msg_das", "x", ("--K", "2")), train=Train())
    b = Row("msg_das", "Table 1", "b", search=Search("msg_das", "x", ("--K", "3")), train=Train())
    with pytest.raises(PlanError, match="differently"):
        plan([a, b], FULL)
    with pytest.raises(PlanError, match="two rows"):
        plan([a, a], FULL)


def test_rows_sharing_a_search_share_its_stages():
    s = Search("msg_das", "x", seeds=(0, 1))
    rows = [Row("msg_das", "T", "a", search=s, train=Train()), Row("msg_das", "T", "b", search=s, train=Train()),
            Row("msg_das", "T", "c", search=s, select=Select("search:valid_top1"), train=Train(seeds=(0, 1, 2)))]
    p = plan(rows, FULL)
    assert [n for n, st in p.stages.items() if st.kind == "search"] == ["msg_das/x/s0", "msg_das/x/s1"]
    assert p.stages["msg_das/x/s0"].rows == [r.key for r in rows]
    assert p.rows[rows[2].key][1]["trainings"] == [f"msg_das/x/select-search-valid_top1-cifar10-e{e}" for e in range(3)]


def test_selection_uses_validation_never_test(tmp_path):
    genos, trainings = [], []
    for i, (valid, test) in enumerate(((60.0, 90.0), (70.0, 10.0))):
        t = tmp_path / f"t{i}"
        t.mkdir()
        (t / "summary.json").write_text(json.dumps({"final_valid_top1": valid, "final_top1": test}))
        trainings.append(str(t))
        genos.append("DARTS_V2" if i == 0 else "PC_DARTS_cifar")
    i, values, key = select.choose("valid", genos, trainings)
    assert (i, values, key) == (1, [60.0, 70.0], "final_valid_top1")
    select.main(["--rule", "valid", "--genotypes", *genos, "--trainings", *trainings, "--save", str(tmp_path / "s")])
    out = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert out["chosen"] == "PC_DARTS_cifar" and (tmp_path / "s" / "genotype.json").exists()


def test_summary_uses_the_sample_std(tmp_path):
    errs, params, madds = [2.0, 3.0, 4.0], [3.5, 3.7, 3.9], [566, 580, 594]
    names = []
    for i, e in enumerate(errs):
        (tmp_path / f"t{i}").mkdir()
        (tmp_path / f"t{i}" / "summary.json").write_text(json.dumps(
            {"final_top1": 100 - e, "final_top5": 99 - e, "params_M": params[i], "mult_adds_M": madds[i]}))
        names.append(f"t{i}")
    parts = {"searches": [], "steps": [], "select": None, "short": [], "trainings": names, "measures": []}
    stages = [{"name": n, "argv": ["-m", "common.train_eval", "--arch", "DARTS_V2"]} for n in names]
    r = summary.row_results(tmp_path, parts, stages)
    assert r["test_error"] == pytest.approx(3.0) and r["test_error_std"] == pytest.approx(1.0)  # n-1
    assert r["test_error_best"] == 2.0 and r["finished"] == 3 and r["top5_error"] == pytest.approx(4.0)
    # the spread of parameters and multiply-adds over the trainings (DARTS-PD's † row: 3.7 ± 0.2, 580 ± 14)
    assert (r["params_M"], r["params_M_std"]) == (pytest.approx(3.7), pytest.approx(0.2))
    assert (r["mult_adds_M"], r["mult_adds_M_std"]) == (pytest.approx(580), pytest.approx(14))
    row = {"row": "x", "dataset": "cifar10", "baseline": False, "ours": r,
           "paper": {"test_error": 2.48, "test_error_std": 0.09, "params_M": 3.7, "params_M_std": 0.2,
                     "mult_adds_M": 580, "mult_adds_M_std": 14}}
    line = summary.markdown([{"paper": "darts_pd", "table": "Table 1", "rows": [row]}]).splitlines()[-1]
    assert "| 3.70 ± 0.20 / 3.70 ± 0.20 | 580 ± 14 / 580 ± 14 |" in line and "top-5" not in line  # CIFAR: no top-5




def test_curves_of_the_best_value_so_far(tmp_path):
    """`running="max"` (D-DARTS Fig. 5, "the best validation top-1 ... w.r.t. the current epoch"): each
    search's running maximum, then the mean over the searches; without it, the values themselves."""
    row = Row("d_darts", "Fig. 5", "x", search=Search("d_darts", "x", seeds=(0, 1)))
    for seed, accs in ((0, [10, 30, 20, 40]), (1, [20, 10, 50, 30])):
        (tmp_path / f"s{seed}").mkdir()
        (tmp_path / f"s{seed}" / "metrics.jsonl").write_text(
            "".join(json.dumps({"epoch": e, "valid_top1": a}) + "\n" for e, a in enumerate(accs)))
    parts = {row.key: {"searches": ["s0", "s1"]}}
    for running, want in (("max", [15, 25, 40, 45]), ("", [15, 20, 35, 35])):
        fig = Figure("d_darts", "Fig. 5", "t", "curves", (row,), y=("valid_top1",), running=running)
        [series] = figures.figure_data(fig, {}, tmp_path, parts)["series"]
        assert [y for _, y in series["points"]] == want


# ---------------------------------------------------------------- D-DARTS

D_DARTS = [r for r in ROWS if r.paper == "d_darts"]


def _d_darts_args(stage):
    """The arguments a D-DARTS stage's script runs with (its own parser and defaults)."""
    from common import train_eval
    from d_darts import train, train_search
    script, *argv = stage.argv
    if script == "d_darts/train.py":
        return train_eval.parse_args(argv, cifar=train.CIFAR, imagenet=train.IMAGENET)
    assert script == "d_darts/train_search.py", stage.name
    return train_search.parse_args(argv)


def test_d_darts_tables_are_run_as_the_paper_prints_them():
    """Tables 1-3: each row's search has the loss it prints (L_F: w_abl 0; L_T: L_AB added as a constant, as
    the code behind the numbers) on its 'searched on' dataset; its trainings use the parsing and the layers
    it prints (14: Alg. 1; Table 3's DD-2 is sparse), on its dataset, with AMP; 4 trainings (best of 4) in
    Tables 1-2, one in Table 3."""
    p = plan(D_DARTS, FULL)
    printed = {(q["row"], q["dataset"]): q for q in PAPER if q["method"] == "d_darts" and not q["baseline"]}
    tables = {(row, dataset): parts for (_, row, dataset), (table, parts) in p.rows.items()
              if table.startswith("Table")}
    assert set(tables) == set(printed)
    for key, parts in tables.items():
        paper = printed[key]
        parsing, loss, layers = re.search(r"parsing '(\w+)', loss (L_\w), (\d+) layers", paper["note"]).groups()
        [search] = [_d_darts_args(p.stages[s]) for s in parts["searches"]]
        assert (search.dataset, search.w_abl == 0, search.ablation_loss) == (paper["search_dataset"], loss == "L_F",
                                                                              "constant"), key
        assert (search.layers, search.epochs, search.batch_size, search.threshold) == (8, 50, 72, 0.8), key
        trainings = [_d_darts_args(p.stages[t]) for t in parts["trainings"]]
        assert {Path(t.arch).name for t in trainings} == {f"genotype_{parsing}.json"}, key
        assert all((t.dataset, t.layers, t.amp) == (key[1], int(layers), True) for t in trainings), key
        assert all(t.epochs == (400 if key[1] == "imagenet" else 600) for t in trainings), key
        assert sorted(t.seed for t in trainings) == ([0] if key[1] == "imagenet" else [0, 1, 2, 3]), key


def test_d_darts_figures_sweep_the_papers_weights():
    """Fig. 3: CIFAR-100 searches with L01 off and w_abl = x, L_AB differentiable (the only form in which
    w_abl moves the alphas); Fig. 4: w01 = x with w_abl 0.5; each point's numbers from its own search.
    --smoke runs one point of each sweep (the points differ in numbers only), Fig. 3's with w_abl > 0."""
    p = plan(D_DARTS, FULL)
    for fig, xkey in (("Fig. 3", "w_abl"), ("Fig. 4", "w01")):
        rows = [r for r in D_DARTS if r.table == fig]
        assert len({r.x[xkey] for r in rows}) == len(rows) > 5
        for r in rows:
            parts = p.rows[r.key][1]
            [search] = parts["searches"]
            args = _d_darts_args(p.stages[search])
            assert args.dataset == "cifar100" and getattr(args, xkey) == r.x[xkey], r.key
            other = (args.w01, args.ablation_loss) if fig == "Fig. 3" else (args.w_abl, args.ablation_loss)
            assert other == ((0, "differentiable") if fig == "Fig. 3" else (0.5, "constant")), r.key
            [measure] = [p.stages[m] for m in parts["measures"]]
            assert measure.argv[measure.argv.index("--search_dirs") + 1:] == (Plan.path(search),), r.key
    smoke = plan(D_DARTS, Context(smoke=True))
    in_smoke = {fig: [r.x for r in D_DARTS if r.table == fig and r.key in smoke.rows] for fig in ("Fig. 3", "Fig. 4")}
    # (Fig. 4's w01 = 7 is the DD-4 / DD-5 search, a kind of its own)
    assert in_smoke == {"Fig. 3": [{"w_abl": 0.5}], "Fig. 4": [{"w01": 0}, {"w01": 7}]}


# ---------------------------------------------------------------- DARTS-PD

def _argv(p, name):
    return " ".join(p.stages[name].argv)


def test_darts_pd_rows_train_each_runs_best_and_choose_darts_pd_a_on_validation_among_ranked_entries():
    p = plan([r for r in ROWS if r.paper == "darts_pd"], FULL)
    runs = [f"darts_pd/cifar10/s{s}" for s in (0, 1, 2)]
    dagger = p.rows[("darts_pd", "DARTS-PD†(ours)", "cifar10")][1]  # Table 1 †: each run's best trained once
    assert dagger["searches"] == runs and dagger["select"] is None
    assert dagger["trainings"] == [f"{r}-cifar10-e{s}" for s, r in enumerate(runs)]
    assert all(f"--arch {{out}}/{r}/genotype.json " in _argv(p, t) for r, t in zip(runs, dagger["trainings"]))
    a = p.rows[("darts_pd", "DARTS-PD-a(ours)", "cifar10")][1]  # the same runs, their 4 fittest bucket entries
    assert a["searches"] == runs
    entries = [f"{{out}}/{r}/buckets/rank-{i}.json" for r in runs for i in range(4)]
    assert [_argv(p, t).split("--arch ")[1].split()[0] for t in a["short"]] == entries
    assert all("--valid_size" in p.stages[t].argv and "darts_pd/train.py" in p.stages[t].argv for t in a["short"])
    select = p.stages[a["select"]].argv  # DARTS' protocol: the held-out validation accuracy, never the test set
    assert select[select.index("--rule") + 1] == "valid"
    assert select[select.index("--genotypes") + 1:] == tuple(entries)
    assert select[select.index("--trainings") + 1:select.index("--genotypes")] == tuple(map(p.path, a["short"]))
    assert a["trainings"] == [f"{a['select']}-cifar10-e0"] and f"{{out}}/{a['select']}/genotype.json" in _argv(
        p, a["trainings"][0])
    big = p.rows[("darts_pd", "DARTS-PD-A(ours)", "imagenet")][1]  # Table 2: one search on ImageNet, 8 GPUs
    (search,), (train,) = big["searches"], big["trainings"]
    assert p.stages[search].gpus == 8 and "--dataset imagenet" in _argv(p, search) and "--seed 2" in _argv(p, search)
    assert "--dataset imagenet" in _argv(p, train) and f"--arch {{out}}/{search}/genotype.json" in _argv(p, train)


def test_darts_pd_smoke_plan_is_one_cifar_search_with_two_candidates():
    p = plan([r for r in ROWS if r.paper == "darts_pd"], Context(smoke=True))
    a = p.rows[("darts_pd", "DARTS-PD-a(ours)", "cifar10")][1]
    assert a["searches"] == ["darts_pd/cifar10/s0"] and len(a["short"]) == 2
    assert [s.kind for s in p.stages.values()].count("search") == 2 and len(p.stages) == 8


def test_baselines_train_the_published_cells_by_their_papers_protocols():
    from common import train_eval
    p = plan([r for r in ROWS if r.paper == "baselines"], FULL)
    cifar = {k[1]: parts["trainings"] for k, (_, parts) in p.rows.items() if k[2] == "cifar10"}
    assert {k: len(v) for k, v in cifar.items()} == {"DARTS_V2": 10, "PC_DARTS_cifar": 10}  # DARTS: 10 runs
    for smoke in (False, True):  # every training's flags pass train_eval's checks (smoke: 1 epoch)
        p = plan([r for r in ROWS if r.paper == "baselines"], Context(smoke=smoke, data="/d", imagenet="/i"))
        for s in p.stages.values():
            args = train_eval.parse_args([a for a in s.argv[2:] if a != "--download"])
            train_eval.check_args(args)
            name = s.name.split("/")[-1]
            pc = name.startswith("PC_DARTS")
            if not smoke and "cifar10" in name:
                assert args.drop_path_prob == (0.3 if pc else 0.2)
            if not smoke and "imagenet" in name:
                assert (args.batch_size, args.learning_rate, args.lr_scheduler, args.warmup_epochs) == (
                    (1024, 0.5, "linear", 5) if pc else (128, 0.1, "step", 0))
