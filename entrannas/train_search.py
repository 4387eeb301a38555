"""EnTranNAS / EnTranNAS-DST search (Sec. 2, 4.2, 4.3).

Every iteration: derive the sub-graph from the current alpha (no gradient), one architecture
step on a validation batch (Adam on alpha, and beta for DST, with the sparsity term of Eq. 11),
then one weight step on a training batch (SGD), first order as in DARTS. The temperature of
Eq. (5) is annealed every epoch. After the last epoch the super-net and its child-net are
evaluated on the validation images without augmentation (Table 1; the best of five searches,
Sec. 4.2). Under torchrun the gradients are averaged across ranks, so every rank holds the same
weights, alpha and beta.

Usage:
  python entrannas/train_search.py --data ~/data                         # EnTranNAS on CIFAR-10
  python entrannas/train_search.py --data ~/data --dst --dst_lambda 0.1  # EnTranNAS-DST
  python entrannas/train_search.py --data ~/data --darts                 # Table 1's "all (DARTS)"
  torchrun --nproc_per_node 8 entrannas/train_search.py --dataset imagenet --data ~/imagenet --dst
"""
import argparse
import copy
import json
import sys
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import Subset

if __package__ in (None, ""):  # run as `python entrannas/train_search.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.data import add_data_args, is_imagenet_like, make_loader, search_loaders, transforms  # noqa: E402
from common.genotypes import export  # noqa: E402
from common.search import Checkpointed, search_loop, step_graph  # noqa: E402
from common.train_eval import evaluate  # noqa: E402
from common.utils import (accuracy, add_run_args, add_speed_args, all_reduce_mean, amp_autocast,  # noqa: E402
                          broadcast_params, check_run, die, fused, get_device, init_distributed, is_main, log, set_seed,
                          setup_run, speed_up, world_size)
from entrannas.model_search import ENGINE_PLACEMENTS, ChildNet, Network  # noqa: E402

# Sec. 4.2 (CIFAR-10) and Sec. 4.3 (ImageNet); the rest of the defaults are shared.
CIFAR = dict(batch_size=512, learning_rate=0.2, arch_learning_rate=6e-4, tau=5.0, tau_decay=0.923, dst_lambda=0.1)
IMAGENET = dict(batch_size=1024, learning_rate=0.5, arch_learning_rate=6e-3, tau=5.0, tau_decay=0.923,
                dst_lambda=0.2)
IMAGENET_DST = dict(tau=1.0, tau_decay=0.9)
# Table 1's "all (DARTS)": the super-net equivalent to DARTS (Sec. 4.1), every cell an Engine-cell with
# its own op weights on every edge, no bottleneck, p = softmax(alpha) (Eq. 2: tau 1, not annealed) ...
DARTS_SUPERNET = dict(engine="all", feature_sharing=False, bottleneck=1, tau=1.0, tau_decay=1.0)
# ... searched with DARTS' first-order settings: batch 64 (the largest that fits a GTX 1080 Ti, Table 3),
# learning rate 0.025 cosine to 0.001, architecture learning rate 3e-4.
DARTS_SEARCH = dict(batch_size=64, learning_rate=0.025, learning_rate_min=0.001, arch_learning_rate=3e-4)


