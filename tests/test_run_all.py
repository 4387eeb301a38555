"""run_all.sh --smoke: the whole reproduction pipeline of the five papers, tiny, on synthetic data."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common import genotypes
from conftest import ENV, ROOT
from reproduce import summary

METHODS = ["msg_das", "entrannas", "darts_pt", "darts_pd", "d_darts"]


def run_all(*flags, check=True):
    proc = subprocess.run(["bash", str(ROOT / "run_all.sh"), *map(str, flags)], cwd=ROOT, capture_output=True,
                          text=True, timeout=900, env={**ENV, "PYTHON": sys.executable})
    if check and proc.returncode != 0:
        raise AssertionError(f"run_all.sh {flags} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    t0 = time.time()
    proc = run_all("--smoke", "--out", out)
    return out, proc.stdout, time.time() - t0


def test_smoke_runs_every_method_to_a_row_of_the_table(smoke):
    out, stdout, seconds = smoke
    assert seconds < 600, f"the smoke run took {seconds:.0f} s"
    table = json.loads((out / "summary.json").read_text())
    assert {t["method"] for t in table} == set(METHODS)
    runs = summary.read_runs(out)
    for t in table:
        assert t["finished"] == t["runs"] >= 1 and 0 <= t["test_error"] <= 100 and t["params_M"] > 0, t
        assert t["search_hours"] > 0 and t["trained_on"] == ["synthetic"], t
        assert t["paper"] is not None, f"{t['method']} / {t['row']}: no paper row to compare with"
        for picture in t["drawings"]:
            assert (out / picture).read_text().startswith("digraph")
    for run in runs:  # every searched genotype is valid, and was trained into a checkpoint
        genotypes.load(run["genotype"]).validate()
        assert (Path(run["eval"]) / "checkpoint.pt").exists()
        assert json.loads((Path(run["eval"]) / "summary.json").read_text())["arch"] == run["genotype"]
    msg_das = next(t for t in table if t["method"] == "msg_das")
    assert (msg_das["paper"]["test_error"], msg_das["paper"]["source"]) == (2.57, "Table 1")
    md = (out / "summary.md").read_text()
    assert all(f"| {m} |" in md for m in METHODS) and "](msg_das/search-s0/genotype." in md


def test_a_second_run_skips_every_finished_stage(smoke):
    out, first, _ = smoke
    before = {p: p.stat().st_mtime for p in out.rglob("checkpoint.pt")}
    again = run_all("--smoke", "--out", out).stdout
    assert "running" not in again and again.count("done") == first.count("running") > 10
    assert {p: p.stat().st_mtime for p in out.rglob("checkpoint.pt")} == before  # nothing overwritten
    assert len(summary.read_runs(out)) == len(set(r["eval"] for r in summary.read_runs(out)))


def test_an_interrupted_run_resumes(tmp_path):
    """Kill run_all.sh inside DARTS-PD's search (after stage 1), run it again: stage 1 is continued
    from its checkpoint, not redone, and the pipeline finishes."""
    cmd = ["bash", str(ROOT / "run_all.sh"), "--smoke", "--methods", "darts_pd", "--out", str(tmp_path)]
    env = {**ENV, "PYTHON": sys.executable}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    search = tmp_path / "darts_pd" / "search-s0"
    deadline = time.time() + 300
    while not (search / "stage1" / "summary.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (search / "genotype.json").exists(), "the run was not interrupted"
    stdout = run_all("--smoke", "--methods", "darts_pd", "--out", tmp_path).stdout
    assert f"running  {search}" in stdout
    assert f"stage 1 in {search / 'stage1'} is finished: skipped" in (search / "log.txt").read_text()
    assert len((search / "stage1" / "metrics.jsonl").read_text().splitlines()) == 1  # stage 1 not repeated
    table = json.loads((tmp_path / "summary.json").read_text())
    assert [t["method"] for t in table] == ["darts_pd"] and table[0]["finished"] == 1


def test_bad_options_get_one_line_and_exit_2(tmp_path):
    for flags, message in ((["--methods", "darts"], "unknown method 'darts'"), (["--bogus"], "unknown option")):
        proc = run_all("--smoke", "--out", tmp_path, *flags, check=False)
        assert proc.returncode == 2 and message in proc.stderr


def test_best_run_picks_the_highest_final_value(tmp_path):
    for name, accs in (("a", [50, 70]), ("b", [60, 65]), ("c", [10, 68])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.jsonl").write_text("".join(json.dumps({"valid_top1": v}) + "\n" for v in accs))
    assert summary.best_run([tmp_path / n for n in "abc"], "valid_top1") == tmp_path / "a"
    (tmp_path / "b" / "summary.json").write_text(json.dumps({"valid_top1": 90}))  # summary.json wins
    assert summary.best_run([tmp_path / n for n in "abc"], "valid_top1") == tmp_path / "b"
