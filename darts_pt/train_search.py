"""Super-net training for DARTS-PT: the DARTS search (Sec. 2, Eq. 1; Liu et al., 2019), its SDARTS
variants (App. A.1.2; Chen & Hsieh, 2020), the fixed-alpha "blank" super-net (Sec. 6), and SGAS
(App. A.1.3; Li et al., 2020), whose search discretizes one edge at a time, here with the ops chosen
by perturbation (SGAS+PT, Table 2).

The perturbation-based selection (Sec. 4) of the other super-nets runs afterwards on the finished
run folder, or on a snapshot kept with --save_epochs: `python darts_pt/projection.py --search_dir RUN`.

Usage: python darts_pt/train_search.py [--method darts|sdarts-rs|sdarts-adv|blank|sgas] [--unrolled]
       [--search_space darts|s1|s2|s3|s4|nb201] [--dataset cifar10 --data DIR] [--save_epochs E ...]
       [--save RUN] [--resume]
"""
import argparse
import inspect
import json
import math
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from common.data import add_data_args, search_loaders
from common.operations import get_space
from common.search import Checkpointed, search_loop, step_graph
from common.train_eval import evaluate
from common.utils import (accuracy, add_run_args, add_speed_args, amp_autocast, average_gradients, broadcast_params,
                          check_run, count_params, die, fused, get_device, init_distributed, is_main, log,
                          save_checkpoint, set_seed, setup_run, speed_up, world_size)
from darts_pt.model_search import DartsSuperNet, NB201SuperNet
from darts_pt.selection import argmax, decide_op

METHODS = ("darts", "sdarts-rs", "sdarts-adv", "blank", "sgas")
# --search_space -> the table in common/operations.py. The paper's DARTS space is DARTS' 7 ops
# without `none` (App. A.1.1), which common calls `darts_no_none`; SGAS' super-net keeps `none`,
# which its edge importance is made of.
SPACES = {"darts": "darts_no_none", "s1": "s1", "s2": "s2", "s3": "s3", "s4": "s4", "nb201": "nb201"}
EPSILON_START = 0.03  # SDARTS: epsilon grows linearly from 0.03 to --epsilon_alpha over the epochs
PGD_STEPS = 7  # SDARTS-ADV: steps of the PGD attack on the softmaxed alpha
# SGAS (its code): SGAS_ROUNDS decisions (one edge per cell type each: 2 inputs x 4 nodes), then
# SGAS_POST_TRAIN more epochs; flag defaults of --warmup_dec_epoch, --decision_freq, --batch_increase.
SGAS_ROUNDS, SGAS_POST_TRAIN = 8, 5
SGAS_DEFAULTS = {"warmup_dec_epoch": 9, "decision_freq": 5, "batch_increase": 8, "selection": "pt"}
NB201_FILE = "NAS-Bench-201-v1_0-e61699.pth"


