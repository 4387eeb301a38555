"""DARTS-PD search (Sec. 3.2, Alg. 1): three stages in one run folder.

Stage 1 `Searcher`: PC-DARTS on the super-net S, then soft pruning to the top-k ops of each kept
  edge (Eq. 3) -> RUN/stage1/pruned.json (S' and the frozen weights of its ops), and genotype.json
  (the PC-DARTS top-1 genotype).
Stage 2 `FairTrainer`: path-wise strictly fair training of S' (Eq. 4-5), a whole number of passes
  over its path groups -> RUN/stage2/supernet.pt.
Stage 3 `PathSearch`: evolution of paths scored on held-out data (Eq. 6); the best path of every
  parameter-size bucket -> RUN/buckets.json, RUN/buckets/<bucket>.json (also as
  RUN/buckets/rank-<i>.json, i-th by fitness), and RUN/genotype.json (the best of all).

Every stage has its own flags, the paper's values as defaults: stage 1 takes the DARTS names
(--epochs --batch_size --learning_rate --weight_decay), stage 2 --fair_epochs --fair_batch_size
--fair_learning_rate --fair_weight_decay, stage 3 --generations. Every stage runs under torchrun:
gradients and BatchNorm statistics are averaged across ranks, and every rank holds the same alpha,
beta, path group and evolution.

Usage:
  python darts_pd/train_search.py --data ~/data --save RUN                   # all three stages
  python darts_pd/train_search.py --data ~/data --save RUN --stage 2         # one stage, on RUN's stage 1
  python darts_pd/train_search.py --data ~/data --save RUN --resume          # continue a killed run
  torchrun --nproc_per_node 8 darts_pd/train_search.py --dataset imagenet --data ~/imagenet --save RUN
  python darts_pd/train.py --arch RUN/buckets/3.5-3.6M.json --data ~/data    # train one bucket's path
"""
import argparse
import copy
import dataclasses
import itertools
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DistributedSampler, Subset

if __package__ in (None, ""):  # run as `python darts_pd/train_search.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import genotypes  # noqa: E402
from common.data import (Loader, add_data_args, get_dataset, image_size, is_imagenet_like, limit,  # noqa: E402
                         make_loader, num_classes, pipeline, search_loaders, search_split, transforms)
from common.search import (Checkpointed, check_cuda_graph, search_cost, search_loop, step_graph,  # noqa: E402
                           write_summary)
from common.train_eval import evaluate, lr_factor  # noqa: E402
from common.utils import (DONE, KEEP, AverageMeter, MetricsLog, Progress, accuracy, add_run_args,  # noqa: E402
                          add_speed_args, agree, amp_autocast, check_finite, check_run, checkpoint_fits, clear_folder,
                          compile_report, die, folder_problem, fused, gather_rng_states, get_device, init_distributed,
                          is_main, load_checkpoint, log, rank, resume_state, run_state, save_checkpoint, set_rng_state,
                          set_seed, setup_run, speed_up, world_size, write_args)
from darts_pd.model_search import (PRIMITIVES, Evolution, FairSchedule, PathCost, PathGroups, PathNet,  # noqa: E402
                                   PrunedNetwork, SearchNetwork, generation, path_genotype, pruned_edges,
                                   random_pruned)
from darts_pd.train import CIFAR as EVAL_CIFAR, IMAGENET as EVAL_IMAGENET  # noqa: E402

# The defaults that differ between CIFAR and ImageNet. Stage 1 = PC-DARTS' CIFAR / ImageNet search;
# stage 2 = Sec. 4.1 / Sec. 4.2 of the paper; the buckets count train.py's networks.
DATASETS = {
    "cifar": dict(batch_size=256, learning_rate=0.1, K=4, arch_learning_rate=6e-4, arch_grad_clip=0.0, begin=15,
                  warmup_epochs=0, fair_epochs=600, fair_batch_size=256, fair_learning_rate=0.0025,
                  fair_weight_decay=3e-4, cutout=True, drop_path_prob=0.3, eval_layers=EVAL_CIFAR["layers"],
                  eval_init_channels=EVAL_CIFAR["init_channels"]),
    "imagenet": dict(batch_size=1024, learning_rate=0.5, K=2, arch_learning_rate=6e-3, arch_grad_clip=5.0, begin=35,
                     warmup_epochs=5, fair_epochs=250, fair_batch_size=2048, fair_learning_rate=0.045,
                     fair_weight_decay=4e-5, cutout=False, drop_path_prob=0.0, eval_layers=EVAL_IMAGENET["layers"],
                     eval_init_channels=EVAL_IMAGENET["init_channels"]),
}


def profile(args):
    return "imagenet" if is_imagenet_like(args) else "cifar"


