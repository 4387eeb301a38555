"""Run folders, logging, seeding, devices, distributed set-up, checkpoints, meters, counting.

A run folder (`--save`) is in one of four states, which a driver reads with `run_state(folder)`
or `python -m common.utils state FOLDER` (it prints the word; exit status 0):
  new         nothing of a run in it (it may not exist yet, or hold only console.txt, log.txt)
  unfinished  args.json, metrics.jsonl or checkpoint.pt, and no summary.json: `--resume` continues it
  finished    summary.json, the done-marker every script writes last
  running     a process holds its lock: an exclusive `flock` on FOLDER/.lock, taken before anything
              is written and released when the process ends, however it ends (kill -9 included);
              from a shell, `flock -n FOLDER/.lock true` fails while the folder is in use
"""
import atexit
import fcntl
import json
import logging
import math
import os
import pickle
import random
import shutil
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

log = logging.getLogger("dnas")


def die(msg):
    """One clear line on stderr and a non-zero exit: how bad input ends."""
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


# ---------------------------------------------------------------- devices, seeds, distributed

def get_device(name="auto"):
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        die("--device cuda was asked for, but no CUDA device is available")
    if name == "cuda":  # an explicit index: torch.cuda.set_device refuses a bare "cuda"; torchrun sets LOCAL_RANK
        name = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    device = torch.device(name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def set_seed(seed, deterministic=False):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    else:
        torch.backends.cudnn.benchmark = True


def init_distributed(device_name="auto"):
    """Join the process group when started by torchrun (gloo on CPU, nccl on CUDA)."""
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not dist.is_initialized():
        use_cuda = device_name != "cpu" and torch.cuda.is_available()
        dist.init_process_group("nccl" if use_cuda else "gloo")
        atexit.register(_leave_group)  # at the end of any script, however its main() returns
    return rank(), world_size()


def _leave_group():
    if dist.is_initialized():
        dist.destroy_process_group()


def rank():
    return dist.get_rank() if dist.is_initialized() else 0


def world_size():
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main():
    return rank() == 0


def all_reduce_mean(t):
    """Average a tensor over ranks, in place (identity without a process group)."""
    if dist.is_initialized():
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return t


def average_gradients(params):
    """All-reduce and average the gradients of `params` over ranks (no-op on one process)."""
    if dist.is_initialized():
        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= dist.get_world_size()


def broadcast_params(params):
    """Make every rank hold rank 0's values of `params` (e.g. architecture parameters)."""
    if dist.is_initialized():
        for p in params:
            dist.broadcast(p.data, 0)


def amp_autocast(device, enabled):
    """float16 autocast on CUDA when `enabled`; a no-op elsewhere. While a CUDA graph is recorded
    its cache of float16 weights is off (PyTorch's rule for autocast in CUDA graphs)."""
    cuda = device.type == "cuda"
    return torch.autocast(device.type, dtype=torch.float16, enabled=enabled and cuda,
                          cache_enabled=not (cuda and torch.cuda.is_current_stream_capturing()))


# ---------------------------------------------------------------- the same computation, faster

def add_speed_args(parser, cuda_graph=None):
    """`--compile`, `--channels_last` and, where a search has static work (`cuda_graph` says what),
    `--cuda_graph`: they change how fast the network computes, not what (README "Search cost"), so
    a resumed run may change them."""
    g = parser.add_argument_group("speed (the same computation, faster)")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile every op of the network, each once per shape and reused by every copy of "
                        "it, so sampled paths and decisions never recompile (the first steps compile)")
    g.add_argument("--channels_last", action="store_true",
                   help="keep the feature maps channels-last (NHWC), the layout of cuDNN's float16 convolutions")
    if cuda_graph:
        g.add_argument("--cuda_graph", action="store_true",
                       help=f"CUDA only: record {cuda_graph} as a CUDA graph and replay it (recorded again when "
                            "the epoch's schedules or the architecture change)")
    return g


