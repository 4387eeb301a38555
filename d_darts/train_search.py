"""D-DARTS search (Heuillet et al., 2021): a super-net of n cells, each with its own architecture,
optimizer, scheduler and loss (Sec. 4.1, Fig. 2), FairDARTS' sigmoid relaxation and zero-one loss
(Sec. 3) and the cell-wise ablation loss (Sec. 4.2).

Usage: python d_darts/train_search.py [--dataset cifar100 --data DIR] [--w_abl 0] [--save RUN] [--resume]
       python d_darts/train_search.py --share_alphas --w_abl 0 --w01 5 ...   FairDARTS' super-net (Fig. 5)
"""
import argparse
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python d_darts/train_search.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.data import add_data_args, search_loaders
from common.search import Checkpointed, frozen_bn_stats, search_loop, step_graph
from common.train_eval import evaluate
from common.utils import (accuracy, add_run_args, add_speed_args, amp_autocast, check_run, count_params, die, fused,
                          get_device, log, set_seed, setup_run, speed_up)
from d_darts.model_search import (PARSE_METHODS, SearchNetwork, ablation_loss, dominant_shares, parse_genotype,
                                  total_loss, zero_one_loss)
from d_darts.parse import write_parsings


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch_size", type=int, default=72, help="Sec. 5.1 (96 in FairDARTS)")
    p.add_argument("--learning_rate", type=float, default=0.005, help="SGD on the weights, cosine (FairDARTS)")
    p.add_argument("--learning_rate_min", type=float, default=0.001)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight_decay", type=float, default=3e-4)
    p.add_argument("--grad_clip", type=float, default=5.0)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--init_channels", type=int, default=16)
    p.add_argument("--layers", type=int, default=8, help="number n of searched cells")
    p.add_argument("--arch_learning_rate", type=float, default=3e-3, help="every cell's Adam")
    p.add_argument("--arch_learning_rate_min", type=float, default=1e-3,
                   help="end of every cell's cosine schedule (D-DARTS code)")
    p.add_argument("--arch_weight_decay", type=float, default=1e-3)
    p.add_argument("--w01", type=float, default=7.0, help="weight of the zero-one loss (Sec. 5.2.1; 8 in Sec. 5.1)")
    p.add_argument("--w_abl", type=float, default=0.5, help="weight of the ablation loss; 0: the L_F search")
    p.add_argument("--ablation_loss", choices=["constant", "differentiable"], default="constant",
                   help="constant: L_AB added as a number, as the D-DARTS code that produced the paper's tables "
                        "does (no gradient reaches the alphas through it); differentiable: Eq. 6-9 with L_AB a "
                        "function of the alphas (its gradient can climb L_CE, see the README)")
    p.add_argument("--share_alphas", action="store_true",
                   help="one architecture for all normal cells and one for all reduction cells (DARTS / FairDARTS "
                        "super-net, Sec. 3, Fig. 1): with --w_abl 0 --w01 5 the FairDARTS-style search of Fig. 5")
    p.add_argument("--parse", choices=PARSE_METHODS, default="sparse", help="the parsing of genotype.json")
    p.add_argument("--threshold", type=float, default=0.8, help="sigmoid threshold of sparse/edge parsing")
    add_run_args(p, seed=2)
    add_speed_args(p, cuda_graph="the whole search step")
    add_data_args(p, search=True)
    return p


def parse_args(argv=None):
    args = get_parser().parse_args(argv)
    if not 0 < args.threshold <= 1:
        die(f"--threshold {args.threshold}: a sigmoid threshold lies in (0, 1]")
    if args.share_alphas and args.w_abl != 0:
        die("--share_alphas: the ablation loss is a loss per cell's own architecture; add --w_abl 0")
    return args


