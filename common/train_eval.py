"""The DARTS evaluation protocol: train a genotype from scratch and test it every epoch.

SGD with momentum and weight decay, gradient clipping, a cosine / step / linear
schedule with optional warm-up, the auxiliary loss, drop-path ramped linearly
over epochs, label smoothing, AMP on CUDA and DDP under torchrun. Each method's
train.py calls `main` with its paper's defaults.

`--valid_size N` holds N training images out and reports the accuracy on them
every epoch: DARTS' way to pick the best of several searches (Sec. 3.2: each
cell trained from scratch for 100 epochs, the best validation accuracy wins)
without reading the test set, e.g. `--epochs 100 --valid_size 25000`.

Usage: python -m common.train_eval --arch DARTS_V2 [--dataset cifar10 --data DIR] [--save RUN] [--resume]
"""
import argparse
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from common import genotypes
from common.data import add_data_args, eval_loaders, image_size, is_imagenet_like, pipeline, valid_loader
from common.network import build_network
from common.utils import (AverageMeter, MetricsLog, Progress, accuracy, add_run_args, add_speed_args, amp_autocast,
                          broadcast_params, check_finite, check_run, checkpoint_fits, compile_report, count_madds,
                          count_madds_thop, count_params, die, fused, gather_rng_states, get_device, init_distributed,
                          is_main, log, rank, resume_state, save_checkpoint, set_rng_state, set_seed, setup_run,
                          speed_up, world_size, write_json)

# The DARTS evaluation settings (Liu et al., 2019, Sec. 3.3 and A.2).
CIFAR = dict(epochs=600, batch_size=96, learning_rate=0.025, learning_rate_min=0.0, weight_decay=3e-4,
             init_channels=36, layers=20, auxiliary=True, cutout=True, drop_path_prob=0.2,
             label_smooth=0.0, lr_scheduler="cosine")
IMAGENET = dict(epochs=250, batch_size=128, learning_rate=0.1, learning_rate_min=0.0, weight_decay=3e-5,
                init_channels=48, layers=14, auxiliary=True, cutout=False, drop_path_prob=0.0,
                label_smooth=0.1, lr_scheduler="step")


def get_parser(description=None):
    p = argparse.ArgumentParser(description=description or __doc__.split("\n")[0])
    p.add_argument("--arch", required=True, help="published name, genotype.json, or DARTS Genotype(...) text")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch_size", type=int, help="global batch size (split across torchrun ranks)")
    p.add_argument("--learning_rate", type=float)
    p.add_argument("--learning_rate_min", type=float)
    p.add_argument("--lr_scheduler", choices=["cosine", "step", "linear"])
    p.add_argument("--decay_rate", type=float, default=0.97, help="per-epoch factor of the step schedule")
    p.add_argument("--linear_tail", type=int, default=0,
                   help="linear schedule: its last N epochs decay with 1/N of the slope (PC-DARTS ImageNet: 5; "
                        "0: straight down to 0)")
    p.add_argument("--warmup_epochs", type=int, default=0, help="linear warm-up epochs")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=False, help="Nesterov momentum")
    p.add_argument("--weight_decay", type=float)
    p.add_argument("--grad_clip", type=float, default=5.0)
    p.add_argument("--init_channels", type=int)
    p.add_argument("--layers", type=int)
    p.add_argument("--auxiliary", action=argparse.BooleanOptionalAction, help="auxiliary tower")
    p.add_argument("--auxiliary_weight", type=float, default=0.4)
    p.add_argument("--drop_path_prob", type=float)
    p.add_argument("--label_smooth", type=float)
    p.add_argument("--report_freq", type=int, default=0, help="log every N steps (0: once per epoch)")
    p.add_argument("--valid_size", type=int, default=0,
                   help="hold out N training images (a fixed draw, the same for every seed) and report the "
                        "accuracy on them every epoch, to choose between architectures without the test set "
                        "(0: train on the whole training set, as the papers' evaluations)")
    add_run_args(p)
    add_speed_args(p)
    add_data_args(p)
    return p


def parse_args(argv=None, cifar=None, imagenet=None, description=None):
    """Parse with the protocol of the data's pipeline (`common.data.pipeline`) as defaults: `cifar`
    for the CIFAR pipeline, `imagenet` for ImageNet's (each a dict of overrides of the DARTS settings)."""
    parser = get_parser(description)
    probe, _ = parser.parse_known_args(argv)
    profile = {**IMAGENET, **(imagenet or {})} if is_imagenet_like(probe) else {**CIFAR, **(cifar or {})}
    parser.set_defaults(**profile)
    return parser.parse_args(argv)


