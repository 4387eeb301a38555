"""reproduce/engine.py: the DAG runner and its executors, on stand-in stages (tests/_stage.py) that
take a fraction of a second: dependencies, parallel stages, GPU pinning and wide stages, retries
and failures, folders held by another process, the ETA, and the Slurm path through submitit (the
job script it would submit; the same code run by submitit's local backend)."""
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import ANY

import pytest

from conftest import ROOT
from reproduce import engine
from reproduce.registry import Stage


def stage(name, deps=(), gpus=0, kind="search", hours=1.0, sleep=0.0, fail=0, needs=(), exit_code=3, steps=0,
          forget=False):
    argv = ["tests/_stage.py", "--record", "{out}/record.jsonl", "--sleep", str(sleep), "--fail", str(fail),
            "--exit_code", str(exit_code), "--steps", str(steps), *(["--forget"] if forget else [])]
    if needs:
        argv += ["--needs", *(f"{{out}}/{n}/summary.json" for n in needs)]
    return Stage(name, tuple(argv), tuple(deps), gpus, kind, hours)


def plan_of(*stages):
    return SimpleNamespace(stages={s.name: s for s in stages})


def records(out):
    """{name: {event: record}} of the stand-in stages (the first of each event)."""
    path = Path(out) / "record.jsonl"
    found = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        r = json.loads(line)
        found.setdefault(r["name"], {}).setdefault(r["event"], r)
    return found


def run(plan, out, executor, **kw):
    lines = []
    r = engine.run(plan, out, executor, echo=lines.append, tick=0.02, **kw)
    return r, lines


