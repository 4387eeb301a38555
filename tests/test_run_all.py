"""run_all.sh end to end: the smoke plan (one row of every kind of experiment) run two stages at a
time on the CPUs, a second run that keeps everything, --plan on a half-finished folder, datasets
downloaded once, and every bad option stopped before the first stage with one line. (Resume after
the driver is killed: tests/test_engine.py.)"""
import json
import os
import re
import subprocess
import sys
import time

import pytest

from common import genotypes
from conftest import ENV, ROOT
from reproduce import __main__ as driver
from reproduce import engine
from reproduce.registry import Context, Figure, Row, plan, row_stages
from reproduce.experiments import EXPERIMENTS

PAPERS = ["msg_das", "entrannas", "darts_pt", "darts_pd", "d_darts", "baselines"]


def run_all(*flags, check=True, timeout=1500):
    proc = subprocess.run(["bash", str(ROOT / "run_all.sh"), *map(str, flags)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**ENV, "PYTHON": sys.executable})
    if check and proc.returncode != 0:
        raise AssertionError(f"run_all.sh {flags} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-5000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    t0 = time.time()
    proc = run_all("--smoke", "--jobs", "2", "--out", out)
    seconds = time.time() - t0
    print(f"\nrun_all.sh --smoke --jobs 2: {seconds:.0f} s")
    return out, proc.stdout, seconds


def test_smoke_runs_every_kind_of_experiment_to_a_row_of_the_tables(smoke):
    out, stdout, seconds = smoke
    p = plan([e for e in EXPERIMENTS if isinstance(e, Row)], Context(smoke=True))
    status = json.loads((out / engine.STATUS).read_text())
    assert status["counts"] == {"done": len(p.stages)} and set(status["stages"]) == set(p.stages)
    assert any(" 2 running" in line for line in stdout.splitlines()), "no two stages ran at once"
    tables = json.loads((out / "summary.json").read_text())["tables"]
    ours = {(t["paper"], r["row"], r["dataset"]): r["ours"] for t in tables for r in t["rows"] if r["ours"]}
    assert set(ours) == set(p.rows) and {k[0] for k in ours} == set(PAPERS)
    for key, o in ours.items():
        if o["trainings"]:
            assert o["finished"] == o["trainings"] and o["datasets"] == ["synthetic"], key
            assert 0 <= o["test_error"] <= 100 and o["params_M"] > 0, key
        else:  # numbers its searches log (EnTranNAS Table 1), a measurement's (Table 3: in the smoke plan
            # under a 1 MB limit that no batch fits, the plumbing only), or a figure's curves (DARTS-PT Fig. 3)
            row = next(e for e in EXPERIMENTS if isinstance(e, Row) and e.key == key)
            assert set(o["measures"]) >= set(row.logged), key
        assert o["stages_done"] == o["stages"], key
        if o["searches"]:
            assert o["searches_finished"] == o["searches"] and o["search_hours"] > 0, key
    for s in p.stages.values():  # every genotype a stage wrote is valid, and was trained as given
        folder = out / s.name
        for g in folder.glob("genotype*.json"):
            genotypes.load(g).validate()
        if s.kind == "train":
            arch = s.argv[s.argv.index("--arch") + 1].replace("{out}", str(out))
            assert json.loads((folder / "summary.json").read_text())["arch"] == arch
            assert (folder / "checkpoint.pt").exists()
    assert (out / "summary.md").read_text().startswith("# Results beside the papers")


def test_a_second_run_keeps_every_finished_stage(smoke):
    out, first, _ = smoke
    before = {p: p.stat().st_mtime for p in out.rglob("*") if p.is_file() and p.relative_to(out).parts[0] in PAPERS}
    again = run_all("--smoke", "--jobs", "2", "--out", out).stdout
    n = len(json.loads((out / "plan.json").read_text())["stages"])
    assert f"{n} stages, {n} done already" in again and " start " not in again
    after = {p: p.stat().st_mtime for p in before}
    assert after == before  # nothing in any stage folder was written again


def test_plan_on_a_half_finished_folder(tmp_path, capsys):
    """--plan shows each stage's state (done, running, failed, started, pending), its resources,
    its command and the totals, and writes nothing."""
    p = driver.make_plan(driver.parse_args(["--smoke", "--methods", "msg_das", "--out", str(tmp_path)]))
    names = list(p.stages)
    done, started, failed, running = names[0], names[1], names[2], names[3]
    for name in (done, started, failed, running):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / done / "summary.json").write_text("{}")
    (tmp_path / started / "log.txt").write_text("")
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], "
                               "os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); print(1, flush=True); "
                               "time.sleep(60)", str(tmp_path / running / engine.LOCK)], stdout=subprocess.PIPE)
    try:
        holder.stdout.readline()
        since = time.time() - 3600
        (tmp_path / engine.STATUS).write_text(json.dumps({"stages": {
            done: {"state": "done", "seconds": 3723}, failed: {"state": "failed", "attempts": 3, "rc": 1},
            running: {"state": "running", "attempts": 1, "since": since}}}))
        before = sorted(tmp_path.rglob("*"))
        assert driver.main(["--smoke", "--methods", "msg_das", "--out", str(tmp_path), "--plan"]) == 0
        elapsed = time.time() - since - 3600  # the running stage ran this much longer before --plan printed
    finally:
        holder.kill()
    text = capsys.readouterr().out
    assert sorted(tmp_path.rglob("*")) == before  # nothing written
    states = {line.split(" GPU-h  ")[1].split("  ")[0]: line.split()[0]
              for line in text.splitlines() if " GPU-h  " in line}
    assert states == {n: {done: "done", started: "started", failed: "failed", running: "running"}.get(n, "pending")
                      for n in names}
    assert f"{done}  took 1:02:03" in text and f"{failed}  3 attempts" in text
    assert f"{running}  1 attempt, for 1:00:0" in text
    for s in p.stages.values():
        assert " ".join(engine.command(s, tmp_path)[1:]) in text
    left = sum(s.gpu_hours for n, s in p.stages.items() if n != done)
    h, m, sec = map(int, re.search(r"~(\d+):(\d\d):(\d\d) left on", text).groups())
    # smoke: each stage as long as the mean of the finished ones (3723 s), one at a time; the running
    # one has 3723 - 3600 s left (less what --plan took to start), the failed one none
    shown = h * 3600 + m * 60 + sec
    assert (len(names) - 3) * 3723 + 123 - elapsed - 1 <= shown <= (len(names) - 3) * 3723 + 123 + 1
    assert (f"{len(names)} stages (1 done, 1 started, 1 failed, 1 running, {len(names) - 4} pending)" in text
            and f"~{left:.0f} GPU-hours left at the papers' settings" in text)
    # every row of the papers it fills: done when all its stages are, pending when none has begun, else started
    touched = {done, started, failed, running}
    for key, (table, parts) in p.rows.items():
        stages = row_stages(parts)
        n = stages.count(done)
        state = "done" if n == len(stages) else "started" if touched & set(stages) else "pending"
        line = f"row      {state:8} {key[0]} / {table} / {key[1]} ({key[2]}): {n} of {len(stages)} stages done"
        assert line + "\n" in text
    assert sum(line.startswith("row ") for line in text.splitlines()) == len(p.rows) and "row      started" in text
    # and every figure drawn from them (Fig. 3's other points differ in numbers only: not in the smoke plan)
    fig3 = next(e for e in EXPERIMENTS if isinstance(e, Figure) and (e.paper, e.figure) == ("msg_das", "Fig. 3"))
    assert f"figure   pending  msg_das / Fig. 3: {fig3.title} (5 rows: 1 pending, 4 not planned)\n" in text
    finished = driver.experiments(p, {n: "done" for n in p.stages})
    assert {line.split()[1] for line in finished} == {"done"} and len(finished) == len(p.rows) + 1
    # a figure with some of its points done is started (the full plan: Fig. 3's five points)
    full = driver.make_plan(driver.parse_args(["--methods", "msg_das", "--out", str(tmp_path)]))
    first = row_stages(full.rows[fig3.rows[0].key][1])
    lines = driver.experiments(full, {n: "done" if n in first else "pending" for n in full.stages})
    assert [line.split()[1] for line in lines if line.startswith("figure")] == ["started"]


