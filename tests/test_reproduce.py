"""The experiment registry: every row and figure of the papers has an entry, and the plan built from
it is a consistent DAG."""
import functools
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from conftest import SMALL
from reproduce import figures, select, summary
from reproduce.experiments import EXPERIMENTS
from reproduce.registry import (Context, Figure, Lookup, Plan, PlanError, Row, Search, Select, Step, Train, kind,
                                plan, to_json)

PAPER = summary.paper_results()
ROWS = [e for e in EXPERIMENTS if isinstance(e, Row)]
FIGURES = [e for e in EXPERIMENTS if isinstance(e, Figure)]
FULL = Context(data="/data", imagenet="/imagenet", imagenet16="/in16", voc="/voc")


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
        assert f.rows and f.kind in ("points", "curves", "edges") and f.figure.startswith("Fig.")
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
                       or r.dataset in ("voc", "imagenet16-120")}


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


# ---------------------------------------------------------------- MSG-DAS

MSG_DAS = [r for r in ROWS if r.paper == "msg_das"]


def _msg_das_args(stage):
    """The arguments an MSG-DAS stage's script runs with (its own parser and defaults)."""
    from msg_das import train, train_search
    script, *argv = stage.argv
    return {"msg_das/train_search.py": train_search.parse_args, "msg_das/train.py": train.parse_args}[script](argv)


def test_msg_das_rows_are_run_as_the_paper_prints_them():
    """Every CIFAR-10 row: three searches, seeds 0, 1, 2 (Sec. 4.4), 240 epochs, with the K, lambda (Eq. 7) and
    search batch its label or figure point names (Table 3's ✓s: Multi Graph is K = 2 against 1, Super-net
    Guidance lambda 0.01 against 0, Dropblock-Identity always on; Table 4: lambda; Fig. 3: K at B = 64, lambda
    0 but the mutual-learning point's 0.01), each search's cell trained once with its seed by Sec. 4.2's
    protocol (20 cells, 36 channels, 600 epochs, batch 64). Table 2: one of Table 1's B = 128 cells, chosen
    by DARTS' held-out validation protocol (never the test set), trained in Sec. 4.2's ImageNet setting."""
    p = plan(MSG_DAS, FULL)
    for r in MSG_DAS:
        parts = p.rows[r.key][1]
        searches = [_msg_das_args(p.stages[s]) for s in parts["searches"]]
        if r.table == "Table 3":
            _, graphs, guide = (c.split()[-1] for c in r.row.split(" / "))
            want = (2 if graphs == "✓" else 1, 0.01 if guide == "✓" else 0.0, 128)
        elif r.table == "Table 4":
            want = (2, float(r.row.split("= ")[1]), 128)
        elif r.table == "Fig. 3":
            want = (r.x["K"], 0.01 if r.x["series"] == "λ=0.01" else 0.0, 64)
        else:  # Table 1, Sec. 4.4, Table 2: the main method at the batch of its label (Table 2: Table 1's B=128)
            want = (2, 0.01, int(re.search(r"B=(\d+)", r.row).group(1)) if "B=" in r.row else 128)
        assert {(a.K, a.lambda_guide, a.batch_size) for a in searches} == {want}, r.key
        assert [(a.seed, a.epochs, a.dataset) for a in searches] == [(s, 240, "cifar10") for s in (0, 1, 2)], r.key
        assert all(a.drop_block_prob > 0 and not a.peer_loss for a in searches), r.key
        trainings = [_msg_das_args(p.stages[t]) for t in parts["trainings"]]
        if r.dataset == "cifar10":
            assert parts["select"] is None and [(Path(t.arch).parent.name, t.seed) for t in trainings] == [
                (f"s{s}", s) for s in (0, 1, 2)], r.key
            assert {(t.layers, t.init_channels, t.epochs, t.batch_size, t.auxiliary, t.cutout, t.drop_path_prob)
                    for t in trainings} == {(20, 36, 600, 64, True, True, 0.2)}, r.key
            continue
        assert parts["select"] is not None, r.key
        select = p.stages[parts["select"]].argv
        assert select[select.index("--rule") + 1] == "valid", r.key
        assert select[select.index("--genotypes") + 1:] == tuple(f"{{out}}/msg_das/b128/s{s}/genotype.json"
                                                                 for s in (0, 1, 2))
        short = [_msg_das_args(p.stages[s]) for s in parts["short"]]
        assert {(a.epochs, a.valid_size, a.dataset) for a in short} == {(100, 25000, "cifar10")}
        [t] = trainings
        assert (t.dataset, t.layers, t.init_channels, t.epochs, t.batch_size, t.label_smooth, t.auxiliary) == (
            "imagenet", 14, 48, 250, 256, 0.1, True)
        assert t.arch == f"{{out}}/{parts['select']}/genotype.json"