def get_parser():
    p = argparse.ArgumentParser(description="DARTS-PD search: PC-DARTS pruning, path-wise strictly fair "
                                            "training, evolutionary search of paths")
    g = p.add_argument_group("stages")
    g.add_argument("--stage", default="all", choices=["1", "2", "3", "all"], help="run one stage, or all three")
    g.add_argument("--k", type=int, default=2, help="ops kept on each kept edge by the soft pruning (Eq. 3)")
    g.add_argument("--init_channels", type=int, default=16, help="channels of the super-net S and of S'")
    g.add_argument("--layers", type=int, default=8, help="cells of the super-net S and of S'")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum of stages 1 and 2")
    g.add_argument("--learning_rate_min", type=float, default=0.0, help="end of the cosine schedules of stages 1 and 2")
    g.add_argument("--grad_clip", type=float, default=5.0, help="weight gradient norm clip of stages 1 and 2 (0 = off)")
    g = p.add_argument_group("stage 1: the PC-DARTS search of the super-net S")
    g.add_argument("--epochs", type=int, default=50)
    g.add_argument("--batch_size", type=int, help="global batch, split across ranks (256 CIFAR, 1024 ImageNet)")
    g.add_argument("--learning_rate", type=float, help="SGD, cosine (0.1 CIFAR, 0.5 ImageNet)")
    g.add_argument("--weight_decay", type=float, default=3e-4)
    g.add_argument("--K", type=int, help="partial channels: 1/K of them enter the ops (4 CIFAR, 2 ImageNet)")
    g.add_argument("--arch_learning_rate", type=float, help="Adam on alpha and beta (6e-4 CIFAR, 6e-3 ImageNet)")
    g.add_argument("--arch_weight_decay", type=float, default=1e-3)
    g.add_argument("--arch_grad_clip", type=float, help="alpha and beta gradient norm clip (0 = off; PC-DARTS' "
                                                        "ImageNet search: 5, its CIFAR search: off)")
    g.add_argument("--begin", type=int, help="epochs with alpha and beta frozen (15 CIFAR, 35 ImageNet)")
    g.add_argument("--warmup_epochs", type=int, help="linear learning-rate warm-up (0 CIFAR, 5 ImageNet)")
    g = p.add_argument_group("stage 2: path-wise fair training of S' (--cutout and --drop_path_prob: stage 2 only)")
    g.add_argument("--pruned", default=None,
                   help="S' to train: a genotype JSON with k ops per edge (default: RUN/stage1/pruned.json), "
                        "or 'random' (random alpha and beta pruned with --k: an ablation of stage 1)")
    g.add_argument("--fair_epochs", type=int, help="the paper's epochs (600 CIFAR, 250 ImageNet); with "
                                                   "--whole_passes, rounded to whole passes over the path groups")
    g.add_argument("--whole_passes", action=argparse.BooleanOptionalAction, default=True,
                   help="train the whole number of passes over the path groups nearest to --fair_epochs, so "
                        "every path is trained equally often (Eq. 4); --no-whole_passes: exactly --fair_epochs")
    g.add_argument("--fair_batch_size", type=int, help="global batch of stages 2 and 3 (256 CIFAR, 2048 ImageNet)")
    g.add_argument("--fair_learning_rate", type=float, help="SGD, cosine (0.0025 CIFAR, 0.045 ImageNet)")
    g.add_argument("--fair_weight_decay", type=float, help="3e-4 CIFAR, 4e-5 ImageNet")
    g.add_argument("--fair_data", default="rest", choices=["rest", "search"],
                   help="D_train of stage 2: every training image outside D_val (CIFAR: stage 1's weights half; "
                        "ImageNet: 97.5%%), or stage 1's D_train (ImageNet: PC-DARTS' 10%% subset)")
    g.add_argument("--frozen_alpha", action=argparse.BooleanOptionalAction, default=True,
                   help="scale each op of a path by its frozen stage-1 weight softmax(alpha) x normalised beta "
                        "(Sec. 1, Alg. 1); --no-frozen_alpha: a path of S' is exactly its evaluation network")
    g.add_argument("--drop_path_prob", type=float, help="drop-path, ramped up linearly (0.3 CIFAR, 0 ImageNet)")
    g = p.add_argument_group("stage 3: evolutionary search of paths")
    g.add_argument("--generations", type=int, default=20, help="generations, the first random population included")
    g.add_argument("--population", type=int, default=50, help="paths evaluated per generation")
    g.add_argument("--parents", type=int, default=10, help="best paths kept per bucket, the parents")
    g.add_argument("--mutations", type=int, default=25, help="children by mutation per generation")
    g.add_argument("--crossovers", type=int, default=25, help="children by crossover per generation")
    g.add_argument("--mutation_prob", type=float, default=0.1, help="probability to re-draw each gene")
    g.add_argument("--bn_batches", type=int, default=10,
                   help="training batches that re-estimate the BatchNorm statistics of each path")
    g.add_argument("--fitness_data", default="valid", choices=["valid", "test"],
                   help="score paths on D_val (held out from the training set), or on the test set (Alg. 1)")
    g.add_argument("--bucket_width", type=float, default=0.1,
                   help="width (M parameters of the evaluation network) of the size buckets; the best path of "
                        "every bucket is an output")
    g.add_argument("--eval_layers", type=int, help="cells of the evaluation network the buckets count (train.py)")
    g.add_argument("--eval_init_channels", type=int, help="its channels (train.py: 36 CIFAR, 48 ImageNet)")
    add_run_args(p, seed=2)
    add_speed_args(p, cuda_graph="stage 1's search step")
    add_data_args(p, search=True)
    p.set_defaults(lr_scheduler="cosine")  # both stages: cosine (lr_factor reads it)
    return p