def add_nb201_arg(p):
    p.add_argument("--nb201_benchmark", default=None,
                   help=f"the NAS-Bench-201 benchmark file, read when it and the nas-bench-201 package are "
                        f"installed (default: --data/{NB201_FILE})")


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--method", choices=METHODS, default="darts",
                   help="darts: alpha by first-order DARTS; sdarts-rs / sdarts-adv: SDARTS random / adversarial "
                        "smoothing of alpha in the weight step; blank: alpha fixed at 0 (DARTS+PT fix alpha); "
                        "sgas: SGAS' search, discretizing one edge at a time (SGAS+PT)")
    p.add_argument("--unrolled", action="store_true", help="second-order DARTS update of alpha")
    p.add_argument("--search_space", choices=SPACES, default="darts")
    p.add_argument("--epochs", type=int, default=None,
                   help="default: 50; 100 on nb201; sgas: warmup_dec_epoch + 7 decision_freq + 6 (50)")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--learning_rate", type=float, default=0.025)
    p.add_argument("--learning_rate_min", type=float, default=0.001)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight_decay", type=float, default=3e-4)
    p.add_argument("--grad_clip", type=float, default=5.0)
    p.add_argument("--arch_learning_rate", type=float, default=3e-4)
    p.add_argument("--arch_weight_decay", type=float, default=1e-3)
    p.add_argument("--init_channels", type=int, default=16)
    p.add_argument("--layers", type=int, default=8, help="cells of the DARTS super-net")
    p.add_argument("--nb201_cells", type=int, default=5, help="cells per stage of the NAS-Bench-201 skeleton (N)")
    p.add_argument("--epsilon_alpha", type=float, default=0.3, help="SDARTS: largest perturbation of softmax(alpha)")
    p.add_argument("--save_epochs", type=int, nargs="+", default=[], metavar="E",
                   help="also keep the super-net after these epochs (checkpoint_epoch<E>.pt), for projection.py "
                        "--from_epoch E (Fig. 4, 8)")
    g = p.add_argument_group("SGAS (--method sgas only; defaults: SGAS' code)")
    g.add_argument("--warmup_dec_epoch", type=int, default=None, help="the first decision ends this epoch (9)")
    g.add_argument("--decision_freq", type=int, default=None, help="epochs between two decisions (5)")
    g.add_argument("--batch_increase", type=int, default=None, help="batch size added after each decision (8)")
    g.add_argument("--selection", choices=["pt", "mag"], default=None,
                   help="the op of a decided edge: pt, by perturbation (SGAS+PT, default); mag, SGAS' arg-max alpha")
    add_nb201_arg(p)
    add_run_args(p, seed=2)
    add_speed_args(p, cuda_graph="the whole search step")
    add_data_args(p, search=True)
    return p


def parse_args(argv=None):
    args = get_parser().parse_args(argv)
    if args.method == "blank" and args.unrolled:
        die("--unrolled updates alpha, but --method blank keeps alpha fixed")
    given = [f"--{k}" for k in SGAS_DEFAULTS if getattr(args, k) is not None]
    if args.method != "sgas" and given:
        die(f"{', '.join(given)} only apply to --method sgas; the other super-nets are selected afterwards "
            "by projection.py (--selection there)")
    if args.method == "sgas":
        if args.search_space != "darts":
            die("--method sgas runs on --search_space darts only: its edge importance is the weight of the ops "
                "other than `none`")
        for k, v in SGAS_DEFAULTS.items():
            setattr(args, k, v if getattr(args, k) is None else getattr(args, k))
        last = args.warmup_dec_epoch + (SGAS_ROUNDS - 1) * args.decision_freq  # the epoch of the last decision
        if args.epochs is None:
            args.epochs = last + 1 + SGAS_POST_TRAIN
        if args.warmup_dec_epoch < 0 or args.decision_freq < 1 or args.epochs <= last:
            die(f"--method sgas decides at the ends of epochs {args.warmup_dec_epoch + 1}, "
                f"{args.warmup_dec_epoch + 1 + args.decision_freq}, ... ({SGAS_ROUNDS} decisions): it needs "
                f"--warmup_dec_epoch >= 0, --decision_freq >= 1 and --epochs >= {last + 1}")
    if args.epochs is None:
        args.epochs = 100 if args.search_space == "nb201" else 50
    bad = [e for e in args.save_epochs if not 1 <= e <= args.epochs]
    if bad:
        die(f"--save_epochs {bad[0]}: the super-net exists after epochs 1..{args.epochs} only")
    return args


def build_supernet(args, num_classes):
    space = get_space("darts" if args.method == "sgas" else SPACES[args.search_space])
    if space.nb201:
        return NB201SuperNet(space, args.init_channels, num_classes, N=args.nb201_cells)
    return DartsSuperNet(space, args.init_channels, num_classes, args.layers)