def test_msg_das_tables_list_their_rows_as_printed():
    """paper_results.json holds every row of MSG-DAS' tables, the baselines they compare with too, in the
    printed order (the summary lays each table out in this order)."""
    rows = {}
    for q in PAPER:
        if q["method"] == "msg_das":
            rows.setdefault(summary.table_of(q["source"]), []).append(q["row"])
    cells = [f"Pseudo Identity {a} / Multi Graph {b} / Super-net Guidance {c}"
             for a, b, c in ("–––", "✓––", "✓✓–", "✓–✓", "✓✓✓")]
    assert rows["Table 1"] == ["ResNet", "DenseNet-BC", "NASNet-A", "AmeobaNet-B", "ENAS", "ProxylessNAS",
                               "DARTS (1st order)", "DARTS (2nd order)", "GDAS", "SNAS (moderate)", "PC-DARTS",
                               "P-DARTS", "R-DARTS", "SDARTS-ADV", "Fair-DARTS", "DARTS-", "TE-NAS",
                               "MSG-DAS (B=128)", "MSG-DAS (B=160)"]
    assert rows["Table 2"] == ["MobileNet", "MobileNet-v2", "ShuffleNet-v2", "NASNet-A", "MnasNet", "AmeobaNet-C",
                               "MobileNet-v3-large", "EfficientNet", "FBNET-A", "SinglePath-NAS", "ProxylessNAS (GPU)",
                               "DARTS", "GDAS", "SNAS (mild)", "DARTS-", "TE-NAS", "RLNAS", "MSG-DAS"]
    assert rows["Table 3"] == cells
    assert rows["Table 4"] == [f"KL weight λ = {v}" for v in ("0", "1e-2", "1e-1", "1")]
    baselines = {q["row"] for q in PAPER if q["method"] == "msg_das" and q["baseline"]}
    assert baselines == set(rows["Table 1"][:17]) | set(rows["Table 2"][:17]) | {cells[0]}
    # the printed ± of the parameters, where the paper prints one, is the paper's params_M_std
    stds = {q["row"]: q.get("params_M_std") for q in PAPER if q["method"] == "msg_das" and q["dataset"] == "cifar10"}
    assert [stds[r] for r in cells[1:]] == [0.2, 0.03, 0.18, 0.09] and stds["MSG-DAS (B=128)"] == 0.09
    assert [stds[f"KL weight λ = {v}"] for v in ("0", "1e-2", "1e-1", "1")] == [0.03, 0.09, 0.24, 0.16]


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


# ---------------------------------------------------------------- EnTranNAS

def test_entrannas_table5_segments_table4s_imagenet_networks():
    """Table 5's backbones are Table 4's searches and ImageNet trainings (the same stages: the
    training runs on ImageNet though the row is a VOC row); in smoke mode the backbone starts random."""
    p = plan(EXPERIMENTS, FULL)
    train = "entrannas/dst-imagenet-0.1/s0-imagenet-e0"
    assert p.stages["entrannas/measure/seg-dst-0.1"].argv == (
        "entrannas/segmentation.py", "--dataset", "voc2012", "--data", "/voc",
        "--arch", "{out}/entrannas/dst-imagenet-0.1/s0/genotype.json", "--backbone", f"{{out}}/{train}/checkpoint.pt")
    assert "--dataset imagenet --data /imagenet" in " ".join(p.stages[train].argv)
    assert {k[2] for k in p.stages[train].rows} == {"imagenet", "voc"}  # Table 4's row and Table 5's
    smoke = plan(EXPERIMENTS, Context(smoke=True)).stages["entrannas/measure/seg-dst-0.2"].argv
    assert "--backbone" not in smoke and smoke[1:3] == ("--dataset", "synthetic_seg")
    # VOC without ImageNet: the rows whose backbones train on ImageNet wait for --imagenet, ResNet-50 runs
    voc_only = plan(EXPERIMENTS, Context(data="/data", voc="/voc"))
    assert {r.row: why for r, why in voc_only.skipped if r.table == "Table 5"} == {
        "NASNet-A": "needs --imagenet (where its data is)", "DARTS": "needs --imagenet (where its data is)",
        **{f"EnTranNAS-DST (λ = {lam})": "needs --imagenet (where its data is)" for lam in (0.2, 0.1, 0.05)}}


def test_entrannas_table2_pairs_each_search_with_its_retraining():
    """Kendall tau over six seeds: the i-th search beside the i-th retraining; PC-DARTS' super-nets
    are DARTS-PD's stage-1 folders, a search that is finished when stage1/summary.json is."""
    p = plan(EXPERIMENTS, FULL)
    for name, search, sub in (("kendall-entrannas", "entrannas/plain", ""), ("kendall-pc-darts", "darts_pd/pc-darts",
                                                                             "/stage1")):
        argv = p.stages[f"entrannas/measure/{name}"].argv
        i, j = argv.index("--search"), argv.index("--retrained")
        assert argv[i + 1:j] == tuple(f"{{out}}/{search}/s{s}{sub}" for s in range(6))
        assert argv[j + 1:] == tuple(f"{{out}}/{search}/s{s}-cifar10-e0" for s in range(6))
    assert p.stages["darts_pd/pc-darts/s5"].done == "stage1/summary.json"
    assert p.stages["darts_pd/pc-darts/s5-cifar10-e0"].argv[:3] == (
        "darts_pd/train.py", "--arch", "{out}/darts_pd/pc-darts/s5/stage1/genotype.json")


def test_entrannas_smoke_runs_each_measurement_once_whatever_it_is_given():
    """Rows whose measurements differ only in what they are given (Table 3's configurations, Table 5's
    published cells) are one kind: the smoke run keeps one of them."""
    smoke = plan(EXPERIMENTS, Context(smoke=True)).rows
    kept = Counter(table for (paper, _, _), (table, _) in smoke.items() if paper == "entrannas")
    assert kept["Table 3"] == 1 and kept["Table 5"] == 3  # one configuration; ResNet-50, a published cell, DST
    assert kept["Table 2"] == 4 and kept["Table 4"] == 1


