"""DARTS-PD search (Sec. 3.2, Alg. 1): three stages in one run folder.

Stage 1 `Searcher`: PC-DARTS on the super-net S, then soft pruning to the top-k ops of each kept
  edge (Eq. 3) -> RUN/stage1/pruned.json (S'), and genotype.json (the PC-DARTS top-1 genotype).
Stage 2 `FairTrainer`: path-wise strictly fair training of S' (Eq. 4-5) -> RUN/stage2/supernet.pt.
Stage 3 `PathSearch`: evolution of paths scored on held-out data (Eq. 6), the best path of every
  parameter bucket -> RUN/genotypes.json (best first) and RUN/genotype.json (the best of all).

Left out, --epochs --batch_size --learning_rate --weight_decay --cutout take each stage's paper
value (stage 3's epochs are its generations); given, they apply to every stage. Every stage runs
under torchrun: gradients and BatchNorm statistics are averaged across ranks, and every rank holds
the same alpha, beta, path group and evolution.

Usage:
  python darts_pd/train_search.py --data ~/data --save RUN                   # all three stages
  python darts_pd/train_search.py --data ~/data --save RUN --stage 2         # one stage, on RUN's stage 1
  python darts_pd/train_search.py --data ~/data --save RUN --resume          # continue a killed run
  torchrun --nproc_per_node 8 darts_pd/train_search.py --dataset imagenet --data ~/imagenet --save RUN
  python darts_pd/train.py --arch RUN/genotypes.json --index 1 --data ~/data  # train bucket entry 1
"""
import argparse
import copy
import itertools
import json
import math
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
from common.data import (Loader, add_data_args, class_fraction_split, get_dataset, image_size,  # noqa: E402
                         is_imagenet_like, num_classes, pipeline, search_loaders, transforms)
from common.search import Checkpointed, search_cost, search_loop, write_summary  # noqa: E402
from common.train_eval import evaluate, lr_factor  # noqa: E402
from common.utils import (DONE, KEEP, AverageMeter, MetricsLog, Progress, accuracy, add_run_args, agree,  # noqa: E402
                          amp_autocast, check_finite, check_run, checkpoint_fits, clear_folder, die, folder_problem,
                          gather_rng_states, get_device, init_distributed, is_main, load_checkpoint, log, rank,
                          resume_state, run_state, save_checkpoint, set_rng_state, set_seed, setup_run, world_size,
                          write_args, write_json)
from darts_pd.model_search import (PRIMITIVES, Evolution, PathCost, PathGroups, PathNet, PrunedNetwork,  # noqa: E402
                                   SearchNetwork, generation, path_genotype, pruned_edges, random_pruned)
from darts_pd.train import CIFAR as EVAL_CIFAR, IMAGENET as EVAL_IMAGENET  # noqa: E402