def test_dependencies_first_and_independent_stages_side_by_side(tmp_path):
    p = plan_of(stage("s1", sleep=0.8), stage("s2", sleep=1.0), stage("s3", sleep=0.3),
                stage("t1", ["s1"], kind="train", needs=["s1"]),
                stage("sel", ["s1", "s2"], kind="select", hours=0, needs=["s1", "s2"]),
                stage("t2", ["sel"], kind="train", needs=["sel"]))
    r, lines = run(p, tmp_path, engine.LocalExecutor(jobs=2))
    rec = records(tmp_path)
    assert r.failed == {} and set(r.state.values()) == {"done"} and set(rec) == set(p.stages)
    for s in p.stages.values():
        for d in s.deps:
            assert rec[s.name]["start"]["t"] >= rec[d]["end"]["t"], f"{s.name} started before {d} ended"
    assert rec["s2"]["start"]["t"] < rec["s1"]["end"]["t"], "the two searches did not run side by side"
    events = sorted((r["t"], +1 if e == "start" else -1) for x in rec.values() for e, r in x.items())
    assert max(__import__("itertools").accumulate(d for _, d in events)) == 2  # never more than --jobs
    want = os.environ.get("OMP_NUM_THREADS") or str(max(1, os.cpu_count() // 2))
    assert {x["start"]["threads"] for x in rec.values()} == {want}  # each job its share of the cores
    assert {x["start"]["gpus"] for x in rec.values()} == {""}  # CPU stages see no GPU
    assert any("2 running" in line for line in lines) and lines[-1].startswith(f"[{len(p.stages)}/{len(p.stages)} done")
    status = json.loads((tmp_path / engine.STATUS).read_text())
    assert {n: s["state"] for n, s in status["stages"].items()} == {n: "done" for n in p.stages}
    assert all(s["seconds"] > 0 and s["attempts"] == 1 for s in status["stages"].values())


def test_the_longest_path_starts_first(tmp_path):
    """A search that a long training waits for starts before an independent training listed first."""
    p = plan_of(stage("lone", kind="train", hours=10), stage("s", hours=2), stage("t", ["s"], kind="train", hours=36))
    assert engine.critical_path(p.stages) == {"lone": 10, "s": 38, "t": 36}
    run(p, tmp_path, engine.LocalExecutor(jobs=1))
    rec = records(tmp_path)
    assert rec["s"]["end"]["t"] <= rec["lone"]["start"]["t"]


def test_gpus_are_pinned_and_a_wide_stage_waits_for_them(tmp_path):
    """Two GPUs named 3 and 5: `a` on one of them, the 8-GPU stage `w` on both under torchrun
    (x2) once `a` has ended, and `b`, listed after `w`, does not take a GPU `w` waits for; the
    selection stage runs beside them with no GPU."""
    p = plan_of(stage("a", gpus=1, sleep=1.0), stage("w", gpus=8, kind="train", hours=8.0), stage("b", gpus=1),
                stage("c", gpus=0, kind="select", hours=0, sleep=0.3))
    r, _ = run(p, tmp_path, engine.LocalExecutor(gpus=("3", "5")))
    rec = records(tmp_path)
    assert r.failed == {}
    assert rec["a"]["start"]["gpus"] in ("3", "5") and rec["a"]["start"]["world"] == 1
    assert rec["w"]["start"]["gpus"] == "3,5" and rec["w"]["start"]["world"] == 2
    assert rec["w"]["start"]["t"] >= rec["a"]["end"]["t"] and rec["b"]["start"]["t"] >= rec["w"]["end"]["t"]
    assert rec["c"]["start"]["gpus"] == "" and rec["c"]["start"]["t"] < rec["a"]["end"]["t"]
    assert engine.command(p.stages["w"], tmp_path, 2)[1:5] == ["-m", "torch.distributed.run", "--standalone",
                                                              "--nproc_per_node=2"]


def test_a_failed_stage_is_retried_and_leaves_independent_stages_finished(tmp_path):
    p = plan_of(stage("bad", fail=2), stage("after_bad", ["bad"], kind="train"), stage("flaky", fail=1),
                stage("free", sleep=0.2), stage("after_free", ["free"], kind="train"),
                stage("usage", fail=1, exit_code=engine.BAD_INPUT), stage("silent", forget=True))
    r, lines = run(p, tmp_path, engine.LocalExecutor(jobs=2), retries=1)
    rec = records(tmp_path)
    assert r.failed == {n: str(tmp_path / n / engine.CONSOLE) for n in ("bad", "usage", "silent")}
    assert r.state == {"bad": "failed", "after_bad": "blocked", "flaky": "done", "free": "done", "after_free": "done",
                       "usage": "failed", "silent": "failed"}
    assert any("failed  silent (exit code 0 but no summary.json) after 2 attempts" in x for x in lines)
    assert rec["usage"]["fail"]["attempt"] == 1 and any("exit code 2: bad input, not retried" in x for x in lines)
    assert "after_bad" not in rec  # never started
    assert rec["flaky"]["end"]["attempt"] == 2 and rec["flaky"]["end"]["resume"]  # retried with --resume
    assert (tmp_path / "bad" / engine.CONSOLE).read_text().count("==== ") == 2
    assert any("failed  bad (exit code 3) after 2 attempts" in line for line in lines)
    status = json.loads((tmp_path / engine.STATUS).read_text())["stages"]
    assert (status["bad"]["state"], status["bad"]["attempts"], status["bad"]["rc"]) == ("failed", 2, 3)
    assert (status["after_bad"]["state"], status["after_bad"]["by"]) == ("blocked", "bad")
    # running it again continues: the failed stage starts again (its third attempt succeeds), the rest is kept
    r, lines = run(p, tmp_path, engine.LocalExecutor(jobs=2), retries=1)
    rec2 = records(tmp_path)
    assert {n for n, st in r.state.items() if st != "done"} == {"silent"}
    assert rec2["bad"]["end"]["attempt"] == 3 and "after_bad" in rec2 and rec2["usage"]["end"]["attempt"] == 2
    assert r.failed == {"silent": ANY}
    starts = [json.loads(x)["name"] for x in (tmp_path / "record.jsonl").read_text().splitlines() if '"start"' in x]
    assert starts.count("free") == 1 and starts.count("flaky") == 2  # finished stages are not run again


def test_a_folder_held_by_another_process_is_not_run_twice(tmp_path):
    """`x` is held by a process that finishes it; `y` by one that dies without finishing: the driver
    waits for both, runs `y` once its folder is free, and never `x`; `after_x` runs after `x`."""
    p = plan_of(stage("x"), stage("y"), stage("after_x", ["x"], kind="train", needs=["x"]))
    holders = []
    for name, finish in (("x", True), ("y", False)):
        (tmp_path / name).mkdir()
        code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
                "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(0.8); "
                f"{'open(sys.argv[2], chr(119)).write(chr(123) + chr(125))' if finish else 'pass'}")
        h = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / name / engine.LOCK),
                              str(tmp_path / name / "summary.json")], stdout=subprocess.PIPE, text=True)
        assert h.stdout.readline() == "held\n"
        holders.append(h)
    r, lines = run(p, tmp_path, engine.LocalExecutor(jobs=2))
    for h in holders:
        h.wait()
    rec = records(tmp_path)
    assert r.failed == {} and set(r.state.values()) == {"done"}
    assert "x" not in rec and "y" in rec and "after_x" in rec
    assert sum("waits   x" in line for line in lines) == 1
    assert any("done    x (by the other process)" in line for line in lines)


