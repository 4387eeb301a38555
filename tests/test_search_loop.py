"""The shared search loop: metrics, checkpoints, exact resume after a crash, genotype export."""
import argparse
import copy
import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from common import data
from common.genotypes import derive_darts, load
from common.search import Checkpointed, batches, frozen_bn_stats, search_loop
from common.utils import MetricsLog, set_seed, setup_run

OPS = ("none", "skip_connect", "sep_conv_3x3")


class ToySearcher:
    """A one-edge DARTS: softmax(alpha)-mixed 1x1 and 3x3 convs, first-order alternating updates."""

    def __init__(self, crash_at=None):
        self.net = nn.ModuleDict(dict(c1=nn.Conv2d(3, 4, 1), c3=nn.Conv2d(3, 4, 3, padding=1), fc=nn.Linear(4, 10)))
        self.alpha = nn.Parameter(1e-3 * torch.randn(14, 3))
        self.w_opt = torch.optim.SGD(self.net.parameters(), 0.05, momentum=0.9)
        self.a_opt = torch.optim.Adam([self.alpha], 3e-2)
        self.crash_at, self.calls = crash_at, 0

    def forward(self, x):
        w = F.softmax(self.alpha[0], 0)
        h = w[1] * self.net["c1"](x) + w[2] * self.net["c3"](x)
        return self.net["fc"](F.adaptive_avg_pool2d(F.relu(h), 1).flatten(1))

    def start_epoch(self, epoch):
        pass

    def step(self, train_batch, valid_batch):
        self.calls += 1
        if self.calls == self.crash_at:
            raise KeyboardInterrupt  # a kill in the middle of an epoch
        self.a_opt.zero_grad()
        F.cross_entropy(self.forward(valid_batch[0]), valid_batch[1]).backward()
        self.a_opt.step()
        self.w_opt.zero_grad()
        loss = F.cross_entropy(self.forward(train_batch[0]), train_batch[1])
        loss.backward()
        self.w_opt.step()
        return {"train_loss": loss.item()}

    def end_epoch(self, epoch, valid_queue):
        return {"alpha": self.alpha.tolist()}

    def state_dict(self):
        return {"net": self.net.state_dict(), "alpha": self.alpha.detach().clone(),
                "w_opt": self.w_opt.state_dict(), "a_opt": self.a_opt.state_dict()}

    def load_state_dict(self, d):
        self.net.load_state_dict(d["net"])
        self.alpha.data.copy_(d["alpha"])
        self.w_opt.load_state_dict(d["w_opt"])
        self.a_opt.load_state_dict(d["a_opt"])

    def genotype(self):
        cell = derive_darts(F.softmax(self.alpha, -1).detach(), [OPS] * 14)
        return load(f"Genotype(normal={[p for n in cell.nodes for p in n]}, normal_concat=[2, 3, 4, 5], "
                    f"reduce={[p for n in cell.nodes for p in n]}, reduce_concat=[2, 3, 4, 5])")


def _run(save, resume=False, crash_at=None):
    p = argparse.ArgumentParser()
    data.add_data_args(p, search=True)
    args = p.parse_args(["--dataset", "synthetic", "--image_size", "8", "--subset", "96", "--workers", "0"])
    args.batch_size, args.seed, args.epochs, args.save, args.resume = 16, 0, 3, str(save), resume
    set_seed(0)
    save = setup_run(args, "toy")
    searcher = ToySearcher(crash_at)
    train_q, valid_q, _ = data.search_loaders(args)
    g = search_loop(args, searcher, train_q, valid_q, save, torch.device("cpu"), method="toy")
    return g, searcher


def test_batches_pairs_every_train_batch_and_restarts_validation():
    pairs = list(batches([(i, [0]) for i in range(5)], [("v0", [0]), ("v1", [0])]))
    assert [t[0] for t, _ in pairs] == [0, 1, 2, 3, 4]
    assert [v[0] for _, v in pairs] == ["v0", "v1", "v0", "v1", "v0"]


class Parts(Checkpointed):
    checkpointed = ("net", "opts", "scaler", "missing", "epsilon")

    def __init__(self, seed):
        torch.manual_seed(seed)
        self.net = nn.Linear(3, 2)
        self.opts = [torch.optim.SGD(self.net.parameters(), 0.1, momentum=0.9), torch.optim.Adam([self.net.bias])]
        self.scaler, self.missing, self.epsilon = torch.amp.GradScaler("cpu", enabled=False), None, 0.03 * seed

    def train(self):
        for o in self.opts:
            self.net.zero_grad()
            self.net(torch.ones(4, 3)).square().sum().backward()
            o.step()


def test_checkpointed_round_trip_restores_every_named_part():
    a, b = Parts(1), Parts(2)
    a.train()
    b.load_state_dict(copy.deepcopy(a.state_dict()))  # as through a checkpoint file: no shared tensors
    assert all(torch.equal(p, q) for p, q in zip(a.net.parameters(), b.net.parameters()))
    assert b.epsilon == a.epsilon and b.missing is None
    a.train(), b.train()  # the optimizers' momentum and moments came along: the next steps agree
    assert all(torch.allclose(p, q) for p, q in zip(a.net.parameters(), b.net.parameters()))


def test_frozen_bn_stats_uses_batch_statistics_and_leaves_running_ones():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, affine=False),
                        nn.BatchNorm2d(4, track_running_stats=False))
    net.train()
    x = 3 + 2 * torch.randn(8, 3, 6, 6)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    with frozen_bn_stats(net):
        y = net(x)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())  # counter included
    assert torch.allclose(y, net(x), atol=1e-6)  # the same batch statistics as a training forward
    assert [m.track_running_stats for m in net[1:]] == [True, False]  # each module as it was
    assert not torch.equal(state["1.running_mean"], net.state_dict()["1.running_mean"])


def test_resume_after_crash_is_exact(tmp_path):
    g_full, full = _run(tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "crash", crash_at=5)  # epoch 1 of 3 was checkpointed, epoch 2 dies mid-way
    assert len(MetricsLog.read(tmp_path / "crash" / "metrics.jsonl")) == 1
    g_res, resumed = _run(tmp_path / "crash", resume=True)
    assert torch.equal(full.alpha, resumed.alpha) and g_full == g_res
    assert MetricsLog.read(tmp_path / "full" / "metrics.jsonl") == MetricsLog.read(tmp_path / "crash" / "metrics.jsonl")
    assert load(str(tmp_path / "crash" / "genotype.json")) == g_full
    assert (tmp_path / "full" / "genotype.dot").exists()
    summary = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert summary["method"] == "toy" and summary["search_time_s"] > 0 and summary["peak_memory_MB"] is None