def test_download_happens_once_before_any_stage(tmp_path, monkeypatch):
    """Parallel stages must not download one dataset at the same time: the driver fetches each
    (dataset, folder) the plan downloads, train and test split, before the first stage."""
    import common.data
    calls = []
    monkeypatch.setattr(common.data, "get_dataset", lambda args, train, transform: calls.append(
        (args.dataset, args.data, args.download, train)))
    p = driver.make_plan(driver.parse_args(["--methods", "msg_das,darts_pt", "--data", str(tmp_path)]))
    assert sum("--download" in s.argv for s in p.stages.values()) > 2
    driver.fetch_datasets(p)
    sets = sorted({s.argv[s.argv.index("--dataset") + 1] for s in p.stages.values() if "--download" in s.argv})
    assert sorted(calls) == sorted((d, str(tmp_path), True, t) for d in sets for t in (True, False))


# ---------------------------------------------------------------- bad options: one line, exit 2, nothing run

BAD = [
    (["--methods", "msg_das,foo"], "unknown method 'foo'"),
    (["--methods"], "argument --methods: expected one argument"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--gpus", "abc"], "argument --gpus: invalid int value: 'abc'"),
    (["--gpus", "1"], "--gpus 1: this machine has 0 visible GPUs"),
    (["--gpus", "-1"], "--gpus -1: give a whole number of at least 0"),
    (["--jobs", "0"], "--jobs 0: give a whole number of at least 1"),
    (["--retries", "-1"], "--retries -1: give a whole number of at least 0"),
    (["--seeds", "a b"], "--seeds 'a b': give integers"),
    (["--executor", "pbs"], "argument --executor: invalid choice: 'pbs'"),
    (["--executor", "slurm"], "--executor slurm needs --partition P"),
    (["--executor", "slurm", "--partition", "p", "--jobs", "2"], "--jobs are for --executor local"),
    (["--partition", "p", "--time", "2"], "--partition and --time are for --executor slurm"),
    (["--jobs", "2", "--gpus", "1"], "drop one of them"),
    (["--executor", "slurm", "--partition", "p", "--time", "0"], "--time 0.0: give the hours of one job"),
    (["--imagenet", "/no/such/folder"], "--imagenet /no/such/folder: no such folder"),
]


@pytest.mark.parametrize("flags,message", BAD, ids=[" ".join(f) for f, _ in BAD])
def test_bad_options_get_one_line_and_exit_2(flags, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        driver.main(["--out", str(tmp_path / "out"), *flags])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_slurm_without_submitit_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit raises ImportError
    with pytest.raises(SystemExit) as e:
        driver.main(["--executor", "slurm", "--partition", "p", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and 'pip install -e ".[slurm]"' in err and err.count("\n") == 1


def test_the_shell_front_passes_a_last_flag_without_its_value():
    proc = run_all("--smoke", "--methods", check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "expected one argument" in proc.stderr
    assert "Traceback" not in proc.stderr and "unbound variable" not in proc.stderr


def test_one_driver_per_folder(tmp_path, capsys):
    lock = engine.Lock(tmp_path / "run_all.lock")
    assert lock.acquire()
    try:
        with pytest.raises(SystemExit) as e:
            driver.main(["--smoke", "--methods", "darts_pd", "--out", str(tmp_path)])
    finally:
        lock.release()
    err = capsys.readouterr().err
    assert e.value.code == 2 and "is being run by another run_all.sh" in err and f"pid {os.getpid()}" in err
    assert not (tmp_path / "plan.json").exists()


def test_relative_paths_are_the_users(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    a = driver.parse_args(["--out", "res", "--data", "d"])
    assert (a.out, a.data) == (str(tmp_path / "res"), str(tmp_path / "d"))
    assert driver.main(["--smoke", "--methods", "darts_pd", "--out", "res", "--plan"]) == 0
    assert f"--save {tmp_path / 'res'}/darts_pd/" in capsys.readouterr().out
