"""EnTranNAS / EnTranNAS-DST: the equations of Sec. 2 against hand-computed values, the
Engine/Transit, feature-sharing and bottleneck invariants, the sparsity regulariser, the DARTS
super-net of Table 1, the Table 3 batch probe, the scripts end to end, exact resume and the
torchrun search."""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import Subset

from bench import search_cost
from common.data import search_loaders
from common.genotypes import load
from common.utils import MetricsLog
from conftest import ROOT, SMALL, run
from entrannas import consistency, train, train_search
from entrannas.model_search import ChildNet, Network, dst_coefficients, engine_layers, sparsity_loss


TINY = [*SMALL, "--image_size", "8", "--subset", "32", "--layers", "3", "--init_channels", "4", "--batch_size", "8"]


def _args(*extra):
    return train_search.parse_args(["--dataset", "synthetic", "--device", "cpu", "--save", "unused",
                                    "--layers", "3", "--init_channels", "4", "--batch_size", "8", *extra])


def _net(**kw):
    torch.manual_seed(0)
    return Network(4, 10, 3, **{"bottleneck": 1, **kw})


def _all_pairs(net, j):
    return [(i, k) for i in range(2 + j) for k in range(len(net.op_names))]


# ------------------------------------------------------------------ Eq. (5), (7)-(9), (11)

def test_dst_coefficients_hand_computed():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.4, 0.2], [0.34, 0.33, 0.33]])
    tau = 2.0
    alpha = tau * p.log()  # softmax(alpha / tau) = p  (Eq. 5)
    # Eq. (7): p_hat = p / 0.7; Eq. (8) with t = 0.5: q = [0.5, 0, 0], [1/14, 1/14, 0], [0, 0, 0];
    # Eq. (9): the kept edges are normalised over their ops, the pruned edge stays zero.
    q_hat = dst_coefficients(alpha, torch.tensor(0.0), tau)
    assert torch.allclose(q_hat, torch.tensor([[1.0, 0, 0], [0.5, 0.5, 0], [0, 0, 0]]), atol=1e-6)
    # t = 0.3 (beta = log(0.3 / 0.7)): q = [0.7, 0, 0], [0.4/0.7 - 0.3, 0.4/0.7 - 0.3, 0] (0.2/0.7 < 0.3),
    # and the third edge comes back: [0.34/0.7 - 0.3, 0.33/0.7 - 0.3, 0.33/0.7 - 0.3]
    q_hat = dst_coefficients(alpha, torch.tensor(math.log(0.3 / 0.7)), tau)
    r3 = torch.tensor([0.34, 0.33, 0.33]) / 0.7 - 0.3
    assert torch.allclose(q_hat, torch.stack([torch.tensor([1.0, 0, 0]), torch.tensor([0.5, 0.5, 0]), r3 / r3.sum()]),
                          atol=1e-5)


def test_dst_softmax_is_per_edge():
    """Eq. (5) normalises each edge over its ops, then Eq. (7) over the node: rows of alpha that
    do not sum to the same value tell the two apart (a softmax over the whole node would keep only
    the first edge here)."""
    alpha = torch.tensor([[math.log(2.0), 0.0], [0.0, 0.0]])
    # per edge: p = [2/3, 1/3], [1/2, 1/2]; p_hat = [1, 1/2], [3/4, 3/4]; t = 1/2: q = [1/2, 0], [1/4, 1/4]
    q_hat = dst_coefficients(alpha, torch.tensor(0.0), 1.0)
    assert torch.allclose(q_hat, torch.tensor([[1.0, 0.0], [0.5, 0.5]]))
    # so shifting one edge's alpha changes nothing
    g = torch.Generator().manual_seed(0)
    alpha = torch.randn(4, 7, generator=g)
    shifted = alpha + torch.tensor([0.0, 3.0, -2.0, 0.5]).view(4, 1)
    assert torch.allclose(dst_coefficients(alpha, torch.tensor(-2.0), 0.7),
                          dst_coefficients(shifted, torch.tensor(-2.0), 0.7), atol=1e-6)