def fused(device, capturable=False):
    """Optimizer options: on CUDA one fused kernel updates every tensor (the same SGD / Adam update,
    instead of a kernel per operation per tensor group), and with `capturable` (Adam) its step count
    lives on the GPU so that a CUDA graph can hold the step; the default elsewhere."""
    return {"fused": True, **({"capturable": True} if capturable else {})} if device.type == "cuda" else {}


# Graphs one op may need: train / eval mode, with / without gradients, BN statistics tracked or
# frozen (common.search.frozen_bn_stats), two resolutions, a second batch size (made dynamic).
REGION_VARIANTS = 32
_compiled = {"ops": 0, "kinds": 0, "bound": 0}  # every network compiled in this process, together


def _is_region(m):
    """An op: a candidate op or block of common.operations, or a sequence of layers (stems, pooling
    + BN, 1x1 convolutions), that holds parameters or buffers."""
    op = isinstance(m, nn.Sequential) or type(m).__module__ == "common.operations"
    return op and (next(m.parameters(), None) is not None or next(m.buffers(), None) is not None)


def regions(net):
    """The outermost ops of `net` (`_is_region`), in module order."""
    out = []
    for child in net.children():
        out.extend([child] if _is_region(child) else regions(child))
    return out


def compile_ops(net):
    """`torch.compile` every op of `net` in place (regional compilation). An op's graph is
    compiled once per shape and reused by every op of the same kind and shape, so what runs around
    the ops (a sampled path, a decided or masked edge, the mixing weights) stays Python and never
    causes a recompile; the state_dict is unchanged. The graphs are bounded by the kinds of op
    times REGION_VARIANTS: past that, or at a graph break inside an op, torch.compile raises instead
    of running eagerly unnoticed."""
    config = torch._dynamo.config  # every op shares the cache of nn.Module's call: one limit for all
    if not hasattr(config, "recompile_limit"):
        die(f"--compile needs a newer PyTorch than {torch.__version__} (2.7 or later): upgrade it, or leave "
            "--compile out")
    try:  # the generated kernels are built with a C++ compiler (and Triton's launchers with a C one)
        from torch._inductor.cpp_builder import get_cpp_compiler
        get_cpp_compiler()
    except Exception:
        die("--compile needs a C++ compiler (g++ or clang++) on the PATH or in $CXX: install one, or leave "
            "--compile out")
    ops = regions(net)
    kinds = len({repr(m) for m in ops})
    _compiled["ops"] += len(ops)
    _compiled["kinds"] += kinds
    _compiled["bound"] += kinds * REGION_VARIANTS
    config.recompile_limit = max(config.recompile_limit, _compiled["bound"])
    config.accumulated_recompile_limit = max(config.accumulated_recompile_limit, _compiled["bound"])
    config.fail_on_recompile_limit_hit = True
    for m in ops:
        m.compile(fullgraph=True)
    return net


def compiled_graphs():
    """Graphs torch.compile has made in this process so far."""
    from torch._dynamo.utils import counters
    return counters["stats"]["unique_graphs"]


def compile_report():
    """One line on the compiled ops and their graphs so far, or None when nothing is compiled."""
    if not _compiled["ops"]:
        return None
    return (f"torch.compile: {_compiled['ops']} ops of {_compiled['kinds']} kinds, {compiled_graphs()} graphs "
            f"so far (at most {_compiled['bound']})")


def speed_up(net, args):
    """`--channels_last` and `--compile` on `net`, in place; returns `net`."""
    if getattr(args, "channels_last", False):
        net.to(memory_format=torch.channels_last)
    return compile_ops(net) if getattr(args, "compile", False) else net


# ---------------------------------------------------------------- run folder and logging

