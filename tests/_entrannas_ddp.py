"""Run the EnTranNAS search under torchrun and keep each rank's initial and final super-net (for test_entrannas)."""
import os
import sys

import torch

from entrannas import train_search

out, argv = sys.argv[1], sys.argv[2:]
rank = int(os.environ["RANK"])
if rank:  # any file a non-zero rank wrote would land here
    argv = [a if a != argv[argv.index("--save") + 1] else os.path.join(out, f"rank{rank}-run") for a in argv]
init = {}
searcher_init = train_search.Searcher.__init__


def recording_init(self, *args, **kwargs):
    searcher_init(self, *args, **kwargs)
    init.update({f"init_{n}": p.detach().clone() for n, p in self.model.named_parameters()
                 if n.startswith(("alpha", "beta"))})


train_search.Searcher.__init__ = recording_init
searcher = train_search.main(argv)
torch.save({**searcher.model.state_dict(), **init}, os.path.join(out, f"rank{rank}.pt"))
