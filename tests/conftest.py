"""Shared test helpers: run a script as a user would, in a fresh process."""
import os
import subprocess
import sys
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
