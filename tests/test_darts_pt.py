"""DARTS-PT: the super-nets, the DARTS / SDARTS / blank / SGAS updates, the selection rules of Sec. 4,
and the published cells."""
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call
from torch.utils.data import TensorDataset

from common.data import make_loader
from common.genotypes import load, parse_darts_text, published
from common.operations import Noise, SearchSpace, get_space
from common.search import frozen_bn_stats
from darts_pt import projection, selection, train
from darts_pt.model_search import MixedOp, SuperNet
from darts_pt.train_search import (Searcher, SgasSearcher, build_supernet, clip_simplex, parse_args, sgas_scores,
                                   skip_minus_conv)

CPU = torch.device("cpu")


def _searcher(*flags, seed=0):
    torch.manual_seed(seed)
    args = parse_args(["--layers", "3", "--init_channels", "4", "--device", "cpu", *flags])
    return Searcher(args, 10, CPU)


def _batch(n=4, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(10, (n,), generator=g)


def _loader(x, y, batch_size=8):
    return make_loader(TensorDataset(x, y), batch_size, train=False, workers=0)


# ---------------------------------------------------------------- super-nets and spaces

@pytest.mark.parametrize("space", ["darts", "s1", "s2", "s3", "s4", "nb201"])
def test_spaces_build_and_run(space):
    args = parse_args(["--search_space", space, "--layers", "3", "--init_channels", "4", "--nb201_cells", "1"])
    torch.manual_seed(0)
    net = build_supernet(args, 10)
    assert net(_batch(2)[0]).shape == (2, 10)
    table = get_space({"darts": "darts_no_none"}.get(space, space))
    for ct in net.cell_types:
        assert net.alphas[ct].shape == (net.num_edges, len(table.ops(False, 0)))
        assert net.alphas[ct].abs().max() < 0.01  # alpha initialised 1e-3 * randn
        for e in range(net.num_edges):
            assert tuple(net.edge_ops[ct][e]) == table.ops(ct == "reduce", e)
    if space == "darts":  # the paper's DARTS space: the 7 ops without `none` (App. A.1.1)
        assert len(net.edge_ops["normal"][0]) == 7 and "none" not in net.edge_ops["normal"][0]
    if space == "s1":  # a different pair of ops on each edge, and the reduce cell has its own
        assert net.edge_ops["normal"][0] != net.edge_ops["normal"][1] != net.edge_ops["reduce"][1]
    if space == "nb201":  # 3 stages of N cells, 6 edges of 5 ops, one cell type
        assert net.num_edges == 6 and net.cell_types == ("cell",) and net.edges[-1] == (3, 2)
    else:
        assert net.num_edges == 14 and net.edges[2] == (3, 0)
    bn = [m for n, m in net.named_modules() if isinstance(m, torch.nn.BatchNorm2d) and n.startswith("cells")
          and ".edges." in n]
    assert bn and not any(m.affine for m in bn)  # search ops: affine-free BN
    names = [n for n, _ in net.named_parameters()]
    assert {n for n in names if n.startswith("alphas.")} == {f"alphas.{ct}" for ct in net.cell_types}


def test_noise_op_ignores_its_input():
    net = build_supernet(parse_args(["--search_space", "s4", "--layers", "3", "--init_channels", "4"]), 10)
    noise = [op for m in net.modules() if isinstance(m, MixedOp) for op in m.ops if isinstance(op, Noise)]
    assert len(noise) == 3 * 14  # one on every edge of every cell
    x = torch.randn(2, 4, 8, 8)
    torch.manual_seed(1)
    a = noise[0](x)
    torch.manual_seed(1)
    b = noise[0](100 * x + 7)
    assert torch.equal(a, b) and a.shape == x.shape and abs(a.std().item() - 1) < 0.3


AUTHORS_FILE = Path(__file__).parent / "data" / "darts_pt_genotypes.txt"
DATASET_NAME = {None: "CIFAR10", "c100": "CIFAR100", "svhn": "SVHN"}


def test_published_cells_are_the_authors():
    """Every cell of the authors' genotypes file is built in, equal to theirs, under the README's name:
    DARTS_PT[_FIX_ALPHA]_<seed> on the DARTS space (their s5), DARTS_PT[_FIX_ALPHA]_S<k>_<DATASET>_<i>
    on S1-S4. DARTS_PT is the paper's best cell (2.48%, 3.3M): seed 3, 3.33M in their file."""
    built, params = set(), {}
    for line in AUTHORS_FILE.read_text().splitlines():
        if line.startswith("#"):
            continue
        m = re.fullmatch(r"(darts|blank)_pt_s(\d)_(?:(c100|svhn)_)?(\d) = (Genotype\(.*?range\(2, 6\)\)) # (.*)", line)
        method, space, dataset, i, text, comment = m.groups()
        prefix = "DARTS_PT" if method == "darts" else "DARTS_PT_FIX_ALPHA"
        name = f"{prefix}_{i}" if space == "5" else f"{prefix}_S{space}_{DATASET_NAME[dataset]}_{i}"
        assert load(name) == parse_darts_text(text), name
        built.add(name)
        params[name] = float(comment.split()[0])
    assert len(built) == 8 + 2 * 2 * 4 * 3  # DARTS space: 2 x 4 seeds; S1-S4: 2 methods x 2 cells x 3 datasets
    assert {n for n in published() if n.startswith("DARTS_PT")} == built | {"DARTS_PT"}
    assert load("DARTS_PT") == load("DARTS_PT_3")
    assert [s for s in range(4) if round(params[f"DARTS_PT_{s}"], 1) == 3.3] == [3]  # Table 2's best: 3.3M


@pytest.mark.parametrize("flags, message", [
    (["--warmup_dec_epoch", "3"], "only apply to --method sgas"),
    (["--selection", "pt"], "only apply to --method sgas"),
    (["--method", "sgas", "--search_space", "s2"], "--search_space darts only"),
    (["--method", "sgas", "--epochs", "40"], "--epochs >= 45"),
    (["--save_epochs", "10", "51"], "--save_epochs 51"),
])
def test_search_flags_that_cannot_work_end_in_one_line(flags, message, capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(flags)
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and err.count("\n") == 1


def test_nb201_cells_train_with_nb201_protocol(monkeypatch):
    """Table 4 without the benchmark file: NAS-Bench-201's own training (Dong & Yang, 2020); DARTS' for
    a DARTS cell (Sec. 5.1)."""
    monkeypatch.setattr(train.train_eval, "main", lambda args, evaluated_by=None: args)
    nb = train.main(["--arch", "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|none~0|nor_conv_1x1~1|avg_pool_3x3~2|"])
    assert (nb.epochs, nb.batch_size, nb.learning_rate, nb.learning_rate_min, nb.lr_scheduler, nb.momentum,
            nb.nesterov, nb.weight_decay, nb.init_channels) == (200, 256, 0.1, 0.0, "cosine", 0.9, True, 5e-4, 16)
    assert not (nb.auxiliary or nb.cutout or nb.drop_path_prob or nb.grad_clip or nb.label_smooth)
    darts = train.main(["--arch", "DARTS_PT"])
    assert (darts.epochs, darts.batch_size, darts.nesterov, darts.init_channels, darts.layers, darts.auxiliary,
            darts.cutout, darts.drop_path_prob) == (600, 96, False, 36, 20, True, True, 0.2)


# ---------------------------------------------------------------- updates of the super-net

def test_blank_never_updates_alpha():
    s = _searcher("--method", "blank")
    assert s.a_opt is None and all(torch.equal(a, torch.zeros_like(a)) for a in s.alphas)
    x, y = _batch()
    s.step((x, y), (x, y))
    assert all(torch.equal(a, torch.zeros_like(a)) for a in s.alphas)  # uniform weights, fixed


def test_first_order_step_updates_alpha_and_weights_from_their_own_batches():
    s = _searcher("--search_space", "s2")
    before = [p.detach().clone() for p in s.alphas + s.w_params[:3]]
    (x, y), (xv, yv) = _batch(seed=1), _batch(seed=2)
    out = s.step((x, y), (xv, yv))
    assert set(out) == {"arch_loss", "train_loss", "train_top1"}
    assert all(not torch.equal(b, p) for b, p in zip(before, s.alphas + s.w_params[:3]))
    # the alpha gradient is that of L_val alone (Eq. 1, outer problem; first order)
    s2 = _searcher("--search_space", "s2")
    F.cross_entropy(s2.model(xv), yv).backward()
    assert torch.allclose(s.alphas[0].grad, s2.alphas[0].grad)


def test_second_order_alpha_gradient_matches_direct_computation():
    s = _searcher("--search_space", "s2", "--unrolled", seed=3)
    s.model.double()
    # Eq. (8)'s finite difference is exact to O(eps^2) for a smooth loss only: with ReLU, some of the
    # super-net's units cross their kink within eps and the difference quotient jumps. Smooth them.
    for m in list(s.model.modules()):
        for name, child in m.named_children():
            if isinstance(child, torch.nn.ReLU):
                setattr(m, name, torch.nn.GELU())
    (x, y), (xv, yv) = _batch(seed=4), _batch(seed=5)
    x, xv = x.double(), xv.double()
    F.cross_entropy(s.model(x), y).backward()  # one SGD step, so that w' has a momentum term
    s.w_opt.step()
    s.w_opt.zero_grad()
    s.unrolled_alpha_grad(x, y, xv, yv)
    ours = [a.grad.clone() for a in s.alphas]

    # direct: d/d alpha of L_val(w'(alpha), alpha), differentiating through the unrolled step
    xi, mu, wd = s.w_opt.param_groups[0]["lr"], s.args.momentum, s.args.weight_decay
    names = [n for n, _ in s.model.named_parameters() if not n.startswith("alphas.")]
    g = torch.autograd.grad(F.cross_entropy(s.model(x), y), s.w_params, create_graph=True)
    w_prime = [p - xi * (mu * s.w_opt.state[p]["momentum_buffer"] + gi + wd * p) for p, gi in zip(s.w_params, g)]
    val = F.cross_entropy(functional_call(s.model, dict(zip(names, w_prime)), (xv,)), yv)
    direct = torch.autograd.grad(val, s.alphas)
    first_order = torch.autograd.grad(F.cross_entropy(functional_call(
        s.model, dict(zip(names, [w.detach() for w in w_prime])), (xv,)), yv), s.alphas)
    for o, d, f in zip(ours, direct, first_order):
        assert (o - d).norm() < 2e-3 * d.norm()
        assert (f - d).norm() > 0.1 * d.norm()  # the second-order term is really there


def test_sdarts_random_smoothing_and_epsilon_ramp():
    s = _searcher("--method", "sdarts-rs", "--epochs", "10")
    s.start_epoch(0)
    assert s.epsilon == pytest.approx(0.03)
    s.start_epoch(5)
    assert s.epsilon == pytest.approx(0.03 + 0.27 * 0.5)
    with torch.no_grad():
        w = s.model.arch_weights()
    noisy = s.random_smoothing(w)
    for ct in w:
        assert torch.allclose(noisy[ct].sum(-1), torch.ones(14)) and noisy[ct].min() >= 0
        assert not torch.allclose(noisy[ct], w[ct])
    s.start_tuning(0.0025)
    s.start_epoch(7)
    assert s.epsilon == 0.3  # tuning between decisions: the largest epsilon


def test_clip_simplex():
    t = torch.tensor([[0.5, 0.7, -0.2], [-0.1, -0.3, -0.2]])
    assert torch.allclose(clip_simplex(t), torch.tensor([[0.5 / 1.2, 0.7 / 1.2, 0.0], [1.0, 0.0, 0.0]]))


def test_sdarts_adversarial_weights_raise_the_loss_within_the_ball():
    s = _searcher("--method", "sdarts-adv", "--search_space", "nb201", "--nb201_cells", "1")
    s.epsilon = 0.3
    x, y = _batch(8)
    with torch.no_grad():
        w = s.model.arch_weights()
    adv = s.adversarial_weights(w, x, y)
    assert s.model.training
    s.model.eval()
    with torch.no_grad():
        clean, attacked = (F.cross_entropy(s.model(x, v), y).item() for v in (w, adv))
    assert attacked > clean
    assert torch.allclose(adv["cell"].sum(-1), torch.ones(6)) and adv["cell"].min() >= 0
    assert (adv["cell"] - w["cell"]).abs().max() < 0.3 * 2  # clipped to the ball, then to the simplex


@pytest.mark.parametrize("order", ["first", "second"])
def test_decided_edges_stay_one_hot_and_their_alpha_frozen_while_alpha_trains(order):
    """A decided edge runs its op alone: the others get no gradient, which the second-order step must
    take (it raised "not used in the graph" in the first tuning epoch). Its alpha no longer moves,
    not even by Adam's weight decay (SGAS freezes it; its edge scores are normalised over all edges)."""
    s = _searcher("--search_space", "s2", *(["--unrolled"] if order == "second" else []))
    s.model.project_op("normal", 3, 1)
    s.model.remove_edge("reduce", 9)
    a0 = {ct: a.detach().clone() for ct, a in s.model.alphas.items()}
    x, y = _batch()
    for _ in range(2):
        s.step((x, y), (x, y))
    w = s.model.arch_weights()
    assert w["normal"][3].tolist() == [0.0, 1.0] and w["reduce"][9].tolist() == [0.0, 0.0]
    assert s.model.active["normal"][3] == [1] and s.model.active["reduce"][9] == []
    assert torch.equal(s.model.alphas["normal"][3], a0["normal"][3])
    assert torch.equal(s.model.alphas["reduce"][9], a0["reduce"][9])
    assert not torch.equal(s.model.alphas["normal"][4], a0["normal"][4])  # undecided edges keep training
    # the selection state travels in the model's state_dict
    t = _searcher("--search_space", "s2", seed=9)
    t.model.load_state_dict(s.model.state_dict())
    assert t.model.decided == s.model.decided and t.model.removed == s.model.removed
    assert torch.equal(t.model.arch_weights()["normal"], w["normal"])


def test_tuning_restarts_sgd_at_a_tenth_of_the_search_rate():
    """Sec. 4.2, tuning between decisions (authors' code): a fresh SGD, no momentum carried over, at the
    constant rate 0.0025 = 0.025 / 10, the search's momentum and weight decay; alpha keeps its Adam."""
    assert projection.get_parser().parse_args(["--search_dir", "RUN"]).proj_lr == 0.0025
    s = _searcher("--search_space", "s2")
    x, y = _batch()
    s.step((x, y), (x, y))  # the search's SGD has momentum buffers now
    a_opt, search_opt = s.a_opt, s.w_opt
    s.start_tuning(0.0025)
    assert s.w_opt is not search_opt and not s.w_opt.state and s.a_opt is a_opt and s.scheduler is None
    group = s.w_opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.0025, 0.9, 3e-4)
    for epoch in (0, 1):  # constant: nothing steps a schedule between tuning epochs
        s.start_epoch(epoch)
        s.step((x, y), (x, y))
        assert s.w_opt.param_groups[0]["lr"] == 0.0025


def test_fig3_skip_minus_conv_gap():
    """Fig. 3: mean over edges of softmax(alpha)_skip - softmax(alpha)_conv, on S2 (skip, sep_conv_3x3)."""
    net = build_supernet(parse_args(["--search_space", "s2", "--layers", "1", "--init_channels", "4"]), 10)
    with torch.no_grad():
        net.alphas["normal"].zero_()
        net.alphas["normal"][0] = torch.tensor([math.log(3.0), 0.0])  # skip 0.75, conv 0.25
        net.alphas["reduce"].fill_(0.0)
        net.alphas["reduce"][:, 1] = math.log(4.0)  # skip 0.2, conv 0.8 everywhere
    gap = skip_minus_conv(net)
    assert gap["normal"] == pytest.approx(0.5 / 14) and gap["reduce"] == pytest.approx(-0.6)
    assert skip_minus_conv(build_supernet(parse_args(["--layers", "1", "--init_channels", "4"]), 10)) is None


# ---------------------------------------------------------------- selection (Sec. 4)

class Planted(SuperNet):
    """One edge, two ops. `none` outputs zeros and gets the large alpha; `skip_connect` carries the
    class evidence (the input is a one-hot of the label) and gets the small alpha."""

    def __init__(self):
        super().__init__()
        space = SearchSpace("planted", (("none", "skip_connect"),), (("none", "skip_connect"),), nb201=True)
        self.edge = MixedOp(space, space.ops(False, 0), 10, 1)
        self._init_arch(space, ("cell",), num_inputs=1, steps=1)
        self.alphas["cell"].data = torch.tensor([[3.0, 0.0]])

    def forward(self, x, weights=None, active=None):
        weights = self.arch_weights() if weights is None else weights
        active = self.active if active is None else active
        return self.edge(x, weights["cell"][0], active["cell"][0]).flatten(1)


def _planted_loader():
    y = torch.arange(100) % 10
    return _loader(F.one_hot(y, 10).float().view(100, 10, 1, 1), y, batch_size=32)


@pytest.mark.parametrize("crit", ["acc", "loss"])
def test_planted_supernet_perturbation_picks_the_indispensable_op_magnitude_does_not(crit):
    loader = _planted_loader()
    net = Planted()
    scores = selection.op_strength(net, "cell", 0, loader, crit)
    if crit == "acc":
        assert scores == pytest.approx([100.0, 10.0])  # masking `none` costs nothing, masking skip everything
    pt = selection.decide_op(net, "cell", 0, loader, "pt", crit)
    mag = selection.decide_op(Planted(), "cell", 0, loader, "mag", crit)
    assert pt["chosen"] == "skip_connect" and mag["chosen"] == "none"
    assert net.arch_weights()["cell"].tolist() == [[0.0, 1.0]]  # the decided edge is one-hot


def test_masking_changes_only_the_masked_weight_and_leaves_the_supernet_untouched():
    s = _searcher("--search_space", "s2")
    net = s.model
    net.project_op("normal", 0, 1)
    x, y = _batch(4)
    loader = _loader(x, y)
    state = {k: v.clone() for k, v in net.state_dict().items() if torch.is_tensor(v)}
    seen = []
    forward = net.forward
    net.forward = lambda x, weights=None, active=None: seen.append((weights, active)) or forward(x, weights, active)
    scores = selection.op_strength(net, "reduce", 5, loader)
    del net.forward
    with torch.no_grad():
        base = net.arch_weights()
    assert len(scores) == len(seen) == 2
    for o, (w, active) in enumerate(seen):
        expected = base["reduce"].clone()
        expected[5, o] = 0
        assert torch.equal(w["reduce"], expected) and torch.equal(w["normal"], base["normal"])
        assert active["reduce"][5] == [1 - o] and active["normal"] == net.active["normal"]
    after = net.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in state.items())  # BN statistics untouched too
    assert scores == selection.op_strength(net, "reduce", 5, loader)  # same batches every call


