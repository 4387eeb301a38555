"""Run common.train_eval under torchrun and keep each rank's final weights (for test_train_eval)."""
import os
import sys

import torch

from common import train_eval

out, argv = sys.argv[1], sys.argv[2:]
rank = int(os.environ["RANK"])
if rank:  # any file a non-zero rank wrote would land here
    argv = [a if a != argv[argv.index("--save") + 1] else os.path.join(out, f"rank{rank}-run") for a in argv]
model = train_eval.main(argv)
torch.save(model.state_dict(), os.path.join(out, f"rank{rank}.pt"))