def add_run_args(parser, seed=0):
    """Flags every script shares: where the run goes, resuming, seeding, device, AMP."""
    g = parser.add_argument_group("run")
    g.add_argument("--save", default=None, help="run folder (default: runs/<script>-<time>)")
    g.add_argument("--resume", action="store_true", help="continue the unfinished run in --save from its checkpoint "
                                                         "(with the same flags); an empty --save starts a new one")
    g.add_argument("--overwrite", action="store_true",
                   help="replace the run in --save: everything in the folder is deleted first")
    g.add_argument("--seed", type=int, default=seed)
    g.add_argument("--deterministic", action="store_true", help="deterministic kernels (slower on GPU)")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda")
    g.add_argument("--amp", action="store_true", help="float16 mixed precision on CUDA")
    return g


def default_save(prefix):
    return str(Path("runs") / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}")


# ---------------------------------------------------------------- checks of the common flags

def _finite(test):
    return lambda v: math.isfinite(v) and test(v)


# flag -> (test, what the flag must be). Every script calls `check_run`, which applies the rows
# whose flag the script has (and that are set).
FLAG_RULES = {
    "epochs": (lambda v: v >= 1, "at least 1"),
    "batch_size": (lambda v: v >= world_size(), "at least 1 (and at least the number of torchrun processes)"),
    "layers": (lambda v: v >= 3, "at least 3: the reduction cells sit at layers//3 and 2*layers//3, "
                                 "so fewer layers leave no normal cell"),
    "eval_layers": (lambda v: v >= 3, "at least 3, as --layers"),
    "init_channels": (lambda v: v >= 1, "at least 1"),
    "seed": (lambda v: 0 <= v < 2 ** 32, "between 0 and 2**32 - 1"),
    "subset": (lambda v: v >= 1, "at least 1 (leave it out for the whole training set)"),
    "train_portion": (_finite(lambda v: 0 < v < 1), "strictly between 0 and 1: both parts of the search split "
                                                    "need images"),
    "imagenet_fractions": (lambda v: all(math.isfinite(f) and 0 < f <= 1 for f in v) and sum(v) <= 1,
                           "two fractions in (0, 1] that add up to at most 1"),
    "learning_rate": (_finite(lambda v: v > 0), "a positive number"),
    "learning_rate_min": (_finite(lambda v: v >= 0), "0 or more"),
    "arch_learning_rate": (_finite(lambda v: v >= 0), "0 or more"),
    "momentum": (_finite(lambda v: 0 <= v < 1), "in [0, 1)"),
    "weight_decay": (_finite(lambda v: v >= 0), "0 or more"),
    "arch_weight_decay": (_finite(lambda v: v >= 0), "0 or more"),
    "grad_clip": (_finite(lambda v: v >= 0), "0 (off) or more"),
    "drop_path_prob": (_finite(lambda v: 0 <= v < 1), "in [0, 1)"),
    "label_smooth": (_finite(lambda v: 0 <= v < 1), "in [0, 1)"),
    "auxiliary_weight": (_finite(lambda v: v >= 0), "0 or more"),
    "warmup_epochs": (lambda v: v >= 0, "0 or more"),
    "decay_rate": (_finite(lambda v: v > 0), "a positive number"),
    "workers": (lambda v: v >= 0, "0 or more"),
    "cutout_length": (lambda v: v >= 1, "at least 1"),
    "report_freq": (lambda v: v >= 0, "0 (once per epoch) or more"),
}


def check_flags(args):
    """One clear line for the first common flag of `args` that holds a meaningless value."""
    for name, (test, need) in FLAG_RULES.items():
        value = getattr(args, name, None)
        if value is not None and not test(value):
            shown = " ".join(map(str, value)) if isinstance(value, (list, tuple)) else value
            die(f"--{name} {shown}: it must be {need}")


# ---------------------------------------------------------------- run folders

DONE = "summary.json"  # the done-marker of every run folder, written last
LOCK = ".lock"
STARTED = ("args.json", "metrics.jsonl", "checkpoint.pt")
KEEP = ("console.txt", LOCK)  # what --overwrite leaves: a driver's console log, the lock
# Flags a resumed run may change: where things are, how they are loaded, how fast they compute;
# not what is computed.
MAY_CHANGE_ON_RESUME = {"save", "resume", "overwrite", "data", "download", "workers", "device", "report_freq",
                        "compile", "channels_last", "cuda_graph"}