def test_entrannas_table1_reports_what_finished_searches_logged_beside_the_paper(tmp_path):
    rows = [r for r in ROWS if r.paper == "entrannas" and r.table == "Table 1"]
    (tmp_path / "plan.json").write_text(json.dumps(to_json(plan(rows, FULL))))
    run = tmp_path / "entrannas" / "plain" / "s0"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (
        {"epoch": 0, "valid_top1": 50.0}, {"epoch": 1, "supernet_valid_top1": 86.5, "childnet_valid_top1": 85.0})))

    def first():
        tables, _ = summary.summarize(tmp_path)
        table = next(t for t in tables if (t["paper"], t["table"]) == ("entrannas", "Table 1"))
        assert [r["row"] for r in table["rows"]] == ["all (DARTS)", "one half", "last", "first"]
        return table["rows"][-1], tables

    assert first()[0]["ours"]["measures"] == {}  # not finished yet: nothing reported
    (run / "summary.json").write_text(json.dumps({"search_time_s": 10.0}))
    row, tables = first()
    assert row["ours"]["measures"] == {"supernet_valid_top1": 86.5, "childnet_valid_top1": 85.0}
    assert "supernet_valid_top1 86.500 / 86.680, childnet_valid_top1 85.000 / 86.240" in summary.markdown(tables)


def test_entrannas_fig5_plots_error_against_measured_size():
    fig = next(f for f in FIGURES if f.figure == "Fig. 5 (right)")
    results = {r.key: {"test_error": e, "mult_adds_M": m}
               for r, e, m in zip(fig.rows, (26.0, 25.0, 24.0), (580, 670, 780))}
    paper = {(p["method"], p["row"], p["dataset"]): p for p in PAPER}
    data = figures.figure_data(fig, results, "unused", {}, paper)
    assert [p[:2] for p in data["series"][0]["points"]] == [(580, 26.0), (670, 25.0), (780, 24.0)]
    assert data["series"][0]["paper"] == []  # the paper plots these errors without printing them


def test_entrannas_best_of_five_by_the_child_nets_validation_accuracy(tmp_path):
    """Tables 6, 7: "We run our search for 5 times and choose the architecture with the best validation
    accuracy" (Sec. 4.2; Table 7 †: "the best from five implementations", DST with lambda 0.2 on ImageNet):
    five searches, seeds 0-4, the child-net's clean top-1 on the search's validation half after the last
    epoch chooses (neither the super-net's training-mode accuracy nor the test set); the chosen cell is
    trained 5 times on CIFAR-10 (Table 6), once on ImageNet (Table 7). Table 7's CIFAR-10 row transfers
    Table 6's choice."""
    from entrannas import train_search
    p = plan([r for r in ROWS if r.paper == "entrannas"], FULL)
    rows = {r.row: p.rows[r.key][1] for r in ROWS if r.paper == "entrannas" and r.table in ("Table 6", "Table 7")}
    for label, parts in rows.items():
        if label == "EnTranNAS (ImageNet)":  # one search, nothing to choose
            assert parts["select"] is None and len(parts["searches"]) == 1
            continue
        searches = [train_search.parse_args(p.stages[s].argv[1:]) for s in parts["searches"]]
        assert [a.seed for a in searches] == [0, 1, 2, 3, 4] and parts["select"] is not None, label
        argv = p.stages[parts["select"]].argv
        assert argv[argv.index("--rule") + 1] == "search:childnet_valid_top1", label
        assert argv[argv.index("--genotypes") + 1:] == tuple(f"{{out}}/{s}/genotype.json"
                                                                 for s in parts["searches"]), label
        seeds = [int(t.rsplit("-e", 1)[1]) for t in parts["trainings"]]
        assert all(t.startswith(parts["select"] + "-") for t in parts["trainings"]), label
        assert seeds == ([0] if "ImageNet" in label or "CIFAR-10" in label else [0, 1, 2, 3, 4]), label
        if "†" in label:
            assert {(a.dataset, a.dst, a.dst_lambda) for a in searches} == {("imagenet", True, 0.2)}
    assert rows["EnTranNAS (CIFAR-10)"]["select"] == rows["EnTranNAS + cutout"]["select"]
    # the rule reads the last record of each search's metrics.jsonl: the child-net's accuracy, not another
    genos = []
    for i, (child, supernet, train) in enumerate(((80.0, 90.0, 95.0), (85.0, 70.0, 60.0))):
        (tmp_path / f"s{i}").mkdir()
        (tmp_path / f"s{i}" / "metrics.jsonl").write_text(json.dumps(
            {"epoch": 49, "train_top1": train, "valid_top1": supernet, "supernet_valid_top1": supernet,
             "childnet_valid_top1": child}) + "\n")
        genos.append(str(tmp_path / f"s{i}" / "genotype.json"))
    assert select.choose("search:childnet_valid_top1", genos)[:2] == (1, [80.0, 85.0])


def test_no_row_chooses_by_the_test_set():
    """Every selection among searches reads a validation accuracy: DARTS' held-out split of the training
    set (train_eval --valid_size), or a number the searches logged on their validation half."""
    rules = {r.select.rule for r in ROWS}
    assert rules <= {"each", "valid", "search:childnet_valid_top1"}
    for r in ROWS:
        if r.select.rule == "valid":
            fl = r.select.short.flags
            assert "--valid_size" in fl and fl[fl.index("--valid_size") + 1] == "25000", r.key


# ---------------------------------------------------------------- registry: sweeps, steps, lookups, step curves

