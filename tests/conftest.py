"""Shared test helpers: run a script as a user would, in a fresh process; two forked ranks of a process group."""
import multiprocessing
import os
import socket
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)  # tiny tensors: more threads only add contention on 2-core CI machines

# Tiny settings shared by the end-to-end tests: a few cells, 4 channels, 16x16 synthetic images.
SMALL = ["--dataset", "synthetic", "--image_size", "16", "--workers", "0", "--device", "cpu"]


# Subprocesses see the same single-threaded environment, so runs are bit-for-bit comparable.
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def run(args, check=True, timeout=600, **kw):
    """Run `python args...` from the repository root with the project importable."""
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture
def script():
    return run


def two_ranks(fn):
    """Run `fn(rank)` in two forked processes joined as ranks 0 and 1 of a process group, as torchrun
    starts them (gloo; the forks skip torchrun's start-up and the imports); their exit codes."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def rank_main(rank):
        torch.cuda.is_available = lambda: False  # CPU only: a fork cannot use the CUDA its parent may have started
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(port))
        code = 1
        try:
            fn(rank)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)  # not pytest's exit: the parent goes on

    procs = [multiprocessing.get_context("fork").Process(target=rank_main, args=(r,)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    return [p.exitcode for p in procs]