def nb201_lookup(path):
    """A function from an NAS-Bench-201 arch string to its 200-epoch test accuracies (%) on CIFAR-10,
    CIFAR-100 and ImageNet16-120 (Sec. 5.2), or None, with one log line, when the benchmark's API
    or file is not installed. Reading the file takes minutes: open it once."""
    try:
        from nas_201_api import NASBench201API
    except ImportError:
        log.info("NAS-Bench-201 API not installed (pip install nas-bench-201): benchmark accuracy skipped")
        return None
    path = Path(path).expanduser()
    if not path.is_file():
        log.info("NAS-Bench-201 benchmark file %s not found: benchmark accuracy skipped", path)
        return None
    api = NASBench201API(str(path), verbose=False)
    hp = {"hp": "200"} if "hp" in inspect.signature(api.get_more_info).parameters else {}

    def accuracy(arch):
        index = api.query_index_by_arch(arch)
        return {ds: api.get_more_info(index, ds, is_random=False, **hp)["test-accuracy"]
                for ds in ("cifar10", "cifar100", "ImageNet16-120")}
    return accuracy


def clip_simplex(theta):
    """SDARTS: each row back to a probability vector: clamp to [0, 1], then renormalise (a row
    that clamps to all zeros becomes one-hot at its largest entry)."""
    top = F.one_hot(theta.argmax(-1), theta.shape[-1]).to(theta.dtype)
    theta = theta.clamp(0, 1)
    theta = torch.where(theta.sum(-1, keepdim=True) > 0, theta, top)
    return theta / theta.sum(-1, keepdim=True)


