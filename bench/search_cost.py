"""Search cost of every method, side by side: time per search step and peak memory.

Each configuration is one search step of a method (its weight step plus its architecture step,
as its `train_search.py` runs it) at the papers' search settings: 8 cells, 16 channels, 32x32
CIFAR-sized inputs, 10 classes, the same batch for every method (`--batch_size`, 64). The step
runs with every schedule at its final value (last epoch: DropBlock, guidance weight,
temperatures). Time is the median over repeated steps after warm-up; memory is the peak of the
first steps (CUDA: `torch.cuda.max_memory_allocated`; CPU: the peak resident memory of a fresh
process above its baseline, see bench/measure.py). Every configuration runs in its own fresh
process. The reference is a first-order DARTS step (DARTS-PT's super-net, 7 ops): every figure is
also a ratio to it.

`--compile` measures every configuration also compiled (`--compile` of the scripts: each op
compiled once per shape) and, on CUDA, compiled and recorded as one CUDA graph per step
(`--compile --cuda_graph`, the configurations whose step is static), beside the eager figures and
as ratios to them; the time of the first compiled steps (compilation, recording) is in the JSON.
The evaluation network's training (DARTS_V2 at the papers' evaluation size: 20 cells, 36 channels,
batch 96, auxiliary head, drop-path) is measured too, in images per second: float32, and on CUDA
AMP and AMP with channels-last feature maps (these set their own precision: measured in the
float32 run only).

`--max_batch` adds the other two columns of EnTranNAS' Table 3: the largest batch that fits
(doubling from `--batch_size`, then bisection; every try in a fresh process, stopped by CUDA running
out of memory or by a peak over `--memory_limit_MB`) and the cost of a search at that batch,
estimated as its median step time x `--search_epochs` x ceil(`--train_images` / batch). It measures
only the configurations `--only` names (the reference serves the ratios of the step table).

`--save DIR` makes it a stage of run_all.sh: the results go to DIR, then DIR/summary.json (written
last) with the numbers of the one configuration measured at the top level, and for Table 3
`memory_GB` (at `--batch_size`) and `batch_multiple` (the largest `--batch_size` x 2^m, as a multiple).

  python -m bench.search_cost                       # CPU or the GPU, full size; bench/results/<device>.md|.json
  python -m bench.search_cost --device cuda --amp   # float16 autocast where a method supports it
  python -m bench.search_cost --compile --resume    # add the compiled (CUDA: and recorded) figures to the table
  python -m bench.search_cost --quick               # every configuration at a tiny size, in about a minute
  python -m bench.search_cost --only msg_das,darts_pd   # configurations whose name contains a string
  python -m bench.search_cost --resume              # go on after an interruption (results are written per configuration)
  python -m bench.search_cost --device cuda --only entrannas --max_batch --memory_limit_MB 11264   # Table 3, a 1080 Ti
  python -m bench.search_cost --device cuda --only "entrannas +bottleneck" --max_batch --memory_limit_MB 11264 --save S
"""
import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from bench.measure import largest_batch, measure
from common.utils import die, fused, speed_up

RESULTS = Path(__file__).with_name("results")
NUM_CLASSES = 10


def _batches(args, device, n=2):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=g).to(device),
             torch.randint(0, NUM_CLASSES, (args.batch_size,), generator=g).to(device)) for _ in range(n)]


def _search_step(module, flags, opts, device):
    """A method's `Searcher` on random batches, at its last epoch; returns step()."""
    import importlib
    ts = importlib.import_module(f"{module}.train_search")
    args = ts.parse_args([*flags, *_common(opts)])
    searcher = ts.Searcher(args, NUM_CLASSES, device)
    searcher.start_epoch(args.epochs - 1)
    train, valid = _batches(opts, device)
    return lambda: searcher.step(train, valid)


def _common(opts):
    return ["--layers", str(opts.layers), "--init_channels", str(opts.init_channels), "--batch_size",
            str(opts.batch_size), "--device", opts.device, "--dataset", "synthetic", "--image_size",
            str(opts.image_size), "--workers", "0", *(["--amp"] if opts.amp else []), *MODE_FLAGS[opts.mode]]


