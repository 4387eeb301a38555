"""The epoch loop every search shares: alternating train/validation batches, metrics,
checkpoints after every epoch, exact `--resume`, and at the end the genotype (`genotype.json`,
`.dot`) and `summary.json` (search time, GPU-hours, peak GPU memory).

A method supplies a *searcher*, an object with:
  start_epoch(epoch)                  set the epoch's schedules (learning rates, temperatures, ...)
  step(train_batch, valid_batch)      one search iteration; returns a dict of floats to average
  end_epoch(epoch, valid_queue)       a dict of per-epoch records (validation accuracy, alphas, ...)
  state_dict() / load_state_dict(d)   everything needed to continue exactly
  genotype()                          the architecture derived now
  finish(save) (optional)             write further outputs at the end; returns entries for summary.json

`Checkpointed` writes the last two from the names of a searcher's parts; `frozen_bn_stats` is for
the extra forwards of a search step that must not change the super-net; `StepGraph` replays a
static search step as one CUDA graph (`--cuda_graph`).
"""
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn as nn

from common.genotypes import export
from common.utils import (AverageMeter, MetricsLog, Progress, check_finite, checkpoint_fits, compile_report, die,
                          gather_rng_states, log, rank, resume_state, save_checkpoint, set_rng_state, world_size,
                          write_json)


def batches(train_queue, valid_queue):
    """(train batch, validation batch) pairs for one epoch; the validation loader restarts when it
    runs out (DARTS draws one validation batch per training batch)."""
    valid_iter = iter(valid_queue)
    for batch in train_queue:
        try:
            valid_batch = next(valid_iter)
        except StopIteration:
            valid_iter = iter(valid_queue)
            valid_batch = next(valid_iter)
        yield batch, valid_batch


class Checkpointed:
    """`state_dict()` / `load_state_dict()` of an object from the attributes named in `checkpointed`:
    each is anything with a state_dict (networks, optimizers, schedulers, grad scalers), a list of
    those, None (a part this variant does not have), or a plain value (restored as saved)."""
    checkpointed = ()

    def state_dict(self):
        return {name: _state(getattr(self, name)) for name in self.checkpointed}

    def load_state_dict(self, d):
        for name in self.checkpointed:
            part = getattr(self, name)
            if part is None:
                continue
            if hasattr(part, "load_state_dict"):
                part.load_state_dict(d[name])
            elif isinstance(part, list):
                for p, s in zip(part, d[name], strict=True):
                    p.load_state_dict(s)
            else:
                setattr(self, name, d[name])


def _state(part):
    if isinstance(part, list):
        return [_state(p) for p in part]
    return part.state_dict() if hasattr(part, "state_dict") else part


