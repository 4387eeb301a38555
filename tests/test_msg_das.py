"""MSG-DAS: the Gumbel-TopK sampler, single-path sub-graphs, Dropblock-Identity, the gradient-stopped
super-net guidance, the schedules, and the scripts end to end (search, resume after a kill, train)."""
import json
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from common.data import make_loader
from common.genotypes import load
from common.search import search_loop
from common.utils import MetricsLog, setup_run
from conftest import ROOT, SMALL
from msg_das import train as msg_train
from msg_das import train_search
from msg_das.model_search import DropBlockIdentity, MixedOp, Network, dropblock_mask, gumbel_noise, gumbel_topk

TINY = [*SMALL, "--image_size", "8", "--layers", "3", "--init_channels", "4", "--batch_size", "16"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One thread: these tiny networks gain nothing from two (on a shared machine they lose a lot),
    and the resume test compares with a subprocess started with OMP_NUM_THREADS=1 bit for bit."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _searcher(*flags):
    args = train_search.parse_args([*TINY, *flags])
    torch.manual_seed(0)
    return train_search.Searcher(args, 10, torch.device("cpu"))


def _count_op_calls(net):
    """{(cell, edge, op index): calls}, counted by forward hooks on every candidate op."""
    calls = {}
    for c, cell in enumerate(net.cells):
        for e, edge in enumerate(cell.edges):
            for o, op in enumerate(edge.ops):
                calls[c, e, o] = 0
                op.register_forward_hook(lambda m, i, out, key=(c, e, o): calls.__setitem__(key, calls[key] + 1))
    return calls


# ---------------------------------------------------------------- Gumbel-TopK sampler (Sec. 3.1)

def test_topk_picks_are_one_hot_and_mutually_exclusive():
    torch.manual_seed(0)
    alpha = (2 * torch.randn(6, 8)).repeat(500, 1)  # 3,000 independent edges
    for k in (1, 3, 8):
        h = gumbel_topk(alpha, k, tau=5.0)
        assert h.shape == (k, 3000, 8)
        assert set(h.unique().tolist()) <= {0.0, 1.0} and torch.equal(h.sum(-1), torch.ones(k, 3000))
        assert h.sum(0).max() == 1  # no op is picked twice on an edge
    assert torch.equal(gumbel_topk(alpha, 8, 1.0).sum(0), torch.ones(3000, 8))  # K = all ops: a permutation


def test_first_pick_is_softmax_and_second_is_without_replacement():
    torch.manual_seed(0)
    a = torch.tensor([1.5, -0.5, 0.0, 0.8, -1.0, 0.3, 2.0, -2.0])
    N = 200_000
    h = gumbel_topk(a.expand(N, 8), 2, tau=10.0)  # tau changes the gradients, never the picks
    p = F.softmax(a, 0)
    # P(second = j) = sum_{i != j} p_i p_j / (1 - p_i): the first pick is removed (Eq. 2, O^2 = O / {o^1})
    q = torch.stack([sum(p[i] * p[j] / (1 - p[i]) for i in range(8) if i != j) for j in range(8)])
    for freq, expected in ((h[0].mean(0), p), (h[1].mean(0), q)):
        sigma = (expected * (1 - expected) / N).sqrt()
        assert ((freq - expected).abs() < 5 * sigma).all(), (freq, expected)
    assert not torch.allclose(q, p, atol=0.01)  # the two laws differ: the test can tell them apart


def test_straight_through_gradient_is_that_of_relaxed_h():
    alpha = torch.randn(5, 8, requires_grad=True)
    c = torch.randn(3, 5, 8)
    torch.manual_seed(7)
    h = gumbel_topk(alpha, 3, tau=2.0)
    (h * c).sum().backward()
    # by hand: the same single Gumbel draw, r = (alpha + g) / tau, h^k = softmax over the ops not yet picked
    torch.manual_seed(7)
    a = alpha.detach().clone().requires_grad_()
    r = (a + gumbel_noise(a)) / 2.0
    taken = torch.zeros(5, 8, dtype=torch.bool)
    relaxed = 0
    for k in range(3):
        rk = r.masked_fill(taken, float("-inf"))
        pick = rk.argmax(-1)
        assert torch.equal(h[k].argmax(-1), pick)
        relaxed = relaxed + (F.softmax(rk, -1) * c[k]).sum()
        taken = taken | F.one_hot(pick, 8).bool()
    relaxed.backward()
    assert torch.allclose(alpha.grad, a.grad, atol=1e-6) and alpha.grad.abs().sum() > 0


def test_sampler_rejects_large_k_and_survives_extreme_draws(monkeypatch):
    with pytest.raises(ValueError, match="mutually exclusive"):
        gumbel_topk(torch.zeros(14, 8), 9, 1.0)
    with pytest.raises(ValueError):
        gumbel_topk(torch.zeros(14, 8), 0, 1.0)
    # uniform draws of exactly 0 and 1 would give -inf / +inf Gumbel noise without the guard
    monkeypatch.setattr(torch, "rand_like", lambda x: torch.arange(x.numel()).remainder(2).float().view_as(x))
    alpha = torch.zeros(14, 8, requires_grad=True)
    h = gumbel_topk(alpha, 4, 1.0)
    (h * torch.randn_like(h)).sum().backward()
    assert torch.isfinite(h).all() and torch.isfinite(alpha.grad).all()
    assert h.sum(0).max() == 1


# ---------------------------------------------------------------- sub-graphs and the super-net (Fig. 2)

def test_only_the_sampled_op_runs_on_each_edge():
    torch.manual_seed(0)
    net = Network(4, 10, layers=3)
    calls = _count_op_calls(net)
    x = torch.randn(2, 3, 8, 8)
    subgraphs = net.sample(3, tau=1.0)
    picked, total = {}, 0
    for w_n, w_r in subgraphs:
        calls.update(dict.fromkeys(calls, 0))
        total = total + net(x, w_n, w_r).sum()
        for c, cell in enumerate(net.cells):
            index = (w_r if cell.reduction else w_n).argmax(-1)
            for e in range(len(cell.edges)):
                ran = [o for o in range(8) if calls[c, e, o]]
                assert ran == [index[e].item()] and calls[c, e, ran[0]] == 1
                picked.setdefault((c, e), []).append(ran[0])
    assert all(len(set(ops)) == 3 for ops in picked.values())  # the 3 sub-graphs never share an op
    total.backward()
    assert net.alpha_normal.grad.abs().sum() > 0 and net.alpha_reduce.grad.abs().sum() > 0  # straight-through
    calls.update(dict.fromkeys(calls, 0))
    with torch.no_grad():
        net(x, *net.supernet_weights(), single_path=False)
    assert set(calls.values()) == {1}  # the super-net runs every op once


def test_single_path_output_equals_the_discrete_network():
    """A sub-graph is the cell with one op per edge: the mixture of its one-hot weights gives the same logits."""
    torch.manual_seed(0)
    net = Network(4, 10, layers=3).eval()
    w_n, w_r = net.sample(1, 1.0)[0]
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(net(x, w_n, w_r), net(x, w_n, w_r, single_path=False), atol=1e-5)


def test_teacher_pass_keeps_no_graph_and_is_skipped_at_lambda_zero():
    s = _searcher("--epochs", "3")
    saved = []
    x = torch.randn(4, 3, 8, 8)
    before = {k: v.clone() for k, v in s.net.state_dict().items()}
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        p = s.soft_labels(x)
    assert saved == [] and not p.requires_grad and p.grad_fn is None  # nothing kept for backward
    after = s.net.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())  # BN statistics untouched
    assert torch.allclose(p.sum(1), torch.ones(4))

    batch = (x, torch.randint(10, (4,)))
    for flags, epoch, teacher in ((["--epochs", "3"], 2, True), (["--epochs", "3"], 0, False),
                                  (["--epochs", "3", "--lambda_guide", "0"], 2, False),
                                  (["--epochs", "3", "--lambda_guide", "0", "--peer_loss"], 2, False)):
        s = _searcher(*flags)
        s.start_epoch(epoch)
        calls = _count_op_calls(s.net)
        out = s.step(batch, batch)
        per_edge = {sum(calls[c, e, o] for o in range(8)) for c, e, _ in calls}
        # K sub-graphs in the architecture step, K in the weight step, + 8 ops of the super-net
        assert per_edge == {2 * 2 + 8 * teacher}, flags
        assert ("guide_loss" in out) == teacher and ("peer_loss" in out) == ("--peer_loss" in flags)