def test_kind_counts_sweep_values_and_step_folders_as_numbers():
    """A `sweep` flag's values and a step's folder name do not make a kind; its script and flag names do."""
    def row(space, step, sweep=("search_space",)):
        return Row("darts_pt", "T", f"{space} {step.name}", search=Search("darts_pt", space, ("--search_space", space),
                                                                          steps=(step,), sweep=sweep))
    pt = [Step(f"p{e}", "darts_pt/projection.py", ("--from_epoch", str(e))) for e in (20, 40)]
    assert kind(row("s1", pt[0])) == kind(row("s4", pt[1]))
    assert kind(row("s1", pt[0], sweep=())) != kind(row("s4", pt[0], sweep=()))
    assert kind(row("s1", pt[0])) != kind(row("s1", Step("p20", "darts_pt/projection.py", ("--selection", "mag"))))


def test_a_benchmark_file_in_the_data_folder_replaces_the_trainings(tmp_path):
    """Train(lookup=...): without the file, trainings (seeds as usual); with it, one lookup per architecture,
    no GPU; never in smoke mode."""
    t = Train("cifar10", seeds=(0, 1), lookup=Lookup("bench.pth", "darts_pt/nb201_lookup.py"))
    row = Row("darts_pt", "T", "r", search=Search("darts_pt", "x", seeds=(0, 1)), train=t)
    p = plan([row], Context(data=str(tmp_path)))
    assert Counter(s.kind for s in p.stages.values()) == {"search": 2, "train": 4}
    (tmp_path / "bench.pth").write_bytes(b"")
    p = plan([row], Context(data=str(tmp_path)))
    lookups = [s for s in p.stages.values() if s.kind == "lookup"]
    assert [s.name for s in lookups] == p.rows[row.key][1]["trainings"] == ["darts_pt/x/s0-cifar10-lookup",
                                                                            "darts_pt/x/s1-cifar10-lookup"]
    assert lookups[0].argv[:3] == ("darts_pt/nb201_lookup.py", "--arch", "{out}/darts_pt/x/s0/genotype.json")
    assert all(s.gpus == 0 and s.gpu_hours == 0 for s in lookups)
    assert "lookup" not in {s.kind for s in plan([row], Context(smoke=True, data=str(tmp_path))).stages.values()}


def test_curves_of_the_post_search_steps(tmp_path):
    """Figure(curves_of="steps"): the curves come from the metrics.jsonl of the rows' post-search steps
    (DARTS-PT Fig. 6: the validation accuracy through the selection), not of their searches."""
    step = Step("proj", "darts_pt/projection.py")
    row = Row("darts_pt", "Fig. 6", "x", search=Search("darts_pt", "x", steps=(step,)))
    for folder, accs in (("s0", [1, 2]), ("s0/proj", [50, 60, 70])):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "metrics.jsonl").write_text(
            "".join(json.dumps({"epoch": e, "valid_top1": a}) + "\n" for e, a in enumerate(accs)))
    parts = {row.key: {"searches": ["s0"], "steps": ["s0/proj"]}}
    fig = Figure("darts_pt", "Fig. 6", "t", "curves", (row,), y=("valid_top1",), curves_of="steps")
    [series] = figures.figure_data(fig, {}, tmp_path, parts)["series"]
    assert series["points"] == [(0, 50), (1, 60), (2, 70)]


# ---------------------------------------------------------------- summary.md: how errors were obtained, grids

def _ours(error=None, std=None, n=1, **numbers):
    """A row's numbers as summary.row_results gives them: a test error over n trainings, `numbers`, no more."""
    return {"finished": n, "test_error": error, "test_error_std": std, "test_error_best": error, "top5_error": None,
            "params_M": None, "params_M_std": None, "mult_adds_M": None, "mult_adds_M_std": None,
            "search_hours": None, "search_gpu_hours": None, "search_peak_memory_MB": None, "devices": [],
            "selected_by": None, "evaluated_by": [], "measures": {}, "cells": [], **numbers}


def _row(label, dataset="cifar10", ours=None, paper=None, baseline=False):
    return {"row": label, "dataset": dataset, "baseline": baseline, "paper": paper, "ours": ours}


def _one_training(out, name):
    """The numbers of a row of one training (OUT/NAME) as the summary reports them, and its summary.md."""
    parts = {"searches": [], "steps": [], "select": None, "short": [], "trainings": [name], "measures": []}
    r = summary.row_results(out, parts, [])
    return r, summary.markdown([{"paper": "darts_pt", "table": "Table 4", "rows": [_row("r", ours=r)]}])


def test_a_looked_up_error_says_so_in_the_summary(tmp_path):
    (tmp_path / "t0").mkdir()
    (tmp_path / "t0" / "summary.json").write_text(json.dumps({"final_top1": 90.0, "evaluated_by": "NAS-Bench-201"}))
    r, md = _one_training(tmp_path, "t0")
    assert r["evaluated_by"] == ["NAS-Bench-201"] and "error from NAS-Bench-201" in md


def test_a_measurements_own_cost_is_not_a_measured_number(tmp_path):
    """A measurement's summary.json holds its own cost (common.search.search_cost: time, device, world size,
    GPU-hours and peak memory on a GPU) beside what it measured: only the latter are the row's numbers,
    counts printed as counts."""
    import torch
    from common.search import search_cost
    cost = {**search_cost(12.5, torch.device("cpu")), "device": "cuda:0", "gpu_hours": 0.0035, "peak_memory_MB": 812.3}
    assert cost.keys() == search_cost(1.0, torch.device("cpu")).keys()  # every key the cost has, as on a GPU
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "summary.json").write_text(json.dumps(
        {"command": "strength", "edges": 3, "same_choice": 1, "test_top1_before": 88.4, **cost}))
    parts = {"searches": [], "steps": [], "select": None, "short": [], "trainings": [], "measures": ["m"]}
    r = summary.row_results(tmp_path, parts, [])
    assert r["measures"] == {"edges": 3, "same_choice": 1, "test_top1_before": 88.4}
    md = summary.markdown([{"paper": "darts_pt", "table": "Fig. 1", "rows": [_row("r", ours=r)]}])
    assert "| edges 3, same_choice 1, test_top1_before 88.400 |" in md
    parts["measured"] = ["test_top1_before", "edges"]  # the registry's Measure.keys: only those
    assert summary.row_results(tmp_path, parts, [])["measures"] == {"edges": 3, "test_top1_before": 88.4}