@contextmanager
def frozen_bn_stats(net):
    """BatchNorm in training mode normalises with the batch statistics, as in a training forward,
    but leaves its running statistics and batch counter untouched (no copy to restore): for the
    forwards that must not change what evaluation mode computes (MSG-DAS' teacher pass, DARTS-PT's
    masked evaluations, D-DARTS' ablated networks)."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    for m in bns:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in bns:
            m.track_running_stats = True


class StepGraph:
    """A whole search step (forwards, backwards, optimizer steps) recorded once as a CUDA graph and
    replayed: one launch instead of the thousands of small kernels a super-net step dispatches
    (`--cuda_graph`; PyTorch's "whole-network capture").

    `step(*tensors)` must return tensors (a dict of them), do no host synchronisation (no `.item()`, no
    Python branch on a tensor's value, no data-dependent shapes) and depend on Python state only
    through `key` (the epoch's schedules and learning rates, a decided edge, ...). Its Adam optimizers
    must be capturable; what a replay returns is overwritten by the next one. For each key the first
    batch runs eagerly on the recording stream (a real step, which creates the optimizer state and
    lets cuDNN choose its kernels), the next one is recorded and replayed; a batch of another shape
    (an epoch's last, smaller batch) runs eagerly; a key that changes at every call never records
    (every step eager). Every batch is stepped on once, and a replay runs exactly the kernels of the
    eager step, on copies of the batch at fixed addresses."""

    def __init__(self, step, pool=None):
        self.step, self.key, self.graph = step, None, None
        self.pool = torch.cuda.graph_pool_handle() if pool is None else pool
        self.stream = torch.cuda.Stream()

    def __call__(self, key, *tensors):
        shapes = [(t.shape, t.dtype) for t in tensors]
        if key != self.key:  # a new graph; the old one's memory goes
            self.key, self.shapes, self.graph, self.inputs, self.out = key, shapes, None, None, None
            return self.warm_up(*tensors)
        if shapes != self.shapes:
            return self.step(*tensors)
        if self.graph is None:
            self.inputs = [t.clone() for t in tensors]
            self.graph = self.record()
        for static, t in zip(self.inputs, tensors):
            static.copy_(t, non_blocking=True)
        return self.replay()

    def warm_up(self, *tensors):
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            out = self.step(*tensors)
        torch.cuda.current_stream().wait_stream(self.stream)
        return out

    def record(self):
        """The graph of `step` on `self.inputs` (recording runs nothing); `self.out` its outputs."""
        graph = torch.cuda.CUDAGraph()
        # thread_local: the loaders' pinning thread may use CUDA meanwhile
        with torch.cuda.graph(graph, self.pool, self.stream, capture_error_mode="thread_local"):
            self.out = self.step(*self.inputs)
        return graph

    def replay(self):
        self.graph.replay()
        return self.out


def check_cuda_graph(args, device):
    """One clear line where `--cuda_graph` cannot record the step: before the run folder is touched."""
    if getattr(args, "cuda_graph", False):
        if device.type != "cuda":
            die("--cuda_graph records the search's steps as CUDA graphs: it needs --device cuda")
        if world_size() > 1:
            die("--cuda_graph records one process' step: run without torchrun, or leave --cuda_graph out")


def step_graph(step, args, device, pool=None):
    """A `StepGraph` of `step` with `--cuda_graph`, else None. Steps that always run one after the
    other may share the memory of their recordings (`pool`: the first one's `.pool`)."""
    check_cuda_graph(args, device)
    return StepGraph(step, pool) if getattr(args, "cuda_graph", False) else None


def search_epoch(searcher, train_queue, valid_queue, epoch):
    """One epoch of search steps; returns the averages of what the steps reported."""
    searcher.start_epoch(epoch)
    train_queue.sampler.set_epoch(epoch)
    valid_queue.sampler.set_epoch(epoch)
    meters = defaultdict(AverageMeter)
    for step, (train_batch, valid_batch) in enumerate(batches(train_queue, valid_queue)):
        values = searcher.step(train_batch, valid_batch)
        check_finite(values, f"at step {step + 1} of epoch {epoch + 1}")
        for k, v in values.items():
            meters[k].update(v, len(train_batch[1]))
    return {k: m.avg for k, m in meters.items()}


def search_loop(args, searcher, train_queue, valid_queue, save, device, method, **meta):
    """Run `args.epochs` epochs of `searcher`; write `genotype.json` (+ DOT) in `save`, then what
    the searcher's optional `finish(save)` writes (rank 0), then the done-marker `summary.json`;
    return the genotype. A loss that becomes NaN or infinite stops the run before its checkpoint
    (`check_finite`)."""
    start, wall = 0, 0.0
    ckpt = resume_state(args, device)
    if ckpt:
        with checkpoint_fits(Path(save) / "checkpoint.pt"):
            searcher.load_state_dict(ckpt["searcher"])
            start, wall = ckpt["epoch"], ckpt["wall_time_s"]
            set_rng_state(ckpt["rng"][rank()])
    metrics = MetricsLog(save / "metrics.jsonl", start)
    progress = Progress(args.epochs, start)
    t0 = time.time() - wall
    for epoch in range(start, args.epochs):
        record = {"epoch": epoch, **search_epoch(searcher, train_queue, valid_queue, epoch),
                  **searcher.end_epoch(epoch, valid_queue)}
        check_finite(record, f"in epoch {epoch + 1}")
        record["genotype"] = str(searcher.genotype())
        metrics.write(record)
        save_checkpoint(save / "checkpoint.pt", {"searcher": searcher.state_dict(), "epoch": epoch + 1,
                                                 "wall_time_s": time.time() - t0, "rng": gather_rng_states()})
        summary = " ".join(f"{k} {v:.4g}" for k, v in record.items() if isinstance(v, float))
        log.info("%s %s", progress.line(epoch), summary)
        log.info("genotype %s", record["genotype"])
        if report := compile_report():
            log.info("%s", report)
    genotype = searcher.genotype()
    if rank() == 0:
        cost = search_cost(time.time() - t0, device)
        export(save, genotype, method=method, epochs=args.epochs, seed=args.seed, dataset=args.dataset,
               **cost, **meta)
        extra = (searcher.finish(save) or {}) if hasattr(searcher, "finish") else {}
        write_summary(save, cost, method=method, genotype=str(genotype), epochs=args.epochs, **extra)
    log.info("final genotype %s", genotype)
    return genotype


def write_summary(save, cost, **info):
    """`summary.json` of a finished search stage, its done-marker: written last, atomically. run_all.sh
    sums the costs of every stage it finds."""
    write_json(Path(save) / "summary.json", {**info, **cost})


def search_cost(seconds, device):
    """Wall time, GPU-hours (wall time x GPUs) and peak GPU memory of a search, for summaries."""
    cuda = device.type == "cuda"
    return {"search_time_s": round(seconds, 1), "device": str(device), "world_size": world_size(),
            "gpu_hours": round(seconds / 3600 * world_size(), 4) if cuda else None,
            "peak_memory_MB": round(torch.cuda.max_memory_allocated(device) / 2 ** 20, 1) if cuda else None}