def parse_args(argv=None):
    parser = get_parser()
    probe, _ = parser.parse_known_args(argv)
    parser.set_defaults(**DATASETS[profile(probe)])
    args = parser.parse_args(argv)
    if not 1 <= args.k <= len(PRIMITIVES) - 1:
        die(f"--k {args.k}: the soft pruning keeps 1 to {len(PRIMITIVES) - 1} of the non-none ops of an edge")
    if args.stage in ("1", "all") and (args.K < 1 or args.init_channels % args.K):
        die(f"--K {args.K} must divide --init_channels {args.init_channels} (partial channels)")
    if not args.bucket_width > 0:
        die(f"--bucket_width {args.bucket_width}: give a positive number of millions of parameters")
    small = [f"--{n}" for n in ("epochs", "fair_epochs", "generations", "population", "parents", "bn_batches")
             if getattr(args, n) < 1]
    if small:
        die(f"{', '.join(small)} must be at least 1")
    return args


def stage_args(args, stage):
    """A copy of `args` saving into RUN/stage<stage>/; `run` is RUN. Stage 1 is PC-DARTS' search,
    without cutout (`--cutout` is stage 2's)."""
    a = copy.copy(args)
    a.run = getattr(args, "run", args.save)
    a.save = str(Path(a.run) / f"stage{stage}")
    if stage == 1:
        a.cutout = False
    return a


def open_stage(args, stage):
    """`stage_args(args, stage)`, its folder created and its args.json written (rank 0): a stage
    folder is a run folder of its own, with the stage's flags, metrics, checkpoint and summary.json."""
    a = stage_args(args, stage)
    if is_main():
        Path(a.save).mkdir(parents=True, exist_ok=True)
        write_args(a.save, a)
    log.info("stage %d in %s", stage, a.save)
    return a


# ---------------------------------------------------------------- distributed helpers

def average(tensors):
    """Average tensors in place over torchrun ranks, in one flat all-reduce."""
    tensors = [t for t in tensors if t is not None]
    if world_size() == 1 or not tensors:
        return
    flat = torch.cat([t.flatten().float() for t in tensors])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()


def broadcast_state(module):
    """Rank 0's parameters and buffers on every rank (initialisation, end of every epoch)."""
    if world_size() > 1:
        for t in module.state_dict().values():
            dist.broadcast(t, 0)


def barrier():
    if world_size() > 1:
        dist.barrier()


# ---------------------------------------------------------------- stage 1

class Searcher(Checkpointed):
    """Stage 1 (Sec. 3.2, Alg. 1 step 1): PC-DARTS on the super-net S. One step: an SGD step of the
    weights on a training batch, then, once `begin` epochs have passed, an Adam step of alpha and
    beta on a validation batch (first order). `pruned()` is S', `genotype()` the PC-DARTS genotype."""

    checkpointed = ("net", "w_opt", "a_opt", "scheduler", "scaler")

    def __init__(self, args, num_classes, device):
        self.args, self.device = args, device
        self.net = SearchNetwork(args.init_channels, num_classes, args.layers, args.K,
                                 is_imagenet_like(args)).to(device)
        broadcast_state(self.net)
        speed_up(self.net, args)
        self.weights, self.arch = self.net.weights(), self.net.arch_parameters()
        self.w_opt = torch.optim.SGD(self.weights, args.learning_rate, momentum=args.momentum,
                                     weight_decay=args.weight_decay, **fused(device))
        self.a_opt = torch.optim.Adam(self.arch, args.arch_learning_rate, betas=(0.5, 0.999),
                                      weight_decay=args.arch_weight_decay, **fused(device, capturable=True))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.w_opt, lambda e: lr_factor(e, args))
        self.scaler = torch.amp.GradScaler(device.type, enabled=args.amp and device.type == "cuda")
        self.criterion = nn.CrossEntropyLoss()
        self.epoch = 0
        self.graph = step_graph(self.iteration, args, device)

    def start_epoch(self, epoch):
        self.epoch = epoch

    def step(self, train_batch, valid_batch):
        x, y = (t.to(self.device, non_blocking=True) for t in train_batch)
        xv, yv = (t.to(self.device, non_blocking=True) for t in valid_batch)
        t = self.graph(self.epoch, x, y, xv, yv) if self.graph else self.iteration(x, y, xv, yv)
        out = {"train_loss": t["train_loss"].item(), "train_top1": accuracy(t["logits"], y)[0]}
        return {**out, "valid_loss": t["valid_loss"].item()} if "valid_loss" in t else out

    def iteration(self, x, y, xv, yv):
        """The weight step, then (after `begin`) the architecture step, on tensors and without a host
        synchronisation (a CUDA graph can hold it, `common.search.StepGraph`: the recorded step
        depends on the epoch only)."""
        a, net = self.args, self.net
        net.train()
        self.w_opt.zero_grad(set_to_none=True)
        with amp_autocast(self.device, a.amp):  # Alg. 1: descend grad_w L_train(w, alpha)
            logits = net(x)
            loss = self.criterion(logits, y)
        self.scaler.scale(loss).backward(inputs=self.weights)
        average(p.grad for p in self.weights)
        if a.grad_clip > 0:
            self.scaler.unscale_(self.w_opt)
            nn.utils.clip_grad_norm_(self.weights, a.grad_clip)
        self.scaler.step(self.w_opt)
        out = {"train_loss": loss.detach(), "logits": logits.detach()}
        if self.epoch >= a.begin:  # Alg. 1: descend grad_alpha L_val(w, alpha); PC-DARTS waits `begin` epochs
            self.a_opt.zero_grad(set_to_none=True)
            with amp_autocast(self.device, a.amp):
                loss_val = self.criterion(net(xv), yv)
            self.scaler.scale(loss_val).backward(inputs=self.arch)
            average(p.grad for p in self.arch)
            if a.arch_grad_clip > 0:
                self.scaler.unscale_(self.a_opt)
                nn.utils.clip_grad_norm_(self.arch, a.arch_grad_clip)
            self.scaler.step(self.a_opt)
            out["valid_loss"] = loss_val.detach()
        self.scaler.update()
        return out

    def end_epoch(self, epoch, valid_queue):
        record = {"lr": self.w_opt.param_groups[0]["lr"], "pruned": str(self.pruned())}
        self.scheduler.step()
        broadcast_state(self.net)  # BN running statistics, so the checkpoint holds every rank's state
        with torch.no_grad():
            for name, p in self.net.named_parameters():
                if name.startswith("alpha"):
                    record[name] = torch.softmax(p.float(), -1).tolist()
                elif name.startswith("beta"):
                    record[name] = p.float().tolist()
        if epoch == self.args.epochs - 1:  # PC-DARTS scores the super-net after the last epoch
            record["valid_loss"], record["valid_top1"], _ = evaluate(self.net, valid_queue, self.device, self.args.amp)
        return record

    def pruned(self):
        return self.net.pruned(self.args.k)

    def genotype(self):
        g = self.net.pruned(1)
        return genotypes.Genotype(g.normal, g.reduce)  # the PC-DARTS genotype, without S' weights

    def finish(self, save):
        """S' (`pruned.json`, with its frozen architecture weights), before the stage's summary.json."""
        genotypes.export(save, self.pruned(), stem="pruned", method="darts_pd stage 1 (S')", k=self.args.k,
                         seed=self.args.seed, dataset=self.args.dataset)