def test_guidance_and_peer_losses_follow_eq7():
    torch.manual_seed(0)
    logits = [torch.randn(5, 10, requires_grad=True) for _ in range(3)]
    y = torch.randint(10, (5,))
    p_super = F.softmax(torch.randn(5, 10), 1)
    lam, mu = 0.3, 0.2
    total, cls, guide, peer = train_search.subgraph_losses(logits, y, p_super, lam, mu)
    # by hand: L^k = CE(y) - lam * sum_c p_super log p^k - mu * mean_{j != k} sum_c p^j log p^k
    log_p = [F.log_softmax(l, 1) for l in logits]
    p = [lp.exp().detach() for lp in log_p]
    expected = sum(F.nll_loss(log_p[k], y) - lam * (p_super * log_p[k]).sum(1).mean()
                   - mu * sum((p[j] * log_p[k]).sum(1).mean() for j in range(3) if j != k) / 2
                   for k in range(3))
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    assert cls == pytest.approx(sum(F.cross_entropy(l, y).item() for l in logits) / 3, rel=1e-6)
    assert guide > 0 and peer > 0
    # the peers' predictions are targets only: sub-graph 0's gradient is that of its own L^0
    total.backward()
    own = F.cross_entropy(logits[0], y) + lam * F.cross_entropy(logits[0], p_super) + mu * (
        F.cross_entropy(logits[0], p[1]) + F.cross_entropy(logits[0], p[2])) / 2
    assert torch.allclose(logits[0].grad, torch.autograd.grad(own, logits[0])[0], atol=1e-7)