_locks = {}  # run folder -> open file descriptor of its lock, held until this process ends


def run_state(folder):
    """'new', 'unfinished', 'finished' or 'running' (see the top of this module)."""
    return "running" if _lock_owner(folder) else _contents(folder)


def _contents(folder):
    folder = Path(folder)
    if (folder / DONE).is_file():
        return "finished"
    if any((folder / f).exists() for f in STARTED):
        return "unfinished"
    return "new"


def _lock_owner(folder):
    """What the lock file of `folder` says about the process holding it (pid, host, command), or
    None when no other process holds it. This process' own locks do not count."""
    path = Path(folder) / LOCK
    if str(Path(folder).resolve()) in _locks or not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except BlockingIOError:
        return path.read_text(errors="replace").strip()[:200] or "unknown process"
    finally:
        os.close(fd)


def _lock(folder):
    """Create `folder` and hold its lock until this process ends; a message if another holds it."""
    key = str(folder.resolve())
    if key in _locks:
        return None
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    for attempt in range(5):  # a driver's momentary look (run_state) must not look like a second writer
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            time.sleep(0.1)
    else:
        os.close(fd)
        return _in_use(folder, _lock_owner(folder) or "another process")
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}: {' '.join(sys.argv)}\n".encode())
    _locks[key] = fd
    return None


def _in_use(folder, owner):
    return f"{folder} is in use by another process ({owner}); wait for it to end (or stop it), then run this again"


def _jsonable(args):
    return json.loads(json.dumps(vars(args), default=str))


def read_args(folder):
    """The flags a run was made with (its args.json), or None; one clear line if the file is damaged."""
    path = Path(folder) / "args.json"
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        die(f"{path} is damaged (not JSON): --overwrite starts the run in {folder} again")
    if not isinstance(stored, dict):
        die(f"{path} is damaged (not a JSON object): --overwrite starts the run in {folder} again")
    return stored


def made_by_another_script(folder, stored, flags, remedy="use the script that made it"):
    """A message when the run in `folder` (its args.json `stored`) has flags that are not in
    `flags`, the flags of the script at hand: another script made it. None otherwise."""
    foreign = sorted(set(stored) - set(flags))
    if not foreign:
        return None
    shown = ", ".join(f"--{k}" for k in foreign[:4]) + (", ..." if len(foreign) > 4 else "")
    return f"{folder} was made by another script: its args.json has {shown}, which this one does not take; {remedy}"


def _resume_problem(folder, args):
    """Why `--resume` may not continue the run in `folder` with `args`, or None."""
    stored = read_args(folder)
    if stored is None:
        return None
    current = _jsonable(args)
    problem = made_by_another_script(folder, stored, current)
    if problem:
        return problem
    changed = [k for k in sorted(set(stored) & set(current)) if k not in MAY_CHANGE_ON_RESUME and stored[k] != current[k]]
    if not changed:
        return None
    shown = ", ".join(f"--{k} {_brief(json.dumps(stored[k]), 40)} (not {_brief(json.dumps(current[k]), 40)})"
                      for k in changed[:3])
    return (f"--resume: the run in {folder} was made with {shown}{', ...' if len(changed) > 3 else ''} (its args.json); "
            "resume it with its own flags, or start a new --save (or --overwrite it) to run with these")


