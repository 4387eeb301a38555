"""Running the stages of a plan: on every GPU of this machine, on its CPUs, or on a Slurm cluster.

A stage (reproduce/registry.py) is one command that fills one run folder under OUT; it is done
when the folder holds its done-marker (summary.json, written last). `run()` walks the DAG: it
starts every stage whose dependencies are done as soon as the executor has room for it, the
longest estimated path to the end of the plan first (the searches that many trainings wait for
before the trainings); a stage that fails is started again with --resume up to `retries` times
(not one that exits with 2, the project's exit code for bad input), then the stages that depend
on it are left out and every other stage goes on.

Executors, small classes on one interface: `width(stage)` (the GPUs it gets there), `reserve`
(room for an attempt now?), `submit` (start attempts), `poll` (its exit code once it ended),
`release`, `cancel`, and for what the user sees `where`, `state`, `describe`, `capacity`,
`occupancy`:
  LocalExecutor     processes on this machine: a GPU stage pinned to GPUs of its own
                    (CUDA_VISIBLE_DEVICES; several under torchrun), or N stages at once on CPUs
  SubmititExecutor  a Slurm job per stage through submitit (an array for stages that are ready
                    together and ask for the same resources; requeued on preemption or time-out,
                    the stage then continues with --resume); with submitit's local backend the
                    same class runs without Slurm, which is how the tests run it

Files under OUT:
  run_all.lock         held by the one driver that runs OUT
  NAME/stage.lock      held by the process of stage NAME for as long as it runs (even if its
                       driver is gone), so two runs never write into one stage folder at once
  NAME/console.txt     the stage's stdout and stderr, every attempt appended
  NAME/slurm-JOB.log   (Slurm) a link to the job's Slurm log in OUT/jobs/
  status.json          every stage's state, attempts, time taken and log, and the ETA (--plan reads it)
  jobs/                submitit's job scripts, pickles and logs
"""
import fcntl
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from reproduce.registry import ROOT
from reproduce.warm import Forked, preload, runs as warm_runs

LOCK = "stage.lock"
CONSOLE = "console.txt"
STATUS = "status.json"
BUSY = 75  # a stage job's exit code when another process holds the stage's folder (EX_TEMPFAIL)
BAD_INPUT = 2  # common.utils.die and argparse: the same command would fail the same way, so it is not retried
CPUS_PER_GPU = 4  # Slurm: CPU cores per GPU of a job (the scripts' 2 data-loading workers, the main process, one spare)


# ---------------------------------------------------------------- one stage

def width(stage, gpus):
    """GPUs a stage runs on where `gpus` GPUs are available to one stage (None: as many as it asks
    for): a torchrun stage asking for more runs on all of them (the batch size is global, split
    across ranks, so the maths is the same); 0 runs it on the CPU."""
    return stage.gpus if gpus is None else min(stage.gpus, gpus)


def command(stage, out, nproc=1):
    """The stage's command line, run from the repository root; under torchrun when nproc > 1."""
    argv = [a.replace("{out}", str(out)) for a in stage.argv]
    launcher = [sys.executable]
    if nproc > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return [*launcher, *argv, "--save", str(Path(out) / stage.name), "--resume"]


def is_done(stage, out):
    return (Path(out) / stage.name / stage.done).exists()


class Lock:
    """An exclusive flock on a file, which says who holds it. The lock belongs to the open file: a
    process started with its descriptor (`pass_fds`) holds it until it exits, whatever happens to
    the process that took it."""

    def __init__(self, path):
        self.path, self.fd = Path(path), None

    def acquire(self, **who):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self.fd = fd
        self.say(**who)
        return True

    def say(self, **who):
        """Write who holds the lock (pid, host, since, ...)."""
        text = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), **who})
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, text.encode(), 0)

    def release(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def holder(self):
        """Who holds it, as written in the file ({} if unreadable)."""
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def held(self):
        """Whether another open file holds the lock now."""
        if not self.path.exists():
            return False
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)


class Busy(Exception):
    """Another process holds the stage's folder."""