def run_stage1(args, device):
    a = open_stage(args, 1)
    set_seed(a.seed, a.deterministic)
    train_queue, valid_queue, num_classes = search_loaders(a)
    searcher = Searcher(a, num_classes, device)
    log.info("stage 1: PC-DARTS super-net, %d cells, %d channels, K=%d; S' keeps k=%d ops per edge",
             a.layers, a.init_channels, a.K, a.k)
    if a.begin >= a.epochs:
        log.warning("stage 1: WARNING alpha and beta never train (--begin %d >= --epochs %d): S' is pruned from "
                    "their random initialisation", a.begin, a.epochs)
    search_loop(a, searcher, train_queue, valid_queue, Path(a.save), device, method="darts_pd stage 1 (PC-DARTS)")
    log.info("stage 1: S' %s", searcher.pruned())
    barrier()
    return searcher


# ---------------------------------------------------------------- stage 2

def load_pruned(args):
    """S': `--pruned` (a file, or 'random'), else the output of stage 1 in the run folder."""
    if args.pruned == "random":
        return random_pruned(args.k, args.seed)
    path = Path(args.pruned or Path(args.run or ".") / "stage1" / "pruned.json")
    if not path.is_file():
        die(f"no S' at {path}: run stage 1 first (--stage 1 --save {args.run}), or pass --pruned FILE or random")
    try:
        pruned = genotypes.load(str(path))
    except genotypes.GenotypeError as e:
        die(str(e))
    edges = pruned_edges(pruned) if pruned.kind == "darts" else []
    if not edges or len({len(ops) for _, _, ops in edges}) != 1:
        die(f"{path}: S' needs a normal and a reduce cell with the same number of ops on every edge")
    w = pruned.meta.get("arch_weights")
    if args.frozen_alpha and not (isinstance(w, list) and len(w) == len(edges) and all(
            isinstance(r, list) and len(r) == len(ops) for r, (_, _, ops) in zip(w, edges))):
        die(f"{path}: no frozen architecture weights of its ops ('arch_weights', one list per edge, written by "
            "stage 1); pass --no-frozen_alpha to train S' without them")
    return pruned


def fair_loader(args, cutout):
    """D_train of stage 2 (Alg. 1 step 2) in batches of --fair_batch_size: with --fair_data rest,
    every training image outside D_val (CIFAR: the weights half of the search split, as in stage 1;
    ImageNet: all but PC-DARTS' 2.5% per class); with search, stage 1's D_train."""
    ds = limit(get_dataset(args, True, transforms(args, True, args.cutout_length if cutout else 0)), args.subset)
    train_idx, valid_idx = search_split(ds, args)
    if args.fair_data == "rest":
        held_out = set(valid_idx)
        train_idx = [i for i in range(len(ds)) if i not in held_out]
    return make_loader(Subset(ds, train_idx), args.fair_batch_size, True, args.workers, args.seed)