def _brief(text, most=160):
    """`text` (an error message, a value) on one line of at most `most` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= most else text[:most - 3] + "..."


def folder_problem(folder, args, nested=False):
    """Why `args` may not write the run folder `folder`, or None: it is a file; it is in use; it is
    finished (unless --overwrite); it holds an unfinished run and neither --resume nor --overwrite
    was given; --resume with other flags than the run's. Reads, never writes. `nested`: a folder
    of run folders (its own args.json is no run's), where only a done-marker and the lock count."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        return f"--save {folder} is a file; give a folder for the run"
    if getattr(args, "resume", False) and getattr(args, "overwrite", False):
        return "--resume continues the run in --save and --overwrite replaces it: give one of them"
    if not folder.is_dir():
        return None
    state, overwrite = _contents(folder), getattr(args, "overwrite", False)
    # --overwrite empties the folder, so no run below it may be in use either (DARTS-PT's projection
    # writes into its search's folder)
    below = overwrite and state != "new"
    owner = next(filter(None, (_lock_owner(f.parent) for f in folder.rglob(LOCK))), None) if below \
        else _lock_owner(folder)
    if owner:
        return _in_use(folder, owner)
    if overwrite:
        return None
    if state == "finished":
        if getattr(args, "resume", False):
            return (f"{folder} holds a finished run ({DONE}): there is nothing to resume; to run longer or with "
                    "other flags, give a new --save (or --overwrite this one)")
        return f"{folder} holds a finished run ({DONE}): give a new --save, or --overwrite to replace it"
    if nested or state == "new":
        return None
    if not getattr(args, "resume", False):
        return f"{folder} holds an unfinished run: add --resume to continue it, or --overwrite to start it again"
    if (folder / "checkpoint.pt").exists():
        return _resume_problem(folder, args)
    return None


def agree(problem):
    """Die with rank 0's `problem` on every rank (under torchrun the ranks decide together)."""
    if dist.is_initialized():
        box = [problem]
        dist.broadcast_object_list(box, 0)
        problem = box[0]
    if problem:
        if is_main():
            die(problem)
        sys.exit(2)


def check_run(args, prefix, nested=False):
    """Every check of the common flags and of the run folder, before anything is read or written:
    scripts call it first, then load and check their inputs, then `setup_run`. Sets the default
    --save (runs/<prefix>-<time>)."""
    check_flags(args)
    if not getattr(args, "save", None):
        box = [default_save(prefix)]
        if dist.is_initialized():
            dist.broadcast_object_list(box, 0)
        args.save = box[0]
    agree(folder_problem(args.save, args, nested) if is_main() else None)


def clear_folder(folder, keep=KEEP):
    """Delete everything in `folder` but `keep`, the done-marker first (a kill halfway leaves an
    unfinished folder, never a finished one with missing parts)."""
    folder = Path(folder)
    entries = sorted(folder.iterdir(), key=lambda p: p.name != DONE)
    for p in entries:
        if p.name in keep:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def write_json(path, obj):
    """Write `obj` as JSON atomically: a temporary file, then a rename."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def write_args(save, args):
    """`save`/args.json, the flags of the run, unless --resume continues its checkpoint (whose flags
    `check_run` found the same)."""
    if not (getattr(args, "resume", False) and (Path(save) / "checkpoint.pt").exists()):
        write_json(Path(save) / "args.json", vars(args))


def setup_run(args, prefix, nested=False):
    """Take the run folder: the checks of `check_run` again, under the folder's lock (rank 0 creates
    the folder and holds the lock until the process ends); with --overwrite, empty it; write
    args.json (kept when --resume continues a checkpoint); log to log.txt and stdout."""
    check_run(args, prefix, nested)
    save = Path(args.save)
    problem = None
    if is_main():
        save.mkdir(parents=True, exist_ok=True)
        problem = _lock(save) or folder_problem(save, args, nested)  # the state may have changed meanwhile
    agree(problem)
    log.handlers.clear()
    log.propagate = False
    log.setLevel(logging.INFO if is_main() else logging.WARNING)
    fmt = logging.Formatter("%(asctime)s %(message)s", "%m/%d %H:%M:%S")
    out = logging.StreamHandler(sys.stdout)
    out.setFormatter(fmt)
    log.addHandler(out)
    if is_main():
        if getattr(args, "overwrite", False) and not nested and _contents(save) != "new":
            clear_folder(save)  # only a folder holding a run: --save ~ --overwrite deletes nothing
        fh = logging.FileHandler(save / "log.txt")
        fh.setFormatter(fmt)
        log.addHandler(fh)
        write_args(save, args)
    log.info("run folder %s", save)
    log.info("args %s", json.dumps(vars(args), default=str))
    return save


class MetricsLog:
    """metrics.jsonl, one JSON object per epoch; on resume, records at or past `start_epoch` are
    dropped so the file matches the checkpoint it continues from."""

    def __init__(self, path, start_epoch=0):
        self.path = Path(path)
        if is_main():
            try:
                old = self.read(self.path) if self.path.exists() else []
            except ValueError as e:
                die(f"{e}: mend or delete that line, or --overwrite to start the run again")
            kept = [r for r in old if r.get("epoch", -1) < start_epoch]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def write(self, record):
        if is_main():
            with self.path.open("a") as f:
                f.write(json.dumps(record, default=float) + "\n")

    @staticmethod
    def read(path):
        """The records of a metrics.jsonl. A last line cut short (power loss, a full disk) is left
        out: the checkpoint it belonged to was never written. A damaged line before it is an error."""
        lines = Path(path).read_text(errors="replace").splitlines()
        records = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except ValueError:
                if i == len(lines) - 1:
                    break
                raise ValueError(f"{path}: line {i + 1} is not JSON") from None
        return records


class Progress:
    """One line per epoch with the time taken and an ETA."""

    def __init__(self, total_epochs, start_epoch=0):
        self.total, self.start, self.t0 = total_epochs, start_epoch, time.time()

    def line(self, epoch):
        done = epoch + 1 - self.start
        elapsed = time.time() - self.t0
        eta = elapsed / max(done, 1) * (self.total - epoch - 1)
        return f"epoch {epoch + 1}/{self.total} elapsed {_hms(elapsed)} eta {_hms(eta)}"


def _hms(s):
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


# ---------------------------------------------------------------- checkpoints

def rng_state():
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": list(random.getstate()[1]),
    }


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    random.setstate((3, tuple(state["python"]), None))


def gather_rng_states():
    """Every rank's RNG state, in rank order, so a resumed run continues each rank's streams."""
    if not dist.is_initialized():
        return [rng_state()]
    states = [None] * dist.get_world_size()
    dist.all_gather_object(states, rng_state())
    return states


def save_checkpoint(path, state):
    """Write atomically: a temporary file, then a rename (rank 0 only)."""
    if not is_main():
        return
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, device="cpu"):
    """A checkpoint's contents (tensors and plain values only), or one clear line if it cannot be read."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as e:
        die(f"{path} cannot be read ({_brief(e)}): it is damaged or not a checkpoint; "
            "run the command that wrote it again (with --overwrite)")


