"""Run the DARTS-PD search under torchrun and keep what each rank holds (for test_darts_pd)."""
import os
import sys

import torch

from darts_pd import model_search, train_search

out, argv = sys.argv[1], sys.argv[2:]
drawn = []  # every path group this rank trained on
next_group = model_search.PathGroups.__next__


def recording_next(self):
    group = next_group(self)
    drawn.append(group)
    return group


model_search.PathGroups.__next__ = recording_next
stages = train_search.main(argv)
torch.save({"arch": {n: p.detach() for n, p in stages[1].net.named_parameters() if n.startswith(("alpha", "beta"))},
            "groups": drawn, "supernet": stages[2].net.state_dict(),
            "fitness": stages[3].evolution.state_dict()["fitness"], "paths": stages[3].evolution.state_dict()["paths"]},
           os.path.join(out, f"rank{os.environ['RANK']}.pt"))