def get_parser():
    p = argparse.ArgumentParser(description="EnTranNAS / EnTranNAS-DST search")
    g = p.add_argument_group("search")
    g.add_argument("--batch_size", type=int, help="global batch (512 CIFAR, 1024 ImageNet), split across ranks")
    g.add_argument("--learning_rate", type=float, help="SGD learning rate of the weights (0.2 CIFAR, 0.5 ImageNet)")
    g.add_argument("--learning_rate_min", type=float, default=0.0, help="end of the cosine schedule")
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--weight_decay", type=float, default=3e-4)
    g.add_argument("--grad_clip", type=float, default=5.0, help="weight gradient norm clip (DARTS; 0 = off)")
    g.add_argument("--epochs", type=int, default=50)
    g.add_argument("--init_channels", type=int, default=16)
    g.add_argument("--layers", type=int, default=8, help="cells of the super-net (2 of them reduction cells)")
    g.add_argument("--arch_learning_rate", type=float, help="Adam learning rate of alpha and beta (6e-4 / 6e-3)")
    g.add_argument("--arch_weight_decay", type=float, default=1e-3)
    g.add_argument("--arch_betas", type=float, nargs=2, default=(0.5, 0.999), help="Adam momenta of alpha and beta")
    g.add_argument("--tau", type=float, help="initial temperature of Eq. (5) (5.0; 1.0 for DST on ImageNet)")
    g.add_argument("--tau_decay", type=float, help="temperature factor per epoch (0.923; 0.9 for DST on ImageNet)")
    g.add_argument("--search_space", default="darts_no_none", choices=["darts_no_none", "entrannas_ext"],
                   help="the standard 7 ops or the extended 12 (Sec. 4.2)")
    g.add_argument("--engine", default="first", choices=ENGINE_PLACEMENTS,
                   help="which cells are Engine-cells (Table 1); all keeps sharing, bottleneck and tau (see --darts)")
    g.add_argument("--darts", action="store_true",
                   help="Table 1's 'all (DARTS)': every cell an Engine-cell, no feature sharing, no bottleneck, "
                        "tau 1 not annealed, DARTS' batch 64 and learning rates 0.025 / 3e-4")
    g.add_argument("--feature_sharing", action=argparse.BooleanOptionalAction, default=True,
                   help="one op instance per input node, outputs reused by later nodes (Sec. 2.3)")
    g.add_argument("--bottleneck", type=int, default=4, help="channel reduction ratio before the ops (Sec. 2.5); 1 = off")
    g.add_argument("--dst", action="store_true", help="EnTranNAS-DST: learnable thresholds and topology (Sec. 2.4)")
    g.add_argument("--dst_lambda", type=float, help="lambda of the sparsity term of Eq. (11) (0.1 CIFAR, 0.2 ImageNet)")
    add_run_args(p)
    add_speed_args(p, cuda_graph="the architecture step and the weight step")
    add_data_args(p, search=True)
    return p


def parse_args(argv=None):
    """Parse with the defaults of the chosen dataset (Sec. 4.2 CIFAR-10, Sec. 4.3 ImageNet)."""
    parser = get_parser()
    probe, _ = parser.parse_known_args(argv)
    profile = dict(CIFAR)
    if is_imagenet_like(probe):
        profile.update(IMAGENET, **(IMAGENET_DST if probe.dst else {}))
    if probe.darts:
        profile.update(DARTS_SUPERNET, **DARTS_SEARCH)
    parser.set_defaults(**profile)
    args = parser.parse_args(argv)
    if args.darts and args.dst:
        die("--darts is DARTS' super-net, which has no thresholds: leave out --dst")
    if args.darts and any(getattr(args, k) != v for k, v in DARTS_SUPERNET.items()):
        die("--darts fixes --engine all, --no-feature_sharing, --bottleneck 1, --tau 1, --tau_decay 1: "
            "leave those out, or drop --darts")
    if args.bottleneck < 1:
        die(f"--bottleneck must be at least 1 (1 = no bottleneck), not {args.bottleneck}")
    if args.tau <= 0 or args.tau_decay <= 0:
        die("--tau and --tau_decay must be positive")
    return args


def unaugmented(loader, args):
    """The images of a search loader without augmentation, in a fixed order (split across ranks
    under torchrun): the validation images on which Table 1 and the best of five searches
    (Sec. 4.2) compare accuracies."""
    chain, ds = [], loader.dataset
    while isinstance(ds, Subset):
        chain.append(ds.indices)
        ds = ds.dataset
    ds = copy.copy(ds)  # the same images; the search loaders keep their augmentation
    ds.transform = transforms(args, False)
    for indices in reversed(chain):
        ds = Subset(ds, indices)
    return make_loader(ds, args.batch_size, False, args.workers)


def _average_gradients(params):
    """Average the gradients of `params` over ranks in one flat all-reduce (no-op on one process)."""
    grads = [p.grad for p in params if p.grad is not None]
    if world_size() > 1 and grads:
        flat = all_reduce_mean(torch.cat([g.flatten() for g in grads]))
        for g, f in zip(grads, flat.split([g.numel() for g in grads])):
            g.copy_(f.view_as(g))