def _projection_decision(opts, device):
    """DARTS-PT, Sec. 4.1: one operation decision = the super-net evaluated once per op of the edge
    (here on one validation batch; a real decision repeats this over the validation split)."""
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    from darts_pt import selection
    from darts_pt.train_search import Searcher, parse_args
    args = parse_args(_common(opts))
    model = Searcher(args, NUM_CLASSES, device).model
    ds = TensorDataset(*_batches(opts, device, 1)[0])
    loader = DataLoader(ds, batch_size=opts.batch_size, sampler=DistributedSampler(ds, 1, 0, shuffle=False))
    return lambda: selection.op_strength(model, "normal", 0, loader, "acc", opts.amp)


def _fair_step(opts, device):
    """DARTS-PD stage 2: one strictly fair step, the k = 2 paths of a group on one batch."""
    from darts_pd.train_search import FairTrainer, parse_args
    args = parse_args([*_common(opts), "--pruned", "random", "--fair_batch_size", str(opts.batch_size)])
    trainer = FairTrainer(args, NUM_CLASSES, device, steps_per_epoch=1)
    trainer.start_epoch(0)
    batch = _batches(opts, device, 1)[0]
    return lambda: trainer.step(batch)


def _es_generation(opts, device):
    """DARTS-PD stage 3: one generation of the evolutionary search (population paths, each scored
    after BN re-estimation on `bn_batches` batches) with a fitness split of `es_images` images."""
    from darts_pd.train_search import FairTrainer, PathSearch, parse_args
    args = parse_args([*_common(opts), "--pruned", "random", "--subset", str(2 * opts.es_images),
                       "--fair_batch_size", str(opts.batch_size), "--population", str(opts.population),
                       "--mutations", str(opts.population // 2),
                       "--crossovers", str(opts.population - opts.population // 2),
                       "--bn_batches", str(opts.bn_batches), "--eval_layers", str(opts.layers),
                       "--eval_init_channels", str(opts.init_channels)])
    search = PathSearch(args, NUM_CLASSES, device, supernet=FairTrainer(args, NUM_CLASSES, device, 1).net)
    return search.generation


def _eval_training(amp, channels_last):
    """One training step of the evaluation network (common.train_eval.train_step): DARTS_V2 with
    --eval_layers cells of --eval_channels channels, auxiliary head, drop-path 0.2, on --eval_batch
    images; its own precision (`amp`) and memory format."""
    def build(opts, device):
        from common import genotypes, train_eval
        from common.network import build_network
        flags = ["--arch", "DARTS_V2", "--device", opts.device, *(["--amp"] if amp else []),
                 *(["--channels_last"] if channels_last else []), *MODE_FLAGS[opts.mode]]
        args = train_eval.parse_args(flags)
        model = build_network(genotypes.load("DARTS_V2"), "cifar10", opts.eval_channels, opts.eval_layers,
                              NUM_CLASSES, auxiliary=True).to(device)
        model.drop_path_prob = 0.2
        speed_up(model, args)
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), 0.025, momentum=0.9, weight_decay=3e-4, **fused(device))
        scaler = torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda")
        x, y = _batches(argparse.Namespace(batch_size=opts.eval_batch, image_size=opts.image_size), device, 1)[0]
        return lambda: train_eval.train_step(model, x, y, optimizer, scaler, args, device)
    return build


# name -> (what it is in the papers, builder(opts, device) -> step)
def _method(module, *flags):
    return lambda opts, device: _search_step(module, list(flags), opts, device)