class Searcher(Checkpointed):
    """One DARTS-PT super-net and its optimizers, with the `common.search` interface.

    `step` is one search iteration in DARTS' order: the architecture step on a validation batch
    (Eq. 1, outer problem; first or second order; none for `blank`), then the weight step on a
    training batch (inner problem), with softmax(alpha) perturbed by SDARTS when asked.
    """
    checkpointed = ("model", "w_opt", "a_opt", "scheduler", "scaler", "epsilon")  # a_opt, scheduler: None at times

    def __init__(self, args, num_classes, device, benchmark=None):
        self.args, self.device = args, device
        self.benchmark = benchmark  # NAS-Bench-201 lookup (`nb201_lookup`), or None
        self.model = build_supernet(args, num_classes).to(device)
        if args.method == "blank":  # Sec. 6: alpha = 0, uniform weights for all ops, never trained
            for a in self.model.arch_parameters():
                a.data.zero_()
                a.requires_grad_(False)
        broadcast_params(list(self.model.parameters()))
        speed_up(self.model, args)
        self.alphas, self.w_params = self.model.arch_parameters(), self.model.weight_parameters()
        self.criterion = nn.CrossEntropyLoss()
        self.w_opt = torch.optim.SGD(self.w_params, args.learning_rate, momentum=args.momentum,
                                     weight_decay=args.weight_decay, **fused(device))
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.w_opt, args.epochs, args.learning_rate_min)
        self.a_opt = None if args.method == "blank" else torch.optim.Adam(
            self.alphas, args.arch_learning_rate, betas=(0.5, 0.999), weight_decay=args.arch_weight_decay,
            **fused(device, capturable=True))
        self.scaler = torch.amp.GradScaler(device.type, enabled=args.amp and device.type == "cuda")
        self.epsilon = EPSILON_START if args.method.startswith("sdarts") else 0.0
        self.tuning, self.epoch = False, None
        self.graph = step_graph(self.iteration, args, device)

    # ---------------------------------------------------------------- schedules

    def start_epoch(self, epoch):
        self.epoch = epoch
        self.model.train()
        if self.args.method.startswith("sdarts") and not self.tuning:
            self.epsilon = EPSILON_START + (self.args.epsilon_alpha - EPSILON_START) * epoch / self.args.epochs

    def start_tuning(self, lr):
        """Sec. 4.2: tuning between two decisions: a fresh SGD at the constant rate `lr` for the weights;
        alpha keeps its optimizer; SDARTS perturbs with its largest epsilon."""
        self.w_opt = torch.optim.SGD(self.w_params, lr, momentum=self.args.momentum,
                                     weight_decay=self.args.weight_decay, **fused(self.device))
        self.scheduler = None
        self.tuning = True
        if self.args.method.startswith("sdarts"):
            self.epsilon = self.args.epsilon_alpha

    # ---------------------------------------------------------------- one iteration

    def step(self, train_batch, valid_batch):
        x, y = (t.to(self.device, non_blocking=True) for t in train_batch)
        xv, yv = (t.to(self.device, non_blocking=True) for t in valid_batch)
        t = self.graph(self.graph_key(), x, y, xv, yv) if self.graph else self.iteration(x, y, xv, yv)
        out = {"arch_loss": t["arch_loss"].item()} if "arch_loss" in t else {}
        return {**out, "train_loss": t["train_loss"].item(), "train_top1": accuracy(t["logits"], y)[0]}

    def iteration(self, x, y, xv, yv):
        """One search iteration on tensors, without a host synchronisation (a CUDA graph can hold
        it, `common.search.StepGraph`); returns the losses and the training logits."""
        out = {}
        if self.a_opt is not None:
            self.a_opt.zero_grad(set_to_none=True)
            if self.args.unrolled:
                arch_loss = self.unrolled_alpha_grad(x, y, xv, yv)
            else:  # Eq. (1), outer problem, first order: grad_alpha L_val(w, alpha)
                with amp_autocast(self.device, self.args.amp):
                    arch_loss = self.criterion(self.model(xv), yv)
                self.scaler.scale(arch_loss).backward(inputs=self.alphas)
            average_gradients(self.alphas)
            self.alpha_step(scaled=not self.args.unrolled)
            out["arch_loss"] = arch_loss.detach()

        with torch.no_grad():
            weights = self.model.arch_weights()
        if self.args.method == "sdarts-rs":
            weights = self.random_smoothing(weights)
        elif self.args.method == "sdarts-adv":
            weights = self.adversarial_weights(weights, x, y)
        with amp_autocast(self.device, self.args.amp):
            logits = self.model(x, weights)
            loss = self.criterion(logits, y)  # Eq. (1), inner problem: L_train(w, alpha)
        self.w_opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        average_gradients(self.w_params)
        self.scaler.unscale_(self.w_opt)
        nn.utils.clip_grad_norm_(self.w_params, self.args.grad_clip)
        self.scaler.step(self.w_opt)
        self.scaler.update()
        return {**out, "train_loss": loss.detach(), "logits": logits.detach()}

    def graph_key(self):
        """What the recorded step depends on besides the batches: the epoch (its learning rate and
        epsilon), the tuning (a new optimizer of the weights), the decided and removed edges."""
        return self.epoch, self.tuning, json.dumps(self.model.get_extra_state())

    def alpha_step(self, scaled):
        """Adam's step of alpha. The rows of decided and removed edges keep their values (SGAS freezes
        them, and its edge scores are normalised over every edge; the PT selection never reads them):
        without this, Adam's weight decay and momentum would still move them."""
        fixed = {ct: self.model.fixed_rows(ct) for ct in self.model.cell_types}
        before = [a.detach().clone() if fixed[ct] is not None else None for ct, a in zip(fixed, self.alphas)]
        if scaled:
            self.scaler.step(self.a_opt)
        else:  # the unrolled gradient is computed in full precision, unscaled
            self.a_opt.step()
        with torch.no_grad():
            for (ct, rows), a, b in zip(fixed.items(), self.alphas, before):
                if rows is not None:
                    a.copy_(torch.where(rows, b, a))

    def unrolled_alpha_grad(self, x, y, xv, yv):
        """Second-order DARTS (Liu et al., 2019, Sec. 2.3): set alpha.grad to
        grad_alpha L_val(w', alpha) - xi * grad2_{alpha,w} L_train(w, alpha) grad_w' L_val(w', alpha),
        w' = w - xi (momentum buffer + grad_w L_train(w, alpha) + wd w), the Hessian-vector product by
        finite differences at w +- eps grad_w' L_val, eps = 0.01 / ||grad_w' L_val||. Full precision."""
        names = [n for n, p in self.model.named_parameters() if not n.startswith("alphas.")]
        w = self.w_params
        xi, mu, wd = self.w_opt.param_groups[0]["lr"], self.args.momentum, self.args.weight_decay

        def loss_at(params, xb, yb):
            return self.criterion(functional_call(self.model, dict(zip(names, params)), (xb,)), yb)

        # materialize_grads: the unchosen ops of a decided edge are not run, so their weights get zeros
        g_train = torch.autograd.grad(self.criterion(self.model(x), y), w, materialize_grads=True)
        with torch.no_grad():
            buffers = [self.w_opt.state[p].get("momentum_buffer") for p in w]
            w_prime = [p - xi * ((0 if m is None else mu * m) + g + wd * p)
                       for p, m, g in zip(w, buffers, g_train)]  # the unrolled weights w'
        w_prime = [p.requires_grad_() for p in w_prime]
        val_loss = loss_at(w_prime, xv, yv)
        grads = torch.autograd.grad(val_loss, self.alphas + w_prime, materialize_grads=True)
        d_alpha, d_w = grads[:len(self.alphas)], grads[len(self.alphas):]
        eps = 0.01 / torch.cat([g.flatten() for g in d_w]).norm()
        with torch.no_grad():
            w_plus = [p + eps * v for p, v in zip(w, d_w)]
            w_minus = [p - eps * v for p, v in zip(w, d_w)]
        g_plus = torch.autograd.grad(loss_at(w_plus, x, y), self.alphas, materialize_grads=True)
        g_minus = torch.autograd.grad(loss_at(w_minus, x, y), self.alphas, materialize_grads=True)
        for a, da, gp, gm in zip(self.alphas, d_alpha, g_plus, g_minus):
            a.grad = da - xi * (gp - gm) / (2 * eps)  # chain rule, Hessian-vector product by central differences
        return val_loss.detach()

    # ---------------------------------------------------------------- SDARTS (Chen & Hsieh, 2020)

    def random_smoothing(self, weights):
        """SDARTS-RS: softmax(alpha) + U(-epsilon, epsilon), back on the simplex."""
        return {ct: self.model.project(ct, clip_simplex(w + torch.empty_like(w).uniform_(-self.epsilon, self.epsilon)))
                for ct, w in weights.items()}

    def adversarial_weights(self, weights, x, y):
        """SDARTS-ADV: the perturbation of softmax(alpha) within the epsilon L-inf ball that maximises
        the training loss, by PGD (7 signed steps of 2 epsilon / 7 from a random start, each projected
        to the ball and the simplex). As the SDARTS code: computed in eval mode (BN statistics are
        left alone) and dropped when it does not raise the loss."""
        eps = self.epsilon
        self.model.eval()
        with torch.no_grad(), amp_autocast(self.device, self.args.amp):
            loss_clean = self.criterion(self.model(x, weights), y)

        def to_ball(ct, theta):
            return self.model.project(ct, clip_simplex(weights[ct] + (theta - weights[ct]).clamp(-eps, eps)))

        theta = {ct: to_ball(ct, w + torch.empty_like(w).uniform_(-eps, eps)) for ct, w in weights.items()}
        for _ in range(PGD_STEPS):
            theta = {ct: t.detach().requires_grad_() for ct, t in theta.items()}
            with amp_autocast(self.device, self.args.amp):
                loss = self.criterion(self.model(x, theta), y)
            grads = torch.autograd.grad(loss, list(theta.values()))
            with torch.no_grad():
                theta = {ct: to_ball(ct, t + 2 * eps / PGD_STEPS * g.sign()) for (ct, t), g in zip(theta.items(), grads)}
        with torch.no_grad(), amp_autocast(self.device, self.args.amp):
            keep = self.criterion(self.model(x, theta), y) >= loss_clean
        self.model.train()
        return {ct: torch.where(keep, theta[ct], weights[ct]) for ct in weights}

    # ---------------------------------------------------------------- epoch end, state, result

    def end_epoch(self, epoch, valid_queue):
        record = self.epoch_record(valid_queue)
        self.keep_snapshot(epoch)
        return record

    def epoch_record(self, valid_queue):
        """The schedule's step and what an epoch records: validation, alpha, Fig. 3's skip-conv gap
        (S2), NAS-Bench-201's accuracy of the magnitude-selected cell (Fig. 4, 8: the DARTS curve)."""
        lr = self.w_opt.param_groups[0]["lr"]
        self.scheduler.step()
        valid_loss, valid_top1, _ = evaluate(self.model, valid_queue, self.device, self.args.amp)
        record = {"lr": lr, "valid_loss": valid_loss, "valid_top1": valid_top1}
        if self.args.method.startswith("sdarts"):
            record["epsilon"] = self.epsilon
        with torch.no_grad():
            record["alphas"] = {ct: F.softmax(a, -1).cpu().tolist() for ct, a in self.model.alphas.items()}
            gap = skip_minus_conv(self.model)
        if gap is not None:
            record["mean_skip_minus_conv"] = gap
            # Fig. 3's y: the mean over every edge (both cell types have the same edges)
            record["mean_skip_minus_conv_all"] = sum(gap.values()) / len(gap)
        if self.benchmark is not None:
            record["nb201_test_accuracy"] = self.benchmark(str(self.model.genotype()))
        return record

    def keep_snapshot(self, epoch):
        """The super-net after the epochs of --save_epochs, for projection.py --from_epoch (Fig. 4, 8)."""
        if epoch + 1 in self.args.save_epochs:
            save_checkpoint(Path(self.args.save) / f"checkpoint_epoch{epoch + 1}.pt",
                            {"searcher": self.state_dict(), "epoch": epoch + 1})

    def genotype(self):
        return self.model.genotype()