# The DARTS flags whose paper value differs between the stages. Stage 1 = PC-DARTS' search
# (CIFAR-10, and its ImageNet search); stage 2 = Sec. 4.1 (CIFAR-10) and Sec. 4.2 (ImageNet);
# stage 3 = 20 generations of SPOS' evolution, evaluating paths in batches of stage 2's size.
STAGES = {
    "cifar": {1: dict(epochs=50, batch_size=256, learning_rate=0.1, weight_decay=3e-4, cutout=False),
              2: dict(epochs=600, batch_size=256, learning_rate=0.0025, weight_decay=3e-4, cutout=True),
              3: dict(epochs=20, batch_size=256, cutout=False)},
    "imagenet": {1: dict(epochs=50, batch_size=1024, learning_rate=0.5, weight_decay=3e-4, cutout=False),
                 2: dict(epochs=250, batch_size=2048, learning_rate=0.045, weight_decay=4e-5, cutout=False),
                 3: dict(epochs=20, batch_size=2048, cutout=False)},
}
# Flags with one value per dataset: PC-DARTS' CIFAR / ImageNet search, and train.py's networks.
DATASETS = {
    "cifar": dict(K=4, arch_learning_rate=6e-4, arch_grad_clip=0.0, begin=15, warmup_epochs=0, drop_path_prob=0.3,
                  buckets=[0, 3.0, 3.5, 4.0, math.inf], eval_layers=EVAL_CIFAR["layers"],
                  eval_init_channels=EVAL_CIFAR["init_channels"]),
    "imagenet": dict(K=2, arch_learning_rate=6e-3, arch_grad_clip=5.0, begin=35, warmup_epochs=5, drop_path_prob=0.0,
                     buckets=[0, 5.0, 5.5, 6.0, math.inf], eval_layers=EVAL_IMAGENET["layers"],
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
    g = p.add_argument_group("every stage (left out: each stage's paper value; given: every stage's value)")
    g.add_argument("--epochs", type=int, help="stage 1: 50; stage 2: 600 (CIFAR), 250 (ImageNet); "
                                              "stage 3: 20 generations")
    g.add_argument("--batch_size", type=int, help="global batch, split across ranks. stage 1: 256 (CIFAR), "
                                                  "1024 (ImageNet); stage 2 and 3: 256 (CIFAR), 2048 (ImageNet)")
    g.add_argument("--learning_rate", type=float, help="SGD, cosine. stage 1: 0.1 (CIFAR), 0.5 (ImageNet); "
                                                       "stage 2: 0.0025 (CIFAR), 0.045 (ImageNet)")
    g.add_argument("--weight_decay", type=float, help="stage 1: 3e-4; stage 2: 3e-4 (CIFAR), 4e-5 (ImageNet)")
    g.add_argument("--learning_rate_min", type=float, default=0.0, help="end of the cosine schedules")
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--grad_clip", type=float, default=5.0, help="weight gradient norm clip (0 = off)")
    g.add_argument("--init_channels", type=int, default=16, help="channels of the super-net S and of S'")
    g.add_argument("--layers", type=int, default=8, help="cells of the super-net S and of S'")
    g = p.add_argument_group("stage 1: the PC-DARTS super-net")
    g.add_argument("--K", type=int, help="partial channels: 1/K of them enter the ops (4 CIFAR, 2 ImageNet)")
    g.add_argument("--arch_learning_rate", type=float, help="Adam on alpha and beta (6e-4 CIFAR, 6e-3 ImageNet)")
    g.add_argument("--arch_weight_decay", type=float, default=1e-3)
    g.add_argument("--arch_grad_clip", type=float, help="alpha and beta gradient norm clip (0 = off; PC-DARTS' "
                                                        "ImageNet search: 5, its CIFAR search: off)")
    g.add_argument("--begin", type=int, help="epochs with alpha and beta frozen (15 CIFAR, 35 ImageNet)")
    g.add_argument("--warmup_epochs", type=int, help="linear learning-rate warm-up (0 CIFAR, 5 ImageNet)")
    g = p.add_argument_group("stage 2: path-wise fair training of S'")
    g.add_argument("--pruned", default=None,
                   help="S' to train: a genotype JSON with k ops per edge (default: RUN/stage1/pruned.json), "
                        "or 'random' (random alpha and beta pruned with --k: an ablation of stage 1)")
    g.add_argument("--drop_path_prob", type=float, help="drop-path, ramped up linearly (0.3 CIFAR, 0 ImageNet)")
    g = p.add_argument_group("stage 3: evolutionary search of paths")
    g.add_argument("--population", type=int, default=50, help="paths evaluated per generation")
    g.add_argument("--parents", type=int, default=10, help="best paths kept per bucket, the parents")
    g.add_argument("--mutations", type=int, default=25, help="children by mutation per generation")
    g.add_argument("--crossovers", type=int, default=25, help="children by crossover per generation")
    g.add_argument("--mutation_prob", type=float, default=0.1, help="probability to re-draw each gene")
    g.add_argument("--bn_batches", type=int, default=10,
                   help="training batches that re-estimate the BatchNorm statistics of each path")
    g.add_argument("--fitness_data", default="valid", choices=["valid", "test"],
                   help="score paths on the held-out part of the training set, or on the test set (Alg. 1)")
    g.add_argument("--buckets", type=float, nargs="+",
                   help="increasing parameter counts (M) of the evaluation network bounding the buckets; paths "
                        "outside [first, last) are never evaluated (CIFAR: 0 3 3.5 4 inf; ImageNet: 0 5 5.5 6 inf)")
    g.add_argument("--eval_layers", type=int, help="cells of the evaluation network the buckets count (train.py)")
    g.add_argument("--eval_init_channels", type=int, help="its channels (train.py: 36 CIFAR, 48 ImageNet)")
    add_run_args(p, seed=2)
    add_data_args(p, search=True)
    p.set_defaults(cutout=None)  # per stage: cutout in stage 2 on CIFAR only (Sec. 4.1)
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
    if len(args.buckets) < 2 or any(lo >= hi for lo, hi in zip(args.buckets, args.buckets[1:])):
        die(f"--buckets {args.buckets}: give at least two strictly increasing parameter counts")
    if min(args.epochs or 1, args.population, args.parents, args.bn_batches) < 1:
        die("--epochs, --population, --parents and --bn_batches must be at least 1")
    return args


def resolve(args, stage):
    """A copy of `args` with the values of `stage` for the per-stage flags left unset, and `run`,
    the run folder (`args.save` becomes each stage's subfolder)."""
    a = copy.copy(args)
    a.stage = str(stage)
    for name, value in STAGES[profile(args)][stage].items():
        if getattr(a, name, None) is None:
            setattr(a, name, value)
    a.run = getattr(args, "run", args.save)
    a.lr_scheduler = "cosine"
    a.warmup_epochs = args.warmup_epochs if stage == 1 else 0
    return a


def stage_args(args, stage):
    """`resolve(args, stage)` saving into RUN/stage<stage>/."""
    a = resolve(args, stage)
    a.save = str(Path(a.run) / f"stage{stage}")
    return a


def open_stage(args, stage):
    """`stage_args(args, stage)`, its folder created and its args.json written (rank 0): a stage
    folder is a run folder of its own, with the stage's flags, metrics, checkpoint and summary.json."""
    a = stage_args(args, stage)
    if is_main():
        Path(a.save).mkdir(parents=True, exist_ok=True)
        write_args(a.save, a)
    log.info("stage %d in %s: %s", stage, a.save,
             " ".join(f"--{n} {getattr(a, n)}" for n in STAGES[profile(a)][stage]))
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
        args = resolve(args, 1)
        self.args, self.device = args, device
        self.net = SearchNetwork(args.init_channels, num_classes, args.layers, args.K,
                                 is_imagenet_like(args)).to(device)
        broadcast_state(self.net)
        self.weights, self.arch = self.net.weights(), self.net.arch_parameters()
        self.w_opt = torch.optim.SGD(self.weights, args.learning_rate, momentum=args.momentum,
                                     weight_decay=args.weight_decay)
        self.a_opt = torch.optim.Adam(self.arch, args.arch_learning_rate, betas=(0.5, 0.999),
                                      weight_decay=args.arch_weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.w_opt, lambda e: lr_factor(e, args))
        self.scaler = torch.amp.GradScaler(device.type, enabled=args.amp and device.type == "cuda")
        self.criterion = nn.CrossEntropyLoss()
        self.epoch = 0

    def start_epoch(self, epoch):
        self.epoch = epoch

    def step(self, train_batch, valid_batch):
        a, net = self.args, self.net
        x, y = (t.to(self.device, non_blocking=True) for t in train_batch)
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
        out = {"train_loss": loss.item(), "train_top1": accuracy(logits.detach(), y)[0]}
        if self.epoch >= a.begin:  # Alg. 1: descend grad_alpha L_val(w, alpha); PC-DARTS waits `begin` epochs
            xv, yv = (t.to(self.device, non_blocking=True) for t in valid_batch)
            self.a_opt.zero_grad(set_to_none=True)
            with amp_autocast(self.device, a.amp):
                loss_val = self.criterion(net(xv), yv)
            self.scaler.scale(loss_val).backward(inputs=self.arch)
            average(p.grad for p in self.arch)
            if a.arch_grad_clip > 0:
                self.scaler.unscale_(self.a_opt)
                nn.utils.clip_grad_norm_(self.arch, a.arch_grad_clip)
            self.scaler.step(self.a_opt)
            out["valid_loss"] = loss_val.item()
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
        return self.net.pruned(1)



def run_stage1(args, device):
    a = open_stage(args, 1)
    set_seed(a.seed, a.deterministic)
    train_queue, valid_queue, num_classes = search_loaders(a)
    searcher = Searcher(a, num_classes, device)
    log.info("stage 1: PC-DARTS super-net, %d cells, %d channels, K=%d; S' keeps k=%d ops per edge",
             a.layers, a.init_channels, a.K, a.k)
    search_loop(a, searcher, train_queue, valid_queue, Path(a.save), device, method="darts_pd stage 1 (PC-DARTS)",
                finish=lambda save: genotypes.export(save, searcher.pruned(), stem="pruned", k=a.k, seed=a.seed,
                                                     method="darts_pd stage 1 (S')", dataset=a.dataset))
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
    if pruned.kind != "darts" or len({len(ops) for _, _, ops in pruned_edges(pruned)}) != 1:
        die(f"{path}: S' needs a normal and a reduce cell with the same number of ops on every edge")
    return pruned


class FairTrainer(Checkpointed):
    """Stage 2 (Sec. 3.2, Eq. 4-5, Alg. 1 step 2): path-wise strictly fair training of S'. One step
    takes the next group of k paths (`PathGroups`: every op of every edge exactly once), back-
    propagates the training loss of each path on the same batch, so the k gradients accumulate,
    then makes a single SGD step. Architecture weights play no part any more."""

    checkpointed = ("net", "optimizer", "scheduler", "scaler", "groups")

    def __init__(self, args, num_classes, device, pruned=None):
        args = resolve(args, 2)
        self.args, self.device = args, device
        self.pruned = pruned or load_pruned(args)
        self.net = PrunedNetwork(self.pruned, args.init_channels, num_classes, args.layers,
                                 is_imagenet_like(args)).to(device)
        broadcast_state(self.net)
        k = len(pruned_edges(self.pruned)[0][2])
        self.groups = PathGroups(self.net.num_edges, k, args.seed)  # same seed: same groups on every rank
        self.optimizer = torch.optim.SGD(self.net.parameters(), args.learning_rate, momentum=args.momentum,
                                         weight_decay=args.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda e: lr_factor(e, args))
        self.scaler = torch.amp.GradScaler(device.type, enabled=args.amp and device.type == "cuda")
        self.criterion = nn.CrossEntropyLoss()

    def start_epoch(self, epoch):
        self.net.drop_path_prob = self.args.drop_path_prob * epoch / self.args.epochs

    def step(self, batch):
        """One fair step on `batch`: the k paths of a group, gradients accumulated, one SGD step."""
        x, y = (t.to(self.device, non_blocking=True) for t in batch)
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss_m, top1_m = AverageMeter(), AverageMeter()
        for path in next(self.groups):
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


def run_stage2(args, device):
    a = open_stage(args, 2)
    save = Path(a.save)
    set_seed(a.seed, a.deterministic)
    train_queue, _, num_classes = search_loaders(a)
    trainer = FairTrainer(a, num_classes, device)
    log.info("stage 2: S' %s, %d cells, %d channels; %d groups of %d paths per pass", trainer.pruned, a.layers,
             a.init_channels, len(trainer.groups), trainer.groups.k)
    start, wall = 0, 0.0
    ckpt = resume_state(a, device)
    if ckpt:
        with checkpoint_fits(save / "checkpoint.pt"):
            trainer.load_state_dict(ckpt["trainer"])
            start, wall = ckpt["epoch"], ckpt["wall_time_s"]
            set_rng_state(ckpt["rng"][rank()])
    metrics, progress, t0 = MetricsLog(save / "metrics.jsonl", start), Progress(a.epochs, start), time.time() - wall
    for epoch in range(start, a.epochs):
        trainer.start_epoch(epoch)
        train_queue.sampler.set_epoch(epoch)
        meters = defaultdict(AverageMeter)
        for step, batch in enumerate(train_queue):
            values = trainer.step(batch)
            check_finite(values, f"at step {step + 1} of epoch {epoch + 1} of stage 2")
            for name, v in values.items():
                meters[name].update(v, len(batch[1]))
        record = {"epoch": epoch, **{n: m.avg for n, m in meters.items()}, **trainer.end_epoch(epoch)}
        metrics.write(record)
        save_checkpoint(save / "checkpoint.pt", {"trainer": trainer.state_dict(), "epoch": epoch + 1,
                                                 "wall_time_s": time.time() - t0, "rng": gather_rng_states()})
        log.info("%s %s", progress.line(epoch), " ".join(f"{n} {v:.4g}" for n, v in record.items() if n != "epoch"))
    trainer.save(save / "supernet.pt", num_classes)
    if is_main():
        write_summary(save, search_cost(time.time() - t0, device), method="darts_pd stage 2", epochs=a.epochs)
    barrier()
    return trainer


# ---------------------------------------------------------------- stage 3

def fitness_loader(args):
    """The data that scores paths, with evaluation transforms: the held-out part of the search
    split (what stage 1 trained alpha on; S' weights never saw it), or the test set. Its workers
    persist: stage 3 reads it once per path."""
    if args.fitness_data == "test":
        ds = get_dataset(args, False, transforms(args, False))
    else:
        ds = get_dataset(args, True, transforms(args, False))
        if args.subset:
            ds = Subset(ds, range(min(args.subset, len(ds))))
        if is_imagenet_like(args):  # the split of common.data.search_loaders
            targets = [ds.dataset.targets[i] for i in ds.indices] if isinstance(ds, Subset) else ds.targets
            ds = Subset(ds, class_fraction_split(targets, args.imagenet_fractions, args.seed)[1])
        else:
            ds = Subset(ds, range(int(math.floor(args.train_portion * len(ds))), len(ds)))
    sampler = DistributedSampler(ds, num_replicas=world_size(), rank=rank(), shuffle=False)
    return Loader(ds, batch_size=max(1, args.batch_size // world_size()), sampler=sampler,
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
                            d.get("imagenet", d["dataset"] == "imagenet")).to(device)
        net.load_state_dict(d["state_dict"])
    return net


@torch.no_grad()
def recalibrate_bn(net, path, batches, device, amp=False):
    """Re-estimate the BatchNorm statistics of `path` (SPOS): reset, then the plain average over
    `batches` in training mode, then the average over ranks."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average
    net.train()
    for x in batches:
        with amp_autocast(device, amp):
            net(x.to(device, non_blocking=True), path)
    for bn, m in zip(bns, momenta):
        bn.momentum = m
    average([t for bn in bns for t in (bn.running_mean, bn.running_var)])


class PathSearch:
    """Stage 3 (Sec. 3.2, Eq. 6, Alg. 1 step 3): evolutionary search of the paths of the trained
    S'. The fitness of a path is its top-1 accuracy with the shared weights on the held-out
    validation split (or the test set, as Alg. 1), after re-estimating BatchNorm statistics on
    `bn_batches` fixed training batches. Paths are bucketed by the parameters of their evaluation
    network; `generation()` runs one generation."""

    def __init__(self, args, num_classes, device, supernet=None):
        args = resolve(args, 3)
        self.args, self.device = args, device
        self.net = supernet if supernet is not None else load_supernet(args, num_classes, device)
        self.net.drop_path_prob = 0.0
        self.pruned = self.net.pruned
        train_queue, _, _ = search_loaders(args)
        self.valid_queue = fitness_loader(args)
        train_queue.sampler.set_epoch(0)
        torch.manual_seed(args.seed)  # the same BN batches whenever the search is built
        self.bn_batches = [x for x, _ in itertools.islice(train_queue, args.bn_batches)]
        self.cost = PathCost(self.pruned, pipeline(args), args.eval_init_channels, args.eval_layers, num_classes,
                             image_size(args))
        k = len(pruned_edges(self.pruned)[0][2])
        self.evolution = Evolution(self.net.num_edges, k, self.cost, args.buckets, args.population, args.parents,
                                   args.mutations, args.crossovers, args.mutation_prob, args.seed)

    def fitness(self, path):
        """Top-1 accuracy (%) of `path` with the weights of S' (Eq. 6)."""
        recalibrate_bn(self.net, path, self.bn_batches, self.device, self.args.amp)
        return evaluate(PathNet(self.net, path), self.valid_queue, self.device, self.args.amp)[1]

    def generation(self):
        """One generation: new paths proposed, each evaluated once. Returns {path: fitness}."""
        return generation(self.evolution, self.fitness)

    def entry(self, bucket, path):
        g = path_genotype(self.pruned, path)
        params, madds = self.cost(path)
        lo, hi = self.args.buckets[bucket], self.args.buckets[bucket + 1]
        return {f"{self.args.fitness_data}_top1": self.evolution.fitness[path], "params_M": round(params, 6),
                "mult_adds_M": round(madds, 4), "bucket_M": [lo, None if math.isinf(hi) else hi],
                "path": list(path), **genotypes.to_dict(g), "text": str(g)}

    def state_dict(self):
        return self.evolution.state_dict()

    def load_state_dict(self, d):
        self.evolution.load_state_dict(d)


def run_stage3(args, device):
    a = open_stage(args, 3)
    save, run = Path(a.save), Path(a.run)
    set_seed(a.seed, a.deterministic)
    search = PathSearch(a, num_classes(a.dataset, a.data), device)
    evo = search.evolution
    log.info("stage 3: %d paths of %d edges; buckets %s M params of the %d-cell, %d-channel network; fitness on %s",
             evo.k ** evo.num_edges, evo.num_edges, a.buckets, a.eval_layers, a.eval_init_channels, a.fitness_data)
    ckpt = resume_state(a, device)
    if ckpt:
        with checkpoint_fits(save / "checkpoint.pt"):
            search.load_state_dict(ckpt["search"])
    start, t0 = evo.generation, time.time() - (ckpt["wall_time_s"] if ckpt else 0.0)
    metrics, progress = MetricsLog(save / "metrics.jsonl", start), Progress(a.epochs, start)
    for gen in range(start, a.epochs):  # generations
        results = search.generation()
        if not results:
            log.info("generation %d: no new path within the buckets is left; stopping", gen + 1)
            break
        best = evo.best()
        record = {"epoch": gen, "new": len(results), "evaluated": len(evo.fitness), "best_top1": best[0][2],
                  "best_per_bucket": [{"bucket": b, "top1": f, "params_M": round(evo.cost(p)[0], 6)}
                                      for b, p, f in best]}
        metrics.write(record)
        save_checkpoint(save / "checkpoint.pt", {"search": search.state_dict(), "wall_time_s": time.time() - t0})
        log.info("%s evaluated %d best %.2f%% (%s)", progress.line(gen).replace("epoch", "generation"),
                 len(evo.fitness), best[0][2], ", ".join(f"bucket {b}: {f:.2f}%" for b, _, f in best))
    entries = [search.entry(b, p) for b, p, _ in evo.best()]
    if not entries:
        die(f"no path of S' has an evaluation network within --buckets {a.buckets} M parameters")
    if is_main():
        with (save / "paths.jsonl").open("w") as f:
            for p in evo.ranked():
                params, madds = evo.cost(p)
                f.write(json.dumps({"path": list(p), "bucket": evo.bucket(p), "top1": evo.fitness[p],
                                    "params_M": round(params, 6), "mult_adds_M": round(madds, 4),
                                    "text": str(path_genotype(search.pruned, p))}) + "\n")
        (run / "genotypes.json").write_text(json.dumps({
            "method": "darts_pd", "fitness_data": a.fitness_data, "eval_layers": a.eval_layers,
            "eval_init_channels": a.eval_init_channels, "evaluated": len(evo.fitness), "seed": a.seed,
            "dataset": a.dataset, "genotypes": [{"index": i, **e} for i, e in enumerate(entries)]}, indent=1) + "\n")
        best = entries[0]
        genotypes.export(run, path_genotype(search.pruned, tuple(best["path"])), method="darts_pd", seed=a.seed,
                         dataset=a.dataset, **{n: v for n, v in best.items() if n.endswith(("top1", "_M"))})
        write_summary(save, search_cost(time.time() - t0, device), method="darts_pd stage 3",
                      evaluated=len(evo.fitness))
    log.info("stage 3: %d paths evaluated; best %s", len(evo.fitness), entries[0]["text"])
    for i, e in enumerate(entries):
        log.info("  [%d] bucket %s M: %s %.2f%%, %.3fM params, %.1fM mult-adds", i, e["bucket_M"], a.fitness_data,
                 e[f"{a.fitness_data}_top1"], e["params_M"], e["mult_adds_M"])
    barrier()
    return search


# ---------------------------------------------------------------- main

STAGE_RUNNERS = {1: run_stage1, 2: run_stage2, 3: run_stage3}


def main(argv=None):
    """Run the stages asked for. RUN holds one run folder per stage; RUN/summary.json, written after
    stage 3, marks the whole run finished. --resume continues the started stage and skips finished
    ones; every input is checked before RUN is touched."""
    args = parse_args(argv)
    init_distributed(args.device)
    device = get_device(args.device)
    check_run(args, "search-darts_pd", nested=True)
    run = Path(args.save)
    stages = [1, 2, 3] if args.stage == "all" else [int(args.stage)]
    skip = [s for s in stages if args.stage == "all" and args.resume and run_state(run / f"stage{s}") == "finished"]
    todo = [s for s in stages if s not in skip]
    for s in todo:
        a = stage_args(args, s)
        agree(folder_problem(a.save, a) if is_main() else None)
    if todo:  # the inputs of the first stage to run
        search_loaders(resolve(args, todo[0]))
        if todo[0] == 2:
            load_pruned(resolve(args, 2))
        if todo[0] == 3:
            supernet_file(args.save)
    setup_run(args, "search-darts_pd", nested=True)
    if args.overwrite and is_main():  # the stages run now and all that came from them go
        clear_folder(run, keep=(*KEEP, "args.json", "log.txt", *(f"stage{s}" for s in range(1, todo[0]))))
    for s in skip:
        log.info("stage %d in %s is finished: skipped", s, run / f"stage{s}")
    out = {s: STAGE_RUNNERS[s](args, device) for s in todo}
    if is_main() and 3 in stages and run_state(run / "stage3") == "finished" and not (run / DONE).is_file():
        best = genotypes.load(str(run / "genotype.json"))
        write_json(run / DONE, {"method": "darts_pd", "genotype": str(best), "seed": args.seed,
                                "dataset": args.dataset})  # no costs: those are in each stage's summary.json
    barrier()
    return out


if __name__ == "__main__":
    main()
