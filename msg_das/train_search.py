"""MSG-DAS search (Tan et al.): K mutually exclusive single-path sub-graphs, Dropblock-Identity,
gradient-stopped super-net guidance; first-order alternating updates (Sec. 3, Sec. 4.2).

Usage: python msg_das/train_search.py [--data DIR] [--K 2] [--batch_size 128] [--lambda_guide 0.01] [--save RUN] [--resume]
"""
import argparse
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.data import add_data_args, search_loaders
from common.operations import DARTS_OPS
from common.search import Checkpointed, frozen_bn_stats, search_loop, step_graph
from common.train_eval import evaluate
from common.utils import (accuracy, add_run_args, add_speed_args, amp_autocast, check_run, die, fused, get_device,
                          set_seed, setup_run, speed_up)
from msg_das.model_search import Network

NUM_OPS = len(DARTS_OPS)  # the DARTS ops with `none` (Sec. 4.2)


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # Sec. 4.2, "Searching Setup"
    p.add_argument("--K", type=int, default=2, help="number of mutually exclusive sub-graphs per iteration")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=240,
                   help="search epochs (the paper's maximum); every schedule spans them, nothing stops earlier")
    p.add_argument("--learning_rate", type=float, default=0.025, help="SGD learning rate of the weights (cosine)")
    p.add_argument("--learning_rate_min", type=float, default=0.0)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight_decay", type=float, default=3e-4)
    p.add_argument("--grad_clip", type=float, default=5.0, help="gradient-norm clip of the weights (PC-DARTS code)")
    p.add_argument("--init_channels", type=int, default=16)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--arch_learning_rate", type=float, default=3e-4, help="Adam learning rate of alpha")
    p.add_argument("--arch_betas", type=float, nargs=2, default=(0.5, 0.999), help="Adam betas of alpha")
    p.add_argument("--arch_weight_decay", type=float, default=1e-4)
    p.add_argument("--tau_max", type=float, default=10.0, help="Gumbel-softmax temperature at the first epoch")
    p.add_argument("--tau_min", type=float, default=1.0, help="... decayed linearly to this at the last epoch")
    # Sec. 3.3, Table 4 and Fig. 3 ("KL weight lambda"): super-net guidance
    p.add_argument("--lambda_guide", type=float, default=0.01,
                   help="final weight of the super-net guidance (linear from 0); 0 skips the teacher pass")
    # an extra, in no equation of the paper (see README): peer-to-peer distillation between the sub-graphs
    p.add_argument("--peer_loss", action=argparse.BooleanOptionalAction, default=False,
                   help="EXTRA, not in the paper: each sub-graph also learns from the other sub-graphs' "
                        "detached predictions")
    p.add_argument("--lambda_peer", type=float, default=0.01,
                   help="EXTRA, with --peer_loss: final weight of the peer term (linear from 0)")
    # Sec. 3.2: Dropblock-Identity; the paper gives no values (see README)
    p.add_argument("--drop_block_size", type=int, default=3, help="side of the square DropBlock blocks")
    p.add_argument("--drop_block_prob", type=float, default=0.1,
                   help="final drop rate of skip-connect's DropBlock (the paper's keep probability p is 1 - this); "
                        "0: plain identity (Table 3 without Pseudo Identity)")
    p.add_argument("--drop_block_steps", type=int, default=4,
                   help="the rate starts at 0 and rises by prob/steps at `steps` evenly spaced epochs")
    add_run_args(p, seed=0)
    add_speed_args(p, cuda_graph="the super-net's guidance pass")
    add_data_args(p, search=True)
    return p


def parse_args(argv=None):
    args = get_parser().parse_args(argv)
    if not 1 <= args.K <= NUM_OPS:
        die(f"--K {args.K}: the sub-graphs are mutually exclusive, so K must be between 1 and the "
            f"{NUM_OPS} candidate ops of an edge")
    if args.peer_loss and args.K < 2:
        die("--peer_loss needs at least two sub-graphs (--K 2 or more)")
    if args.drop_block_size < 1:
        die(f"--drop_block_size {args.drop_block_size}: the DropBlock block size must be at least 1")
    if not 0.0 <= args.drop_block_prob <= 1.0 or args.drop_block_steps < 1:
        die("--drop_block_prob must lie in [0, 1] and --drop_block_steps be at least 1")
    if args.tau_min <= 0 or args.tau_max <= 0:
        die("--tau_max and --tau_min must be positive")
    if args.lambda_guide < 0 or args.lambda_peer < 0:
        die("--lambda_guide and --lambda_peer must be >= 0")
    return args