def skip_minus_conv(model):
    """Fig. 3 (Sec. 3.2): per cell type, the mean over the edges of softmax(alpha)_skip -
    softmax(alpha)_conv, on a space whose every edge holds skip_connect and one other op (S2);
    None on other spaces."""
    gap = {}
    for ct, a in model.alphas.items():
        ops = model.edge_ops[ct]
        if not all(len(o) == 2 and "skip_connect" in o for o in ops):
            return None
        w = F.softmax(a, -1)
        w_skip = w[torch.arange(len(ops)), [o.index("skip_connect") for o in ops]]
        gap[ct] = (w_skip - (1 - w_skip)).mean().item()  # the conv weight is 1 - w_skip
    return gap


# ---------------------------------------------------------------- SGAS (Li et al., 2020)

def minmax(v):
    """SGAS' normalisation of a score over the edges of a cell to [0, 1] (zeros when all are equal)."""
    span = v.max() - v.min()
    return (v - v.min()) / span if span > 0 else torch.zeros_like(v)


def sgas_scores(alpha, ops):
    """SGAS' Criterion 1, one score per edge (App. A.1.3 "edge importance score"): the normalised edge
    importance (the softmax weight of the ops other than `none`) times the normalised selection
    certainty (1 - the entropy of those ops' renormalised weights, divided by its maximum)."""
    w = F.softmax(alpha, -1)[:, [o for o, name in enumerate(ops) if name != "none"]]
    importance = w.sum(-1)
    p = w / importance[:, None]
    entropy = -(p * p.log()).sum(-1) / math.log(p.shape[1])
    return minmax(importance) * minmax(1 - entropy)