def test_masked_evaluations_use_batch_statistics():
    """Sec. 4.1 as the authors measure it: BN in training mode, normalising with the batch's statistics,
    whatever mode the super-net is in and whatever its running statistics say (and they stay)."""
    net = _searcher("--search_space", "s2").model
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.fill_(3.0)
            m.running_var.fill_(0.01)
    x, y = _batch(8)
    net.eval()
    _, loss = selection.evaluate_supernet(net, _loader(x, y))
    assert not net.training and all(m.running_mean.eq(3.0).all() for m in net.modules()
                                    if isinstance(m, nn.BatchNorm2d))
    with torch.no_grad():
        running = F.cross_entropy(net(x), y).item()
        net.train()
        with frozen_bn_stats(net):
            batch = F.cross_entropy(net(x), y).item()
    assert loss == pytest.approx(batch, rel=1e-5) and abs(loss - running) > 0.1


def test_an_evaluation_leaves_the_super_net_in_the_mode_it_found_it():
    """Whichever BN statistics an evaluation uses (batch: a masked op's score; running: the accuracy the
    selection logs), the super-net leaves it in the mode it came in, every module, even when it fails:
    a tuning epoch that followed in evaluation mode would not train BN as the search did."""
    net = _searcher("--search_space", "s2").model
    loader = _loader(*_batch(8))
    for training in (True, False):
        for running in (True, False):
            net.train(training)
            selection.evaluate_supernet(net, loader, running=running)
            assert all(m.training == training for m in net.modules()), (training, running)
            with pytest.raises(KeyError):
                selection.evaluate_supernet(net, loader, active={}, running=running)  # fails in the forward
            assert all(m.training == training for m in net.modules()), (training, running)