def lr_factor(epoch, args):
    """The learning-rate multiplier of `epoch`: (e + 1) / W in the W warm-up epochs, then cosine
    (DARTS), step (x decay_rate per epoch, DARTS ImageNet) or linear. Linear with a tail of T epochs
    is PC-DARTS' ImageNet schedule (authors' train_imagenet.py): (E - T - e) / (E - T) until epoch
    E - T, then (E - e) / (T (E - T)), a T-th of the slope, so the last epochs are not trained at
    lr / E; T = 0 is the straight line 1 - e / E."""
    if epoch < args.warmup_epochs:
        return (epoch + 1) / args.warmup_epochs
    if args.lr_scheduler == "step":
        return args.decay_rate ** epoch
    if args.lr_scheduler == "linear":
        E, T = args.epochs, args.linear_tail
        return (E - T - epoch) / (E - T) if epoch < E - T or T == 0 else (E - epoch) / (T * (E - T))
    floor = args.learning_rate_min / args.learning_rate
    return floor + (1 - floor) * (1 + math.cos(math.pi * epoch / args.epochs)) / 2


def train_loss(logits, logits_aux, y, args):
    """Cross-entropy with `label_smooth` label smoothing (DARTS' and PC-DARTS' ImageNet protocol), plus
    `auxiliary_weight` times the auxiliary tower's loss, smoothed alike (DARTS Sec. A.2)."""
    loss = F.cross_entropy(logits, y, label_smoothing=args.label_smooth)
    if logits_aux is not None:
        loss = loss + args.auxiliary_weight * F.cross_entropy(logits_aux, y, label_smoothing=args.label_smooth)
    return loss


def train_step(model, x, y, optimizer, scaler, args, device):
    """One SGD step with gradient clipping on the batch (x, y); returns (loss, logits), detached."""
    with amp_autocast(device, args.amp):
        logits, logits_aux = model(x)
        loss = train_loss(logits, logits_aux, y, args)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if args.grad_clip > 0:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), logits.detach()


def train_epoch(model, loader, optimizer, scaler, args, device):
    """One epoch of `train_step`s; returns (mean loss, mean top-1) over the epoch."""
    model.train()
    loss_m, top1_m = AverageMeter(), AverageMeter()
    for step, (x, y) in enumerate(loader):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss, logits = train_step(model, x, y, optimizer, scaler, args, device)
        value = loss.item()
        check_finite({"train_loss": value}, f"at training step {step + 1}")
        loss_m.update(value, len(y))
        top1_m.update(accuracy(logits, y)[0], len(y))
        if args.report_freq and step % args.report_freq == 0:
            log.info("train step %d loss %.4f top1 %.2f", step, loss_m.avg, top1_m.avg)
    return loss_m.avg, top1_m.avg


@torch.no_grad()
def evaluate(model, loader, device, amp=False):
    """(loss, top-1, top-5) over the whole loader, summed over ranks: each image counts once when the
    loader's sampler shards without padding (`make_loader(..., train=False)`). `model(x)` returns the
    logits, or a tuple whose first entry they are; pass the unwrapped model under DDP, whose forward
    may synchronise and so would wait for ranks that have one batch fewer. Under torchrun every rank
    first takes rank 0's buffers (BN's running statistics, which drift apart on ranks that see other
    batches unless DDP broadcasts them, and which rank 0's checkpoint keeps)."""
    broadcast_params(model.buffers())
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with amp_autocast(device, amp):
            out = model(x)
        logits = out[0] if isinstance(out, (tuple, list)) else out
        top1, top5 = accuracy(logits.float(), y, (1, 5))
        n = len(y)
        sums += torch.tensor([F.cross_entropy(logits.float(), y).item() * n,
                              top1 * n, top5 * n, n], dtype=torch.float64, device=device)
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(sums)
    return (sums[:3] / sums[3]).tolist()


def check_args(args):
    """Flags the protocol cannot run with: one line and exit, before the run folder is touched."""
    if args.valid_size < 0:
        die(f"--valid_size {args.valid_size}: hold out 0 or more training images (0: train on all of them)")
    if args.lr_scheduler == "linear" and not 0 <= args.linear_tail < args.epochs:
        die(f"--linear_tail {args.linear_tail}: the slower tail must last 0 or more epochs, fewer than "
            f"--epochs {args.epochs}")