def test_dst_coefficients_invariants_and_gradients():
    g, n_mixed = torch.Generator().manual_seed(0), 0
    for n_in in (2, 3, 4, 5):
        for _ in range(20):
            alpha = (2 * torch.randn(n_in, 7, generator=g)).requires_grad_()
            beta = (2 * torch.randn((), generator=g)).requires_grad_()
            tau = float(torch.rand((), generator=g)) * 5 + 0.05
            q_hat = dst_coefficients(alpha, beta, tau)
            assert (q_hat > 0).any() and (q_hat >= 0).all()  # at least one connection per node
            rows = q_hat.sum(-1)
            kept = (q_hat > 0).any(-1)
            assert torch.allclose(rows[kept], torch.ones_like(rows[kept])) and (rows[~kept] == 0).all()
            (q_hat * torch.randn(q_hat.shape, generator=g)).sum().backward()
            assert torch.isfinite(alpha.grad).all() and torch.isfinite(beta.grad)
            # Eq. (9) makes a lone op on its edge a constant 1: gradients flow where an edge keeps several
            mixed = ((q_hat > 0).sum(-1) > 1).any()
            size = alpha.grad.abs().sum() + beta.grad.abs()
            assert size > 1e-3 if mixed else size < 1e-4  # (rounding noise only)
            n_mixed += bool(mixed)
    assert n_mixed > 20
    # the strongest connection survives even where sigmoid(beta) rounds to 1 in float32
    assert dst_coefficients(torch.randn(3, 7), torch.tensor(60.0), 1.0).count_nonzero() == 1


def test_sparsity_loss_is_eq_11():
    beta = torch.tensor([0.0, 1.0, -2.0, 3.0], requires_grad=True)
    expected = -torch.log(torch.sigmoid(beta)).sum() / 4
    loss = sparsity_loss(beta)
    assert torch.allclose(loss, expected)
    loss.backward()
    assert (beta.grad < 0).all()  # gradient descent raises every threshold
    # the super-net's regulariser: one mean over the 8 nodes of both cell types, not a mean per type summed
    net = _net(dst=True)
    with torch.no_grad():
        net.beta_normal.zero_()                    # t = 1/2: -log t = log 2
        net.beta_reduce.fill_(math.log(3.0))       # t = 3/4: -log t = log 4/3
    assert net.sparsity_loss().item() == pytest.approx((math.log(2) + math.log(4 / 3)) / 2)


# ------------------------------------------------------------------ Engine- and Transit-cells

def test_engine_placement():
    red = (2, 5)
    assert engine_layers(8, red, "first") == {0, 2}
    assert engine_layers(8, red, "last") == {7, 5}
    assert engine_layers(8, red, "half") == {0, 1, 3, 2}
    assert engine_layers(8, red, "all") == set(range(8))


def test_engine_cell_is_eq_5_mixture_over_the_whole_dag():
    """Without sharing and bottleneck an Engine-cell node is sum_i sum_k softmax(alpha/tau) o_k(x_i)."""
    net = _net(feature_sharing=False)
    net.tau = 0.7
    with torch.no_grad():
        net.alpha_normal.normal_()
    cell, x = net.cells[0], torch.randn(2, 12, 8, 8)
    coeffs = net.coefficients(False)
    out = cell(x, x, [_all_pairs(net, j) for j in range(4)], coeffs)
    p = F.softmax(net.alpha_normal / 0.7, -1)
    states = [cell.preprocess0(x), cell.preprocess1(x)]
    for j in range(4):
        states.append(sum(p[net.slices[j]][i, k] * cell.op(i, j, k)(states[i]) for i, k in _all_pairs(net, j)))
    assert torch.allclose(out, torch.cat(states[2:], 1), atol=1e-6)


def _count_calls(cell):
    """Forward calls of every candidate-op module of `cell`, by (row of cell.ops, op index)."""
    calls = {}
    for i, ops in enumerate(cell.ops):
        for k, op in enumerate(ops):
            op.register_forward_hook(lambda *_, key=(i, k): calls.__setitem__(key, calls.get(key, 0) + 1))
    return calls