class SgasSearcher(Searcher):
    """SGAS' search (App. A.1.3) with the ops chosen by perturbation: SGAS+PT (Sec. 5.1, Table 2).

    DARTS' search on the space with `none`; at the end of epoch --warmup_dec_epoch and then every
    --decision_freq epochs, in each cell type, the undecided edge with the highest Criterion-1 score
    is discretized to the op --selection picks (pt: the op whose removal hurts the super-net's
    validation accuracy most, Sec. 4.1; mag: SGAS' arg-max alpha); a node with two decided inputs
    loses its other input edges; the batch grows by --batch_increase after every decision. SGAS'
    edge order is kept, only the op choice is PT's (Sec. 5.1). After 8 decisions the super-net is
    the architecture.
    """

    def __init__(self, args, num_classes, device, queues):
        super().__init__(args, num_classes, device)
        self.queues = queues  # the search loaders, whose batch grows

    def candidates(self, ct):
        return [e for e in range(self.model.num_edges)
                if self.model.decided[ct][e] is None and not self.model.removed[ct][e]]

    def start_epoch(self, epoch):
        super().start_epoch(epoch)
        decisions = sum(o is not None for o in self.model.decided["normal"])
        batch = self.args.batch_size + self.args.batch_increase * decisions
        for queue in self.queues:
            queue.batch_sampler.batch_size = max(1, batch // world_size())

    def end_epoch(self, epoch, valid_queue):
        record = self.epoch_record(valid_queue)
        since = epoch - self.args.warmup_dec_epoch
        if since >= 0 and since % self.args.decision_freq == 0 and self.candidates("normal"):
            record["decisions"] = [self.decide(ct, valid_queue) for ct in self.model.cell_types]
        self.keep_snapshot(epoch)
        return record

    def decide(self, ct, valid_queue):
        model = self.model
        with torch.no_grad():
            scores = sgas_scores(model.alphas[ct], model.edge_ops[ct][0]).tolist()
        edge = argmax(scores, self.candidates(ct))  # SGAS: the most important undecided edge
        record = decide_op(model, ct, edge, valid_queue, self.args.selection, amp=self.args.amp)
        inputs = model.node_edges(model.edges[edge][0])
        pruned = []
        if sum(model.decided[ct][e] is not None for e in inputs) == 2:  # the node has its two inputs
            for e in inputs:
                if model.decided[ct][e] is None and not model.removed[ct][e]:
                    model.remove_edge(ct, e)
                    pruned.append(f"{model.edges[e][0]}<-{model.edges[e][1]}")
        return {**record, "edge_scores": scores, "pruned": pruned}


def main(argv=None):
    args = parse_args(argv)
    init_distributed(args.device)
    device = get_device(args.device)
    check_run(args, "search")  # every input is checked before the run folder is touched
    set_seed(args.seed, args.deterministic)
    train_queue, valid_queue, num_classes = search_loaders(args)
    if args.method == "sgas":
        searcher = SgasSearcher(args, num_classes, device, (train_queue, valid_queue))
    else:
        nb201 = args.search_space == "nb201" and is_main()
        benchmark = nb201_lookup(args.nb201_benchmark or Path(args.data) / NB201_FILE) if nb201 else None
        searcher = Searcher(args, num_classes, device, benchmark)
    save = setup_run(args, "search")
    log.info("super-net: %s space, %.3fM weights", args.search_space, count_params(searcher.model))
    method = f"darts_pt/{args.method}" + (f"+{args.selection}" if args.method == "sgas" else "")
    return search_loop(args, searcher, train_queue, valid_queue, save, device, method=method,
                       search_space=args.search_space, unrolled=args.unrolled)


if __name__ == "__main__":
    main(sys.argv[1:])