def main(args=None, build=None, evaluated_by=None):
    """Train `args.arch` from scratch; returns the trained model (unwrapped).

    `build(genotype, num_classes, args)` makes the network; the default is the DARTS
    evaluation network of `common.network`. `evaluated_by` goes to summary.json: how the test error was
    obtained, where a paper reads it from elsewhere (a benchmark's table); None for the paper's own protocol."""
    args = args if isinstance(args, argparse.Namespace) else parse_args(args)
    check_args(args)
    init_distributed(args.device)
    device = get_device(args.device)
    check_run(args, "eval")  # every input is checked before the run folder is touched
    set_seed(args.seed + rank(), args.deterministic)
    try:
        genotype = genotypes.load(args.arch)
    except genotypes.GenotypeError as e:
        die(str(e))
    train_queue, test_queue, num_classes = eval_loaders(args, args.valid_size)
    valid_queue = valid_loader(args, args.valid_size) if args.valid_size else None
    build = build or (lambda g, n, a: build_network(g, pipeline(a), a.init_channels, a.layers, n, a.auxiliary))
    try:
        model = build(genotype, num_classes, args).to(device)
    except genotypes.GenotypeError as e:
        die(str(e))
    save = setup_run(args, "eval")
    size = image_size(args)
    params, madds = count_params(model), count_madds(model, (1, 3, size, size))
    madds_thop = count_madds_thop(model, (1, 3, size, size))
    log.info("genotype %s", genotype)
    log.info("params %.3fM  mult-adds %.1fM (thop's count: %.1fM)", params, madds, madds_thop)
    speed_up(model, args)  # after the counting, which runs the network under hooks

    optimizer = torch.optim.SGD(model.parameters(), args.learning_rate, momentum=args.momentum,
                                weight_decay=args.weight_decay, nesterov=args.nesterov, **fused(device))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: lr_factor(e, args))
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp and device.type == "cuda")
    start_epoch, best, best_valid, wall = 0, 0.0, 0.0, 0.0
    ckpt = resume_state(args, device)
    if ckpt:
        with checkpoint_fits(save / "checkpoint.pt"):
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            scaler.load_state_dict(ckpt["scaler"])
            start_epoch, best, wall = ckpt["epoch"], ckpt["best_top1"], ckpt["wall_time_s"]
            best_valid = ckpt.get("best_valid_top1", 0.0)  # checkpoints from before --valid_size lack it
            set_rng_state(ckpt["rng"][rank()])
    net = model
    if world_size() > 1:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    metrics = MetricsLog(save / "metrics.jsonl", start_epoch)
    progress = Progress(args.epochs, start_epoch)
    t0 = time.time() - wall
    for epoch in range(start_epoch, args.epochs):
        train_queue.sampler.set_epoch(epoch)
        model.drop_path_prob = args.drop_path_prob * epoch / args.epochs
        lr = optimizer.param_groups[0]["lr"]
        train_loss, train_top1 = train_epoch(net, train_queue, optimizer, scaler, args, device)
        scheduler.step()
        record = dict(epoch=epoch, lr=lr, drop_path_prob=model.drop_path_prob, train_loss=train_loss,
                      train_top1=train_top1)
        valid = ""
        if valid_queue is not None:
            record["valid_loss"], record["valid_top1"], record["valid_top5"] = evaluate(model, valid_queue, device,
                                                                                        args.amp)
            best_valid = max(best_valid, record["valid_top1"])
            valid = f" valid {record['valid_top1']:.2f}% (best {best_valid:.2f}%)"
        record["test_loss"], record["test_top1"], record["test_top5"] = evaluate(model, test_queue, device, args.amp)
        best = max(best, record["test_top1"])
        check_finite(record, f"in epoch {epoch + 1}")
        metrics.write(record)
        rngs = gather_rng_states()
        save_checkpoint(save / "checkpoint.pt", dict(
            model=model.state_dict(), optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
            scaler=scaler.state_dict(), epoch=epoch + 1, best_top1=best, best_valid_top1=best_valid,
            wall_time_s=time.time() - t0, rng=rngs))
        log.info("%s lr %.2e train %.2f%%%s test %.2f%% (best %.2f%%)", progress.line(epoch), lr, train_top1, valid,
                 record["test_top1"], best)
        if report := compile_report():
            log.info("%s", report)

    final = MetricsLog.read(save / "metrics.jsonl")[-1] if is_main() and args.epochs else {}
    summary = dict(arch=args.arch, genotype=str(genotype), dataset=args.dataset, layers=args.layers,
                   init_channels=args.init_channels, params_M=params, mult_adds_M=madds,
                   mult_adds_thop_M=madds_thop, epochs=args.epochs,
                   best_top1=best, final_top1=final.get("test_top1"), final_top5=final.get("test_top5"),
                   valid_size=args.valid_size, best_valid_top1=best_valid if valid_queue else None,
                   final_valid_top1=final.get("valid_top1"), final_valid_top5=final.get("valid_top5"),
                   wall_time_s=time.time() - t0, world_size=world_size(), device=str(device),
                   evaluated_by=evaluated_by)
    if is_main():
        write_json(save / "summary.json", summary)  # the done-marker, last
        log.info("summary %s", json.dumps(summary))
    return model


if __name__ == "__main__":
    main(sys.argv[1:])