class Searcher(Checkpointed):
    """The EnTranNAS search state: super-net, alpha (and beta), optimizers, schedules."""
    checkpointed = ("model", "w_opt", "a_opt", "scheduler", "w_scaler", "a_scaler")  # and model.tau

    def __init__(self, args, num_classes, device):
        self.args, self.device = args, device
        try:
            self.model = Network(args.init_channels, num_classes, args.layers, args.search_space,
                                 engine=args.engine, feature_sharing=args.feature_sharing,
                                 bottleneck=args.bottleneck, dst=args.dst,
                                 imagenet=is_imagenet_like(args)).to(device)
        except ValueError as e:
            die(str(e))
        broadcast_params(self.model.parameters())  # one super-net on every rank
        speed_up(self.model, args)
        self.weights, self.arch = self.model.weight_parameters(), self.model.arch_parameters()
        self.w_opt = torch.optim.SGD(self.weights, args.learning_rate, momentum=args.momentum,
                                     weight_decay=args.weight_decay, **fused(device))
        self.a_opt = torch.optim.Adam(self.arch, args.arch_learning_rate, betas=tuple(args.arch_betas),
                                      weight_decay=args.arch_weight_decay, **fused(device, capturable=True))
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_opt, args.epochs, args.learning_rate_min)
        amp = args.amp and device.type == "cuda"
        self.w_scaler = torch.amp.GradScaler(device.type, enabled=amp)
        self.a_scaler = torch.amp.GradScaler(device.type, enabled=amp)
        self.criterion = nn.CrossEntropyLoss()
        self.epoch, self.derived = None, None
        self.arch_graph = step_graph(self.arch_step, args, device)
        self.weight_graph = step_graph(self.weight_step, args, device,  # one memory for the two recordings
                                       self.arch_graph and self.arch_graph.pool)

    def start_epoch(self, epoch):
        self.epoch = epoch
        self.model.tau = self.args.tau * self.args.tau_decay ** epoch    # annealed temperature of Eq. (5)

    def step(self, train_batch, valid_batch):
        """One iteration: the architecture step (Eq. 11), then the weight step, each on the sub-graph
        derived from alpha as it is then (on the host)."""
        self.model.train()
        x_v, y_v = (t.to(self.device, non_blocking=True) for t in valid_batch)
        x_t, y_t = (t.to(self.device, non_blocking=True) for t in train_batch)
        a = self.on_derived(self.arch_graph, self.arch_step, x_v, y_v)
        out = {"sparsity": a["sparsity"].item()} if "sparsity" in a else {}
        out.update(valid_loss=a["loss"].item(), valid_top1=accuracy(a["logits"], y_v)[0])
        w = self.on_derived(self.weight_graph, self.weight_step, x_t, y_t)
        out.update(train_loss=w["loss"].item(), train_top1=accuracy(w["logits"], y_t)[0])
        return out

    def on_derived(self, graph, half, x, y):
        """`half(x, y)` on the sub-graph derived now; with --cuda_graph its recording for that sub-graph
        and epoch (recorded again when either changes)."""
        self.derived = self.model.derived()
        if graph is None:
            return half(x, y)
        return graph((self.epoch, json.dumps(self.derived)), x, y)

    def arch_step(self, x_v, y_v):
        """Adam on alpha (and beta) against L_val (+ Eq. 11), tensors only (no host synchronisation)."""
        args, model = self.args, self.model
        self.a_opt.zero_grad(set_to_none=True)
        with amp_autocast(self.device, args.amp):
            logits = model(x_v, derived=self.derived)
            loss_val = self.criterion(logits, y_v)
        loss, out = loss_val.float(), {}
        if args.dst:
            sparsity = model.sparsity_loss()
            loss = loss + args.dst_lambda * sparsity                      # Eq. (11)
            out["sparsity"] = sparsity.detach()
        self.a_scaler.scale(loss).backward(inputs=self.arch)
        _average_gradients(self.arch)
        self.a_scaler.step(self.a_opt)
        self.a_scaler.update()
        return {**out, "loss": loss_val.detach(), "logits": logits.detach()}

    def weight_step(self, x_t, y_t):
        """SGD on the weights against L_train, tensors only (no host synchronisation)."""
        args, model = self.args, self.model
        self.w_opt.zero_grad(set_to_none=True)
        with amp_autocast(self.device, args.amp):
            logits = model(x_t, derived=self.derived)
            loss = self.criterion(logits, y_t)
        self.w_scaler.scale(loss).backward(inputs=self.weights)
        _average_gradients(self.weights)
        if args.grad_clip > 0:
            self.w_scaler.unscale_(self.w_opt)
            nn.utils.clip_grad_norm_(self.weights, args.grad_clip)
        self.w_scaler.step(self.w_opt)
        self.w_scaler.update()
        return {"loss": loss.detach(), "logits": logits.detach()}

    def end_epoch(self, epoch, valid_queue):
        """Per-epoch records: learning rate, temperature, alpha (and beta, thresholds, edges for DST);
        after the last epoch the clean validation accuracies of `validate`."""
        model = self.model
        record = {"lr": self.scheduler.get_last_lr()[0], "tau": model.tau}
        if epoch == self.args.epochs - 1:
            record.update(self.validate(valid_queue))
        self.scheduler.step()
        for name in ("normal", "reduce"):
            record[f"alpha_{name}"] = getattr(model, f"alpha_{name}").tolist()
            if self.args.dst:
                beta = getattr(model, f"beta_{name}")
                record[f"beta_{name}"] = beta.tolist()
                record[f"threshold_{name}"] = torch.sigmoid(beta).tolist()
                paths = model.derive(name == "reduce")
                record[f"edges_{name}"] = sum(len({i for i, _ in node}) for node in paths)
                record[f"connections_{name}"] = sum(len(node) for node in paths)
        if is_main() and self.args.save:
            folder = Path(self.args.save) / "genotypes"
            folder.mkdir(exist_ok=True)
            export(folder, self.genotype(), stem=f"epoch_{epoch:03d}", epoch=epoch)
        return record

    def validate(self, valid_queue):
        """Top-1 on the validation images without augmentation (BatchNorm running statistics) of the
        super-net as searched and of its child-net, the same weights running only the derived paths
        in every cell (Table 1); the child-net's is the architecture's validation accuracy by which
        the best of five searches is chosen (Sec. 4.2, Table 7)."""
        loader = unaugmented(valid_queue, self.args)
        return {"supernet_valid_top1": evaluate(self.model, loader, self.device, self.args.amp)[1],
                "childnet_valid_top1": evaluate(ChildNet(self.model), loader, self.device, self.args.amp)[1]}

    def state_dict(self):
        return {**super().state_dict(), "tau": self.model.tau}

    def load_state_dict(self, d):
        super().load_state_dict(d)
        self.model.tau = d["tau"]

    def genotype(self):
        return self.model.genotype()


def main(argv=None):
    """Run a search; returns the Searcher."""
    args = parse_args(argv)
    init_distributed(args.device)
    device = get_device(args.device)
    check_run(args, "search-entrannas")  # every input is checked before the run folder is touched
    set_seed(args.seed, args.deterministic)  # the same seed on every rank: the same initial super-net
    train_queue, valid_queue, num_classes = search_loaders(args)
    searcher = Searcher(args, num_classes, device)
    save = setup_run(args, "search-entrannas")
    log.info("super-net: %.3fM weights, Engine-cells at layers %s, %d process(es)",
             sum(p.numel() for p in searcher.weights) / 1e6, sorted(searcher.model.engines), world_size())
    method = "DARTS (EnTranNAS super-net)" if args.darts else "EnTranNAS-DST" if args.dst else "EnTranNAS"
    search_loop(args, searcher, train_queue, valid_queue, save, device, method=method,
                search_space=args.search_space, engine=args.engine, feature_sharing=args.feature_sharing,
                bottleneck=args.bottleneck, **({"dst_lambda": args.dst_lambda} if args.dst else {}))
    return searcher


if __name__ == "__main__":
    main()