def start(cmd, folder, env, attempt=1, warm=False):
    """Start a stage's process with its folder locked (the process keeps the lock until it ends)
    and its output appended to FOLDER/console.txt; raises Busy if another process holds it. `warm`:
    forked from this process, which has imported torch (reproduce/warm.py), not a fresh python."""
    folder = Path(folder)
    lock = Lock(folder / LOCK)
    if not lock.acquire():
        raise Busy(lock.holder())
    try:
        with open(folder / CONSOLE, "a") as console:
            console.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} attempt {attempt} on {socket.gethostname()}"
                          f"{_devices_note(env)}: {shlex.join(cmd)}\n")
            console.flush()
            if warm and warm_runs(cmd):
                proc = Forked(cmd, ROOT, env, console.fileno(), keep=lock.fd)
            else:
                proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=console, stderr=subprocess.STDOUT,
                                        pass_fds=(lock.fd,), start_new_session=True)
        lock.say(pid=proc.pid, driver=os.getpid(), attempt=attempt)
    finally:
        lock.release()  # the stage's process holds it now
    return proc


def _devices_note(env):
    gpus = env.get("CUDA_VISIBLE_DEVICES")
    return "" if gpus is None else f" (GPUs {gpus or 'none'})"


def stage_env(gpus=None, threads=None):
    """The environment of a stage: the repository importable; CUDA_VISIBLE_DEVICES pinned to `gpus`
    (a list; [] hides every GPU; None leaves it as it is); `threads` CPU threads unless the user
    set OMP_NUM_THREADS."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus))
    if threads is not None:
        env.setdefault("OMP_NUM_THREADS", str(threads))
    return env


def stop(proc, grace=10.0):
    """SIGTERM to the stage's process group (torchrun and its ranks), SIGKILL after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            pass


@dataclass
class Attempt:
    """One run of a stage's command: where (`gpus`: the GPUs it was given; None on Slurm, whose
    jobs get theirs from the scheduler) and its handle in the executor."""
    stage: object
    number: int
    nproc: int = 1
    gpus: tuple | None = None
    handle: object = None
    job_id: str = ""
    log: str = ""
    since: float = field(default_factory=time.time)


# ---------------------------------------------------------------- executors