@contextmanager
def checkpoint_fits(path):
    """Wrap the restoring of a checkpoint's state: a checkpoint of another method or of other sizes
    ends with one clear line instead of a KeyError or a size mismatch."""
    try:
        yield
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
        die(f"{path} does not fit this run ({_brief(e)}): it was written by another script or with other "
            "sizes; resume with the flags and script that wrote it, or --overwrite")


def resume_state(args, device):
    """The checkpoint to continue from when `--resume` is set and one exists, else None. Restore
    it under `checkpoint_fits`."""
    path = Path(args.save) / "checkpoint.pt"
    if not getattr(args, "resume", False):
        return None
    if not path.exists():
        log.info("--resume: no checkpoint in %s yet, starting from scratch", args.save)
        return None
    log.info("resuming from %s", path)
    return load_checkpoint(path, device)


# ---------------------------------------------------------------- diverged runs

def check_finite(values, where):
    """Stop the run with one line when a logged number (a loss, an accuracy) is NaN or infinite:
    called before the checkpoint of the step or epoch is written, so the last good checkpoint stays
    and no result is written. Under torchrun every rank stops together."""
    bad = next(((k, v) for k, v in values.items() if isinstance(v, float) and not math.isfinite(v)), None)
    if dist.is_initialized():
        cuda = dist.get_backend() == "nccl"
        flag = torch.tensor([float(bad is not None)], device=torch.cuda.current_device() if cuda else "cpu")
        dist.all_reduce(flag)
        if flag.item() and bad is None:
            sys.exit(2)  # another rank diverged and says so
    if bad:
        die(f"{bad[0]} became {bad[1]} {where}: the run diverged. The last good checkpoint is kept and no result "
            "was written; start again (--overwrite) with a smaller --learning_rate or --arch_learning_rate")


