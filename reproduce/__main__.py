"""Reproduce the five papers: the registry's stages, run in dependency order, then the summary.

Usage (run_all.sh passes its arguments here):
  python -m reproduce [--methods msg_das,entrannas,darts_pt,darts_pd,d_darts,baselines] [--data DIR]
                      [--imagenet DIR] [--voc DIR] [--seeds "0 1"] [--out results] [--smoke | --demo] [--plan]

  --data DIR      CIFAR-10/100 and SVHN (downloaded there by torchvision when missing)
  --imagenet DIR  also the ImageNet rows (train/ and val/ class folders)
  --voc DIR       also the Pascal VOC 2012 rows (segmentation)
  --seeds "..."   search seeds for every experiment instead of each paper's own
  --smoke         every kind of experiment, tiny, on the built-in synthetic data (minutes on a CPU)
  --demo          every method's search, small, on the built-in synthetic data, its cell trained beside a
                  random cell and DARTS_V2 (reproduce/demo.py; under 10 minutes on 2 CPU cores; --methods
                  picks the searches)
  --plan          list every stage (command, resources, estimated GPU-hours, state) and stop

Each stage is one run folder under OUT (its log in log.txt, the command's console in console.txt).
A finished stage (its summary.json exists) is skipped; a started one continues with --resume.
After an interruption, run the same command again.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common.utils import die
from reproduce import summary
from reproduce.demo import demo
from reproduce.experiments import EXPERIMENTS
from reproduce.registry import ROOT, Context, PlanError, Row, plan, to_json

PAPERS = ("msg_das", "entrannas", "darts_pt", "darts_pd", "d_darts", "baselines")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="run_all.sh", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--methods", default=",".join(PAPERS))
    p.add_argument("--data", default="data")
    p.add_argument("--imagenet", default="")
    p.add_argument("--voc", default="")
    p.add_argument("--seeds", default=None, help='e.g. "0 1": search seeds instead of the papers\' own')
    p.add_argument("--out", default=None, help="default: results (results/smoke, results/demo with --smoke, --demo)")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--demo", action="store_true")
    p.add_argument("--plan", action="store_true")
    a = p.parse_args(argv)
    methods = [m for m in a.methods.split(",") if m]
    unknown = [m for m in methods if m not in PAPERS]
    if unknown or not methods:
        die(f"--methods: unknown method {', '.join(map(repr, unknown)) or '(none given)'}; choose from {', '.join(PAPERS)}")
    try:
        seeds = tuple(int(s) for s in a.seeds.replace(",", " ").split()) if a.seeds is not None else None
    except ValueError:
        die(f"--seeds {a.seeds!r}: give integers, e.g. --seeds \"0 1\"")
    if seeds is not None and (not seeds or min(seeds) < 0):
        die(f"--seeds {a.seeds!r}: give one or more non-negative integers")
    if a.smoke and a.demo:
        die("--smoke and --demo are two different runs; choose one")
    if (a.smoke or a.demo) and (a.imagenet or a.voc):
        die(f"--{'smoke' if a.smoke else 'demo'} runs on the built-in synthetic data only; "
            "drop --imagenet / --voc")
    cwd = Path.cwd()  # relative paths are the user's, not the repository's
    resolve = lambda d: str((cwd / Path(d).expanduser()).resolve()) if d else d  # noqa: E731
    a.out = resolve(a.out or ("results/smoke" if a.smoke else "results/demo" if a.demo else "results"))
    a.data, a.imagenet, a.voc = resolve(a.data), resolve(a.imagenet), resolve(a.voc)
    for flag in ("imagenet", "voc"):
        if getattr(a, flag) and not Path(getattr(a, flag)).is_dir():
            die(f"--{flag} {getattr(a, flag)}: no such folder")
    a.methods, a.seeds = methods, seeds
    return a


def make_plan(a):
    ctx = Context(smoke=a.smoke, data=a.data, imagenet=a.imagenet, voc=a.voc, seeds=a.seeds)
    rows = demo(a.methods) if a.demo else [e for e in EXPERIMENTS if isinstance(e, Row) and e.paper in a.methods]
    try:
        return plan(rows, ctx)
    except PlanError as e:
        die(f"the experiment registry is inconsistent: {e}")


def command(stage, out):
    argv = [a.replace("{out}", str(out)) for a in stage.argv]
    return [sys.executable, *argv, "--save", str(Path(out) / stage.name), "--resume"]


def state(stage, out):
    folder = Path(out) / stage.name
    if (folder / stage.done).exists():
        return "done"
    return "started" if folder.exists() else "pending"


def print_plan(p, out):
    counts = {}
    total = 0.0
    for s in p.stages.values():
        st = state(s, out)
        counts[st] = counts.get(st, 0) + 1
        total += s.gpu_hours if st != "done" else 0
        print(f"{st:8} {s.kind:7} gpus={s.gpus} ~{s.gpu_hours:7.1f} GPU-h  {s.name}")
        print(f"         {' '.join(command(s, out)[1:])}")
    for row, why in p.skipped:
        print(f"skipped  {row.paper} / {row.table} / {row.row} ({row.dataset}): {why}")
    print(f"{len(p.stages)} stages ({', '.join(f'{n} {k}' for k, n in counts.items())}), "
          f"{len(p.rows)} rows, ~{total:.0f} GPU-hours left at the papers' settings")


def run(p, out):
    """Every stage in dependency order; a failed stage skips what depends on it, not the rest."""
    failed, blocked = [], set()
    for i, s in enumerate(p.stages.values()):
        folder = Path(out) / s.name
        if any(d in blocked for d in s.deps):
            blocked.add(s.name)
            continue
        if state(s, out) == "done":
            print(f"  done     {folder}")
            continue
        folder.mkdir(parents=True, exist_ok=True)
        print(f"  running  {folder}   ({i + 1}/{len(p.stages)}; log: {folder}/log.txt)", flush=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with open(folder / "console.txt", "a") as console:
            rc = subprocess.call(command(s, out), cwd=ROOT, stdout=console, stderr=subprocess.STDOUT, env=env)
        if rc != 0 or state(s, out) != "done":
            failed.append(s)
            blocked.add(s.name)
            tail = (folder / "console.txt").read_text().splitlines()[-15:]
            print("\n".join(tail), file=sys.stderr)
            print(f"run_all.sh: the stage in {folder} failed (console: {folder}/console.txt)", file=sys.stderr)
    return failed, blocked


def main(argv=None):
    a = parse_args(sys.argv[1:] if argv is None else argv)
    p = make_plan(a)
    out = Path(a.out)
    if a.plan:
        print_plan(p, out)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    (out / "plan.json").write_text(json.dumps(to_json(p), indent=1) + "\n")
    print(f"run_all.sh: {len(p.stages)} stages, results in {out} ({'smoke' if a.smoke else 'full'} mode)")
    t0 = time.time()
    failed, blocked = run(p, out)
    summary.main([str(out)])
    print(f"run_all.sh: {time.time() - t0:.0f} s")
    if failed:
        print(f"run_all.sh: {len(failed)} stage(s) failed, {len(blocked) - len(failed)} not run because of them; "
              "run the same command again to continue", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