@pytest.mark.parametrize("sharing", [True, False])
def test_transit_cells_run_exactly_the_derived_ops(sharing):
    net = _net(feature_sharing=sharing)
    sep, skip = net.op_names.index("sep_conv_3x3"), net.op_names.index("skip_connect")
    with torch.no_grad():  # every node derives (sep_conv_3x3 from state 0, skip_connect from state 1)
        net.alpha_normal.zero_()
        for s in net.slices:
            net.alpha_normal[s.start, sep] = 5.0
            net.alpha_normal[s.start + 1, skip] = 3.0
    assert net.derive(False) == [[(0, sep), (1, skip)]] * 4
    assert net.genotype().normal.nodes == ((("sep_conv_3x3", 0), ("skip_connect", 1)),) * 4
    cell, x = net.cells[0], torch.randn(2, 3, 8, 8)
    calls = _count_calls(cell)
    if sharing:  # Sec. 2.3: o_sep(w^(0), x_0) is computed once and reused by the 4 nodes
        derived = {(0, sep): 1, (1, skip): 1}
    else:  # one op instance per edge: the 8 derived ones, once each
        derived = {**{(cell.edge_index[0, j], sep): 1 for j in range(4)},
                   **{(cell.edge_index[1, j], skip): 1 for j in range(4)}}
    net.engines = {1, 2}  # layer 0, the normal cell, is a Transit-cell
    net(x)
    assert calls == derived
    calls.clear()
    net.engines = {0, 1, 2}  # as an Engine-cell: the whole DAG, every op output computed once
    net(x)
    assert len(calls) == len(cell.ops) * len(net.op_names) == (5 if sharing else 14) * 7
    assert set(calls.values()) == {1}
    calls.clear()
    ChildNet(net)(x)  # Table 1's child-net: the Engine-cell too runs only the derived paths
    assert calls == derived


def _transit_cell(cell, s0, s1, paths):
    """Eq. (6), second line, by hand: node j = sum over (i, k) in S_j of o_k(x_i), unweighted."""
    states = [cell.preprocess0(s0), cell.preprocess1(s1)]
    for j, pairs in enumerate(paths):
        states.append(sum(cell.op(i, j, k)(states[i]) for i, k in pairs))
    return torch.cat(states[2:], 1)


@pytest.mark.parametrize("sharing", [True, False])
def test_transit_cells_are_the_unweighted_sum_over_S_j_and_give_alpha_no_gradient(sharing):
    net = _net(feature_sharing=sharing)
    net.engines = set()  # every cell a Transit-cell
    net.tau = 0.3
    with torch.no_grad():
        net.alpha_normal.normal_()
        net.alpha_reduce.normal_()
    x = torch.randn(2, 3, 8, 8)
    s0 = s1 = net.stem(x)
    for cell in net.cells:
        s0, s1 = s1, _transit_cell(cell, s0, s1, net.derive(cell.reduction))
    expected = net.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))
    logits = net(x)
    assert torch.allclose(logits, expected, atol=1e-6)
    logits.pow(2).sum().backward()
    assert net.alpha_normal.grad is None and net.alpha_reduce.grad is None  # derivation carries no gradient
    assert net.cells[0].preprocess1[1].weight.grad is not None


def test_bottleneck_expands_each_node_after_its_sum():
    """Sec. 2.5: squeeze each input state once, run the ops narrow, sum a node's paths, then one 1x1
    conv + BN back to C (in training mode BN(a) + BN(b) != BN(a + b), so a per-path expand differs)."""
    torch.manual_seed(0)
    net = Network(8, 10, 3, bottleneck=2)
    with torch.no_grad():
        net.alpha_normal.normal_()
    cell, x = net.cells[0], torch.randn(2, 24, 8, 8)
    coeffs = net.coefficients(False)
    out = cell(x, x, [_all_pairs(net, j) for j in range(4)], coeffs)
    states = [cell.preprocess0(x), cell.preprocess1(x)]
    for j in range(4):
        node = sum(coeffs[j][i, k] * cell.ops[i][k](cell.squeeze[i](states[i])) for i, k in _all_pairs(net, j))
        states.append(cell.expand[j](node))
    assert torch.allclose(out, torch.cat(states[2:], 1), atol=1e-5)