def test_topology_phase_keeps_exactly_two_inputs_per_node():
    s = _searcher("--search_space", "s2", "--layers", "2")
    net = s.model
    x, y = _batch(8)
    loader = _loader(x, y)
    for ct in net.cell_types:
        for e in range(net.num_edges):
            net.project_op(ct, e, 1)
    rec = selection.decide_topology(net, "normal", 5, loader)  # defaults: pt, acc, the authors' top2 rule
    (step,) = rec["steps"]  # every removal measured once, against the full node
    assert len(step["scores"]) == 5 and len(step["removed"]) == 3
    assert sum(not net.removed["normal"][e] for e in net.node_edges(5)) == 2
    strongest = sorted(range(5), key=lambda i: (step["scores"][i], i))[:2]  # the lowest ACC\e are kept
    assert rec["kept"] == [step["edges"][i] for i in sorted(strongest)]
    mag = selection.decide_topology(net, "reduce", 4, loader, "mag",
                                    alpha_of={("reduce", e): a for e, a in zip(net.node_edges(4), [0.3, 0.1, 0.5, 0.2])})
    assert mag["kept"] == ["4<-0", "4<-2"]
    for node in (3, 4, 5):
        for ct in net.cell_types:
            if not any(net.removed[ct][e] for e in net.node_edges(node)):
                selection.decide_topology(net, ct, node, loader)
    g = net.genotype()
    for cell in (g.normal, g.reduce):
        assert all(len(node) == 2 and node[0][1] != node[1][1] for node in cell.nodes)
    kept = {(i, j) for e, (i, j) in enumerate(net.edges) if not net.removed["normal"][e]}
    assert {(2 + n, j) for n, node in enumerate(g.normal.nodes) for _, j in node} == kept


