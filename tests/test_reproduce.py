"""The experiment registry: every row and figure of the papers has an entry, and the plan built from
it is a consistent DAG."""
import json
from collections import Counter
from pathlib import Path

import pytest

from reproduce import figures, select, summary
from reproduce.experiments import EXPERIMENTS
from reproduce.registry import Context, Figure, Plan, PlanError, Row, Search, Select, Train, kind, plan, to_json

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
        (t / "summary.json").write_text(json.dumps({"valid_top1": valid, "final_top1": test}))
        trainings.append(str(t))
        genos.append("DARTS_V2" if i == 0 else "PC_DARTS_cifar")
    i, values, key = select.choose("valid", genos, trainings)
    assert (i, values, key) == (1, [60.0, 70.0], "valid_top1")
    select.main(["--rule", "valid", "--genotypes", *genos, "--trainings", *trainings, "--save", str(tmp_path / "s")])
    out = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert out["chosen"] == "PC_DARTS_cifar" and (tmp_path / "s" / "genotype.json").exists()


def test_summary_uses_the_sample_std(tmp_path):
    errs = [2.0, 3.0, 4.0]
    names = []
    for i, e in enumerate(errs):
        (tmp_path / f"t{i}").mkdir()
        (tmp_path / f"t{i}" / "summary.json").write_text(json.dumps({"final_top1": 100 - e, "params_M": 3.0}))
        names.append(f"t{i}")
    parts = {"searches": [], "steps": [], "select": None, "short": [], "trainings": names, "measures": []}
    r = summary.row_results(tmp_path, parts, [])
    assert r["test_error"] == pytest.approx(3.0) and r["test_error_std"] == pytest.approx(1.0)  # n-1
    assert r["test_error_best"] == 2.0 and r["finished"] == 3


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