CONFIGS = {
    "darts (reference)": ("first-order DARTS, 7 ops", _method("darts_pt", "--method", "darts")),
    "entrannas darts-like": ("EnTranNAS Table 3 row 1: the DARTS super-net (--darts)", _method("entrannas", "--darts")),
    "entrannas +engine/transit": ("Table 3 row 2", _method("entrannas", "--no-feature_sharing", "--bottleneck", "1")),
    "entrannas +feature sharing": ("Table 3 row 3", _method("entrannas", "--bottleneck", "1")),
    "entrannas +bottleneck": ("Table 3 row 4 = EnTranNAS", _method("entrannas")),
    "entrannas-dst": ("EnTranNAS-DST (Sec. 2.4)", _method("entrannas", "--dst")),
    **{f"msg_das K={k}{' no guidance' if lam == 0 else ''}": (
        f"Fig. 3; lambda {lam}", _method("msg_das", "--K", str(k), "--lambda_guide", str(lam)))
       for k in (1, 2, 3, 4) for lam in (0.01, 0)},
    "darts_pt supernet": ("DARTS-PT super-net step (= DARTS)", _method("darts_pt")),
    "darts_pt decision": ("one op decision: 7 super-net evaluations of a batch", _projection_decision),
    "darts_pd stage 1": ("PC-DARTS search step (K=4)", _method("darts_pd")),
    "darts_pd stage 2": ("one fair step, k = 2 paths", _fair_step),
    "darts_pd ES generation": ("one ES generation (see --population, --es_images)", _es_generation),
    "d_darts L_F": ("D-DARTS, L_F only (w_abl 0)", _method("d_darts", "--w_abl", "0")),
    "d_darts L_AB constant": ("Sec. 5.3: constant ablation loss", _method("d_darts", "--ablation_loss", "constant")),
    "d_darts L_AB differentiable": ("Sec. 5.3: differentiable ablation loss",
                                    _method("d_darts", "--ablation_loss", "differentiable")),
}
EVAL = {
    "eval network float32": ("DARTS_V2 training step", _eval_training(False, False)),
    "eval network AMP": ("DARTS_V2 training step, float16 autocast (CUDA)", _eval_training(True, False)),
    "eval network AMP channels_last": ("... and channels-last feature maps", _eval_training(True, True)),
}
CUDA_ONLY = {"eval network AMP", "eval network AMP channels_last"}
ONE_SHOT = {"darts_pd ES generation"}  # long steps: one warm-up (memory), one timed
# How each mode runs a configuration (the scripts' flags), and the prefix of its fields in the results.
MODE_FLAGS = {"eager": [], "compiled": ["--compile"], "captured": ["--compile", "--cuda_graph"]}
PREFIX = {"eager": "", "compiled": "compiled_", "captured": "captured_"}
# The configurations whose step --cuda_graph records (whole, or MSG-DAS' guidance pass): not DARTS-PT's
# decision (evaluations), DARTS-PD's stages 2 and 3 (new paths every step), MSG-DAS without guidance.
RECORDED = {n for n in CONFIGS if n not in {"darts_pt decision", "darts_pd stage 2", "darts_pd ES generation"}
            and not n.endswith("no guidance")}


def run_config(name, opts, mode="eager"):
    """In a fresh process: build the configuration, run it in `mode`, measure it. Compiled modes
    first run the steps that compile (and record), timed apart (`<mode>_first_steps_s`): the
    figures are those of the steps after them."""
    torch.manual_seed(0)
    torch.set_num_threads(opts.threads or torch.get_num_threads())
    device = torch.device(opts.device)
    opts = argparse.Namespace(**{**vars(opts), "mode": mode})
    what, build = {**CONFIGS, **EVAL}[name]
    step = build(opts, device)
    r = {"name": name, "what": what, **({"batch": opts.eval_batch} if name in EVAL else {})}
    first = {"eager": 0, "compiled": 1, "captured": 2}[mode]  # captured: the eager step, then the recording
    warmup, repeats = (1, 1) if name in ONE_SHOT else (opts.warmup, opts.repeats)
    seconds, peak, first_s = measure(step, device, warmup, repeats, first)
    p = PREFIX[mode]
    return {**r, p + "time_s": seconds, p + "peak_memory_MB": peak / 2 ** 20,
            **({p + "first_steps_s": first_s} if first else {})}


def modes(name, opts):
    """The modes `name` is measured in with these options."""
    out = ["eager"]
    if opts.compile:
        out.append("compiled")
        if opts.device == "cuda" and name in RECORDED:
            out.append("captured")
    return out


def try_batch(name, opts, batch):
    """In a fresh process: `name` measured at `batch`, or None when it does not fit (CUDA out of
    memory, or a peak over --memory_limit_MB; on CUDA the allocator is capped at that limit)."""
    opts = argparse.Namespace(**{**vars(opts), "batch_size": batch})
    if opts.device == "cuda" and opts.memory_limit_MB:
        total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, opts.memory_limit_MB * 2 ** 20 / total))
    try:
        r = run_config(name, opts)
    except RuntimeError as e:  # torch.cuda.OutOfMemoryError, or cuDNN / cuBLAS failing to allocate
        if isinstance(e, torch.cuda.OutOfMemoryError) or "ALLOC_FAILED" in str(e):
            return None
        raise
    return None if opts.memory_limit_MB and r["peak_memory_MB"] > opts.memory_limit_MB else r