class FairTrainer(Checkpointed):
    """Stage 2 (Sec. 3.2, Eq. 4-5, Alg. 1 step 2): path-wise strictly fair training of S'. One step
    takes the next group of k paths (`PathGroups`: every op of every edge exactly once), back-
    propagates the training loss of each path on the same batch, so the k gradients accumulate,
    then makes a single SGD step. The architecture weights are frozen (`--frozen_alpha`). The run
    lasts `schedule` (`FairSchedule`, `steps_per_epoch` batches an epoch): whole passes over the groups."""

    checkpointed = ("net", "optimizer", "scheduler", "scaler", "groups")

    def __init__(self, args, num_classes, device, steps_per_epoch, pruned=None):
        self.args, self.device = args, device
        self.pruned = pruned or load_pruned(args)
        self.net = PrunedNetwork(self.pruned, args.init_channels, num_classes, args.layers,
                                 is_imagenet_like(args), args.frozen_alpha).to(device)
        broadcast_state(self.net)
        speed_up(self.net, args)
        k = len(pruned_edges(self.pruned)[0][2])
        self.groups = PathGroups(self.net.num_edges, k, args.seed)  # same seed: same groups on every rank
        self.schedule = FairSchedule(steps_per_epoch, args.fair_epochs, len(self.groups), args.whole_passes)
        self.optimizer = torch.optim.SGD(self.net.parameters(), args.fair_learning_rate, momentum=args.momentum,
                                         weight_decay=args.fair_weight_decay, **fused(device))
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, self.schedule.epochs,
                                                                    args.learning_rate_min)
        self.scaler = torch.amp.GradScaler(device.type, enabled=args.amp and device.type == "cuda")
        self.criterion = nn.CrossEntropyLoss()

    def start_epoch(self, epoch):
        self.net.drop_path_prob = self.args.drop_path_prob * epoch / self.schedule.epochs

    def step(self, batch):
        """One fair step on `batch`: the k paths of a group, gradients accumulated, one SGD step."""
        x, y = (t.to(self.device, non_blocking=True) for t in batch)
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss_m, top1_m = AverageMeter(), AverageMeter()
        for path in next(self.groups):  # Eq. (4): the next group of Path-wise Strict Fairness
            with amp_autocast(self.device, self.args.amp):
                logits = self.net(x, path)
                loss = self.criterion(logits, y)
            self.scaler.scale(loss).backward()  # Eq. (5): the gradients of the group's paths add up
            loss_m.update(loss.item())
            top1_m.update(accuracy(logits.detach(), y)[0])
        average(p.grad for p in self.net.parameters())
        if self.args.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.net.parameters(), self.args.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {"train_loss": loss_m.avg, "train_top1": top1_m.avg}

    def train_epoch(self, train_queue, epoch):
        """The fair steps of `epoch`: its first `schedule.steps(epoch)` batches (all but in the
        last epoch, which ends with the last pass). Returns the averages of the steps."""
        self.start_epoch(epoch)
        train_queue.sampler.set_epoch(epoch)
        meters = defaultdict(AverageMeter)
        for step, batch in enumerate(itertools.islice(train_queue, self.schedule.steps(epoch))):
            values = self.step(batch)
            check_finite(values, f"at step {step + 1} of epoch {epoch + 1} of stage 2")
            for name, v in values.items():
                meters[name].update(v, len(batch[1]))
        return {name: m.avg for name, m in meters.items()}

    def end_epoch(self, epoch):
        record = {"lr": self.optimizer.param_groups[0]["lr"], "drop_path_prob": self.net.drop_path_prob,
                  "passes": self.groups.passes + self.groups.index / len(self.groups)}
        self.scheduler.step()
        broadcast_state(self.net)
        return record

    def save(self, path, num_classes):
        """S' and its trained weights: the input of stage 3."""
        save_checkpoint(path, {"pruned": genotypes.to_dict(self.pruned), "init_channels": self.args.init_channels,
                               "layers": self.args.layers, "num_classes": num_classes, "dataset": self.args.dataset,
                               "imagenet": is_imagenet_like(self.args), "state_dict": self.net.state_dict()})


def schedule_line(schedule, k):
    """One line on how stage 2's length honours Eq. (4)."""
    s, groups = schedule, schedule.num_groups
    paper = s.paper_epochs * s.steps_per_epoch
    line = (f"stage 2: {s.paper_epochs} epochs x {s.steps_per_epoch} steps = {paper:,} steps = "
            f"{paper / groups:.2f} passes over the {groups:,} groups of {k} paths")
    if s.whole_passes:
        last = s.steps(s.epochs - 1)
        return (f"{line}; training {s.passes} whole passes (Eq. 4): {s.total_steps:,} steps = {s.epochs} epochs, "
                f"the last of {last} steps; every path is trained {s.passes} times")
    if s.passes is not None:
        return f"{line}; every path is trained {s.passes} times (Eq. 4)"
    whole, rest = divmod(s.total_steps, groups)
    return (f"{line}; WARNING Eq. (4) does not hold: {rest * k:,} paths are trained {whole + 1} times, "
            f"{(groups - rest) * k:,} paths {whole} times (leave out --no-whole_passes)")