def test_a_trained_nas_bench_201_error_says_so_in_the_summary(tmp_path):
    """Without the benchmark file a NAS-Bench-201 cell is trained (darts_pt/train.py, NB201's protocol): its
    summary.json says so and the summary shows it where it shows a looked-up error; a DARTS cell, trained
    with the paper's own protocol, says nothing."""
    from darts_pt import train
    tiny = [*SMALL, "--image_size", "8", "--subset", "8", "--batch_size", "8", "--init_channels", "4", "--epochs", "1"]
    train.main(["--arch", "|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|skip_connect~2|",
                *tiny, "--save", str(tmp_path / "nb201")])
    train.main(["--arch", "DARTS_V2", *tiny, "--layers", "3", "--save", str(tmp_path / "darts")])
    r, md = _one_training(tmp_path, "nb201")
    assert r["evaluated_by"] == ["training with NAS-Bench-201's protocol (1 epoch)"]
    assert "| error from training with NAS-Bench-201's protocol (1 epoch) |" in md
    assert json.loads((tmp_path / "darts" / "summary.json").read_text())["evaluated_by"] is None


def test_a_table_the_paper_prints_as_a_grid_is_that_grid():
    """Rows "LINE: COLUMN" (DARTS-PT Tables 3, 4): a line per (LINE, dataset) in the rows' order, a column per
    COLUMN, each cell ours / paper placed by its label; the rows' other numbers below, only the rows and
    columns that have any; the cells' pictures after."""
    cell = {"arch": "{out}/a/genotype.json", "genotype": "a/genotype.json", "picture": "cells/a/genotype.png",
            "file": True}
    rows = [_row("S1: DARTS", paper={"test_error": 3.84}, baseline=True),
            _row("S1: DARTS+PT", ours=_ours(2.9, 0.1, 2, params_M=3.0, search_gpu_hours=1.5, cells=[cell]),
                 paper={"test_error": 3.5, "test_error_std": 0.2}),
            _row("S2: DARTS", paper={"test_error": 4.85, "params_M": 3.3}, baseline=True),
            _row("S2: DARTS+PT"),
            _row("S1: DARTS+PT", "cifar100", paper={"test_error": 24.48}),  # the columns in another order
            _row("S1: DARTS", "cifar100", ours=_ours(30.0, evaluated_by=["a benchmark"]), paper={"test_error": 29.46},
                 baseline=True)]
    md = summary.markdown([{"paper": "x", "table": "Table 3", "rows": rows}], pictures={cell["picture"]})
    body = md[md.index("## x: Table 3"):].splitlines()
    assert body[2:8] == ["| row | dataset | DARTS | DARTS+PT |", "|---|---|---|---|",
                         "| S1 | cifar10 | – / 3.84 | 2.90 ± 0.10 (2) / 3.50 ± 0.20 |",
                         "| S2 | cifar10 | – / 4.85 | – / – |",
                         "| S1 | cifar100 | 30.00 (1) / 29.46 | – / 24.48 |", ""]
    assert body[8:13] == [
        "| row | dataset | best | params M (ours / paper) | search cost (ours / paper GPU-days) | chosen by | measured "
        "| cells |", "|---|---|---|---|---|---|---|---|",
        "| S1: DARTS+PT | cifar10 | 2.90 | 3.00 / – | 1.500 GPU-h / – | each |  | [a](cells/a/genotype.png) |",
        "| S2: DARTS (baseline) | cifar10 |  | – / 3.30 | – / – |  |  |  |",
        "| S1: DARTS (baseline) | cifar100 | 30.00 | – / – | – / – | each | error from a benchmark |  |"]
    assert body[13:17] == ["", "**S1: DARTS+PT**, a:", "", "![S1: DARTS+PT: a](cells/a/genotype.png)"]
    # without the paper's numbers (a figure's rows): ours alone in each cell
    for r in rows:
        r["paper"] = None
    body = summary.markdown([{"paper": "x", "table": "Fig. 4", "rows": rows}]).splitlines()
    assert "| S1 | cifar10 | – | 2.90 ± 0.10 (2) |" in body and "| S1 | cifar100 | 30.00 (1) | – |" in body