# ---------------------------------------------------------------- meters and counting

class AverageMeter:
    def __init__(self):
        self.sum, self.n = 0.0, 0

    def update(self, value, n=1):
        self.sum += float(value) * n
        self.n += n

    @property
    def avg(self):
        return self.sum / max(self.n, 1)


def accuracy(logits, target, topk=(1,)):
    """Top-k accuracies in percent."""
    k = min(max(topk), logits.size(1))
    pred = logits.topk(k, dim=1).indices
    correct = pred.eq(target.view(-1, 1))
    return [correct[:, :min(t, k)].any(dim=1).float().mean().item() * 100 for t in topk]


def count_params(model, exclude="auxiliary"):
    """Millions of parameters, without the auxiliary head (as the papers count)."""
    return sum(p.numel() for n, p in model.named_parameters() if exclude not in n) / 1e6


def _forward_zeros(model, input_size):
    """One forward of zeros in eval mode (so without the auxiliary head), the mode restored after."""
    was_training = model.training
    model.eval()
    p = next(model.parameters(), torch.zeros(()))
    with torch.no_grad():
        model(torch.zeros(input_size, device=p.device, dtype=p.dtype))
    model.train(was_training)


def count_madds(model, input_size):
    """Millions of multiply-adds of the convolutions and linear layers for one forward pass in eval
    mode (no auxiliary head), the convention of the CIFAR-10 numbers the papers print: DARTS_V2 528M
    (printed: 528M), PC-DARTS 557M (printed: 558M)."""
    with FlopCounterMode(display=False) as counter:
        _forward_zeros(model, input_size)
    return counter.get_total_flops() / 2 / 1e6


def _thop_ops(m, x, y):
    x = x[0]
    if isinstance(m, nn.Conv2d):
        return y.numel() * (m.in_channels // m.groups) * m.weight[0, 0].numel()
    if isinstance(m, nn.Linear):
        return y.numel() * m.in_features
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return x.numel() * (4 if m.affine else 2)
    if isinstance(m, nn.AvgPool2d):
        return y.numel()
    if isinstance(m, nn.AdaptiveAvgPool2d):
        return y.numel() * (x[0, 0].numel() // y[0, 0].numel() + 1)
    return 0


def count_madds_thop(model, input_size):
    """Millions of multiply-adds as thop (pytorch-OpCounter) counts them, the counter behind
    PC-DARTS' 597M (it gives 599.5M): per leaf module, convolutions as `count_madds`, plus BatchNorm
    at 2 per element (4 with affine parameters) and average pooling at 1 per output (adaptive
    pooling: its window + 1); ReLU, max pooling and functional operations (node sums) count 0."""
    total = [0]

    def hook(m, x, y):
        total[0] += _thop_ops(m, x, y)
    handles = [m.register_forward_hook(hook) for m in model.modules() if not any(m.children())]
    try:
        _forward_zeros(model, input_size)
    finally:
        for h in handles:
            h.remove()
    return total[0] / 1e6


if __name__ == "__main__":  # python -m common.utils state FOLDER
    if len(sys.argv) != 3 or sys.argv[1] != "state":
        die("usage: python -m common.utils state FOLDER   (prints new, unfinished, finished or running)")
    print(run_state(sys.argv[2]))