# ---------------------------------------------------------------- schedules (per epoch)

def linear(epoch, epochs, start, end):
    """`start` at the first epoch to `end` at the last one."""
    return start + (end - start) * epoch / max(epochs - 1, 1)


def tau_at(epoch, args):
    """Sec. 4.2: the temperature is 10 at first and decays linearly to 1."""
    return linear(epoch, args.epochs, args.tau_max, args.tau_min)


def lambda_at(epoch, args, final):
    """Sec. 3.3: the guidance weight follows a linear schedule starting from 0."""
    return linear(epoch, args.epochs, 0.0, final)


def drop_block_at(epoch, args):
    """Sec. 3.2: the DropBlock rate is zero at first and rises step-wise: the search is cut into
    `steps + 1` equal stages, stage s has rate prob * s / steps."""
    stage = min(epoch * (args.drop_block_steps + 1) // args.epochs, args.drop_block_steps)
    return args.drop_block_prob * stage / args.drop_block_steps


# ---------------------------------------------------------------- losses

def soft_cross_entropy(logits, p):
    """-sum_c p_c log softmax(logits)_c, averaged over the batch (Eq. 7 prints the sum without its
    minus sign; this is the cross-entropy it names)."""
    return F.cross_entropy(logits, p)


def subgraph_losses(logits, y, soft_labels, lam, mu):
    """Eq. (7) for every sub-graph k: L^k = L_cls^k + lam * CE(p_super, p^k); with the extra
    `--peer_loss` (not in the paper), plus mu times the mean CE from the other sub-graphs' detached
    predictions. Returns (sum of the L^k, mean L_cls, mean guidance term, mean peer term)."""
    K = len(logits)
    peers = [F.softmax(l.detach().float(), dim=-1) for l in logits] if mu > 0 else None
    total, cls, guide, peer = 0.0, 0.0, 0.0, 0.0
    for k, lk in enumerate(logits):
        lk = lk.float()
        l_cls = F.cross_entropy(lk, y)
        loss = l_cls
        if soft_labels is not None:
            g = soft_cross_entropy(lk, soft_labels)
            loss = loss + lam * g  # Eq. (7)
            guide += g.item() / K
        if peers is not None:
            m = sum(soft_cross_entropy(lk, peers[j]) for j in range(K) if j != k) / (K - 1)
            loss = loss + mu * m
            peer += m.item() / K
        total = total + loss  # Fig. 2: the final loss is the sum over the sub-graphs
        cls += l_cls.item() / K
    return total, cls, guide, peer


# ---------------------------------------------------------------- the searcher

class Searcher(Checkpointed):
    """The MSG-DAS search state with the `common.search` interface."""

    checkpointed = ("net", "w_opt", "a_opt", "scheduler", "scaler")

    def __init__(self, args, num_classes, device):
        self.args, self.device = args, device
        self.net = Network(args.init_channels, num_classes, args.layers, block_size=args.drop_block_size).to(device)
        speed_up(self.net, args)
        self.w_opt = torch.optim.SGD(self.net.weight_parameters(), args.learning_rate, momentum=args.momentum,
                                     weight_decay=args.weight_decay, **fused(device))
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_opt, args.epochs,
                                                                    eta_min=args.learning_rate_min)
        self.a_opt = torch.optim.Adam(self.net.arch_parameters(), args.arch_learning_rate, betas=tuple(args.arch_betas),
                                      weight_decay=args.arch_weight_decay, **fused(device, capturable=True))
        self.amp = args.amp and device.type == "cuda"
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp)
        self.teacher = step_graph(self.soft_labels, args, device)  # the one static pass of a step
        self.start_epoch(0)

    def start_epoch(self, epoch):
        a = self.args
        self.epoch = epoch
        self.tau = tau_at(epoch, a)
        self.lam = lambda_at(epoch, a, a.lambda_guide)
        self.mu = lambda_at(epoch, a, a.lambda_peer) if a.peer_loss else 0.0
        self.drop_block = drop_block_at(epoch, a)
        self.net.set_drop_block(self.drop_block)
        self.lr = self.w_opt.param_groups[0]["lr"]

    def soft_labels(self, x):
        """Sec. 3.3: one forward of the whole super-net, every op mixed by softmax(alpha), with no
        gradient and no stored activations: its class probabilities are the soft labels. The pass
        leaves the super-net untouched: BatchNorm normalises with the batch statistics, as in
        training, but its running statistics (those of the sub-graphs) are not updated. No host
        synchronisation: with --cuda_graph it is recorded (per epoch: its DropBlock rate)."""
        with torch.no_grad(), frozen_bn_stats(self.net), amp_autocast(self.device, self.amp):
            w_n, w_r = self.net.supernet_weights()
            return F.softmax(self.net(x, w_n, w_r, single_path=False).float(), dim=-1)

    def step(self, train_batch, valid_batch):
        x_t, y_t = (t.to(self.device, non_blocking=True) for t in train_batch)
        x_v, y_v = (t.to(self.device, non_blocking=True) for t in valid_batch)
        K, alphas, weights = self.args.K, self.net.arch_parameters(), self.net.weight_parameters()

        # architecture step on the validation split (first order): the K sampled sub-graphs'
        # summed classification losses, gradients to alpha through the straight-through weights
        self.a_opt.zero_grad(set_to_none=True)
        with amp_autocast(self.device, self.amp):
            arch_loss = sum(F.cross_entropy(self.net(x_v, w_n, w_r).float(), y_v)
                            for w_n, w_r in self.net.sample(K, self.tau))
        self.scaler.scale(arch_loss).backward(inputs=alphas)
        self.scaler.step(self.a_opt)

        # weight step on the training split: K new sub-graphs, Eq. (7) summed over them
        self.w_opt.zero_grad(set_to_none=True)
        soft = None
        if self.lam > 0:
            soft = self.teacher(self.epoch, x_t) if self.teacher else self.soft_labels(x_t)
        with amp_autocast(self.device, self.amp):
            logits = [self.net(x_t, w_n, w_r) for w_n, w_r in self.net.sample(K, self.tau, detach=True)]
            loss, cls, guide, peer = subgraph_losses(logits, y_t, soft, self.lam, self.mu)
        self.scaler.scale(loss).backward()
        if self.args.grad_clip > 0:
            self.scaler.unscale_(self.w_opt)
            nn.utils.clip_grad_norm_(weights, self.args.grad_clip)
        self.scaler.step(self.w_opt)
        self.scaler.update()

        top1 = sum(accuracy(l.detach(), y_t)[0] for l in logits) / K
        out = {"train_loss": loss.item(), "train_cls": cls, "train_top1": top1, "arch_loss": arch_loss.item() / K}
        if soft is not None:
            out["guide_loss"] = guide
        if self.mu > 0:
            out["peer_loss"] = peer
        return out

    def end_epoch(self, epoch, valid_queue):
        """Validation of the sub-graph of the most likely ops, then the epoch's schedules and alpha."""
        self.scheduler.step()
        valid_loss, valid_top1, _ = evaluate(self.net, valid_queue, self.device, self.amp)
        self.net.train()
        out = {"valid_loss": valid_loss, "valid_top1": valid_top1, "lr": self.lr, "tau": self.tau,
               "lambda_guide": self.lam, "drop_block": self.drop_block}
        if self.args.peer_loss:
            out["lambda_peer"] = self.mu
        return {**out, "alpha_normal": self.net.alpha_normal.tolist(), "alpha_reduce": self.net.alpha_reduce.tolist()}

    def genotype(self):
        return self.net.genotype()


def main(argv=None):
    args = parse_args(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        die("the MSG-DAS search runs in one process on one GPU (as in the paper); start it without torchrun")
    device = get_device(args.device)
    check_run(args, "search-msg_das")  # every input is checked before the run folder is touched
    set_seed(args.seed, args.deterministic)
    train_queue, valid_queue, num_classes = search_loaders(args)
    searcher = Searcher(args, num_classes, device)
    save = setup_run(args, "search-msg_das")
    extra = {"peer_loss": True, "lambda_peer": args.lambda_peer} if args.peer_loss else {}
    return search_loop(args, searcher, train_queue, valid_queue, save, device, method="msg_das", K=args.K,
                       batch_size=args.batch_size, lambda_guide=args.lambda_guide,
                       drop_block_prob=args.drop_block_prob, **extra)


if __name__ == "__main__":
    main()