DRIVER = """
import sys
from types import SimpleNamespace
sys.path.insert(0, {root!r})
from reproduce import engine
from reproduce.registry import Stage
long = Stage("long", {long!r})
after = Stage("after", {after!r}, ("long",), kind="train")
engine.run(SimpleNamespace(stages={{"long": long, "after": after}}), sys.argv[1], engine.LocalExecutor(jobs=2),
           echo=lambda line: print(line, flush=True), tick=0.02)
"""


def test_resume_after_the_driver_is_killed(tmp_path):
    """Kill the driver while its stage runs: the stage goes on alone and holds its folder, so a
    second driver waits for it instead of running it too. Kill the stage as well: the second
    driver starts it again with --resume, it continues after its last step (none is repeated),
    and the plan finishes."""
    n = 30  # steps of 0.3 s: the stage outlives the first driver and the second one's start (it imports torch)
    code = DRIVER.format(root=str(ROOT), long=stage("long", steps=n, sleep=0.3).argv,
                         after=stage("after", needs=["long"]).argv)
    first = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, stdout=subprocess.DEVNULL)
    steps = tmp_path / "long" / "steps.jsonl"
    deadline = time.time() + 60
    while (not steps.exists() or len(steps.read_text().splitlines()) < 2) and time.time() < deadline:
        time.sleep(0.02)
    first.kill()
    first.wait()
    lock = engine.Lock(tmp_path / "long" / engine.LOCK)
    assert lock.held() and not (tmp_path / "long" / "summary.json").exists()
    second = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    lines = []
    for line in second.stdout:
        lines.append(line)
        if " waits " in line or " start " in line:
            break
    assert "waits   long: another process holds its folder" in lines[-1], lines
    os.killpg(lock.holder()["pid"], signal.SIGKILL)  # the stage dies too
    rest = second.communicate(timeout=60)[0]
    assert second.returncode == 0 and "start   long on CPU" in rest and "done    after" in rest, rest
    done = [json.loads(x) for x in steps.read_text().splitlines()]
    assert [d["step"] for d in done] == list(range(n))  # every step once: continued, not redone
    assert done[0]["attempt"] == 1 and done[-1]["attempt"] == 2
    assert records(tmp_path)["long"]["end"]["resume"]


def test_sigterm_stops_the_running_stages(tmp_path):
    """SIGTERM (or Ctrl-C) to the driver stops the stages it started; they continue next time."""
    code = DRIVER.format(root=str(ROOT), long=stage("long", steps=10, sleep=0.3).argv, after=stage("after").argv)
    driver = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    steps = tmp_path / "long" / "steps.jsonl"
    deadline = time.time() + 60
    while (not steps.exists() or not steps.read_text()) and time.time() < deadline:
        time.sleep(0.02)
    driver.send_signal(signal.SIGTERM)
    driver.communicate(timeout=30)
    assert not engine.Lock(tmp_path / "long" / engine.LOCK).held()  # the stage's process is gone
    assert len(steps.read_text().splitlines()) < 10 and not (tmp_path / "after").exists()
    status = json.loads((tmp_path / engine.STATUS).read_text())["stages"]
    assert status["long"]["state"] == "pending" and "stopped" in status["long"]


