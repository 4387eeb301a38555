"""reproduce/warm.py: a stage forked from the warm driver is the process a fresh `python` would be
(what its script sees, its exit codes, its descriptors, its threads), and the smoke-sized stages
of run_all.sh --jobs start in a fraction of a fresh interpreter's time."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from reproduce import engine, warm
from reproduce.registry import ROOT

PROBE = '''
import json, os, sys


def is_open(fd):
    try:
        return bool(os.fstat(fd))
    except OSError:
        return False


threads = __import__("torch").get_num_threads() if sys.argv[-1] == "ok" else None
print(json.dumps({"name": __name__, "argv": sys.argv, "path0": sys.path[0], "cwd": os.getcwd(),
                  "env": os.environ.get("PROBE"), "threads": threads, "fds": [f for f in range(256) if is_open(f)],
                  "own_group": os.getpgid(0) == os.getpid(), "stdin": sys.stdin.read()}))
print("to stderr", file=sys.stderr)
how = sys.argv[-1]
if how == "die":
    sys.exit(2)
if how == "message":
    sys.exit("a message")
if how == "raise":
    raise ValueError("boom")
if how == "sleep":
    import time; time.sleep(60)
'''


def launch(forked, cmd, tmp_path, name, env_extra=None):
    env = {**os.environ, "PROBE": "here", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(tmp_path), **(env_extra or {})}
    lock = engine.Lock(tmp_path / f"{name}.lock")
    assert lock.acquire()
    out = open(tmp_path / f"{name}.txt", "w")
    if forked:
        proc = warm.Forked(cmd, ROOT, env, out.fileno(), keep=lock.fd)
    else:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                pass_fds=(lock.fd,), start_new_session=True)
    keep = lock.fd
    lock.release()
    out.close()
    return proc, keep


def probe(tmp_path, forked, how, module=False):
    (tmp_path / "probe_mod.py").write_text(PROBE)
    cmd = [sys.executable, *(["-m", "probe_mod"] if module else [str(tmp_path / "probe_mod.py")]), "--x", how]
    name = f"{'warm' if forked else 'cold'}-{how}-{module}"
    proc, keep = launch(forked, cmd, tmp_path, name)
    rc = proc.wait(60)
    lines = (tmp_path / f"{name}.txt").read_text().splitlines()
    seen = json.loads(lines[0])
    seen["only_its_descriptors"] = seen.pop("fds") == [0, 1, 2, keep]  # no file of the driver's but its lock
    return rc, seen, lines[1:]


@pytest.mark.parametrize("module", [False, True], ids=["script", "-m"])
def test_a_forked_stage_sees_what_a_fresh_python_sees(tmp_path, module):
    warm.preload()
    torch = sys.modules["torch"]
    before = torch.get_num_threads()
    torch.set_num_threads(3)  # the driver's own setting is not the stage's
    for how, code in (("ok", 0), ("die", 2), ("message", 1), ("raise", 1)):
        cold, warm_ = probe(tmp_path, False, how, module), probe(tmp_path, True, how, module)
        assert cold[0] == warm_[0] == code, (how, cold, warm_)
        c, w = cold[1], warm_[1]
        assert c == w, (how, c, w)  # __main__, argv, sys.path[0], cwd, environment, threads, descriptors
        assert w["name"] == "__main__" and w["argv"][1:] == ["--x", how] and w["argv"][0].endswith("probe_mod.py")
        assert w["env"] == "here" and w["only_its_descriptors"] and w["own_group"] and w["stdin"] == ""
        assert w["threads"] == (1 if how == "ok" else None)  # OMP_NUM_THREADS of its own environment
        assert w["path0"] == (str(ROOT) if module else str(tmp_path))
        assert "to stderr" in warm_[2]
        if how == "message":
            assert "a message" in warm_[2]
        if how == "raise":
            assert any("ValueError: boom" in x for x in warm_[2])
    torch.set_num_threads(before)


def test_code_given_with_dash_c(tmp_path):
    code = "import sys, os; print(__name__, sys.argv[1:], repr(sys.path[0]), os.environ['PROBE']); sys.exit(5)"
    cmd = [sys.executable, "-c", code, "--save", "x"]
    assert warm.runs(cmd) and not warm.runs([sys.executable, "-u", "x.py"]) and not warm.runs(["torchrun", "x.py"])
    for forked in (False, True):
        proc, _ = launch(forked, cmd, tmp_path, f"c-{forked}")
        assert proc.wait(30) == 5
    assert (tmp_path / "c-True.txt").read_text() == (tmp_path / "c-False.txt").read_text() == "__main__ ['--save', 'x'] '' here\n"


def test_a_forked_stage_holds_its_lock_alone_and_stops_like_a_process(tmp_path):
    """... even though the driver handles SIGTERM itself (run_all.sh stops its stages on it)."""
    (tmp_path / "probe_mod.py").write_text(PROBE)
    before = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        proc, _ = launch(True, [sys.executable, str(tmp_path / "probe_mod.py"), "sleep"], tmp_path, "s")
    finally:
        signal.signal(signal.SIGTERM, before)
    lock = engine.Lock(tmp_path / "s.lock")
    deadline = time.time() + 30
    while not (tmp_path / "s.txt").read_text() and time.time() < deadline:
        time.sleep(0.02)
    assert lock.held() and proc.poll() is None  # the child holds the lock the driver released
    t0 = time.time()
    engine.stop(proc, grace=5)
    assert proc.returncode == -signal.SIGTERM and time.time() - t0 < 5 and not lock.held()


def test_only_cpu_stages_are_forked(tmp_path, monkeypatch):
    """GPU stages start as fresh processes (CUDA cannot be used in a forked child), and so does every
    stage where the driver has seen a GPU, --gpus 0 included (asking CUDA may have set it up)."""
    from reproduce import __main__ as driver
    assert engine.LocalExecutor(jobs=2).warm and not engine.LocalExecutor(gpus=("0",)).warm
    for visible, argv, forked in (([], ["--jobs", "2"], True), (["0", "1"], ["--gpus", "0", "--jobs", "2"], False),
                                  (["0", "1"], [], False)):
        monkeypatch.setattr(driver, "visible_gpus", lambda: visible)
        assert driver.make_executor(driver.parse_args(argv), tmp_path).warm is forked, argv


def test_a_forked_stage_leaves_the_drivers_temporary_folders_alone(tmp_path):
    """The child inherits the driver's finalizers (a TemporaryDirectory removes its folder at exit):
    the stage's exit must not run them, or a stage would delete what the driver still uses."""
    import tempfile
    held = tempfile.TemporaryDirectory(dir=tmp_path)
    proc, _ = launch(True, [sys.executable, "-c", "import tempfile; t = tempfile.mkdtemp()"], tmp_path, "t")
    assert proc.wait(30) == 0 and os.path.isdir(held.name), (tmp_path / "t.txt").read_text()
    held.cleanup()
