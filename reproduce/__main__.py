"""Reproduce the five papers: the registry's stages as a DAG, on this machine or on Slurm, then the summary.

Usage (run_all.sh passes its arguments here):
  python -m reproduce [--methods msg_das,entrannas,darts_pt,darts_pd,d_darts,baselines] [--data DIR]
                      [--imagenet DIR] [--imagenet16 DIR] [--voc DIR] [--seeds "0 1"] [--out results]
                      [--smoke | --demo] [--plan]
                      [--gpus G | --jobs N] [--retries R]
                      [--executor slurm --partition P [--gpus_per_job G] [--time H] [--account A]]

  --data DIR      CIFAR-10/100 and SVHN (downloaded there once, before the first stage, when missing)
  --imagenet DIR  also the ImageNet rows (train/ and val/ class folders)
  --imagenet16 DIR
                  also the ImageNet16-120 points of DARTS-PT's Figs. 4, 8 (train_data_batch_1..10, val_data)
  --voc DIR       also the Pascal VOC 2012 rows (segmentation)
  --seeds "..."   search seeds for every experiment instead of each paper's own
  --smoke         every kind of experiment, tiny, on the built-in synthetic data (minutes on a CPU)
  --demo          every method's search, small, on the built-in synthetic data, its cell trained beside a
                  random cell and DARTS_V2 (reproduce/demo.py; under 10 minutes on 2 CPU cores; --methods
                  picks the searches)
  --plan          list every stage (command, resources, estimated GPU-hours, state), every row and figure of
                  the papers it fills (done, started or pending) and the totals, and stop

On this machine (--executor local, the default), each stage that needs a GPU runs on GPUs of its
own (--gpus G: the first G visible GPUs, default all); a stage asking for more GPUs than that
(ImageNet evaluations under torchrun) waits for all of them. Without GPUs (or --gpus 0), --jobs N
stages run at once on the CPUs. On Slurm (--executor slurm, needs pip install -e ".[slurm]"), each
stage is a job submitted with submitit; this command waits for them and submits each stage when
the stages it depends on are done (run it in tmux, screen or a small CPU job).

Each stage is one run folder under OUT: its log in log.txt, its console in console.txt. A finished
stage (its summary.json exists) is skipped; a started one continues with --resume; a failed one is
started again up to --retries times, and the stages that do not depend on it go on. After an
interruption, or to retry what failed, run the same command again. OUT/status.json holds every
stage's state; `python -m reproduce.summary OUT` refreshes the results table at any time.
"""
import argparse
import json
import os
import shlex
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

from common.utils import die
from reproduce import engine, summary
from reproduce.demo import demo
from reproduce.experiments import EXPERIMENTS
from reproduce.registry import Context, Figure, PlanError, Row, plan, row_stages, to_json

PAPERS = ("msg_das", "entrannas", "darts_pt", "darts_pd", "d_darts", "baselines")
SLURM_FLAGS = ("partition", "gpus_per_job", "time", "account")


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, before anything runs
        die(f"{message} (bash run_all.sh --help lists the options)")