def test_estimate_and_eta():
    stages = {"s0": Stage("s0", (), gpus=1, kind="search", gpu_hours=1.0),
              "s": Stage("s", (), gpus=1, kind="search", gpu_hours=2.0),
              "t": Stage("t", (), ("s",), gpus=1, kind="train", gpu_hours=10.0),
              "w": Stage("w", (), gpus=8, kind="train", gpu_hours=80.0),
              "sel": Stage("sel", (), gpus=0, kind="select", gpu_hours=0.0)}
    est = engine.Estimate(stages, {"s0": 10.0})  # a paper-hour of search took 10 s here
    assert est.seconds(stages["s"]) == pytest.approx(20.0)
    assert est.seconds(stages["t"]) == pytest.approx(100.0)  # no training measured: every kind's rate
    assert est.seconds(stages["w"]) == pytest.approx(100.0)  # 80 GPU-hours on 8 GPUs: 10 hours
    assert est.seconds(stages["sel"]) == 0.0
    assert engine.Estimate(stages, {"s0": 10.0, "w": 50.0}).seconds(stages["t"]) == pytest.approx(50.0)
    assert engine.Estimate(stages, {}).seconds(stages["t"]) is None
    assert engine.Estimate(stages, {}, prior=3600.0).seconds(stages["t"]) == pytest.approx(36000.0)
    smoke = engine.Estimate(stages, {"s0": 10.0, "w": 50.0, "t": 30.0}, prior=3600.0, scaled=False)
    assert smoke.seconds(stages["w"]) == smoke.seconds(stages["t"]) == pytest.approx(40.0)  # the mean of its kind
    assert smoke.seconds(stages["sel"]) == pytest.approx(30.0)  # no selection measured: the mean of all
    assert engine.Estimate(stages, {}, prior=3600.0, scaled=False).seconds(stages["t"]) is None
    states = {"s0": "done", "s": "pending", "t": "pending", "w": "pending", "sel": "pending"}
    one = lambda s: 1  # noqa: E731
    assert engine.eta(stages, states, {}, est, one, 1, 0.0) == pytest.approx(220.0)  # 20 + 100 + 100, one at a time
    assert engine.eta(stages, states, {}, est, one, 8, 0.0) == pytest.approx(120.0)  # the chain s -> t
    running = {"s": SimpleNamespace(since=0.0)}
    assert engine.eta(stages, {**states, "s": "running"}, running, est, one, 8, 15.0) == pytest.approx(105.0)
    gpus = lambda s: min(s.gpus, 4)  # noqa: E731  w takes all 4 GPUs for its 100 s
    assert engine.eta(stages, states, {}, est, gpus, 4, 0.0) == pytest.approx((20 + 100 + 400) / 4)
    left = {**states, "s": "failed", "t": "blocked"}
    assert engine.eta(stages, left, {}, est, one, None, 0.0) == pytest.approx(100.0)


# ---------------------------------------------------------------- Slurm, through submitit

@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """sbatch and srun stand-ins on PATH: sbatch answers a new job id, as Slurm does."""
    pytest.importorskip("submitit")
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "sbatch").write_text('#!/bin/bash\nif [ -n "$REFUSE" ]; then echo "$REFUSE" >&2; exit 1; fi\n'
                                 'n=$(cat "$(dirname "$0")/n" 2>/dev/null || echo 4241)\n'
                                 'n=$((n + 1)); echo $n > "$(dirname "$0")/n"; echo "Submitted batch job $n"\n')
    (bin_ / "srun").write_text("#!/bin/bash\nexit 0\n")
    for f in ("sbatch", "srun"):
        (bin_ / f).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "out"