def run_stage2(args, device):
    a = open_stage(args, 2)
    save = Path(a.save)
    set_seed(a.seed, a.deterministic)
    train_queue, classes = fair_loader(a, a.cutout), num_classes(a.dataset, a.data)
    trainer = FairTrainer(a, classes, device, len(train_queue))
    schedule = trainer.schedule
    log.info("stage 2: S' %s, %d cells, %d channels, %s architecture weights; D_train %s: %d images",
             trainer.pruned, a.layers, a.init_channels, "frozen" if a.frozen_alpha else "no",
             a.fair_data, len(train_queue.dataset))
    (log.info if schedule.passes is not None else log.warning)("%s", schedule_line(schedule, trainer.groups.k))
    start, wall = 0, 0.0
    ckpt = resume_state(a, device)
    if ckpt:
        if ckpt.get("schedule") != dataclasses.asdict(schedule):
            die(f"--resume: stage 2 in {save} was started with the schedule {ckpt.get('schedule')}, not "
                f"{dataclasses.asdict(schedule)}: resume with the same data, --fair_batch_size, --fair_epochs "
                "and --whole_passes")
        with checkpoint_fits(save / "checkpoint.pt"):
            trainer.load_state_dict(ckpt["trainer"])
            start, wall = ckpt["epoch"], ckpt["wall_time_s"]
            set_rng_state(ckpt["rng"][rank()])
    metrics, progress = MetricsLog(save / "metrics.jsonl", start), Progress(schedule.epochs, start)
    t0 = time.time() - wall
    for epoch in range(start, schedule.epochs):
        record = {"epoch": epoch, **trainer.train_epoch(train_queue, epoch), **trainer.end_epoch(epoch)}
        metrics.write(record)
        save_checkpoint(save / "checkpoint.pt", {"trainer": trainer.state_dict(), "epoch": epoch + 1,
                                                 "schedule": dataclasses.asdict(schedule),
                                                 "wall_time_s": time.time() - t0, "rng": gather_rng_states()})
        log.info("%s %s", progress.line(epoch), " ".join(f"{n} {v:.4g}" for n, v in record.items() if n != "epoch"))
        if report := compile_report():
            log.info("%s", report)
    trainer.save(save / "supernet.pt", classes)
    if is_main():
        write_summary(save, search_cost(time.time() - t0, device), method="darts_pd stage 2",
                      epochs=schedule.epochs, steps=schedule.total_steps, groups=len(trainer.groups),
                      passes=schedule.passes)
    barrier()
    return trainer


# ---------------------------------------------------------------- stage 3