def parse_args(argv):
    p = Parser(prog="run_all.sh", description=__doc__.split("\n")[0],
               formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--methods", default=",".join(PAPERS))
    p.add_argument("--data", default="data")
    p.add_argument("--imagenet", default="")
    p.add_argument("--imagenet16", default="")
    p.add_argument("--voc", default="")
    p.add_argument("--seeds", default=None, help='e.g. "0 1": search seeds instead of the papers\' own')
    p.add_argument("--out", default=None, help="default: results (results/smoke, results/demo with --smoke, --demo)")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--demo", action="store_true")
    p.add_argument("--plan", action="store_true")
    p.add_argument("--executor", choices=("local", "slurm"), default="local",
                   help="local: this machine (default); slurm: a Slurm cluster, through submitit")
    p.add_argument("--retries", type=int, default=2,
                   help="times a failed stage is started again, with --resume (default 2)")
    g = p.add_argument_group("on this machine (--executor local)")
    g.add_argument("--gpus", type=int, default=None, help="GPUs to use, one stage each (default: every visible one)")
    g.add_argument("--jobs", type=int, default=None, help="stages at once on the CPUs, without GPUs (default 1)")
    g = p.add_argument_group("on Slurm (--executor slurm)")
    g.add_argument("--partition", default=None, help="the partition the jobs go to (required)")
    g.add_argument("--gpus_per_job", type=int, default=None,
                   help="the most GPUs one job asks for (default: what the stage asks for, 8 for ImageNet evaluation)")
    g.add_argument("--time", type=float, default=None,
                   help="wall-clock hours of one job (default 24); a job out of time is requeued and resumes")
    g.add_argument("--account", default=None, help="the account the jobs are charged to")
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
    if (a.smoke or a.demo) and (a.imagenet or a.imagenet16 or a.voc):
        die(f"--{'smoke' if a.smoke else 'demo'} runs on the built-in synthetic data only; "
            "drop --imagenet / --imagenet16 / --voc")
    for flag, least in (("retries", 0), ("gpus", 0), ("jobs", 1), ("gpus_per_job", 1)):
        if getattr(a, flag) is not None and getattr(a, flag) < least:
            die(f"--{flag} {getattr(a, flag)}: give a whole number of at least {least}")
    if a.time is not None and not a.time > 0:
        die(f"--time {a.time}: give the hours of one job, more than 0")
    if a.executor == "slurm":
        if a.partition is None:
            die("--executor slurm needs --partition P (the partition the jobs go to; `sinfo` lists them)")
        local = [f"--{f}" for f in ("gpus", "jobs") if getattr(a, f) is not None]
        if local:
            die(f"{' and '.join(local)} are for --executor local; on Slurm, --gpus_per_job caps the GPUs of one job")
    else:
        slurm = [f"--{f}" for f in SLURM_FLAGS if getattr(a, f) is not None]
        if slurm:
            die(f"{' and '.join(slurm)} are for --executor slurm")
        if a.jobs is not None and a.gpus:
            die(f"--jobs runs stages side by side on the CPUs; with --gpus {a.gpus} each GPU runs one stage: "
                "drop one of them")
    cwd = Path.cwd()  # relative paths are the user's, not the repository's
    resolve = lambda d: str((cwd / Path(d).expanduser()).resolve()) if d else d  # noqa: E731
    a.out = resolve(a.out or ("results/smoke" if a.smoke else "results/demo" if a.demo else "results"))
    if Path(a.out).exists() and not Path(a.out).is_dir():
        die(f"--out {a.out}: a file is there; give a folder")
    a.data, a.imagenet, a.imagenet16, a.voc = map(resolve, (a.data, a.imagenet, a.imagenet16, a.voc))
    for flag in ("imagenet", "imagenet16", "voc"):
        if getattr(a, flag) and not Path(getattr(a, flag)).is_dir():
            die(f"--{flag} {getattr(a, flag)}: no such folder")
    a.methods, a.seeds = methods, seeds
    return a


def make_plan(a):
    ctx = Context(smoke=a.smoke, data=a.data, imagenet=a.imagenet, imagenet16=a.imagenet16, voc=a.voc,
                  seeds=a.seeds)
    rows = demo(a.methods) if a.demo else [e for e in EXPERIMENTS if isinstance(e, Row) and e.paper in a.methods]
    try:
        return plan(rows, ctx)
    except PlanError as e:
        die(f"the experiment registry is inconsistent: {e}")


def visible_gpus():
    """The GPUs this process sees, as CUDA_VISIBLE_DEVICES names them."""
    import torch
    n = torch.cuda.device_count()
    named = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return named[:n] if named else [str(i) for i in range(n)]


def make_executor(a, out):
    if a.executor == "slurm":
        return engine.SubmititExecutor(out, a.partition, a.gpus_per_job, a.time or 24.0, a.account)
    gpus = visible_gpus()
    if a.gpus is not None and a.gpus > len(gpus):
        named = os.environ.get("CUDA_VISIBLE_DEVICES")
        die(f"--gpus {a.gpus}: this machine has {len(gpus)} visible GPU{'s' * (len(gpus) != 1)}"
            + (f" (CUDA_VISIBLE_DEVICES={named})" if named is not None else ""))
    if a.jobs is not None and a.gpus is None and gpus:
        die(f"--jobs runs stages side by side on the CPUs, but this machine has {len(gpus)} GPUs: "
            "add --gpus 0 to use the CPUs, or drop --jobs to give each stage a GPU")
    # stages forked from this process only where it has seen no GPU (asking CUDA how many may set it up)
    return engine.LocalExecutor(gpus[:len(gpus) if a.gpus is None else a.gpus], a.jobs or 1, warm=not gpus)


def prior(a, executor):
    """Seconds per paper-hour before anything is measured: the papers' hours as they are when
    full-size stages run on GPUs; unknown for a smoke run or on CPUs."""
    on_gpus = isinstance(executor, engine.SubmititExecutor) or executor.gpus
    return 3600.0 if on_gpus and not a.smoke else None


def fetch_datasets(p):
    """Download every dataset the stages download (--download), once, before any stage starts:
    parallel stages would otherwise write the same files at once (and compute nodes often have no
    internet)."""
    wanted = {(s.argv[s.argv.index("--dataset") + 1], s.argv[s.argv.index("--data") + 1])
              for s in p.stages.values() if "--download" in s.argv}
    if not wanted:
        return
    from common.data import get_dataset
    for dataset, root in sorted(wanted):
        print(f"run_all.sh: {dataset} in {root} (downloaded if missing)", flush=True)
        args = argparse.Namespace(dataset=dataset, data=root, download=True, subset=None, image_size=None)
        for train in (True, False):
            get_dataset(args, train, None)


def resources(stage, executor):
    w = executor.width(stage)
    if stage.gpus == 0:
        return "CPU"
    if w == 0:
        return f"{stage.gpus} GPU{'s' if stage.gpus > 1 else ''} -> CPU"
    text = f"{stage.gpus} GPU{'s' if stage.gpus > 1 else ''}" + (f" -> {w}" if w != stage.gpus else "")
    return text + (f", torchrun x{w}" if w > 1 else "")


def experiments(p, states):
    """One line per row of the papers in the plan (paper / table / row label (dataset), from its stages'
    `states`: done when all are, pending when none has begun, else started) and per figure drawn from
    them (the states of its rows in the plan; the others, skipped for want of data or not in a smoke
    plan, are counted as "not planned")."""
    lines, rows = [], {}
    for key, (table, parts) in p.rows.items():
        names = row_stages(parts)
        done = sum(states[n] == "done" for n in names)
        rows[key] = st = ("done" if done == len(names) else
                          "pending" if all(states[n] == "pending" for n in names) else "started")
        lines.append(f"row      {st:8} {key[0]} / {table} / {key[1]} ({key[2]}): {done} of {len(names)} stages done")
    for f in EXPERIMENTS:
        if isinstance(f, Figure) and any(r.key in rows for r in f.rows):
            counts = Counter(rows.get(r.key, "not planned") for r in f.rows)
            planned = set(counts) - {"not planned"}
            st = "done" if planned == {"done"} else "pending" if planned == {"pending"} else "started"
            n = len(f.rows)
            lines.append(f"figure   {st:8} {f.paper} / {f.figure}: {f.title} ({n} row{'s' * (n > 1)}: "
                         + ", ".join(f"{k} {v}" for v, k in counts.items()) + ")")
    return lines


def print_plan(p, out, executor, prior_rate, scaled):
    """Every stage: state, kind, resources, the papers' GPU-hours (time taken here when done),
    command; every row and figure of the papers with its state; then the totals and the time left."""
    recorded = engine.read_status(out).get("stages", {})
    states, counts, left = {}, {}, 0.0
    for s in p.stages.values():
        r = recorded.get(s.name, {})
        st = states[s.name] = engine.stage_state(s, out, r)
        counts[st] = counts.get(st, 0) + 1
        left += s.gpu_hours if st != "done" else 0
        took = f"  took {engine.hms(r['seconds'])}" if st == "done" and r.get("seconds") else ""
        tries = f"  {r['attempts']} attempt{'s' * (r['attempts'] > 1)}" if st != "done" and r.get("attempts") else ""
        if st == "running" and r.get("since"):
            tries += f", for {engine.hms(time.time() - r['since'])}"
        print(f"{st:8} {s.kind:7} {resources(s, executor):20} ~{s.gpu_hours:7.1f} GPU-h  {s.name}{took}{tries}")
        print(f"         {shlex.join(engine.command(s, out, max(executor.width(s), 1)))}")
    print("\n".join(experiments(p, states)))
    for row, why in p.skipped:
        print(f"skipped  {row.paper} / {row.table} / {row.row} ({row.dataset}): {why}")
    measured = {n: r["seconds"] for n, r in recorded.items() if n in p.stages and r.get("seconds")}
    est = engine.Estimate(p.stages, measured, prior_rate, scaled)
    running = {n: SimpleNamespace(since=recorded[n]["since"]) for n, st in states.items()
               if st == "running" and recorded.get(n, {}).get("since")}
    states = {n: ("pending" if st == "started" else st) for n, st in states.items()}
    eta = engine.eta(p.stages, states, running, est, executor.occupancy, executor.capacity, time.time())
    print(f"{len(p.stages)} stages ({', '.join(f'{n} {k}' for k, n in counts.items())}), {len(p.rows)} rows; "
          f"~{left:.0f} GPU-hours left at the papers' settings; "
          f"~{engine.hms(eta)} left on {executor.describe()}"
          + (" (from the stages measured here)" if measured else " (the papers' GPU-hours)" if prior_rate else
             " (unknown until a stage has finished here)"))


def main(argv=None):
    a = parse_args(sys.argv[1:] if argv is None else argv)
    p = make_plan(a)
    out = Path(a.out)
    executor = make_executor(a, out)
    if a.plan:
        print_plan(p, out, executor, prior(a, executor), scaled=not (a.smoke or a.demo))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    lock = engine.Lock(out / "run_all.lock")
    if not lock.acquire(command=shlex.join(sys.argv)):
        who = lock.holder()
        die(f"{out} is being run by another run_all.sh (pid {who.get('pid', '?')} on {who.get('host', '?')}); "
            "wait for it to end or stop it")
    fetch_datasets(p)
    (out / "plan.json").write_text(json.dumps(to_json(p), indent=1) + "\n")
    print(f"run_all.sh: results in {out} ({'smoke' if a.smoke else 'demo' if a.demo else 'full'} mode); "
          f"status in {out / engine.STATUS}",
          flush=True)
    r = engine.run(p, out, executor, a.retries, prior(a, executor), scaled=not (a.smoke or a.demo),  # tiny stages
                   echo=lambda line: print(line, flush=True))
    summary.main([str(out)])
    if r.interrupted:
        print(f"run_all.sh: stopped by {r.interrupted}; run the same command again to continue "
              "(finished stages are kept, started ones resume)", file=sys.stderr)
        return 130
    if r.failed:
        blocked = [n for n, st in r.state.items() if st == "blocked"]
        print(f"run_all.sh: {len(r.failed)} stage(s) failed, {len(blocked)} not run because of them:", file=sys.stderr)
        for name, log in r.failed.items():
            print(f"  {name}  (log: {log})", file=sys.stderr)
        print("run_all.sh: run the same command again to retry them (with --resume)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