def test_slurm_job_scripts(fake_slurm):
    """What would be submitted: two one-GPU stages ready together as one array, an 8-GPU stage as a
    job of --gpus_per_job 4 GPUs under torchrun; resources, partition, account, time, the working
    directory, the log paths (and their links in the run folders), the command in each job."""
    from submitit.core.utils import DelayedSubmission
    out = fake_slurm
    ex = engine.SubmititExecutor(out, partition="gpu", gpus_per_job=4, hours=2, account="nas")
    stages = [stage("s0", gpus=1), stage("s1", gpus=1), stage("w", gpus=8, kind="train")]
    attempts = [engine.Attempt(s, 1, max(ex.width(s), 1)) for s in stages]
    assert all(ex.reserve(a) for a in attempts)  # the cluster queues them all
    ex.submit(attempts, out)
    assert [a.job_id for a in attempts] == ["4242_0", "4242_1", "4243"]
    array, single = (out / "jobs" / "4242_submission.sh").read_text(), (out / "jobs" / "4243_submission.sh").read_text()
    for script, gpus in ((array, 1), (single, 4)):
        for line in ("#SBATCH --partition=gpu", "#SBATCH --account=nas", "#SBATCH --time=120",
                     f"#SBATCH --gpus-per-node={gpus}", f"#SBATCH --cpus-per-task={engine.CPUS_PER_GPU * gpus}",
                     "#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1", f"#SBATCH --chdir={ROOT}",
                     "#SBATCH --signal=USR2@120", "python -u -m submitit.core._submit"):
            assert line in script, f"{line!r} not in\n{script}"
    assert "#SBATCH --array=0-1%2" in array and "--array" not in single
    assert f"#SBATCH --output={out}/jobs/%A_%a_0_log.out" in array
    assert f"#SBATCH --output={out}/jobs/%j_0_log.out" in single
    assert "#SBATCH --job-name=w" in single
    for a in attempts:  # each run folder links its job's Slurm log; the job runs the stage's command
        link = out / a.stage.name / f"slurm-{a.job_id}.log"
        assert link.is_symlink() and link.resolve() == (out / "jobs" / f"{a.job_id}_0_log.out").resolve()
        job = DelayedSubmission.load(out / "jobs" / f"{a.job_id}_submitted.pkl").function
        assert job.cmd == engine.command(a.stage, out, a.nproc) and job.folder == str(out / a.stage.name)
    assert attempts[2].nproc == 4 and "--nproc_per_node=4" in engine.command(stages[2], out, 4)


def test_a_refused_submission_is_a_failed_attempt(fake_slurm, monkeypatch):
    monkeypatch.setenv("REFUSE", "sbatch: error: invalid partition specified: nope")
    p = plan_of(stage("s", gpus=1), stage("t", ["s"], gpus=1, kind="train"))
    r, lines = run(p, fake_slurm, engine.SubmititExecutor(fake_slurm, partition="nope"), retries=1)
    assert r.state == {"s": "failed", "t": "blocked"}
    assert "invalid partition specified: nope" in r.failed["s"] and sum(" start " in x for x in lines) == 2


def test_a_preempted_slurm_job_is_requeued_as_the_same_stage(tmp_path):
    """submitit's checkpoint hook stops the stage's process and requeues the same command; the job
    pickles without the process."""
    job = engine.StageJob([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "s", "summary.json", 2)
    (tmp_path / "s").mkdir()
    job.proc = engine.start(job.cmd, job.folder, engine.stage_env(), 2)
    again = job.checkpoint()
    assert job.proc.poll() is not None  # stopped
    assert isinstance(again.function, engine.StageJob) and again.function.cmd == job.cmd and again.function.attempt == 2
    assert pickle.loads(pickle.dumps(job)).proc is None
    (tmp_path / "s" / "summary.json").write_text("{}")
    assert again.function() == 0  # finished meanwhile: the requeued job does not run it again
    assert (tmp_path / "s" / engine.CONSOLE).read_text().count("==== ") == 1


def test_submitit_local_backend_runs_the_same_dag(tmp_path):
    """SubmititExecutor on submitit's local backend: the GPU stages as submitit jobs (logs linked in
    their folders), the selection on this machine, a failure retried, dependencies kept."""
    pytest.importorskip("submitit")
    p = plan_of(stage("s", gpus=1), stage("flaky", gpus=1, fail=1),
                stage("sel", ["s", "flaky"], gpus=0, kind="select", hours=0, needs=["s", "flaky"]),
                stage("t", ["sel"], gpus=1, kind="train", needs=["sel"]))
    ex = engine.SubmititExecutor(tmp_path, hours=1, cluster="local")
    r, lines = run(p, tmp_path, ex, retries=1)
    assert r.failed == {} and set(r.state.values()) == {"done"}
    rec = records(tmp_path)
    assert rec["flaky"]["end"]["attempt"] == 2 and rec["t"]["start"]["t"] >= rec["sel"]["end"]["t"]
    for name in ("s", "flaky", "t"):
        logs = list((tmp_path / name).glob("slurm-*.log"))
        assert logs and all(link.exists() for link in logs), name
    assert not list((tmp_path / "sel").glob("slurm-*.log"))