def fitness_loader(args):
    """The data that scores paths, with evaluation transforms: D_val, the held-out part of the
    search split (what stage 1 trained alpha on; S' weights never saw it), or the test set. Its
    workers persist: stage 3 reads it once per path."""
    if args.fitness_data == "test":
        ds = get_dataset(args, False, transforms(args, False))
    else:
        ds = limit(get_dataset(args, True, transforms(args, False)), args.subset)
        ds = Subset(ds, search_split(ds, args)[1])
    sampler = DistributedSampler(ds, num_replicas=world_size(), rank=rank(), shuffle=False)
    return Loader(ds, batch_size=max(1, args.fair_batch_size // world_size()), sampler=sampler,
                  num_workers=args.workers, persistent_workers=args.workers > 0,
                  pin_memory=torch.cuda.is_available())


def supernet_file(run):
    """RUN/stage2/supernet.pt, the trained S', or one clear line."""
    path = Path(run or ".") / "stage2" / "supernet.pt"
    if not path.is_file():
        die(f"no trained S' at {path}: run stage 2 first (--stage 2 --save {run})")
    return path


def load_supernet(args, num_classes, device):
    """S' with the weights stage 2 trained, from RUN/stage2/supernet.pt."""
    path = supernet_file(args.run)
    d = load_checkpoint(path, device)
    with checkpoint_fits(path):
        if d["num_classes"] != num_classes:
            die(f"{path} was trained for {d['num_classes']} classes, --dataset {args.dataset} has {num_classes}")
        net = PrunedNetwork(genotypes.from_dict(d["pruned"]), d["init_channels"], num_classes, d["layers"],
                            d.get("imagenet", d["dataset"] == "imagenet"), frozen=False).to(device)
        net.load_state_dict(d["state_dict"])  # the architecture weights stage 2 trained with are in it
    return net

@torch.no_grad()
def recalibrate_bn(net, path, batches, device, amp=False):
    """Re-estimate the BatchNorm statistics of `path` (SPOS): reset, then the plain average over
    `batches` in training mode, then the average over ranks. The i-th batch (from 1) enters with
    momentum 1/i, which is what BatchNorm's cumulative average (momentum None) computes, without
    its reading of the batch counter on the host (a compiled op could not)."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
    net.train()
    for i, x in enumerate(batches, 1):
        for bn in bns:
            bn.momentum = 1.0 / i  # a cumulative average
        with amp_autocast(device, amp):
            net(x.to(device, non_blocking=True), path)
    for bn, m in zip(bns, momenta):
        bn.momentum = m
    average([t for bn in bns for t in (bn.running_mean, bn.running_var)])


def bucket_range(bucket, width):
    """[lo, hi): the parameters (millions) of the paths in bucket n."""
    return [round(bucket * width, 9), round((bucket + 1) * width, 9)]


def bucket_name(bucket, width):
    """The stable name of bucket n: its parameter range in millions, e.g. '3.5-3.6M'."""
    return "{:g}-{:g}M".format(*bucket_range(bucket, width))


class PathSearch:
    """Stage 3 (Sec. 3.2, Eq. 6, Alg. 1 step 3): evolutionary search of the paths of the trained
    S'. The fitness of a path is its top-1 accuracy with the shared weights on D_val (or the test
    set, as Alg. 1), after re-estimating BatchNorm statistics on `bn_batches` fixed batches of
    stage 2's D_train. Paths are bucketed by the parameters of their evaluation network
    (`--bucket_width`); `generation()` runs one generation."""

    def __init__(self, args, num_classes, device, supernet=None):
        self.args, self.device = args, device
        self.net = supernet if supernet is not None else speed_up(load_supernet(args, num_classes, device), args)
        self.net.drop_path_prob = 0.0
        self.pruned = self.net.pruned
        train_queue = fair_loader(args, cutout=False)
        self.valid_queue = fitness_loader(args)
        train_queue.sampler.set_epoch(0)
        torch.manual_seed(args.seed)  # the same BN batches whenever the search is built
        self.bn_batches = [x for x, _ in itertools.islice(train_queue, args.bn_batches)]
        self.cost = PathCost(self.pruned, pipeline(args), args.eval_init_channels, args.eval_layers, num_classes,
                             image_size(args))
        k = len(pruned_edges(self.pruned)[0][2])
        self.evolution = Evolution(self.net.num_edges, k, self.cost, args.bucket_width, args.population, args.parents,
                                   args.mutations, args.crossovers, args.mutation_prob, args.seed)

    def fitness(self, path):
        """Top-1 accuracy (%) of `path` with the weights of S' (Eq. 6)."""
        recalibrate_bn(self.net, path, self.bn_batches, self.device, self.args.amp)
        return evaluate(PathNet(self.net, path), self.valid_queue, self.device, self.args.amp)[1]

    def generation(self):
        """One generation: new paths proposed, each evaluated once. Returns {path: fitness}."""
        return generation(self.evolution, self.fitness)

    def describe(self, path):
        """What the outputs say of a path: fitness, parameters and mult-adds of its evaluation network."""
        params, madds = self.cost(path)
        return {f"{self.args.fitness_data}_top1": self.evolution.fitness[path], "params_M": round(params, 6),
                "mult_adds_M": round(madds, 4), "choices": list(path)}

    def entries(self):
        """The best path of every bucket (Sec. 1: many sizes at once), smallest bucket first; `rank`
        orders them by fitness (0: the best of all, ties as `Evolution.ranked`), `rank_file` is the
        same genotype at a name known before the search (`buckets/rank-<rank>.json`)."""
        width, best = self.args.bucket_width, self.evolution.best()
        rank = {p: i for i, p in enumerate(sorted(best.values(), key=self.evolution.ranked().index))}
        return [{"name": bucket_name(b, width), "file": f"buckets/{bucket_name(b, width)}.json",
                 "rank": rank[path], "rank_file": f"buckets/rank-{rank[path]}.json",
                 "bucket_M": bucket_range(b, width), **self.describe(path),
                 "text": str(path_genotype(self.pruned, path))} for b, path in best.items()]

    def state_dict(self):
        return self.evolution.state_dict()

    def load_state_dict(self, d):
        self.evolution.load_state_dict(d)


def write_stage3(search, a):
    """RUN/stage3/paths.jsonl (every evaluated path), RUN/buckets.json and RUN/buckets/<name>.json
    (the best path of every bucket, each trainable by `train.py --arch`), the same paths again as
    RUN/buckets/rank-<i>.json, i-th by fitness (names known before the search: a reproduction plan
    trains the first few), RUN/genotype.json (the best of all: the highest fitness, = rank-0)."""
    run, evo, key = Path(a.run), search.evolution, f"{a.fitness_data}_top1"
    with (Path(a.save) / "paths.jsonl").open("w") as f:
        for p in evo.ranked():
            f.write(json.dumps({**search.describe(p), "bucket": bucket_name(evo.bucket(p), a.bucket_width),
                                "text": str(path_genotype(search.pruned, p))}) + "\n")
    entries = search.entries()
    best = evo.ranked()[0]
    meta = dict(method="darts_pd", seed=a.seed, dataset=a.dataset, fitness_data=a.fitness_data,
                eval_layers=a.eval_layers, eval_init_channels=a.eval_init_channels)
    (run / "buckets").mkdir(exist_ok=True)
    for e in entries:
        g, fields = path_genotype(search.pruned, tuple(e["choices"])), {
            n: e[n] for n in (key, "params_M", "mult_adds_M", "bucket_M", "rank", "choices")}
        genotypes.export(run / "buckets", g, stem=e["name"], **meta, **fields)
        genotypes.save(run / e["rank_file"], g, **meta, bucket=e["name"], **fields)
    (run / "buckets.json").write_text(json.dumps({
        **meta, "bucket_width": a.bucket_width, "evaluated": len(evo.fitness),
        "best": bucket_name(evo.bucket(best), a.bucket_width), "entries": entries}, indent=1) + "\n")
    genotypes.export(run, path_genotype(search.pruned, best), **meta, **search.describe(best),
                     bucket=bucket_name(evo.bucket(best), a.bucket_width))
    return entries