# ACC (%) of node 4 (inputs 0..3) with a set of its input edges removed. Not additive: removing
# input 3 makes input 0 useless (ACC without {3, 0} is 90) though alone it is the strongest edge.
NODE4_ACC = {frozenset({0}): 50, frozenset({1}): 60, frozenset({2}): 70, frozenset({3}): 80,
             frozenset({3, 0}): 90, frozenset({3, 1}): 40, frozenset({3, 2}): 45}


@pytest.mark.parametrize("rule, kept", [("top2", ["4<-0", "4<-1"]), ("backward", ["4<-1", "4<-2"])])
def test_topology_rules_differ_on_a_non_additive_accuracy_table(monkeypatch, rule, kept):
    """App. A.3. top2 (authors' project_edge): keep the two edges whose single removal, against the full
    node, costs most (inputs 0, 1). backward: drop input 3 (ACC 80), measure again: without 3, dropping
    0 costs nothing (90), so 0 goes and 1, 2 stay."""
    net = build_supernet(parse_args(["--search_space", "s2", "--layers", "1", "--init_channels", "4"]), 10)
    node4 = net.node_edges(4)

    def table(model, loader, weights=None, active=None, amp=False):
        removed = frozenset(j for j, e in enumerate(node4) if not active["normal"][e])
        return NODE4_ACC[removed], 0.0

    monkeypatch.setattr(selection, "evaluate_supernet", table)
    rec = selection.decide_topology(net, "normal", 4, None, rule=rule)
    assert rec["kept"] == kept and [net.removed["normal"][e] for e in node4] == [n not in kept for n in
                                                                                  ("4<-0", "4<-1", "4<-2", "4<-3")]
    if rule == "top2":
        assert [st["scores"] for st in rec["steps"]] == [[50, 60, 70, 80]]
    else:
        assert [st["scores"] for st in rec["steps"]] == [[50, 60, 70, 80], [90, 40, 45]]
    assert projection.get_parser().parse_args(["--search_dir", "RUN"]).topology_rule == "top2"  # authors' rule