def test_tables_that_are_not_grids_are_printed_as_before():
    """A label without ": ", a single line, a single column, a missing or a repeated cell: the flat table, as
    the summary printed every table before grids (tests/data/summary_flat_tables.md, written by d227393)."""
    tables = [
        {"paper": "x", "table": "Table 2", "rows": [
            _row("NASNet-A (Zoph et al., 2018)", paper={"test_error": 2.65, "params_M": 3.3,
                                                        "search_cost_gpu_days": 2000}, baseline=True),
            _row("S1: DARTS", ours=_ours(3.5, 0.1, 2, params_M=3.1, params_M_std=0.05, search_hours=1.5,
                                         devices=["cpu"]), paper={"test_error": 3.84, "test_error_std": 0.2}),
            _row("S1: PT", ours=_ours(2.9, selected_by={"rule": "valid", "key": "final_valid_top1", "chosen": 1,
                                                        "value": 90.0}), paper={"test_error": 3.5})]},
        {"paper": "x", "table": "Fig. 6", "rows": [_row("S2: DARTS+PT", ours=_ours(9.0, measures={"edges": 3})),
                                                  _row("S2: DARTS+PT-Mag", ours=_ours(9.5))]},
        {"paper": "x", "table": "Table 5", "rows": [_row("S1: A", paper={"test_error": 1.0}),
                                                   _row("S1: B", paper={"test_error": 2.0}),
                                                   _row("S2: A", paper={"test_error": 3.0})]},
        {"paper": "x", "table": "Table 6", "rows": [_row(label, paper={"test_error": e}) for label, e in (
            ("S1: A", 1.0), ("S1: B", 2.0), ("S2: A", 3.0), ("S2: B", 4.0), ("S2: B", 5.0))]},
        {"paper": "x", "table": "App. A", "rows": [_row("S1: A", "imagenet", ours=_ours(25.0, top5_error=8.0)),
                                                  _row("S1: B", "imagenet", ours=_ours(26.0, evaluated_by=["B"]))]},
        {"paper": "x", "table": "Fig. 7", "rows": [_row(f"seed {i}: 1 edge", ours=_ours(9.0)) for i in (0, 1)]},
        {"paper": "x", "table": "Table 7", "rows": [_row(label, paper={"test_error": 1.0})
                                                   for label in ("DARTS", "DARTS: PT", "SGAS", "SGAS: PT")]}]
    md = summary.markdown(tables)
    assert md[md.index("## "):] == (Path(__file__).parent / "data" / "summary_flat_tables.md").read_text()


# ---------------------------------------------------------------- DARTS-PT

DARTS_PT = [r for r in ROWS if r.paper == "darts_pt"]


def _darts_pt_args(stage):
    """The arguments a DARTS-PT stage's script runs with (its own parser and defaults)."""
    return _parse(stage.argv)


@functools.cache
def _parse(argv):
    from common import train_eval
    from darts_pt import projection, train_search
    script, *argv = argv
    parse = {"darts_pt/train_search.py": train_search.parse_args, "darts_pt/train.py": train_eval.parse_args,
             "darts_pt/projection.py": projection.get_parser().parse_args}[script]
    return parse(argv)


def _darts_pt_row(p, row):
    """(the row's searches, their selections, its trainings), each as parsed arguments."""
    parts = p.rows[row.key][1]
    return [[_darts_pt_args(p.stages[s]) for s in parts[k]] for k in ("searches", "steps", "trainings")]


def test_darts_pt_tables_are_run_as_the_paper_prints_them():
    """Tables 2-4, Sec. 6.2: four seeds of each super-net (Table 3: on the row's space and dataset; fix alpha:
    the blank super-net), each selected by PT on its final super-net (Alg. 1, 5 tuning epochs), by the
    magnitude choice with PT's tuning (PT-Mag), or not at all (DARTS: the search's own genotype.json;
    SGAS decides while it searches), and trained once with its seed: DARTS' 20 cells and 36 channels on
    CIFAR-10, 8 and 16 for S1-S4 on CIFAR-100 and SVHN (600 epochs)."""
    p = plan(DARTS_PT, FULL)
    rows = [r for r in DARTS_PT if r.table.startswith(("Table", "Sec.")) and not r.measure]  # Table 1: measured
    assert {(r.row, r.dataset) for r in rows if r.table == "Table 3"} == {
        (f"{space}: {column}", dataset) for space in ("S1", "S2", "S3", "S4")
        for dataset in ("cifar10", "cifar100", "svhn") for column in ("DARTS", "DARTS+PT (Ours)", "DARTS+PT (fix α)*")}
    for r in rows:
        label = r.row.split(": ")[-1]
        space = r.row.split(":")[0].lower() if r.table == "Table 3" else \
            "nb201" if r.row.startswith("NAS-Bench-201") else "darts"
        searches, steps, trainings = _darts_pt_row(p, r)
        method = "blank" if "fix α" in label else "sdarts-rs" if "SDARTS" in label else \
            "sgas" if "SGAS" in label else "darts"
        assert {(a.method, a.search_space, a.dataset, a.epochs) for a in searches} == {
            (method, "darts" if method == "sgas" else space, r.dataset, 100 if space == "nb201" else 50)}, r.key
        assert sorted(a.seed for a in searches) == [0, 1, 2, 3], r.key
        if method == "sgas":
            assert {a.selection for a in searches} == {"mag" if label.startswith("SGAS (") else "pt"}, r.key
        if space == "nb201":  # Table 4's cells: selections on the snapshot after the last epoch
            want = 4 * [("pt", 5, 100) if "+PT" in label else ("mag", 0, 100)]
        elif "+PT" in label and method != "sgas":
            want = 4 * [("mag" if label.endswith("-Mag") else "pt", 5, None)]
        else:  # the base method's own cell: DARTS' magnitude selection, or SGAS' decisions
            want = []
        assert [(a.selection, a.proj_intv, a.from_epoch) for a in steps] == want, r.key
        assert len(trainings) == 4 and sorted(t.seed for t in trainings) == [0, 1, 2, 3], r.key
        assert all(t.dataset == r.dataset for t in trainings), r.key
        if space != "nb201":
            assert {(t.layers, t.init_channels, t.epochs) for t in trainings} == {
                (20, 36, 600) if r.dataset == "cifar10" else (8, 16, 600)}, r.key
            folders = {Path(t.arch).parent.name for t in trainings}
            assert folders == ({f"s{s}" for s in range(4)} if not want else {f"projection_{want[0][0]}"}), r.key