def test_dst_engine_cell_equals_its_derived_graph():
    """Eq. (10): computing only the connections with q_hat > 0 gives exactly the full Engine-cell
    output and the same architecture gradients: the search graph is the derived graph."""
    torch.manual_seed(0)
    net = Network(8, 10, 3, bottleneck=2, dst=True)
    net.tau = 0.5
    with torch.no_grad():
        net.alpha_normal.normal_(0, 1)
        net.beta_normal.fill_(0.5)
    x = torch.randn(2, 24, 8, 8)
    cell = net.cells[0]
    active = net.derive(False)
    assert 0 < sum(map(len, active)) < sum(len(_all_pairs(net, j)) for j in range(4))  # some pruned
    outs, grads = [], []
    for paths in (active, [_all_pairs(net, j) for j in range(4)]):
        net.zero_grad()
        out = cell(x, x, paths, net.coefficients(False))
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outs.append(out.detach())
        grads.append((net.alpha_normal.grad.clone(), net.beta_normal.grad.clone()))
    assert torch.equal(outs[0], outs[1])
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-7) and torch.allclose(grads[0][1], grads[1][1], atol=1e-7)
    assert grads[0][1].abs().sum() > 0
    g = net.genotype().normal
    assert [[(net.op_names.index(op), i) for op, i in node] for node in g.nodes] == \
        [[(k, i) for i, k in node] for node in active]


def test_bottleneck_reduces_op_channels():
    wide, narrow = Network(16, 10, 3, bottleneck=1), Network(16, 10, 3, bottleneck=4)
    conv = lambda net: net.cells[0].ops[2][net.op_names.index("sep_conv_3x3")][0][1]  # noqa: E731
    assert conv(wide).in_channels == 16 and conv(narrow).in_channels == 4
    assert narrow.cells[0].squeeze[0][0].out_channels == 4 and narrow.cells[0].expand[0][0].out_channels == 16
    assert wide.cells[0].squeeze is None
    x = torch.randn(2, 3, 8, 8)
    assert wide(x).shape == narrow(x).shape == (2, 10)
    ext = Network(8, 10, 3, space="entrannas_ext")  # Sec. 4.2: the extended space of 12 ops
    assert len(ext.op_names) == 12 and ext.alpha_normal.shape == (14, 12) and ext(x).shape == (2, 10)


def test_defaults_follow_the_paper():
    a = train_search.parse_args([])
    assert (a.batch_size, a.learning_rate, a.learning_rate_min, a.momentum, a.weight_decay, a.epochs) == \
        (512, 0.2, 0.0, 0.9, 3e-4, 50)
    assert (a.arch_learning_rate, tuple(a.arch_betas), a.arch_weight_decay, a.tau, a.tau_decay) == \
        (6e-4, (0.5, 0.999), 1e-3, 5.0, 0.923)
    assert (a.layers, a.init_channels, a.engine, a.feature_sharing, a.bottleneck, a.dst) == \
        (8, 16, "first", True, 4, False)
    d = train_search.parse_args(["--darts"])  # Table 1's "all (DARTS)": DARTS' super-net and search settings
    assert (d.engine, d.feature_sharing, d.bottleneck, d.tau, d.tau_decay, d.dst) == ("all", False, 1, 1.0, 1.0, False)
    assert (d.batch_size, d.learning_rate, d.learning_rate_min, d.arch_learning_rate) == (64, 0.025, 0.001, 3e-4)
    for conflict in (["--bottleneck", "4"], ["--feature_sharing"], ["--engine", "first"], ["--tau", "5"], ["--dst"]):
        with pytest.raises(SystemExit):
            train_search.parse_args(["--darts", *conflict])
    b = train_search.parse_args(["--dataset", "imagenet"])
    assert (b.batch_size, b.learning_rate, b.arch_learning_rate, b.tau, b.tau_decay) == (1024, 0.5, 6e-3, 5.0, 0.923)
    c = train_search.parse_args(["--dataset", "imagenet", "--dst"])
    assert (c.tau, c.tau_decay, c.dst_lambda) == (1.0, 0.9, 0.2)
    e = train.parse_args(["--arch", "X"])
    assert (e.layers, e.init_channels, e.epochs, e.batch_size, e.learning_rate, e.weight_decay, e.grad_clip,
            e.cutout_length, e.drop_path_prob, e.auxiliary) == (20, 36, 600, 96, 0.025, 3e-4, 5.0, 16, 0.2, True)
    f = train.parse_args(["--arch", "X", "--dataset", "imagenet"])
    assert (f.layers, f.init_channels, f.batch_size, f.epochs, f.learning_rate, f.lr_scheduler, f.weight_decay,
            f.auxiliary, f.label_smooth) == (14, 48, 1024, 250, 0.5, "linear", 3e-5, True, 0.1)
    s = train_search.Searcher(_args("--dst"), 10, torch.device("cpu"))
    s.start_epoch(3)
    assert s.model.tau == pytest.approx(5.0 * 0.923 ** 3)
    assert {n for n, _ in s.model.named_parameters() if n.startswith(("alpha", "beta"))} == \
        {"alpha_normal", "alpha_reduce", "beta_normal", "beta_reduce"}
    assert len(s.a_opt.param_groups[0]["params"]) == 4 and s.a_opt.param_groups[0]["betas"] == (0.5, 0.999)
    img = Network(8, 10, 3, bottleneck=1, imagenet=True)
    assert img.stem1(img.stem0(torch.randn(1, 3, 224, 224))).shape[-1] == 28  # Sec. 4.3: 224 -> 28