# ---------------------------------------------------------------- schedules and Dropblock-Identity

def test_schedules_start_at_zero_and_follow_their_shapes():
    a = train_search.parse_args(["--epochs", "240", "--lambda_guide", "0.01"])
    taus = [train_search.tau_at(e, a) for e in range(240)]
    assert taus[0] == 10 and taus[-1] == pytest.approx(1) and taus[120] == pytest.approx(10 - 9 * 120 / 239)
    lams = [train_search.lambda_at(e, a, a.lambda_guide) for e in range(240)]
    assert lams[0] == 0 and lams[-1] == pytest.approx(0.01)
    assert all(b - a_ == pytest.approx(0.01 / 239) for a_, b in zip(lams, lams[1:]))  # linear
    drops = [train_search.drop_block_at(e, a) for e in range(240)]
    # zero for the first fifth, then 4 equal rises to the final rate at epochs 48, 96, 144, 192
    assert drops[:48] == [0.0] * 48 and drops[-1] == pytest.approx(0.1)
    rises = [e for e in range(1, 240) if drops[e] != drops[e - 1]]
    assert rises == [48, 96, 144, 192] and all(drops[e] - drops[e - 1] == pytest.approx(0.025) for e in rises)

    s = _searcher("--epochs", "5", "--drop_block_prob", "0.2", "--drop_block_steps", "1")
    blocks = [m for m in s.net.modules() if isinstance(m, DropBlockIdentity)]
    for epoch, rate in ((0, 0.0), (2, 0.0), (3, 0.2)):
        s.start_epoch(epoch)
        assert {m.p for m in blocks} == {rate}


def _opening(dropped, b):
    """Morphological opening of a 0/1 map of dropped units by a b x b square, the outside of the map
    counting as dropped: equal to `dropped` exactly when it is a union of (border-clipped) b x b blocks."""
    eroded = 1 - F.max_pool2d(1 - F.pad(dropped, [b - 1] * 4, value=1.0), b, stride=1)
    return F.max_pool2d(eroded, b, stride=1)


def test_dropblock_identity_drops_whole_blocks_unscaled_only_in_training():
    skip = MixedOp(("skip_connect",), 4, 1, block_size=3).ops[0]
    assert isinstance(skip, DropBlockIdentity)
    reduce_skip = MixedOp(("skip_connect",), 4, 2, block_size=3).ops[0]
    assert not isinstance(reduce_skip, DropBlockIdentity)  # stride 2: FactorizedReduce, not an identity
    torch.manual_seed(0)
    x = torch.rand(8, 4, 16, 16) + 0.5
    assert torch.equal(skip(x), x)  # p = 0 at the start: identity
    skip.p = 0.3
    y = skip(x)
    assert ((y == x) | (y == 0)).all()  # Eq. (4): x * m~, the kept values are not rescaled
    dropped = (y == 0).float()
    assert 0.25 < dropped.mean() < 0.35 and torch.equal(_opening(dropped, 3), dropped)  # whole 3x3 blocks
    unit_dropout = (torch.rand_like(x) < 0.3).float()
    assert not torch.equal(_opening(unit_dropout, 3), unit_dropout)  # the check tells blocks from single units
    assert torch.equal(skip.eval()(x), x)
    skip.block_size = 5
    assert skip.train()(torch.ones(2, 4, 2, 2)).shape == (2, 4, 2, 2)  # a block larger than the map