def test_darts_pt_best_rows_are_the_avg_rows_trainings():
    """Table 2's "best" is the best of the four trainings behind "avg" (reported, not selected): the same
    stages; Table 4's DARTS-space cells are Table 2's."""
    p = plan(DARTS_PT, FULL)
    parts = {r.row: p.rows[r.key][1] for r in DARTS_PT if r.dataset == "cifar10"}
    for avg, best in (("DARTS+PT (avg)*", "DARTS+PT (best)"), ("SDARTS-RS+PT (avg)*", "SDARTS-RS+PT (best)"),
                      ("SGAS+PT (Crit.1 avg)*", "SGAS+PT (Crit.1 best)"), ("DARTS+PT (avg)*", "DARTS space: DARTS+PT"),
                      ("DARTS (Liu et al., 2019)", "DARTS space: DARTS")):
        assert parts[avg] == parts[best] and parts[best]["select"] is None


def test_darts_pt_imagenet_cell_is_chosen_on_held_out_data():
    """App. A.8: one of Table 2's four DARTS+PT cells, chosen by DARTS' protocol (a 100-epoch training of each
    with 25,000 training images held out; the best validation accuracy), trained in the mobile setting."""
    p = plan(DARTS_PT, FULL)
    [row] = [r for r in DARTS_PT if r.dataset == "imagenet"]
    parts = p.rows[row.key][1]
    select = p.stages[parts["select"]]
    genos = select.argv[select.argv.index("--genotypes") + 1:]
    assert select.argv[:4] == ("-m", "reproduce.select", "--rule", "valid")
    assert genos == tuple(f"{{out}}/darts_pt/darts/s{s}/projection_pt/genotype.json" for s in range(4))
    short = [_darts_pt_args(p.stages[s]) for s in parts["short"]]
    assert {(a.epochs, a.valid_size, a.layers) for a in short} == {(100, 25000, 20)}
    [imagenet] = [_darts_pt_args(p.stages[s]) for s in parts["trainings"]]
    assert (imagenet.dataset, imagenet.layers, imagenet.init_channels, imagenet.epochs) == ("imagenet", 14, 48, 250)


def test_darts_pt_nas_bench_201_points_select_on_their_snapshot(tmp_path):
    """Figs. 4, 8 and 9 and Table 4's NAS-Bench-201 rows: each point selects on the snapshot after x['epoch']
    epochs (PT with x['proj_intv'] tuning epochs, or DARTS' magnitude choice without tuning) of four
    100-epoch super-nets of its dataset that keep those snapshots; the cell is trained with the benchmark's
    protocol, or read from the benchmark when its file is in --data (and then not trained). The ImageNet16-120
    points are the CIFAR-100 points on --imagenet16's data, skipped without it."""
    p = plan(DARTS_PT, FULL)
    figures_ = {f.figure: f for f in FIGURES if f.paper == "darts_pt"}
    assert set(figures_) == {"Fig. 1", "Fig. 2", "Fig. 3", "Fig. 4", "Fig. 6", "Fig. 7", "Fig. 8", "Fig. 9"}
    for name in ("Fig. 4", "Fig. 8", "Fig. 9"):
        rows = figures_[name].rows
        assert len({(r.dataset, r.x[figures_[name].xkey], r.x["series"]) for r in rows}) == len(rows)
        for r in rows:
            searches, steps, trainings = _darts_pt_row(p, r)
            assert {(a.search_space, a.dataset, a.epochs, tuple(a.save_epochs)) for a in searches} == {
                ("nb201", r.dataset, 100, (20, 40, 60, 80, 100))}, r.key
            assert {a.method for a in searches} == {"blank" if "fix α" in r.row else "darts"}, r.key
            mag = r.x["series"].startswith("DARTS (")
            want = ("mag", 0, r.x["epoch"]) if mag else ("pt", r.x.get("proj_intv", 5), r.x["epoch"])
            assert {(a.selection, a.proj_intv, a.from_epoch) for a in steps} == {want}, r.key
            assert {t.dataset for t in trainings} == {r.dataset} and len(trainings) == 4, r.key
    for name in ("Fig. 4", "Fig. 8"):
        points = {d: sorted((r.x["epoch"], r.x["series"].split(" (")[0]) for r in figures_[name].rows if r.dataset == d)
                  for d in ("cifar10", "cifar100", "imagenet16-120")}
        assert points["cifar10"] == points["cifar100"] == points["imagenet16-120"] and len(points["cifar10"]) >= 5
    assert {r.dataset for r in figures_["Fig. 4"].rows} == {"cifar10", "cifar100", "imagenet16-120"}
    in16 = [r for r in DARTS_PT if r.dataset == "imagenet16-120"]
    no_in16 = plan(DARTS_PT, Context(data="/data", imagenet="/imagenet"))
    assert {why for r, why in no_in16.skipped if r in in16} == {"needs --imagenet16 (where its data is)"}
    assert in16 and not {r.key for r in in16} & set(no_in16.rows)
    [search] = {s for r in in16 for s in p.rows[r.key][1]["searches"] if "blank" not in s and s.endswith("/s0")}
    assert "--dataset imagenet16-120 --data /in16" in " ".join(p.stages[search].argv)
    assert sorted(r.x["proj_intv"] for r in figures_["Fig. 9"].rows) == [0, 1, 2, 5, 10]
    (tmp_path / "NAS-Bench-201-v1_0-e61699.pth").write_bytes(b"")
    with_file = plan(DARTS_PT, Context(data=str(tmp_path), imagenet="/imagenet", imagenet16="/in16"))
    for r in figures_["Fig. 4"].rows:
        stages = [with_file.stages[s] for s in with_file.rows[r.key][1]["trainings"]]
        assert {(s.kind, s.argv[0]) for s in stages} == {("lookup", "darts_pt/nb201_lookup.py")}, r.key
        # the benchmark is in --data, whichever folder the dataset is in
        assert {s.argv[s.argv.index("--nb201_benchmark") + 1] for s in stages} == {
            str(tmp_path / "NAS-Bench-201-v1_0-e61699.pth")}, r.key