@pytest.mark.parametrize("intv", [0, 1, 3])
def test_plan_decisions_and_tuning_epochs_follow_proj_intv(intv):
    darts = build_supernet(parse_args(["--search_space", "s2", "--layers", "1", "--init_channels", "4"]), 10)
    nb201 = build_supernet(parse_args(["--search_space", "nb201", "--nb201_cells", "1", "--init_channels", "4"]), 10)
    for net, rounds in ((darts, 14 + 3), (nb201, 6)):
        events = projection.plan(net, intv, seed=0)
        kinds = [ev["kind"] for ev in events]
        assert sum(k != "tune" for k in kinds) == rounds and kinds.count("tune") == (rounds - 1) * intv
        assert kinds[0] != "tune" and kinds[-1] != "tune"
        ops = [ev["targets"] for ev in events if ev["kind"] == "op"]
        for ct in net.cell_types:  # every edge exactly once, in a random order
            order = [t[ct] for t in ops]
            assert sorted(order) == list(range(net.num_edges)) and order != sorted(order)
    topo = [ev["targets"]["normal"] for ev in projection.plan(darts, intv, 0) if ev["kind"] == "topology"]
    assert sorted(topo) == [3, 4, 5]
    assert projection.plan(darts, intv, seed=0) == projection.plan(darts, intv, seed=0) != \
        projection.plan(darts, intv, seed=1)


