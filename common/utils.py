"""Run folders, logging, seeding, devices, distributed set-up, checkpoints, meters, counting."""
import atexit
import json
import logging
import os
import random
import sys
import time
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
    """float16 autocast on CUDA when `enabled`; a no-op elsewhere."""
    return torch.autocast(device.type, dtype=torch.float16, enabled=enabled and device.type == "cuda")


# ---------------------------------------------------------------- run folder and logging

def add_run_args(parser, seed=0):
    """Flags every script shares: where the run goes, resuming, seeding, device, AMP."""
    g = parser.add_argument_group("run")
    g.add_argument("--save", default=None, help="run folder (default: runs/<script>-<time>)")
    g.add_argument("--resume", action="store_true", help="continue the run in --save from its checkpoint")
    g.add_argument("--seed", type=int, default=seed)
    g.add_argument("--deterministic", action="store_true", help="deterministic kernels (slower on GPU)")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda")
    g.add_argument("--amp", action="store_true", help="float16 mixed precision on CUDA")
    return g


def default_save(prefix):
    return str(Path("runs") / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}")


def setup_run(args, prefix):
    """Create the run folder (rank 0 only), log to log.txt and stdout, write args.json."""
    if not getattr(args, "save", None):
        args.save = default_save(prefix)
    save = Path(args.save)
    log.handlers.clear()
    log.propagate = False
    log.setLevel(logging.INFO if is_main() else logging.WARNING)
    fmt = logging.Formatter("%(asctime)s %(message)s", "%m/%d %H:%M:%S")
    out = logging.StreamHandler(sys.stdout)
    out.setFormatter(fmt)
    log.addHandler(out)
    if is_main():
        save.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(save / "log.txt")
        fh.setFormatter(fmt)
        log.addHandler(fh)
        args_path = save / "args.json"
        if not (getattr(args, "resume", False) and args_path.exists()):
            args_path.write_text(json.dumps(vars(args), indent=1, default=str) + "\n")
    log.info("run folder %s", save)
    log.info("args %s", json.dumps(vars(args), default=str))
    return save


class MetricsLog:
    """metrics.jsonl, one JSON object per epoch; on resume, records at or past `start_epoch` are
    dropped so the file matches the checkpoint it continues from."""

    def __init__(self, path, start_epoch=0):
        self.path = Path(path)
        if is_main():
            old = self.read(self.path) if self.path.exists() else []
            kept = [r for r in old if r.get("epoch", -1) < start_epoch]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def write(self, record):
        if is_main():
            with self.path.open("a") as f:
                f.write(json.dumps(record, default=float) + "\n")

    @staticmethod
    def read(path):
        return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


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
    return torch.load(path, map_location=device, weights_only=True)


def resume_state(args, device):
    """The checkpoint to continue from when `--resume` is set and one exists, else None."""
    path = Path(args.save) / "checkpoint.pt"
    if not getattr(args, "resume", False):
        return None
    if not path.exists():
        log.info("--resume: no checkpoint in %s yet, starting from scratch", args.save)
        return None
    log.info("resuming from %s", path)
    return load_checkpoint(path, device)


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