def test_sparsity_regulariser_raises_thresholds_and_cuts_edges():
    def search(lam):
        torch.manual_seed(0)
        s = train_search.Searcher(_args("--dst", "--dst_lambda", str(lam), "--arch_learning_rate", "0.1",
                                        "--tau", "1", "--bottleneck", "1"), 10, torch.device("cpu"))
        s.start_epoch(0)
        with torch.no_grad():
            s.model.alpha_normal.normal_(0, 0.5)
            s.model.alpha_reduce.normal_(0, 0.5)
        g = torch.Generator().manual_seed(1)
        for _ in range(5):
            batch = (torch.randn(8, 3, 8, 8, generator=g), torch.randint(10, (8,), generator=g))
            s.step(batch, batch)
        t = torch.sigmoid(torch.cat([s.model.beta_normal, s.model.beta_reduce]))
        return t, sum(len(node) for r in (False, True) for node in s.model.derive(r))

    (t0, n0), (t1, n1) = search(0.0), search(10.0)
    assert (t1 > t0).all() and (t1 > 0.6).all()
    assert n1 < n0


# ------------------------------------------------------------------ scripts end to end

def test_search_then_train_from_the_command_line(tmp_path):
    save = tmp_path / "search"
    run(["entrannas/train_search.py", *TINY, "--epochs", "1", "--save", save])
    g = load(str(save / "genotype.json"))
    assert all(len(node) == 2 for c in (g.normal, g.reduce) for node in c.nodes)  # the DARTS rule, Eq. (4)
    m = MetricsLog.read(save / "metrics.jsonl")
    assert m[0]["tau"] == 5.0 and len(m[0]["alpha_normal"]) == 14 and str(g) == m[0]["genotype"]
    assert (save / "genotype.dot").exists() and (save / "genotypes" / "epoch_000.json").exists()
    ev = tmp_path / "eval"
    run(["-m", "entrannas.train", "--arch", save / "genotype.json", *TINY, "--epochs", "1", "--save", ev])
    assert json.loads((ev / "summary.json").read_text())["params_M"] > 0


