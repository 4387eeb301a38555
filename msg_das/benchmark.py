"""Memory and time of one search step: MSG-DAS with K = 1, 2, 3, 4 sub-graphs against a DARTS-style
step that runs every op on every edge (Sec. 1 and 3, "flexible memory usage"; Fig. 3).

Both steps use the same super-net (`model_search.Network`), batch, image size and optimizers; the
DARTS-style step is first-order DARTS: alpha on a validation batch, then the weights on a training
batch, each through the mixture of all ops by softmax(alpha). The MSG-DAS step is `Searcher.step`
at the last epoch of the schedules, so the super-net guidance and DropBlock are on.

Each configuration runs in a fresh process. Peak memory of the first step, above what the process
holds just before it: on CUDA `torch.cuda.max_memory_allocated`, on a CPU the peak resident set
size (VmHWM, reset through /proc/self/clear_refs). Time: the mean of the next `--steps` steps.

Usage: python msg_das/benchmark.py [--device cpu|cuda] [--batch_size 32] [--image_size 32] [--K 1 2 3 4]
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn as nn
import torch.nn.functional as F

from msg_das import train_search
from msg_das.model_search import Network


class DartsStep:
    """The reference: first-order DARTS on the same super-net, every op of every edge computed."""

    def __init__(self, args, num_classes, device):
        self.args, self.device = args, device
        self.net = Network(args.init_channels, num_classes, args.layers).to(device)
        self.w_opt = torch.optim.SGD(self.net.weight_parameters(), args.learning_rate, momentum=args.momentum,
                                     weight_decay=args.weight_decay)
        self.a_opt = torch.optim.Adam(self.net.arch_parameters(), args.arch_learning_rate,
                                      betas=tuple(args.arch_betas), weight_decay=args.arch_weight_decay)

    def step(self, train_batch, valid_batch):
        (x_t, y_t), (x_v, y_v) = train_batch, valid_batch
        self.a_opt.zero_grad(set_to_none=True)
        F.cross_entropy(self.net(x_v, *self.net.supernet_weights(), single_path=False), y_v).backward(
            inputs=self.net.arch_parameters())
        self.a_opt.step()
        self.w_opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            w_n, w_r = self.net.supernet_weights()
        F.cross_entropy(self.net(x_t, w_n, w_r, single_path=False), y_t).backward()
        nn.utils.clip_grad_norm_(self.net.weight_parameters(), self.args.grad_clip)
        self.w_opt.step()
        return {}


def _rss_kib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(method, K, opts):
    """One configuration in this process: {'peak_MiB', 'step_s'}."""
    device = torch.device(opts.device)
    args = train_search.parse_args(["--K", str(K), "--batch_size", str(opts.batch_size),
                                    "--init_channels", str(opts.init_channels), "--layers", str(opts.layers),
                                    "--device", opts.device])
    torch.manual_seed(0)
    searcher = (train_search.Searcher if method == "msg_das" else DartsStep)(args, 10, device)
    if method == "msg_das":
        searcher.start_epoch(args.epochs - 1)  # guidance and DropBlock at their final values

    def batch():
        return (torch.randn(opts.batch_size, 3, opts.image_size, opts.image_size, device=device),
                torch.randint(10, (opts.batch_size,), device=device))

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    train_batch, valid_batch = batch(), batch()
    if device.type == "cuda":
        sync()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        searcher.step(train_batch, valid_batch)
        sync()
        peak = (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    else:
        base = _rss_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS to the current one
        searcher.step(train_batch, valid_batch)
        peak = (_rss_kib("VmHWM") - base) / 1024
    sync()
    t0 = time.perf_counter()
    for _ in range(opts.steps):
        searcher.step(train_batch, valid_batch)
    sync()
    return {"peak_MiB": round(peak, 1), "step_s": round((time.perf_counter() - t0) / opts.steps, 4)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--init_channels", type=int, default=16)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--K", type=int, nargs="+", default=[1, 2, 3, 4])
    p.add_argument("--steps", type=int, default=3, help="timed steps after the measured one")
    p.add_argument("--one", nargs=2, metavar=("METHOD", "K"), help=argparse.SUPPRESS)  # a child process
    opts = p.parse_args(argv)
    if opts.one:
        print(json.dumps(measure(opts.one[0], int(opts.one[1]), opts)))
        return
    forwarded = sys.argv[1:] if argv is None else list(argv)
    rows = []
    for method, K in [("darts", 0)] + [("msg_das", k) for k in opts.K]:
        out = subprocess.run([sys.executable, __file__, *forwarded, "--one", method, str(K)], check=True,
                             capture_output=True, text=True).stdout
        rows.append((method, K, json.loads(out.strip().splitlines()[-1])))
    darts = rows[0][2]["peak_MiB"]
    print(f"device {opts.device}, batch {opts.batch_size}, {opts.image_size}x{opts.image_size}, "
          f"{opts.layers} cells, {opts.init_channels} channels, threads {torch.get_num_threads()}")
    print("| step | peak memory (MiB) | vs DARTS | time per step (s) |\n|---|---|---|---|")
    for method, K, r in rows:
        name = "DARTS (all ops)" if method == "darts" else f"MSG-DAS K={K}"
        print(f"| {name} | {r['peak_MiB']} | {r['peak_MiB'] / darts:.2f} | {r['step_s']} |")


if __name__ == "__main__":
    main()
