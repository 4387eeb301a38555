"""Timing and peak memory of one repeated step, the way bench/search_cost.py reports them.

Memory: the peak over the `warmup` calls, which include one-time allocations such as optimizer
state. On CUDA, `torch.cuda.max_memory_allocated` (weights, optimizer state and activations);
on CPU, the peak resident memory of the process above its resident memory just before the calls
(Linux' VmHWM, reset through /proc/self/clear_refs), so the fixed cost of the Python and PyTorch
runtime is left out. For that CPU figure glibc serves every allocation over 128 KiB with its own
mapping during the warm-up (`mallopt`), so that resident memory follows live memory; the timed
calls run with the largest threshold, so allocations are recycled as usual.
Time: the median wall time of the `repeats` calls after the warm-up (CUDA synchronised); the
`first` calls before the warm-up, a compiled step's compilation, are timed apart.
`largest_batch` finds the largest batch that fits (doubling, then bisection).
"""
import ctypes
import re
import statistics
import time

import torch


def _status(key):
    with open("/proc/self/status") as f:
        return int(re.search(rf"{key}:\s+(\d+) kB", f.read()).group(1)) * 1024


def _reset_cpu_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def measure(step, device, warmup=3, repeats=10, first=0):
    """(median seconds per call, peak bytes, seconds of the `first` calls) of `step()`; call it in a
    fresh process. The `first` calls (a compiled step's compilation and recording) are timed apart
    and are in the peak, as they must be on CUDA (a CUDA graph's memory is taken when it is
    recorded); on a CPU the peak then includes the compiler's own memory, an upper bound (later
    calls only reuse what the first ones took, so they cannot be measured apart)."""
    cuda = device.type == "cuda"
    mallopt = ctypes.CDLL("libc.so.6").mallopt
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    else:
        mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
        base = _status("VmRSS")
        _reset_cpu_peak()
    t = time.perf_counter()
    for _ in range(first):
        step()
    if cuda:
        torch.cuda.synchronize()
    first_s = time.perf_counter() - t
    for _ in range(max(warmup, 1)):
        step()
    if cuda:
        torch.cuda.synchronize()
    # CPU: a tiny step can leave the process below its baseline (glibc trims memory freed in it)
    peak = torch.cuda.max_memory_allocated(device) if cuda else max(_status("VmHWM") - base, 0)
    if not cuda:
        mallopt(-3, 32 * 1024 * 1024)
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times), peak, first_s


def largest_batch(fits, start, resolution=1):
    """The largest batch for which `fits(batch)` returns a measurement rather than None, searched as
    one does by hand: double `start` while it fits, then bisect between the last batch that fit and
    the first that did not until they are `resolution` apart. Returns (largest batch, largest
    start * 2^m that fits, {batch: fits(batch) for every batch tried}); the batches are None when
    `start` does not fit."""
    tried = {}

    def ok(batch):
        tried[batch] = fits(batch)
        return tried[batch] is not None

    if not ok(start):
        return None, None, tried
    low = start
    while ok(2 * low):
        low *= 2
    doubled, high = low, 2 * low
    while high - low > resolution:
        mid = (low + high) // 2
        low, high = (mid, high) if ok(mid) else (low, mid)
    return low, doubled, tried