class Searcher(Checkpointed):
    """The super-net, every cell's optimizer and scheduler, the weights' optimizer (common.search API).

    One search iteration (`step`): every cell takes an Adam step on its own alphas against its own
    total loss L_T^i on a validation batch (Eq. 9), then the weights take an SGD step on L_CE of a
    training batch (first-order alternation, as FairDARTS and the D-DARTS code)."""

    checkpointed = ("net", "w_optimizer", "w_scheduler", "cell_optimizers", "cell_schedulers", "w_scaler", "a_scaler")

    def __init__(self, args, num_classes, device):
        self.args, self.device = args, device
        self.net = SearchNetwork(args.init_channels, num_classes, args.layers,
                                 share_alphas=args.share_alphas).to(device)
        if args.compile and args.w_abl != 0 and args.ablation_loss == "differentiable":
            # this L_AB back-propagates twice through the shared forward (retain_graph), which a
            # compiled backward that hands its saved tensors' memory on (donated buffers) cannot
            torch._functorch.config.donated_buffer = False
        speed_up(self.net, args)
        self.alphas, self.weights = self.net.alphas(), self.net.weights()
        self.w_optimizer = torch.optim.SGD(self.weights, args.learning_rate, momentum=args.momentum,
                                           weight_decay=args.weight_decay, **fused(device))
        self.w_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_optimizer, args.epochs,
                                                                      eta_min=args.learning_rate_min)
        # Sec. 4.1, Fig. 2: every cell has its own optimizer and its own scheduler.
        self.cell_optimizers = [torch.optim.Adam([a], args.arch_learning_rate, betas=(0.9, 0.999),
                                                 weight_decay=args.arch_weight_decay,
                                                 **fused(device, capturable=True))
                                for a in self.alphas]
        self.cell_schedulers = [torch.optim.lr_scheduler.CosineAnnealingLR(o, args.epochs,
                                                                           eta_min=args.arch_learning_rate_min)
                                for o in self.cell_optimizers]
        amp = args.amp and device.type == "cuda"
        self.w_scaler = torch.amp.GradScaler(device.type, enabled=amp)
        self.a_scaler = torch.amp.GradScaler(device.type, enabled=amp)
        self.graph = step_graph(self.iteration, args, device)
        self.start_epoch(0)

    # ------------------------------------------------------------ the architecture step

    def _autocast(self):
        return amp_autocast(self.device, self.args.amp)

    def _ce(self, logits, y):
        return F.cross_entropy(logits.float(), y)

    @torch.no_grad()
    def ablated_losses(self, outputs, y):
        """L_CE(C without C_i) for every cell i (Eq. 6), without gradients. The cells before i compute
        what they computed in the shared forward, so each run restarts at cell i from its stored inputs."""
        with frozen_bn_stats(self.net), self._autocast():
            return torch.stack([self._ce(self.net.forward_from(i, *self.net.cell_inputs(outputs, i), ablated=i), y)
                                for i in range(len(self.alphas))])

    def ablated_losses_and_grads(self, x, y):
        """L_CE(C), L_CE(C without C_j) for every j, and the gradient of sum_j L_CE(C without C_j)
        w.r.t. every alpha, split in two: `h` (through the cells after j) and `G`, the gradient w.r.t.
        the stored cell outputs that run j started from (through the cells before j, to be carried
        back through the shared forward's graph). No graph of the whole network is held here: the
        stored outputs come from a forward without a graph, and one run's graph at a time is kept."""
        net, n, scale = self.net, len(self.alphas), self.a_scaler.scale
        outputs = []
        with torch.no_grad(), frozen_bn_stats(net), self._autocast():
            L = self._ce(net(x, outputs=outputs), y)
        h = [torch.zeros_like(a) for a in self.alphas]
        G = [None] * len(outputs)
        L_minus = []
        for j in range(n):
            starts = {k: outputs[k].detach().requires_grad_(k > 0) for k in (max(j - 1, 0), j)}
            with frozen_bn_stats(net), self._autocast():
                logits = net.forward_from(j, *net.cell_inputs(starts, j), ablated=j)
            L_j = self._ce(logits, y)
            L_minus.append(L_j.detach())
            later = list(range(j + 1, n))
            carried = [k for k in starts if k > 0]  # the stem's output has no alpha behind it
            grads = torch.autograd.grad(scale(L_j), [self.alphas[i] for i in later] + [starts[k] for k in carried])
            for i, g in zip(later, grads):
                h[i] += g
            for k, g in zip(carried, grads[len(later):]):
                G[k] = g if G[k] is None else G[k] + g
        return L, torch.stack(L_minus), h, G

    def arch_gradients(self, x, y):
        """d L_T^i / d alpha_i for every cell i (scaled by the AMP loss scale) and the step's losses."""
        args, net, n, scale = self.args, self.net, len(self.alphas), self.a_scaler.scale
        use_abl = args.w_abl != 0
        differentiable = use_abl and args.ablation_loss == "differentiable"
        net.train()
        if differentiable:  # the ablated runs first, before the shared forward's graph exists (Sec. 5.3)
            L0, L_minus, h, G = self.ablated_losses_and_grads(x, y)
        outputs = []
        with self._autocast():
            logits = net(x, outputs=outputs)  # the one forward whose logits every cell's loss uses (Sec. 4.1)
        L = self._ce(logits, y)
        if use_abl and not differentiable:
            L0, L_minus = L.detach(), self.ablated_losses(outputs, y)
        l01 = torch.stack([zero_one_loss(a) for a in self.alphas])  # Eq. (3), one per cell
        mc, l_ab = ablation_loss(L0, L_minus) if use_abl else (None, torch.zeros_like(l01))  # Eq. (6)-(7)
        # L_CE is shared and L01^j depends on alpha_j alone (and L_AB^j, in the constant form, on no
        # alpha), so one backward of L_CE + w01 * sum_j L01^j gives every cell d L_T^i / d alpha_i.
        g = torch.autograd.grad(scale(L), self.alphas, retain_graph=differentiable)
        z = torch.autograd.grad(scale(args.w01 * l01.sum()), self.alphas)
        grads = [gi + zi for gi, zi in zip(g, z)]
        if differentiable:
            # h_i = sum_j d L_CE(C without C_j) / d alpha_i: the part through the cells before each
            # run's first cell goes back through the shared forward.
            cuts = [k for k in range(1, n) if G[k] is not None]
            h_before = torch.autograd.grad([outputs[k] for k in cuts], self.alphas[:n - 1],
                                           grad_outputs=[G[k] for k in cuts])
            for i, hb in enumerate(h_before):
                h[i] = h[i] + hb
            # d L_AB^i / d alpha_i with d MC_i / d alpha_i = g_i (L_CE(C without C_i) has no alpha_i)
            # and d mean(MC) / d alpha_i = g_i - h_i / n:  g_i (1/m - MC_i/m^2) + h_i MC_i / (n m^2),
            # 0 where mean(MC) = 0 (Eq. 7's second case); m and MC_i stay on the device, the coefficients
            # in float64 (rounded once to the gradients' dtype when they multiply them)
            m = mc.mean().double()
            safe = torch.where(m == 0, 1.0, m)
            for i in range(n):
                mc_i = mc[i].double()
                d_lab = (1 / safe - mc_i / safe ** 2) * g[i] + mc_i / (n * safe ** 2) * h[i]
                grads[i] = grads[i] + args.w_abl * torch.where(m == 0, 0.0, d_lab)  # Eq. (9)
        l_t = total_loss(L.detach(), l01.detach(), l_ab, args.w01, args.w_abl)  # Eq. (9), per cell
        return grads, dict(L=L.detach(), l01=l01.detach(), mc=mc, l_ab=l_ab, l_t=l_t)

    def arch_step(self, x, y):
        grads, losses = self.arch_gradients(x, y)
        for a, g, opt in zip(self.alphas, grads, self.cell_optimizers):
            a.grad = g
            self.a_scaler.step(opt)  # each cell's optimizer moves its own alphas only
            opt.zero_grad(set_to_none=True)
        self.a_scaler.update()
        return losses

    # ------------------------------------------------------------ the weight step

    def weight_step(self, x, y):
        self.net.train()
        with self._autocast():
            logits = self.net(x)
        loss = self._ce(logits, y)
        self.w_optimizer.zero_grad(set_to_none=True)
        self.w_scaler.scale(loss).backward(inputs=self.weights)
        self.w_scaler.unscale_(self.w_optimizer)
        nn.utils.clip_grad_norm_(self.weights, self.args.grad_clip)
        self.w_scaler.step(self.w_optimizer)
        self.w_scaler.update()
        return loss.detach(), logits.detach()

    # ------------------------------------------------------------ common.search interface

    def start_epoch(self, epoch):
        self.epoch = epoch
        self.epoch_sums = {"mc": 0.0, "l_ab": 0.0, "l_t": 0.0}
        self.epoch_steps = 0

    def step(self, train_batch, valid_batch):
        x_v, y_v = (t.to(self.device, non_blocking=True) for t in valid_batch)
        x_t, y_t = (t.to(self.device, non_blocking=True) for t in train_batch)
        t = self.graph(self.epoch, x_v, y_v, x_t, y_t) if self.graph else self.iteration(x_v, y_v, x_t, y_t)
        for k in self.epoch_sums:
            if k in t:
                self.epoch_sums[k] = self.epoch_sums[k] + t[k].double().cpu()
        self.epoch_steps += 1
        return {"arch_ce": t["L"].item(), "zero_one": t["l01"].mean().item(), "train_loss": t["train_loss"].item(),
                "train_top1": accuracy(t["logits"].float(), y_t)[0]}

    def iteration(self, x_v, y_v, x_t, y_t):
        """The architecture step, then the weight step, on tensors and without a host synchronisation
        (a CUDA graph can hold it, `common.search.StepGraph`: the recorded step depends on the epoch's
        learning rates only)."""
        losses = self.arch_step(x_v, y_v)
        train_loss, logits = self.weight_step(x_t, y_t)
        return {**{k: v for k, v in losses.items() if v is not None}, "train_loss": train_loss, "logits": logits}

    def end_epoch(self, epoch, valid_queue):
        valid_loss, valid_top1, _ = evaluate(self.net, valid_queue, self.device, self.args.amp)
        record = {"valid_loss": valid_loss, "valid_top1": valid_top1,
                  "lr": self.w_optimizer.param_groups[0]["lr"],
                  "arch_lr": self.cell_optimizers[0].param_groups[0]["lr"]}
        steps = max(self.epoch_steps, 1)
        for k, v in self.epoch_sums.items():  # per-cell means over the epoch's steps
            if torch.is_tensor(v) and (k == "l_t" or self.args.w_abl != 0):
                record[k] = [round(x / steps, 6) for x in v.tolist()]
        weights = self.sigmoid_weights()
        record["sigmoid_alpha"] = [[[round(x, 5) for x in row] for row in w] for w in weights]
        record["ops_above_0.9_pct"], record["ops_below_0.1_pct"] = dominant_shares(weights)  # Fig. 4
        self.w_scheduler.step()
        for s in self.cell_schedulers:
            s.step()
        return record

    def sigmoid_weights(self):
        return [torch.sigmoid(a.detach()).cpu().tolist() for a in self.alphas]

    def genotype(self, method=None):
        return parse_genotype(self.sigmoid_weights(), self.net.reductions, method or self.args.parse,
                              self.args.threshold, self.args.share_alphas)

    def finish(self, save):
        """Every parsing as genotype_<parsing>.json, and in summary.json the cells left without op."""
        a = self.args
        return write_parsings(save, self.sigmoid_weights(), self.net.reductions, a.threshold, a.share_alphas, save,
                              dataset=a.dataset, seed=a.seed, **search_meta(a))


def search_meta(args):
    """What a genotype of this search carries beside it."""
    return dict(w01=args.w01, w_abl=args.w_abl, ablation_loss=args.ablation_loss, share_alphas=args.share_alphas)


def main(argv=None):
    args = parse_args(argv)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        die("the D-DARTS search runs in one process (the paper searched on one GPU); "
            "train.py runs under torchrun")
    device = get_device(args.device)
    check_run(args, "search-d_darts")  # every input is checked before the run folder is touched
    set_seed(args.seed, args.deterministic)
    train_queue, valid_queue, num_classes = search_loaders(args)
    searcher = Searcher(args, num_classes, device)
    save = setup_run(args, "search-d_darts")
    log.info("super-net %.3fM parameters, %d cells, %s, loss %s", count_params(searcher.net), args.layers,
             "shared architectures (normal, reduce)" if args.share_alphas else "one architecture per cell",
             "L_F" if args.w_abl == 0 else f"L_T ({args.ablation_loss} L_AB)")
    search_loop(args, searcher, train_queue, valid_queue, save, device, method="d_darts", **search_meta(args))
    return searcher


if __name__ == "__main__":
    main()