def test_dst_search_resume_is_exact_and_flexible_genotype_trains(tmp_path, monkeypatch):
    argv = [*TINY, "--dst", "--epochs", "2", "--tau", "0.2", "--arch_learning_rate", "0.05", "--dst_lambda", "2"]
    full = train_search.main(argv + ["--save", str(tmp_path / "full")])
    step, calls = train_search.Searcher.step, []

    def crashing(self, *batches):
        calls.append(1)
        if len(calls) == 3:  # epoch 0 (2 steps) is checkpointed, epoch 1 dies at its first step
            raise KeyboardInterrupt
        return step(self, *batches)

    monkeypatch.setattr(train_search.Searcher, "step", crashing)
    with pytest.raises(KeyboardInterrupt):
        train_search.main(argv + ["--save", str(tmp_path / "crash")])
    monkeypatch.setattr(train_search.Searcher, "step", step)
    resumed = train_search.main(argv + ["--save", str(tmp_path / "crash"), "--resume"])
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert MetricsLog.read(tmp_path / "full" / "metrics.jsonl") == MetricsLog.read(tmp_path / "crash" / "metrics.jsonl")
    m = MetricsLog.read(tmp_path / "full" / "metrics.jsonl")
    assert [r["tau"] for r in m] == pytest.approx([0.2, 0.2 * 0.923])  # tau_0 * 0.923^epoch
    assert {"beta_normal", "threshold_reduce", "edges_normal", "connections_reduce", "sparsity"} <= m[-1].keys()
    g = load(str(tmp_path / "full" / "genotype.json"))
    assert g == full.genotype()
    sizes = [len(node) for c in (g.normal, g.reduce) for node in c.nodes]
    assert min(sizes) >= 1 and sizes != [2] * 8 and m[-1]["connections_normal"] == sum(sizes[:4])
    # the flexible topology trains with train.py: each node of the network holds its genotype's pairs
    model = train.main(["--arch", str(tmp_path / "full" / "genotype.json"), *TINY, "--epochs", "1",
                        "--save", str(tmp_path / "eval")])
    assert [len(ops) for ops in model.cells[0].ops] == sizes[:4]
    # Table 1 as the search recorded it after its last epoch, the same as computed again from the checkpoint
    row = consistency.table1(tmp_path / "full")
    searcher, _, valid_queue = consistency.load_search(tmp_path / "full", workers=0, device="cpu")
    recorded = {k: m[-1][k] for k in consistency.KEYS}
    assert searcher.validate(valid_queue) == recorded == {k: row[k] for k in consistency.KEYS}
    assert row["drop"] == row["supernet_valid_top1"] - row["childnet_valid_top1"] and row["dst"]


def test_darts_search_records_clean_validation_accuracies(tmp_path, capsys):
    """--darts: every cell an Engine-cell mixing softmax(alpha) (tau 1 at every epoch); after the last
    epoch the super-net's and child-net's top-1 on the validation images without augmentation."""
    s = train_search.main([*TINY, "--subset", "16", "--darts", "--epochs", "2", "--save", str(tmp_path / "darts")])
    assert s.model.engines == {0, 1, 2} and all(len(c.ops) == 14 and c.squeeze is None for c in s.model.cells)
    m = MetricsLog.read(tmp_path / "darts" / "metrics.jsonl")
    assert [r["tau"] for r in m] == [1.0, 1.0] and set(consistency.KEYS).isdisjoint(m[0])
    assert all(0 <= m[-1][k] <= 100 for k in consistency.KEYS)
    assert consistency.main(["table1", str(tmp_path / "darts")])[0]["darts"]
    # validate() runs the super-net (all 14 x 7 ops of a cell) and then its child-net (the 8 derived ops)
    calls = _count_calls(s.model.cells[0])
    _, valid_queue, _ = search_loaders(s.args)
    s.validate(valid_queue)
    assert sum(calls.values()) == 14 * 7 + 8  # 8 validation images: one batch
    assert "all (DARTS)" in capsys.readouterr().out
    # the clean loader: the same validation images every time, without touching the search's augmentation
    args = train_search.parse_args([*TINY, "--save", "unused"])
    _, valid_queue, _ = search_loaders(args)
    augment = _base(valid_queue.dataset).transform
    clean = train_search.unaugmented(valid_queue, args)
    first, second = ([x for x, _ in clean] for _ in range(2))
    assert all(torch.equal(a, b) for a, b in zip(first, second)) and sum(len(x) for x in first) == 16
    assert _base(valid_queue.dataset).transform is augment and _base(clean.dataset).transform is not augment


def _base(ds):
    while isinstance(ds, Subset):
        ds = ds.dataset
    return ds