def run_stage3(args, device):
    a = open_stage(args, 3)
    save = Path(a.save)
    set_seed(a.seed, a.deterministic)
    search = PathSearch(a, num_classes(a.dataset, a.data), device)
    evo = search.evolution
    log.info("stage 3: %d paths of %d edges; buckets of %g M params of the %d-cell, %d-channel network; fitness "
             "on %s", evo.k ** evo.num_edges, evo.num_edges, a.bucket_width, a.eval_layers, a.eval_init_channels,
             a.fitness_data)
    ckpt = resume_state(a, device)
    if ckpt:
        with checkpoint_fits(save / "checkpoint.pt"):
            search.load_state_dict(ckpt["search"])
    start, t0 = evo.generation, time.time() - (ckpt["wall_time_s"] if ckpt else 0.0)
    metrics, progress = MetricsLog(save / "metrics.jsonl", start), Progress(a.generations, start)
    for gen in range(start, a.generations):
        results = search.generation()
        if not results:
            log.info("generation %d: every path has been evaluated; stopping", gen + 1)
            break
        best = evo.best()
        record = {"epoch": gen, "new": len(results), "evaluated": len(evo.fitness),
                  "best_top1": evo.fitness[evo.ranked()[0]],
                  "best_per_bucket": [{"bucket": bucket_name(b, a.bucket_width), "top1": evo.fitness[p],
                                       "params_M": round(evo.cost(p)[0], 6)} for b, p in best.items()]}
        metrics.write(record)
        save_checkpoint(save / "checkpoint.pt", {"search": search.state_dict(), "wall_time_s": time.time() - t0})
        log.info("%s evaluated %d best %.2f%% in %d buckets", progress.line(gen).replace("epoch", "generation"),
                 len(evo.fitness), record["best_top1"], len(best))
        if report := compile_report():
            log.info("%s", report)
    if is_main():
        entries = write_stage3(search, a)
        write_summary(save, search_cost(time.time() - t0, device), method="darts_pd stage 3",
                      evaluated=len(evo.fitness), buckets=len(entries))
        log.info("stage 3: %d paths evaluated; the best of each of %d buckets in %s:", len(evo.fitness),
                 len(entries), Path(a.run) / "buckets")
        for e in entries:
            log.info("  %-14s %s %.2f%%, %.3fM params, %.1fM mult-adds", e["name"], a.fitness_data,
                     e[f"{a.fitness_data}_top1"], e["params_M"], e["mult_adds_M"])
    barrier()
    return search


# ---------------------------------------------------------------- main

STAGE_RUNNERS = {1: run_stage1, 2: run_stage2, 3: run_stage3}


def write_search_summary(run):
    """RUN/summary.json, the done-marker of the whole search, written after everything else: the
    three stages' costs together (times and GPU-hours add up, memory is the largest)."""
    stages = [json.loads((Path(run) / f"stage{i}" / "summary.json").read_text()) for i in (1, 2, 3)]
    gpu = [s["gpu_hours"] for s in stages if s.get("gpu_hours") is not None]
    mem = [s["peak_memory_MB"] for s in stages if s.get("peak_memory_MB") is not None]
    write_summary(run, {"search_time_s": round(sum(s["search_time_s"] for s in stages), 1),
                        "device": stages[-1]["device"], "world_size": stages[-1]["world_size"],
                        "gpu_hours": round(sum(gpu), 4) if gpu else None, "peak_memory_MB": max(mem) if mem else None},
                  method="darts_pd", genotype=json.loads((Path(run) / "genotype.json").read_text())["text"],
                  stages=[s.get("method") for s in stages])


def main(argv=None):
    """Run the stages asked for. RUN holds one run folder per stage; RUN/summary.json, written after
    stage 3, marks the whole run finished. --resume continues the started stage and skips finished
    ones; every input is checked before RUN is touched."""
    args = parse_args(argv)
    init_distributed(args.device)
    device = get_device(args.device)
    check_cuda_graph(args, device)  # stage 1's step
    check_run(args, "search-darts_pd", nested=True)
    run = Path(args.save)
    stages = [1, 2, 3] if args.stage == "all" else [int(args.stage)]
    skip = [s for s in stages if args.stage == "all" and args.resume and run_state(run / f"stage{s}") == "finished"]
    todo = [s for s in stages if s not in skip]
    for s in todo:
        a = stage_args(args, s)
        agree(folder_problem(a.save, a) if is_main() else None)
    if todo:  # the inputs of the first stage to run
        search_loaders(stage_args(args, todo[0]))
        if todo[0] == 2:
            load_pruned(stage_args(args, 2))
        if todo[0] == 3:
            supernet_file(args.save)
    setup_run(args, "search-darts_pd", nested=True)
    if args.overwrite and is_main():  # the stages run now and all that came from them go
        clear_folder(run, keep=(*KEEP, "args.json", "log.txt", *(f"stage{s}" for s in range(1, todo[0]))))
    for s in skip:
        log.info("stage %d in %s is finished: skipped", s, run / f"stage{s}")
    out = {s: STAGE_RUNNERS[s](args, device) for s in todo}
    if is_main() and 3 in stages and run_state(run / "stage3") == "finished" and not (run / DONE).is_file():
        write_search_summary(run)
    barrier()
    return out


if __name__ == "__main__":
    main()
