"""What running the plan through an executor costs and gains, on this machine.

  parallel   the smoke plan (`run_all.sh --smoke`) one stage at a time (--jobs 1) and two at a time
             (--jobs 2), each into a fresh folder: wall time, and the ratio
  overhead   one stage under each executor (this machine's processes, forked from the warm driver
             or a fresh python; submitit's local backend, the code path of Slurm): from its launch
             to its process' first line (a stage that
             does nothing), and to the first training step of a smoke training
             (common.train_eval with --report_freq 1: Python, PyTorch, data and network set-up)

  python -m bench.executor                         # both; bench/results/executor-<device>.md|.json
  python -m bench.executor --only overhead         # one of them (the other is kept from the last results)
  python -m bench.executor --methods darts_pd      # the smoke plan of some methods only
"""
import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from reproduce import engine  # noqa: E402
from reproduce.registry import SMOKE_TRAIN, Stage  # noqa: E402

RESULTS = Path(__file__).with_name("results")
# A stage that does nothing but say when it started (and write its done-marker).
NOOP = ("-c", "import sys, time, pathlib; t = time.time(); p = pathlib.Path(sys.argv[sys.argv.index('--save') + 1]); "
              "p.mkdir(parents=True, exist_ok=True); (p / 'summary.json').write_text(str(t))")
TRAIN = ("-m", "common.train_eval", "--arch", "DARTS_V2", "--dataset", "synthetic", *SMOKE_TRAIN[2:], "--device", "cpu",
         "--report_freq", "1")
FIRST_STEP = "train step 0 "


def parallel(jobs, methods):
    """Wall seconds of the smoke plan with --jobs N, in a fresh folder."""
    with tempfile.TemporaryDirectory() as out:
        cmd = ["bash", str(ROOT / "run_all.sh"), "--smoke", "--jobs", str(jobs), "--out", out,
               *(["--methods", methods] if methods else [])]
        t0 = time.time()
        env = {**os.environ, "PYTHON": sys.executable}
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
        seconds = time.time() - t0
        if proc.returncode != 0:
            sys.exit(f"{shlex.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
        return {"jobs": jobs, "seconds": round(seconds, 1), "load_average": round(os.getloadavg()[0], 1),
                "stages": len(json.loads((Path(out) / "plan.json").read_text())["stages"])}


def overhead(name, make_executor):
    """Seconds from a stage's launch to its first line (NOOP) and to its first training step (TRAIN)."""
    result = {"executor": name}
    for key, argv in (("to_first_line_s", NOOP), ("to_first_step_s", TRAIN)):
        with tempfile.TemporaryDirectory() as out:
            stage = Stage(key, argv, (), 1, "train", 1.0)
            seen, launched = {}, {}

            def echo(line):
                if " start " in line:
                    launched["t"] = time.time()

            def watch():  # the first training step, as it appears in the stage's console
                console = Path(out) / key / engine.CONSOLE
                while "t" not in seen and not (Path(out) / key / "summary.json").exists():
                    if console.exists() and FIRST_STEP in console.read_text():
                        seen["t"] = time.time()
                    time.sleep(0.01)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            r = engine.run(SimpleNamespace(stages={key: stage}), out, make_executor(out), retries=0, echo=echo,
                           tick=0.01)
            watcher.join()
            if r.failed:
                sys.exit(f"the {key} stage failed under {name}: see {r.failed[key]}")
            first = float((Path(out) / key / "summary.json").read_text()) if argv is NOOP else seen["t"]
            result[key] = round(first - launched["t"], 2)
    return result


def markdown(res):
    m = res["machine"]
    lines = [f"# Executors on {m['device']} ({m['cores']} cores), torch {m['torch']}", "",
             f"`{res['command']}`", ""]
    if res.get("parallel"):
        one, two = res["parallel"]
        lines += ["| smoke plan | stages | wall s | x --jobs 1 | load average at the end |", "|---|---|---|---|---|",
                  f"| --jobs 1 | {one['stages']} | {one['seconds']:.0f} | 1.00 | {one.get('load_average', '–')} |",
                  f"| --jobs 2 | {two['stages']} | {two['seconds']:.0f} | {two['seconds'] / one['seconds']:.2f} | "
                  f"{two.get('load_average', '–')} |", ""]
    if res.get("overhead"):
        lines += ["| executor | launch to first line s | launch to first training step s |", "|---|---|---|"]
        lines += [f"| {o['executor']} | {o['to_first_line_s']:.2f} | {o['to_first_step_s']:.2f} |"
                  for o in res["overhead"]]
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", choices=("parallel", "overhead"), default=None)
    p.add_argument("--methods", default="", help="the smoke plan of these methods only (run_all.sh --methods)")
    p.add_argument("--out", default=str(RESULTS))
    a = p.parse_args(argv)
    import torch
    out = Path(a.out)
    stem = out / f"executor-{'cuda' if torch.cuda.is_available() else 'cpu'}"
    old = json.loads(stem.with_suffix(".json").read_text()) if a.only and stem.with_suffix(".json").exists() else {}
    res = {**old, "command": shlex.join(["python", "-m", "bench.executor", *(argv if argv is not None else sys.argv[1:])]),
           "machine": {"device": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                       "torch": torch.__version__}}
    if a.only in (None, "overhead"):
        makers = [("this machine's CPUs, forked from the warm driver (LocalExecutor, run_all.sh --jobs)",
                   lambda out: engine.LocalExecutor(jobs=1)),
                  ("this machine, a fresh python (LocalExecutor, as for GPU stages)",
                   lambda out: engine.LocalExecutor(jobs=1, warm=False))]
        try:
            import submitit  # noqa: F401
            makers.append(("submitit local backend (SubmititExecutor)",
                           lambda out: engine.SubmititExecutor(out, hours=1, cluster="local")))
        except ImportError:
            print("submitit is not installed: the overhead of its local backend is left out")
        res["overhead"] = [overhead(name, make) for name, make in makers]
    if a.only in (None, "parallel"):
        res["parallel"] = [parallel(jobs, a.methods) for jobs in (1, 2)]
    out.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