# ---------------------------------------------------------------- SGAS (App. A.1.3, Table 2)

def test_sgas_criterion_1_by_hand():
    """Score = minmax(importance) * minmax(1 - entropy / log K) over the edges: importance = the softmax
    weight of the ops other than `none`, entropy that of their renormalised weights (K of them)."""
    ops = ("none", "a", "b", "c")
    alpha = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [3.0, 1.0, 0.0, 0.0], [-1.0, 0.5, 0.5, 2.0]])
    importance, certainty = [], []
    for row in alpha.tolist():
        e = [math.exp(v) for v in row]
        importance.append(sum(e[1:]) / sum(e))
        p = [v / sum(e[1:]) for v in e[1:]]
        certainty.append(1 + sum(q * math.log(q) for q in p) / math.log(3))

    def minmax(v):
        return [(x - min(v)) / (max(v) - min(v)) for x in v]
    expected = [i * c for i, c in zip(minmax(importance), minmax(certainty))]
    assert sgas_scores(alpha, ops).tolist() == pytest.approx(expected, abs=1e-6)
    assert sgas_scores(torch.zeros(3, 4), ops).tolist() == [0.0, 0.0, 0.0]  # all alike: no edge stands out


def _sgas(*flags, batch_size=8):
    torch.manual_seed(0)
    args = parse_args(["--method", "sgas", "--layers", "3", "--init_channels", "4", "--device", "cpu",
                       "--batch_size", str(batch_size), *flags])
    x, y = _batch(16)
    queues = (_loader(x[:8], y[:8], batch_size), _loader(x[8:], y[8:], batch_size))
    return SgasSearcher(args, 10, CPU, queues), queues