def test_eq6_dropblock_scales_the_expected_alpha_id_gradient_by_the_keep_rate():
    """Eq. (5): d L / d alpha_id = dL/dy g'(alpha_id) (x * m~) for each mask; Eq. (6): over the masks its
    mean is (1 - rate) times the gradient without the module. A mask that rescales the kept values
    (torchvision's drop_block2d) leaves the ratio at 1."""
    torch.manual_seed(0)
    edge = MixedOp(("skip_connect", "max_pool_3x3"), 4, 1, block_size=3)
    skip = edge.ops[0]
    x, c = torch.rand(16, 4, 16, 16) + 0.5, torch.rand(16, 4, 16, 16) + 0.5  # c = dL/dy of a linear loss
    alpha = torch.zeros(2, requires_grad=True)

    def grad_alpha_id():
        w = F.softmax(alpha, 0)  # g(alpha)
        return torch.autograd.grad((c * edge(x, w, index=0)).sum(), alpha)[0][0]

    base = grad_alpha_id()
    assert base == pytest.approx(0.25 * (c * x).sum().item(), rel=1e-5)  # g' = w (1 - w) = 1/4
    for rate in (0.1, 0.3):
        skip.p = rate
        torch.manual_seed(1)
        m = dropblock_mask(x, rate, 3)
        torch.manual_seed(1)
        assert grad_alpha_id() == pytest.approx(0.25 * (c * x * m).sum().item(), rel=1e-5)  # Eq. (5)
        mean = torch.stack([grad_alpha_id() for _ in range(100)]).mean()
        assert (mean / base).item() == pytest.approx(1 - rate, abs=0.01), rate  # Eq. (6)


# ---------------------------------------------------------------- end to end

def _easy_loaders(n, size=8, seed=0):
    """Synthetic images whose class is a colour: learnable in a few dozen steps."""
    g = torch.Generator().manual_seed(seed)
    colours = torch.randn(10, 3, generator=g)
    y = torch.arange(n) % 10
    x = colours[y].view(n, 3, 1, 1) + 0.5 * torch.randn(n, 3, size, size, generator=g)
    half = n // 2
    return (make_loader(TensorDataset(x[:half], y[:half]), 32, True, 0, 0),
            make_loader(TensorDataset(x[half:], y[half:]), 32, True, 0, 1))


def test_search_learns_and_writes_a_genotype_that_trains(tmp_path):
    args = train_search.parse_args([*TINY, "--epochs", "3", "--learning_rate", "0.05", "--save", str(tmp_path / "s")])
    torch.manual_seed(0)
    save = setup_run(args, "t")
    train_q, valid_q = _easy_loaders(640)
    g = search_loop(args, train_search.Searcher(args, 10, torch.device("cpu")), train_q, valid_q, save,
                    torch.device("cpu"), method="msg_das")
    m = MetricsLog.read(save / "metrics.jsonl")
    # the derived cell, validated on 320 images after every epoch: chance is 10% +- 1.7%
    top1 = [r["valid_top1"] for r in m]
    assert min(top1) > 18 and max(top1) > 30, top1
    assert all(len(r["alpha_normal"]) == 14 and len(r["alpha_normal"][0]) == 8 for r in m)  # alpha per epoch
    assert [r["tau"] for r in m] == [10, 5.5, 1] and m[0]["lambda_guide"] == 0
    assert load(str(save / "genotype.json")) == g and (save / "genotype.dot").exists()
    assert all(op != "none" and len(node) == 2 for c in (g.normal, g.reduce) for node in c.nodes for op, _ in node)
    model = msg_train.main(["--arch", str(save / "genotype.json"), *SMALL, "--image_size", "8", "--subset", "32",
                            "--epochs", "1", "--layers", "3", "--init_channels", "4", "--batch_size", "16",
                            "--save", str(tmp_path / "eval")])
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["genotype"] == str(g) and summary["params_M"] > 0 and model.auxiliary_head is not None


def test_resume_after_kill_gives_the_same_alpha_and_genotype(tmp_path):
    flags = [*TINY, "--subset", "96", "--epochs", "3"]
    full = tmp_path / "full"
    g_full = train_search.main([*flags, "--save", str(full)])
    killed = tmp_path / "killed"
    # the search as a user types it, killed once its first epoch is logged
    proc = subprocess.Popen([sys.executable, "msg_das/train_search.py", *flags, "--save", str(killed)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    metrics = killed / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.exists() and metrics.read_text().count("\n") >= 1) and time.time() < deadline:
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert not (killed / "genotype.json").exists(), "the run was not interrupted"
    g_resumed = train_search.main([*flags, "--save", str(killed), "--resume"])
    a = torch.load(full / "checkpoint.pt", weights_only=True)["searcher"]["net"]
    b = torch.load(killed / "checkpoint.pt", weights_only=True)["searcher"]["net"]
    assert torch.equal(a["alpha_normal"], b["alpha_normal"]) and torch.equal(a["alpha_reduce"], b["alpha_reduce"])
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert g_resumed == g_full and load(str(killed / "genotype.json")) == g_full
    assert MetricsLog.read(full / "metrics.jsonl") == MetricsLog.read(metrics)


def test_bad_flags_end_with_one_line(capsys):
    for flags in (["--K", "9"], ["--K", "1", "--peer_loss"], ["--drop_block_size", "0"]):
        with pytest.raises(SystemExit) as e:
            train_search.parse_args(flags)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("error:") and err.strip().count("\n") == 0