def search_days(step_s, batch, opts):
    """A search's cost in days of one device, from its step time: --search_epochs epochs of
    ceil(--train_images / batch) steps."""
    return step_s * opts.search_epochs * math.ceil(opts.train_images / batch) / 86400


def max_batch(name, opts, trial):
    """EnTranNAS Table 3 for one configuration: memory at --batch_size ("Memory"), the largest batch
    that fits ("Batchsize"; also the largest --batch_size * 2^m, the paper's x1/x2/x4/x8) and the
    estimated search cost at each ("Cost"). `trial(name, opts, batch)` is `try_batch` in a fresh process."""
    batch, doubled, tried = largest_batch(lambda b: trial(name, opts, b), opts.batch_size)
    row = {"name": name, "what": CONFIGS[name][0], "batch": batch, "batch_doubling": doubled,
           "tried": {str(b): r and r["peak_memory_MB"] for b, r in tried.items()}}
    if batch is None:
        return {**row, "time_s": None, "peak_memory_MB": None}
    first = tried[opts.batch_size]
    for key, b in (("", batch), ("_doubling", doubled)):
        row[f"step_s{key}"] = tried[b]["time_s"]
        row[f"search_days{key}"] = search_days(tried[b]["time_s"], b, opts)
    return {**row, "time_s": first["time_s"], "peak_memory_MB": first["peak_memory_MB"]}


def max_batch_table(results, info, command, opts):
    lines = [f"# Largest batch that fits and the search cost there ({info['device']}"
             f"{', limit ' + str(opts.memory_limit_MB) + ' MB' if opts.memory_limit_MB else ''})", "",
             f"`{command}`", "", ", ".join(f"{k}: {v}" for k, v in info.items()), "",
             f"| configuration | what | peak MB at {opts.batch_size} | largest batch | largest {opts.batch_size} x 2^m "
             "| ms / step there | search days there | search days at the 2^m batch |", "|---" * 8 + "|"]
    for r in results:
        if r["batch"] is None:
            lines.append(f"| {r['name']} | {r['what']} | does not fit | | | | | |")
            continue
        lines.append(f"| {r['name']} | {r['what']} | {r['peak_memory_MB']:.0f} | {r['batch']} | {r['batch_doubling']} "
                     f"(x{r['batch_doubling'] // opts.batch_size}) | {1000 * r['step_s']:.1f} | "
                     f"{r['search_days']:.3f} | {r['search_days_doubling']:.3f} |")
    return "\n".join(lines) + "\n"


def machine(opts):
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": opts.threads or torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "device": opts.device,
            "amp": opts.amp, "date": time.strftime("%Y-%m-%d")}
    if opts.device == "cuda":
        info["gpu"] = subprocess_gpu_name()
    return info


def subprocess_gpu_name():
    """The GPU's name, asked in a child so that this process never initialises CUDA (children fork)."""
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(torch.cuda.get_device_name)


def _cells(r, mode, value):
    """The columns of `mode` for result `r`: value(r, prefix) or blanks where it was not measured."""
    p = PREFIX[mode]
    if r.get(p + "time_s") is None:
        return " | | |"
    return f" {value(r, p)} | {r[p + 'time_s'] / r['time_s']:.2f} | {r[p + 'peak_memory_MB']:.0f} |"