def test_sgas_decisions_follow_its_criterion_schedule_and_pruning():
    s, queues = _sgas("--warmup_dec_epoch", "1", "--decision_freq", "1", "--batch_increase", "4", "--selection", "mag")
    net = s.model
    assert net.edge_ops["normal"][0][0] == "none" and s.args.epochs == 1 + 7 * 1 + 6  # SGAS' epochs
    with torch.no_grad():  # normal: edges 2 and 3 (node 3, inputs 0 and 1) stand out, edge 2 most
        net.alphas["normal"].zero_()
        net.alphas["normal"][2, :3] = torch.tensor([-4.0, 0.0, 3.0])
        net.alphas["normal"][3, :3] = torch.tensor([-4.0, 2.0, 0.0])
    made, x, y = [], *_batch()
    for epoch in range(3):
        s.start_epoch(epoch)
        assert all(q.batch_sampler.batch_size == 8 + 4 * len(made) for q in queues)  # SGAS grows the batch
        s.step((x, y), (x, y))
        made += [epoch] if "decisions" in s.end_epoch(epoch, queues[1]) else []
        if made == [1] and epoch == 1:
            decided_alpha = net.alphas["normal"][2].detach().clone()
    assert made == [1, 2]  # the ends of epochs warmup_dec_epoch + k decision_freq
    assert net.decided["normal"][2] == 2 and net.decided["normal"][3] == 1  # arg-max alpha but `none`
    assert net.removed["normal"][4] and net.decided["normal"][4] is None  # node 3 has its two inputs
    assert sum(o is not None for o in net.decided["reduce"]) == 2
    assert torch.equal(net.alphas["normal"][2], decided_alpha)  # frozen since decided, while others train
    assert not torch.equal(net.alphas["normal"][5], torch.zeros(8))
    s.args.selection = "pt"  # SGAS+PT: the same edge order, the op whose removal hurts most but `none`
    d = s.decide("normal", queues[1])
    assert d["edge"] == max(s.candidates("normal") + [d["edge"]], key=lambda e: (d["edge_scores"][e], -e))
    assert d["measure"] == "acc" and d["chosen"] == d["ops"][min(range(1, 8), key=lambda o: (d["scores"][o], o))]