class LocalExecutor:
    """Stages as processes on this machine. With `gpus` (device ids as CUDA_VISIBLE_DEVICES would
    name them), a stage asking for G GPUs waits for min(G, len(gpus)) free ones and is pinned to
    them; stages that need no GPU (the selection) run beside them. Without GPUs, `jobs` stages run
    at once on the CPUs, each with its share of the cores as threads, forked from this process once
    it has imported torch (`warm`; reproduce/warm.py): a smoke stage's work is shorter than a fresh
    interpreter's imports."""

    tick = 0.1  # seconds between two looks at the running stages

    def __init__(self, gpus=(), jobs=1, warm=True):
        self.gpus, self.free, self.jobs, self.cpu_busy = tuple(gpus), list(gpus), jobs, 0
        self.threads = max(1, (os.cpu_count() or 1) // jobs) if not gpus else None
        self.warm = warm and not gpus
        if self.warm:
            preload()

    @property
    def capacity(self):
        """Stages' worth of room, for the ETA: GPUs, or CPU jobs."""
        return len(self.gpus) or self.jobs

    def occupancy(self, stage):
        """How much of `capacity` the stage takes while it runs."""
        return self.width(stage) if self.gpus else 1

    def describe(self):
        if self.gpus:
            return f"this machine, GPUs {','.join(map(str, self.gpus))}"
        return f"this machine's CPUs, {self.jobs} stage{'s' if self.jobs > 1 else ''} at once"

    def width(self, stage):
        return width(stage, len(self.gpus))

    def reserve(self, attempt):
        """Room for the attempt now? Sets the GPUs it gets (() on the CPU)."""
        w = self.width(attempt.stage)
        if w == 0:
            if not self.gpus:
                if self.cpu_busy >= self.jobs:
                    return False
                self.cpu_busy += 1
            attempt.gpus = ()
            return True
        if len(self.free) < w:
            return False
        attempt.gpus, self.free = tuple(self.free[:w]), self.free[w:]
        return True

    def release(self, attempt):
        if attempt.gpus:
            self.free = sorted(self.free + list(attempt.gpus), key=self.gpus.index)
        elif not self.gpus:
            self.cpu_busy -= 1

    def where(self, attempt):
        return f"GPU {','.join(attempt.gpus)}" if attempt.gpus else "CPU"

    def submit(self, attempts, out):
        """Start each attempt; those whose folder another process holds get handle Busy."""
        for a in attempts:
            folder = Path(out) / a.stage.name
            env = stage_env(gpus=a.gpus if self.gpus else [], threads=self.threads)
            try:
                a.handle = start(command(a.stage, out, a.nproc), folder, env, a.number,
                                 warm=self.warm and a.nproc == 1)
                a.job_id, a.log = str(a.handle.pid), str(folder / CONSOLE)
            except Busy as e:
                a.handle = e

    def poll(self, attempt):
        """None while it runs, else its exit code."""
        return attempt.handle.poll()

    def state(self, attempt):
        return "running"

    def cancel(self, attempt):
        stop(attempt.handle)


class StageJob:
    """What a Slurm job runs (submitit pickles it): the stage's command, started as LocalExecutor
    starts it (folder lock, console.txt), and its exit code. `checkpoint` is submitit's hook on
    preemption and time-out: the stage's process is stopped and the same job is requeued, so the
    stage continues from its last checkpoint (--resume)."""

    def __init__(self, cmd, folder, done, attempt=1):
        self.cmd, self.folder, self.done, self.attempt = cmd, str(folder), done, attempt
        self.proc = None

    def __call__(self):
        if (Path(self.folder) / self.done).exists():  # finished meanwhile (by a job of an earlier driver)
            return 0
        try:
            self.proc = start(self.cmd, self.folder, stage_env(), self.attempt)
        except Busy:
            return BUSY
        return self.proc.wait()

    def checkpoint(self):
        from submitit.helpers import DelayedSubmission
        if self.proc is not None:
            stop(self.proc, grace=30.0)
        return DelayedSubmission(StageJob(self.cmd, self.folder, self.done, self.attempt))

    def __getstate__(self):
        return {**self.__dict__, "proc": None}


def import_submitit():
    """submitit, or one line saying how to install it (it is the optional extra [slurm])."""
    try:
        import submitit
    except ImportError:
        from common.utils import die
        die("--executor slurm needs submitit, which is not installed: pip install -e \".[slurm]\" "
            "(or pip install submitit)")
    return submitit


class SubmititExecutor:
    """Stages as Slurm jobs through submitit (`cluster="local"`: submitit's local backend, the same
    code path without Slurm). A job asks for the stage's GPUs (at most `gpus_per_job`) on one node,
    CPUS_PER_GPU cores per GPU, `hours` of wall time, in `partition` (and `account`), and runs from
    the repository root. Stages that are ready together and ask for the same resources go in one
    job array. Jobs are requeued by submitit on preemption and on time-out (up to `max_timeouts`
    times), and continue with --resume. Stages that need no GPU (the selection: seconds) run on
    this machine instead of waiting in the queue."""

    def __init__(self, out, partition=None, gpus_per_job=None, hours=24.0, account=None, cluster="slurm",
                 max_timeouts=30):
        self.submitit = import_submitit()
        if cluster == "slurm" and shutil.which("sbatch") is None:
            from common.utils import die
            die("--executor slurm: no sbatch on this machine; run run_all.sh on a machine of the cluster "
                "(a login node)")
        self.folder, self.cluster, self.gpus_per_job = Path(out) / "jobs", cluster, gpus_per_job
        self.parameters = dict(timeout_min=int(hours * 60), tasks_per_node=1, nodes=1, slurm_partition=partition,
                               slurm_account=account, slurm_signal_delay_s=120, slurm_stderr_to_stdout=True,
                               slurm_additional_parameters={"chdir": str(ROOT)})
        self.max_timeouts, self.executor = max_timeouts, None
        self.local = LocalExecutor(jobs=1, warm=False)
        self.tick = 5.0 if cluster == "slurm" else 0.1  # Slurm: sacct and a shared file system are slow

    capacity = None  # the cluster's: unknown here (the ETA is then the longest chain of stages)

    def occupancy(self, stage):
        return 1

    def describe(self):
        return f"Slurm ({self.cluster}) via submitit, job files in {self.folder}"

    def width(self, stage):
        return width(stage, self.gpus_per_job)

    def reserve(self, attempt):
        return self.local.reserve(attempt) if attempt.stage.gpus == 0 else True

    def release(self, attempt):
        if attempt.stage.gpus == 0:
            self.local.release(attempt)

    def where(self, attempt):
        if attempt.stage.gpus == 0:
            return "this machine's CPU"
        return f"Slurm job {attempt.job_id} ({attempt.nproc} GPU{'s' if attempt.nproc > 1 else ''})"

    def submit(self, attempts, out):
        here = [a for a in attempts if a.stage.gpus == 0]
        self.local.submit(here, out)
        groups = defaultdict(list)
        for a in attempts:
            if a.stage.gpus:
                groups[a.nproc].append(a)
        if groups and self.executor is None:  # made at the first job: it creates OUT/jobs
            self.executor = self.submitit.AutoExecutor(folder=self.folder, cluster=self.cluster,
                                                       slurm_max_num_timeout=self.max_timeouts)
            self.executor.update_parameters(**self.parameters)
        for nproc, group in groups.items():
            name = group[0].stage.name if len(group) == 1 else f"reproduce-{len(group)}-stages"
            self.executor.update_parameters(name=name, gpus_per_node=nproc, cpus_per_task=CPUS_PER_GPU * nproc)
            try:
                with self.executor.batch():
                    jobs = [self.executor.submit(StageJob(command(a.stage, out, a.nproc), Path(out) / a.stage.name,
                                                          a.stage.done, a.number)) for a in group]
            except Exception as e:  # sbatch refused (a wrong partition or account, the controller busy)
                for a in group:
                    a.handle, a.log = e, f"sbatch failed: {str(e).strip().splitlines()[-1] if str(e).strip() else e!r}"
                continue
            for a, job in zip(group, jobs):
                folder = Path(out) / a.stage.name
                a.handle, a.job_id = job, str(job.job_id)
                a.log = f"{folder / CONSOLE} (Slurm's: {self._link_log(folder, job)})"

    def _link_log(self, folder, job):
        """FOLDER/slurm-JOB.log: a link to the job's Slurm log (an array writes all its logs in jobs/)."""
        folder.mkdir(parents=True, exist_ok=True)
        link = folder / f"slurm-{job.job_id}.log"
        if not link.is_symlink():
            link.symlink_to(os.path.relpath(job.paths.stdout, folder))
        return link

    def poll(self, attempt):
        if isinstance(attempt.handle, subprocess.Popen):
            return self.local.poll(attempt)
        if isinstance(attempt.handle, Exception):  # never submitted
            return -1
        job = attempt.handle
        if not job.done():
            return None
        try:
            return int(job.result())
        except Exception:  # the job died outside the stage's process (node failure, cancelled, out of time)
            return -1

    def state(self, attempt):
        if isinstance(attempt.handle, subprocess.Popen):
            return "running"
        return "running" if attempt.handle.state in ("RUNNING", "COMPLETING") else "queued"

    def cancel(self, attempt):
        if isinstance(attempt.handle, subprocess.Popen):
            self.local.cancel(attempt)
        elif not isinstance(attempt.handle, Exception):
            attempt.handle.cancel(check=False)


# ---------------------------------------------------------------- estimates

def paper_hours(stage):
    """The stage's wall-clock hours at the papers' settings on the papers' GPUs."""
    return stage.gpu_hours / max(stage.gpus, 1)


class Estimate:
    """How long a stage takes here, from the stages that finished here: of its kind (search, train,
    ...), or of every kind until one of its kind has finished.
    scaled (a full run): its hours at the papers' settings times the seconds a paper-hour took
      here; before anything finished, `prior` seconds per paper-hour (3600 on GPUs: the papers'
      hours as they are; None: unknown);
    not scaled (a smoke run, where every stage is tiny whatever the papers' hours): the mean time
      its kind took here."""

    def __init__(self, stages, measured, prior=None, scaled=True):
        sums = defaultdict(lambda: [0.0, 0.0])
        for name, seconds in measured.items():
            s = stages.get(name)
            if s is not None and (paper_hours(s) > 0 or not scaled):
                for key in (s.kind, None):
                    sums[key][0] += seconds
                    sums[key][1] += paper_hours(s) if scaled else 1
        self.rate = {k: t / n for k, (t, n) in sums.items()}
        self.prior, self.scaled = prior, scaled

    def seconds(self, stage):
        rate = self.rate.get(stage.kind, self.rate.get(None, self.prior if self.scaled else None))
        return None if rate is None else rate * (paper_hours(stage) if self.scaled else 1)


def eta(stages, states, running, est, occupancy, capacity, now):
    """Seconds until every stage that can still run is done: the longest chain of remaining stages,
    or the remaining work spread over the executor's room, whichever is longer; None if unknown."""
    left, work, below = {}, 0.0, children(stages)
    for name in reversed(list(stages)):
        s = stages[name]
        if states[name] in ("done", "failed", "blocked"):
            left[name] = 0.0
            continue
        own = est.seconds(s)
        if own is None:
            return None
        if name in running:
            own = max(own - (now - running[name].since), 0.0)
        work += own * occupancy(s)
        left[name] = own + max((left[c] for c in below[name]), default=0.0)
    chain = max(left.values(), default=0.0)
    return chain if capacity is None else max(chain, work / capacity)


def critical_path(stages):
    """Each stage's longest path to the end of the plan, in the papers' hours: the order in which
    ready stages start (plan order between equals)."""
    path, below = {}, children(stages)
    for name in reversed(list(stages)):
        path[name] = paper_hours(stages[name]) + max((path[c] for c in below[name]), default=0.0)
    return path


def children(stages):
    """name -> the stages that depend on it."""
    below = defaultdict(list)
    for s in stages.values():
        for d in s.deps:
            below[d].append(s.name)
    return below


# ---------------------------------------------------------------- states

def read_status(out):
    try:
        return json.loads((Path(out) / STATUS).read_text())
    except (OSError, ValueError):
        return {}


def stage_state(stage, out, recorded):
    """done (its marker exists), running (a process holds its folder), failed (the last driver
    gave up on it), started (its folder exists), or pending."""
    folder = Path(out) / stage.name
    if (folder / stage.done).exists():
        return "done"
    if Lock(folder / LOCK).held():
        return "running"
    if recorded.get("state") in ("failed", "blocked"):
        return recorded["state"]
    return "started" if folder.exists() else "pending"


def hms(seconds):
    if seconds is None:
        return "–"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


# ---------------------------------------------------------------- the driver's loop

class Run:
    """One driver's run of a plan: the state of every stage (done, running, pending, failed,
    blocked), what the user sees (a progress line per event, status.json) and the loop."""

    def __init__(self, plan, out, executor, retries=2, prior=None, scaled=True, echo=print, tick=None):
        self.stages, self.out, self.ex = plan.stages, Path(out), executor
        self.retries, self.prior, self.scaled, self.echo = retries, prior, scaled, echo
        self.tick = executor.tick if tick is None else tick
        self.out.mkdir(parents=True, exist_ok=True)
        old = read_status(out).get("stages", {})
        self.record = {n: dict(old.get(n, {})) for n in self.stages}  # each stage's entry in status.json
        self.measured = {n: r["seconds"] for n, r in self.record.items()
                         if r.get("state") == "done" and r.get("seconds")}
        self.state = {n: "done" if is_done(s, out) else "pending" for n, s in self.stages.items()}
        for n, st in self.state.items():
            self.record[n]["state"] = st
        self.priority = critical_path(self.stages)
        self.attempts = defaultdict(int)
        self.running = {}  # name -> Attempt
        self.held = {}  # name -> who holds its folder: another process
        self.failed = {}  # name -> log of its last attempt
        self.interrupted = None
        self.t0 = time.time()

    # ---- what the user sees

    def counts(self):
        c = defaultdict(int)
        for st in self.state.values():
            c[st] += 1
        return c

    def eta(self):
        return eta(self.stages, self.state, self.running, Estimate(self.stages, self.measured, self.prior, self.scaled),
                   self.ex.occupancy, self.ex.capacity, time.time())

    def line(self, what):
        """The progress line: stages done of all, running, pending, failed, elapsed, ETA; then the event."""
        c, n = self.counts(), len(self.stages)
        return (f"[{c['done']:{len(str(n))}}/{n} done, {c['running']} running, {c['pending']} pending, "
                f"{c['failed']} failed | "
                f"{hms(time.time() - self.t0)} elapsed, ETA {hms(self.eta())}] {what}")

    def write_status(self):
        data = {"updated": time.time(), "executor": self.ex.describe(), "counts": dict(self.counts()),
                "eta_s": self.eta(), "stages": self.record}
        tmp = self.out / (STATUS + ".tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, self.out / STATUS)

    def event(self, what):
        self.echo(self.line(what))
        self.write_status()

    def set(self, name, state, **info):
        self.state[name] = state
        self.record[name].update(state=state, **info)

    # ---- scheduling

    def ready(self):
        """Pending stages whose dependencies are done, the longest path to the end first."""
        names = [n for n, st in self.state.items()
                 if st == "pending" and all(self.state[d] == "done" for d in self.stages[n].deps)]
        return sorted(names, key=lambda n: -self.priority[n])  # stable: plan order between equals

    def launch(self):
        batch, gpus_wanted = [], False
        for name in self.ready():
            s, lock = self.stages[name], Lock(self.out / name / LOCK)
            if lock.held():
                if name not in self.held:
                    self.held[name] = lock.holder()
                    self.event(f"waits   {name}: another process holds its folder {_who(self.held[name])}")
                continue
            if self.held.pop(name, None) is not None and is_done(s, self.out):  # that process finished it
                self.set(name, "done")
                self.event(f"done    {name} (by the other process)")
                continue
            wide = self.ex.width(s) > 0
            if wide and gpus_wanted:
                continue  # a stage before it waits for GPUs: do not take them from it
            a = Attempt(s, self.attempts[name] + 1, max(self.ex.width(s), 1))
            if not self.ex.reserve(a):
                gpus_wanted |= wide
                continue
            self.attempts[name] += 1
            (self.out / name).mkdir(parents=True, exist_ok=True)
            batch.append(a)
        if batch:
            self.ex.submit(batch, self.out)
        for a in batch:
            name = a.stage.name
            if isinstance(a.handle, Busy):  # taken by another process in between: wait for it
                self.ex.release(a)
                self.attempts[name] -= 1
                continue
            self.running[name] = a
            self.set(name, "running", attempts=a.number, since=a.since, log=a.log, job=a.job_id)
            again = f" (attempt {a.number} of {self.retries + 1}, with --resume)" if a.number > 1 else ""
            self.event(f"start   {name} on {self.ex.where(a)}{again}; log {a.log}")

    def collect(self):
        for name, a in list(self.running.items()):
            rc = self.ex.poll(a)
            if rc is None:
                continue
            self.ex.release(a)
            del self.running[name]
            s, took = a.stage, time.time() - a.since
            if rc == BUSY and not is_done(s, self.out):  # a job found its folder held: wait for the holder
                self.attempts[name] -= 1
                self.set(name, "pending")
            elif rc == 0 and is_done(s, self.out):
                self.measured[name] = took
                self.set(name, "done", seconds=round(took, 3), rc=0)
                self.event(f"done    {name} in {hms(took)}")
            else:
                why = f"exit code {rc}" if rc else f"exit code 0 but no {s.done}"
                if rc == BAD_INPUT:
                    why += ": bad input, not retried"
                if rc != BAD_INPUT and self.attempts[name] <= self.retries:
                    self.set(name, "pending", rc=rc)
                    self.event(f"failed  {name} ({why}); it starts again; log {a.log}")
                else:
                    self.set(name, "failed", rc=rc)
                    self.failed[name] = a.log
                    self.event(f"failed  {name} ({why}) after {a.number} attempts; log {a.log}")
                    self.block()

    def block(self):
        """Leave out every stage that depends on a failed one (in plan order: a topological order)."""
        for n, s in self.stages.items():
            if self.state[n] == "pending" and any(self.state[d] in ("failed", "blocked") for d in s.deps):
                self.set(n, "blocked", by=next(d for d in s.deps if self.state[d] in ("failed", "blocked")))

    def loop(self):
        """Run until nothing more can run, or until interrupted (SIGINT, SIGTERM: the running
        stages are stopped, and continue with --resume next time)."""
        self.event(f"{len(self.stages)} stages, {self.counts()['done']} done already; on {self.ex.describe()}")
        beat = time.time()
        while self.interrupted is None:
            self.collect()
            self.launch()
            if not self.running and not self.held and not self.ready():
                break
            if time.time() - beat > 600:  # a line every ten minutes while long stages run
                beat = time.time()
                self.echo(self.line("running " + ", ".join(
                    f"{n} ({self.ex.state(a)}, {hms(beat - a.since)})" for n, a in self.running.items())))
                self.write_status()
            time.sleep(self.tick)
        if self.interrupted is not None:
            for name, a in self.running.items():
                self.ex.cancel(a)
                self.set(name, "pending", stopped=time.time())
            self.running.clear()
        self.write_status()


def _who(holder):
    return f"(pid {holder.get('pid', '?')} on {holder.get('host', '?')})" if holder else ""


def run(plan, out, executor, retries=2, prior=None, scaled=True, echo=print, tick=None):
    """Run every stage of `plan` that is not done yet (`prior`, `scaled`: see Estimate); returns
    the Run (`failed`, `state`, `interrupted`: the signal that stopped it, if one did)."""
    r = Run(plan, out, executor, retries, prior, scaled, echo, tick)

    def interrupt(signum, frame):
        r.interrupted = signal.Signals(signum).name

    old = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        r.loop()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
    return r