def test_darts_pt_section3_analyses_the_existing_super_nets():
    """Figs. 1, 2, 7 and Table 1 (darts_pt/analysis.py) add no search but Fig. 7's seeds 4 and 5, in the
    folders of Table 2's DARTS super-nets; Fig. 2 on the S2 super-net of Figs. 3 and 6; Table 1 beside the
    paper's numbers."""
    full = plan(DARTS_PT, FULL)
    without = plan([r for r in DARTS_PT if not r.table.startswith(("Fig. 1", "Fig. 2", "Fig. 7", "Table 1"))], FULL)
    new = [s.name for s in full.stages.values() if s.name not in without.stages]
    assert sorted(s for s in new if "/measure/" not in s) == ["darts_pt/darts/s4", "darts_pt/darts/s5"]
    measures = {s.name.split("/")[-1]: s for s in full.stages.values() if s.name in new and "/measure/" in s.name}
    assert sorted(measures) == sorted(["strength-fig1", "strength-fig2", "shuffle",
                                       *(f"strength-fig7-s{k}" for k in range(6))])
    assert measures["strength-fig2"].deps == ("darts_pt/s2/s2",)
    assert measures["strength-fig1"].deps == measures["shuffle"].deps == ("darts_pt/darts/s0",)
    assert [measures[f"strength-fig7-s{k}"].deps for k in range(6)] == [(f"darts_pt/darts/s{k}",) for k in range(6)]
    assert measures["strength-fig2"].argv[:3] == ("darts_pt/analysis.py", "strength", "--edges")
    printed = next(p for p in PAPER if (p["method"], p["row"]) == ("darts_pt", "DARTS super-net"))
    assert set(printed["metrics"]) == set(next(r for r in DARTS_PT if r.table == "Table 1").measure[0].keys)
    smoke = plan(DARTS_PT, Context(smoke=True))
    kinds = {s.argv[1] for s in smoke.stages.values() if s.argv[0] == "darts_pt/analysis.py"}
    assert kinds == {"strength", "shuffle"}
    for s in smoke.stages.values():
        if s.argv[0] == "darts_pt/analysis.py":  # tiny: 1 tuning epoch, 1 edge, 1 draw
            assert s.argv[-2:] in (("--random_edges", "1"), ("--edges", "1"), ("--repeats", "1")), s.argv


def test_darts_pt_smoke_plan_is_small():
    """--smoke runs one row of each kind: Table 3's spaces and datasets, the snapshots and tuning lengths of
    Figs. 4, 8, 9 are points of the kinds of Tables 2 and 4; every figure keeps a row."""
    p = plan(DARTS_PT, Context(smoke=True))
    assert len(p.stages) <= 39  # 3 of them Sec. 3's analyses (Fig. 1's, Fig. 2's strength, Table 1's shuffle)
    assert not [r.key for r in DARTS_PT if r.table == "Table 3" and r.key in p.rows][1:]
    kept = {kind(r) for r in DARTS_PT if r.key in p.rows}
    for f in FIGURES:  # Fig. 7's rows are Fig. 1's kind on other seeds
        if f.paper == "darts_pt":
            assert any(kind(r) in kept for r in f.rows), f.figure


def test_darts_pt_edge_figures_draw_alpha_beside_accuracy_of_each_op(tmp_path):
    """Figs. 1, 2, 7 (Figure kind `edges`): one series per analysed edge, (op, accuracy, alpha) for every
    op measured (`none`, never a candidate on a DARTS cell, left out), and the op each of them picks."""
    fig = next(f for f in FIGURES if (f.paper, f.figure) == ("darts_pt", "Fig. 1"))
    parts = {fig.rows[0].key: {"measures": ["darts_pt/measure/strength-fig1"]}}
    edge = {"cell": "normal", "edge": 3, "name": "3<-2", "ops": ["none", "skip_connect", "sep_conv_3x3"],
            "alpha": [0.2, 0.5, 0.3], "valid_top1": [None, 60.0, 70.0], "alpha_choice": "skip_connect",
            "accuracy_choice": "sep_conv_3x3"}
    (tmp_path / parts[fig.rows[0].key]["measures"][0]).mkdir(parents=True)
    (tmp_path / parts[fig.rows[0].key]["measures"][0] / "strength.json").write_text(json.dumps([edge]))
    data = figures.figure_data(fig, {}, tmp_path, parts)
    assert [(s["points"], s["alpha_choice"], s["accuracy_choice"]) for s in data["series"]] == [
        ([("skip_connect", 60.0, 0.5), ("sep_conv_3x3", 70.0, 0.3)], "skip_connect", "sep_conv_3x3")]
    pytest.importorskip("matplotlib")
    assert figures.draw(data, tmp_path / "fig1.png") and (tmp_path / "fig1.png").stat().st_size > 0