def table(results, info, command):
    ref = next(r for r in results if r["name"] == "darts (reference)")
    shown = [m for m in ("compiled", "captured") if any(r.get(PREFIX[m] + "time_s") is not None for r in results)]
    lines = [f"# Search cost per step ({info['device']}{', AMP' if info['amp'] else ''})", "",
             f"`{command}`", "",
             ", ".join(f"{k}: {v}" for k, v in info.items()), "",
             "| configuration | what | ms / step | x DARTS | peak memory MB | x DARTS |"
             + "".join(f" {m} ms / step | x eager | {m} peak MB |" for m in shown),
             "|---" * (6 + 3 * len(shown)) + "|"]
    for r in results:
        if r["name"] in EVAL:
            continue
        lines.append(f"| {r['name']} | {r['what']} | {1000 * r['time_s']:.1f} | {r['time_s'] / ref['time_s']:.2f} | "
                     f"{r['peak_memory_MB']:.0f} | {r['peak_memory_MB'] / ref['peak_memory_MB']:.2f} |"
                     + "".join(_cells(r, m, lambda r, p: f"{1000 * r[p + 'time_s']:.1f}") for m in shown))
    evals = [r for r in results if r["name"] in EVAL]
    if evals:
        lines += ["", "Training the evaluation network (one step of `common.train_eval.train_step`):", "",
                  "| configuration | what | batch | images / s | peak memory MB |"
                  + "".join(f" {m} images / s | x eager time | {m} peak MB |" for m in shown),
                  "|---" * (5 + 3 * len(shown)) + "|"]
        for r in evals:
            lines.append(f"| {r['name']} | {r['what']} | {r['batch']} | {r['batch'] / r['time_s']:.1f} | "
                         f"{r['peak_memory_MB']:.0f} |"
                         + "".join(_cells(r, m, lambda r, p: f"{r['batch'] / r[p + 'time_s']:.1f}") for m in shown))
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--amp", action="store_true", help="float16 autocast (CUDA)")
    p.add_argument("--batch_size", type=int, default=64, help="the same batch for every method")
    p.add_argument("--layers", type=int, default=8, help="cells of every super-net")
    p.add_argument("--init_channels", type=int, default=16)
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--warmup", type=int, help="steps before timing (the first ones give the memory; default 3, "
                                              "--quick 1)")
    p.add_argument("--repeats", type=int, help="timed steps; the median is reported (default 10, --quick 1)")
    p.add_argument("--population", type=int, default=50, help="paths of the measured ES generation (paper: 50)")
    p.add_argument("--es_images", type=int, default=512, help="fitness images per path of the ES generation")
    p.add_argument("--bn_batches", type=int, default=10, help="BN re-estimation batches per path (DARTS-PD's default)")
    p.add_argument("--compile", action="store_true",
                   help="also compiled, and on CUDA compiled and recorded as a CUDA graph, beside eager")
    p.add_argument("--eval_layers", type=int, default=20, help="cells of the measured evaluation network")
    p.add_argument("--eval_channels", type=int, default=36, help="its initial channels")
    p.add_argument("--eval_batch", type=int, default=96, help="its training batch")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--only", help="only the configurations whose name contains one of these comma-separated strings")
    p.add_argument("--quick", action="store_true",
                   help="tiny: 5 cells, 4 channels, 16x16, batch 8, one warm-up and one timed step; results not "
                        "written unless --out (as <device>-quick.md|.json)")
    p.add_argument("--out", help="folder of the results (default bench/results, not written in --quick mode)")
    p.add_argument("--save", help="a stage folder: the results there, then summary.json (see above); with --out "
                                  "left out")
    p.add_argument("--tag", help="appended to the results' file name: <device>-<tag>.md|.json")
    p.add_argument("--resume", action="store_true",
                   help="keep the configurations already measured in the results file of this device")
    p.add_argument("--max_batch", action="store_true",
                   help="EnTranNAS Table 3: also the largest batch that fits and the search cost at it")
    p.add_argument("--memory_limit_MB", type=float,
                   help="with --max_batch: the memory a batch must fit in (needed on a CPU; on CUDA it caps "
                        "the allocator, e.g. 11264 for a GTX 1080 Ti; default: the whole GPU)")
    p.add_argument("--search_epochs", type=int, default=50, help="with --max_batch: epochs of the estimated search")
    p.add_argument("--train_images", type=int, default=25000,
                   help="with --max_batch: images per search epoch (CIFAR-10's weight half: 25000)")
    opts = p.parse_args(argv)
    if opts.device == "auto":
        opts.device = "cuda" if torch.cuda.is_available() else "cpu"
    if opts.save and opts.out:
        die("--save is the folder of a stage's results: leave out --out")
    if opts.max_batch and opts.device == "cpu" and not opts.memory_limit_MB:
        die("--max_batch on a CPU needs --memory_limit_MB: there is no out-of-memory error to stop at")
    if opts.max_batch and opts.compile:
        die("--max_batch measures eager steps only: leave out --compile")
    if opts.quick:
        opts.layers, opts.init_channels, opts.image_size, opts.batch_size = 5, 4, 16, 8
        opts.population, opts.es_images, opts.bn_batches = 2, 16, 1
        opts.eval_layers, opts.eval_channels, opts.eval_batch = 5, 4, 8
    opts.warmup = opts.warmup or (1 if opts.quick else 3)
    opts.repeats = opts.repeats or (1 if opts.quick else 10)
    return opts