def test_kendall_tau(tmp_path):
    assert consistency.kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)  # 5 concordant, 1 discordant
    assert consistency.kendall_tau([1, 2, 3], [3, 2, 1]) == -1
    assert consistency.kendall_tau([1, 2, 2, 3], [1, 2, 3, 3]) == pytest.approx(0.8)  # tau-b: 4 / sqrt(5 * 5)
    with pytest.raises(ValueError):
        consistency.kendall_tau([1, 1], [1, 2])
    search, evals = [], []
    for n, (s, e) in enumerate([(80.0, 97.1), (82.0, 97.0), (85.0, 97.4), (84.0, 97.5)]):
        search.append(tmp_path / f"s{n}")
        evals.append(tmp_path / f"e{n}")
        search[-1].mkdir()
        evals[-1].mkdir()
        (search[-1] / "metrics.jsonl").write_text(json.dumps({"epoch": 0, "supernet_valid_top1": s}) + "\n")
        (evals[-1] / "summary.json").write_text(json.dumps({"final_top1": e, "best_top1": e}))
    # pairs: (0,1) D, (0,2) C, (0,3) C, (1,2) C, (1,3) C, (2,3) D -> (4 - 2) / 6
    out = tmp_path / "kendall.json"
    assert consistency.main(["kendall", "--search", *map(str, search), "--retrained", *map(str, evals),
                             "--out", str(out)]) == pytest.approx(1 / 3)
    k = json.loads(out.read_text())
    assert k["kendall_tau"] == pytest.approx(1 / 3) and [q["supernet"] for q in k["pairs"]] == [80.0, 82.0, 85.0, 84.0]
    # PC-DARTS: the super-net accuracy DARTS-PD's stage 1 logged after its last epoch
    for folder, s in zip(search, [84.0, 85.0, 80.0, 82.0]):
        (folder / "stage1").mkdir()
        (folder / "stage1" / "metrics.jsonl").write_text(json.dumps({"epoch": 0}) + "\n" +
                                                        json.dumps({"epoch": 1, "valid_top1": s}) + "\n")
    pd = [str(f / "stage1") for f in search]
    # pairs: (2,3) C, the other five D -> (1 - 5) / 6
    assert consistency.main(["kendall", "--search", *pd, "--retrained", *map(str, evals),
                             "--supernet_key", "valid_top1"]) == pytest.approx(-2 / 3)
    with pytest.raises(SystemExit):  # a key the searches did not log
        consistency.main(["kendall", "--search", *pd, "--retrained", *map(str, evals), "--supernet_key", "top1"])


# ------------------------------------------------------------------ Table 3: the largest batch that fits

def test_table3_probe_doubles_then_bisects_to_the_largest_batch_under_a_memory_limit(monkeypatch):
    """bench/search_cost.py --max_batch with a fake measurement: peak = 100 MB + 3 MB per image,
    under a limit of 2000 MB the largest batch is 633 (1999 MB) and the largest 64 * 2^m is 512."""
    def fake(name, opts):
        return {"name": name, "time_s": 1e-3 * opts.batch_size, "peak_memory_MB": 100.0 + 3 * opts.batch_size}

    monkeypatch.setattr(search_cost, "run_config", fake)
    opts = search_cost.parse_args(["--device", "cpu", "--max_batch", "--memory_limit_MB", "2000"])
    row = search_cost.max_batch("entrannas +bottleneck", opts, search_cost.try_batch)
    assert [int(b) for b in row["tried"]] == [64, 128, 256, 512, 1024, 768, 640, 576, 608, 624, 632, 636, 634, 633]
    assert (row["batch"], row["batch_doubling"], row["peak_memory_MB"], row["step_s"]) == (633, 512, 292.0, 0.633)
    assert row["search_days"] == pytest.approx(0.633 * 50 * 40 / 86400)  # ceil(25000 / 633) = 40 steps
    assert row["search_days_doubling"] == pytest.approx(0.512 * 50 * 49 / 86400)
    assert row["tried"]["1024"] is None and row["tried"]["633"] == 1999.0
    tight = search_cost.parse_args(["--device", "cpu", "--max_batch", "--memory_limit_MB", "200"])
    assert search_cost.max_batch("entrannas +bottleneck", tight, search_cost.try_batch)["batch"] is None
    with pytest.raises(SystemExit):  # a CPU never runs out of memory by itself: the limit is needed
        search_cost.parse_args(["--device", "cpu", "--max_batch"])


def test_torchrun_search_keeps_ranks_identical(tmp_path):
    run(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
         ROOT / "tests" / "_entrannas_ddp.py", tmp_path, *TINY, "--batch_size", "16", "--dst", "--epochs", "1",
         "--save", tmp_path / "run"])
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for name in ("alpha_normal", "alpha_reduce", "beta_normal", "beta_reduce"):
        assert torch.equal(r0[name], r1[name])
        assert not torch.equal(r0[name], r0["init_" + name])  # it did move
    assert all(torch.equal(r0[k], r1[k]) for k in r0 if "running" not in k and "num_batches" not in k)
    assert (tmp_path / "run" / "genotype.json").exists() and not (tmp_path / "rank1-run").exists()