def configurations(opts):
    """The configurations to measure: those --only names (every one without it), and the reference
    for the step table's ratios (--max_batch has none)."""
    names = [n for n in CONFIGS if not opts.only or any(o in n for o in opts.only.split(","))
             or (n == "darts (reference)" and not opts.max_batch)]
    if not opts.amp and not opts.max_batch:  # the evaluation network sets its own precision
        names += [n for n in EVAL if (not opts.only or any(o in n for o in opts.only.split(",")))
                  and (opts.device == "cuda" or n not in CUDA_ONLY)]
    if not names:
        die(f"--only {opts.only!r} names no configuration; they are: {', '.join([*CONFIGS, *EVAL])}")
    return names


def main(argv=None):
    opts = parse_args(argv)
    names = configurations(opts)
    info = machine(opts)
    command = "python -m bench.search_cost " + " ".join(map(shlex.quote, argv if argv is not None else sys.argv[1:]))
    stem = (opts.device + (f"-{info['gpu'].replace(' ', '-')}" if "gpu" in info else "") + ("-amp" if opts.amp else "")
            + ("-quick" if opts.quick else "") + (f"-{opts.tag}" if opts.tag else ""))
    if opts.max_batch:
        stem += "-max_batch" + (f"-{opts.memory_limit_MB:g}MB" if opts.memory_limit_MB else "")
    folder = opts.save or opts.out
    out = Path(folder or RESULTS) / stem if folder or not opts.quick else None
    done = {}
    if opts.resume and out and out.with_suffix(".json").exists():
        done = {r["name"]: r for r in json.loads(out.with_suffix(".json").read_text())["results"]}
    ctx = mp.get_context("forkserver")  # children start from a process that has imported torch
    ctx.set_forkserver_preload(["torch", "bench.measure"])
    results = []
    for name in names:
        r = done.get(name, {})
        if opts.max_batch and not r:
            r = max_batch(name, opts, lambda *a: fresh(ctx, try_batch, a))
        for mode in [] if opts.max_batch else modes(name, opts):
            if PREFIX[mode] + "time_s" not in r:  # measured already (--resume): kept
                r = {**r, **fresh(ctx, run_config, (name, opts, mode))}
        results.append(r)
        if r["time_s"] is None:
            print(f"{name:32s} does not fit at batch {opts.batch_size}", flush=True)
        else:
            print(f"{name:32s} {1000 * r['time_s']:9.1f} ms/step {r['peak_memory_MB']:9.0f} MB"
                  + (f"   largest batch {r['batch']}" if opts.max_batch else "")
                  + "".join(f"   {m} {1000 * r[PREFIX[m] + 'time_s']:9.1f} ms/step" for m in ("compiled", "captured")
                            if PREFIX[m] + "time_s" in r), flush=True)
        if out:  # after every configuration, so that --resume can go on from an interrupted run
            out.parent.mkdir(parents=True, exist_ok=True)
            out.with_suffix(".json").write_text(json.dumps({"machine": info, "command": command, "results": results},
                                                           indent=1) + "\n")
    md = max_batch_table(results, info, command, opts) if opts.max_batch else table(results, info, command)
    print(md)
    if out:
        out.with_suffix(".md").write_text(md)
        print(f"written {out}.md and .json")
    if opts.save:
        write_summary(Path(opts.save), results, info, command, opts)
    return results


def write_summary(save, results, info, command, opts):
    """SAVE/summary.json: every result, and the one configuration's numbers at the top level (with
    Table 3's memory in GB and largest batch as a multiple of --batch_size)."""
    summary = {"machine": info, "command": command, "results": results}
    if len(results) == 1:
        r = results[0]
        summary.update(r, memory_GB=r["peak_memory_MB"] and r["peak_memory_MB"] / 1024)
        if opts.max_batch:
            summary["batch_multiple"] = r["batch_doubling"] and r["batch_doubling"] // opts.batch_size
    (save / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")


def fresh(ctx, fn, args):
    """fn(*args) in a fresh process: its memory peak is its own."""
    with ctx.Pool(1) as pool:
        return pool.apply(fn, args)


if __name__ == "__main__":
    main()
