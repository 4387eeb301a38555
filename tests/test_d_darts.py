"""D-DARTS: per-cell search, the losses of Eq. 3-9, parsing, Alg. 1, the authors' genotypes, the scripts
end to end."""
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from common.genotypes import Cell, Genotype, GenotypeError, load, parse_text, published
from common.search import frozen_bn_stats
from common.utils import MetricsLog, count_params
from conftest import SMALL, run
from d_darts import parse, search_stats, train, train_search
from d_darts.model import derive_layers, derived_layout
from d_darts.model_search import (PASS_THROUGH, PRIMITIVES, ablation_loss, dominant_shares, parse_cell,
                                  parse_genotype, total_loss, zero_one_loss)
from d_darts.train_search import Searcher, parse_args

TINY = ["--layers", "3", "--init_channels", "4", "--batch_size", "4"]
OP = {name: i for i, name in enumerate(PRIMITIVES)}


def _searcher(*flags, seed=0):
    torch.manual_seed(seed)
    s = Searcher(parse_args([*TINY, *flags]), 5, torch.device("cpu"))
    with torch.no_grad():
        for a in s.alphas:
            a.normal_(0, 1)  # away from the zero init, where every L01 gradient vanishes
    return s


def _batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 5, (4,), generator=g)


# ---------------------------------------------------------------- losses (Eq. 3, 6-9)

def test_losses_on_hand_computed_values():
    alpha = torch.tensor([[0.0, math.log(3.0)]])  # sigmoid: 0.5, 0.75
    assert zero_one_loss(alpha).item() == pytest.approx(-(0 + 0.25 ** 2) / 2)  # Eq. (3)
    f64 = torch.float64
    mc, l_ab = ablation_loss(torch.tensor(1.0, dtype=f64), torch.tensor([1.5, 1.2, 0.9], dtype=f64))
    assert mc.tolist() == pytest.approx([-0.5, -0.2, 0.1])  # Eq. (6)
    assert l_ab.tolist() == pytest.approx([1.5, 0.0, -1.5])  # Eq. (7): mean(MC) = -0.2
    mc, l_ab = ablation_loss(torch.tensor(1.0), torch.tensor([1.5, 0.5]))
    assert mc.tolist() == [-0.5, 0.5] and l_ab.tolist() == [0.0, 0.0]  # mean(MC) = 0
    assert total_loss(2.0, -0.1, 1.5, 7.0, 0.5) == pytest.approx(2.0 - 0.7 + 0.75)  # Eq. (9)


def _brute_force_grads(s, x, y, seed):
    """d L_T^i / d alpha_i straight from Eq. (3), (6), (7), (9): every ablated network run in full
    with its graph, the same random weights for the removed cells."""
    torch.manual_seed(seed)
    n, w01, w_abl = len(s.alphas), s.args.w01, s.args.w_abl
    L_minus = torch.stack([F.cross_entropy(s.net(x, ablated=j), y) for j in range(n)])
    L = F.cross_entropy(s.net(x), y)
    mc = L - L_minus
    l_ab = (mc - mc.mean()) / mc.mean()
    return [torch.autograd.grad(L + w01 * zero_one_loss(s.alphas[i]) + w_abl * l_ab[i], s.alphas[i],
                                retain_graph=True)[0] for i in range(n)]


def test_gradients_of_each_cells_total_loss():
    x, y = _batch()
    lf = _searcher("--w_abl", "0")
    g_lf, out_lf = lf.arch_gradients(x, y)
    assert out_lf["mc"] is None

    const = _searcher()  # the default: L_AB a constant, as in the authors' code
    g_const, out = const.arch_gradients(x, y)
    assert all(torch.equal(a, b) for a, b in zip(g_lf, g_const))  # L_AB is a number: no gradient through it
    assert torch.allclose(out["l_t"], total_loss(out["L"], out["l01"], out["l_ab"], 7.0, 0.5))
    assert out["mc"].abs().min() > 0 and out["l_ab"].abs().max() > 0

    diff = _searcher("--ablation_loss", "differentiable")
    torch.manual_seed(5)
    g_diff, _ = diff.arch_gradients(x, y)
    expected = _brute_force_grads(diff, x, y, seed=5)
    for gd, ge, gl in zip(g_diff, expected, g_lf):
        assert torch.allclose(gd, ge, rtol=1e-4, atol=1e-6)  # exactly d L_T^i / d alpha_i
        assert (gd - gl).abs().max() > 1e-3 * gl.abs().max()  # and L_AB's part reaches alpha

    amp = _searcher("--ablation_loss", "differentiable", "--amp")  # --amp is a no-op on a CPU
    torch.manual_seed(5)
    assert all(torch.equal(a, b) for a, b in zip(amp.arch_gradients(x, y)[0], g_diff))


@pytest.mark.parametrize("flags, graph_forwards, runs", [(["--w_abl", "0"], 1, 1), ([], 1, 4),
                                                          (["--ablation_loss", "differentiable"], 1, 5)])
def test_one_shared_forward_and_cell_wise_optimizers(flags, graph_forwards, runs):
    s = _searcher(*flags, "--arch_learning_rate", "0.05")
    for i, opt in enumerate(s.cell_optimizers):
        assert [p for group in opt.param_groups for p in group["params"]] == [s.alphas[i]]
        opt.param_groups[0]["lr"] = 0.05 if i == 1 else 0.0
    calls = {"stem_graph": 0, "classifier": 0}
    s.net.stem.register_forward_hook(lambda *_: calls.__setitem__("stem_graph", calls["stem_graph"]
                                                                  + torch.is_grad_enabled()))
    s.net.classifier.register_forward_hook(lambda *_: calls.__setitem__("classifier", calls["classifier"] + 1))
    alphas = [a.detach().clone() for a in s.alphas]
    weights = [w.detach().clone() for w in s.weights]
    out = s.arch_step(*_batch())
    assert calls == {"stem_graph": graph_forwards, "classifier": runs}
    # every cell's loss uses the one L_CE of the shared forward
    assert torch.allclose(out["l_t"] - s.args.w01 * out["l01"] - s.args.w_abl * out["l_ab"], out["L"].expand(3))
    assert [not torch.equal(a, b) for a, b in zip(alphas, s.alphas)] == [False, True, False]
    assert all(torch.equal(a, b) for a, b in zip(weights, s.weights))  # the architecture step moves no weight


def _ce(s, x, y):
    with torch.no_grad(), frozen_bn_stats(s.net):
        return F.cross_entropy(s.net(x), y).item()


def test_default_architecture_step_lowers_validation_loss():
    """The default search (L_AB a constant, as in the code behind the paper's tables) steps the alphas
    down L_CE. Here removing a cell raises the loss (mean(MC) < 0), where the differentiable L_AB's
    gradient, about (1 - 1/n) g / mean(MC), points up L_CE and outweighs it."""
    torch.manual_seed(4)
    s = Searcher(parse_args(TINY), 5, torch.device("cpu"))  # zero alphas: L01's gradient vanishes
    g = torch.Generator().manual_seed(104)
    x, y = torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 5, (4,), generator=g)
    s.net.train()
    before = _ce(s, x, y)
    out = s.arch_step(x, y)
    assert out["mc"].mean() < -0.1
    assert _ce(s, x, y) < before - 0.01


def test_shared_alphas_are_the_darts_super_net():
    """--share_alphas (FairDARTS' super-net, Fig. 5): all normal cells use one alpha and all reduction
    cells another, so each gets the sum of the per-cell gradients of the cells that use it."""
    x, y = _batch()
    flags = ["--layers", "4", "--w_abl", "0", "--w01", "0"]  # reduction cells 1 and 2
    own = _searcher(*flags)
    shared = _searcher(*flags, "--share_alphas")
    normal, reduce = shared.alphas
    assert [c.alpha is (reduce if i in (1, 2) else normal) for i, c in enumerate(shared.net.cells)] == [True] * 4
    assert len(shared.cell_optimizers) == 2 and len(list(shared.net.parameters())) == len(shared.weights) + 2
    with torch.no_grad():  # the per-cell network with the shared network's weights and architectures
        own.net.load_state_dict(shared.net.state_dict())
    g_own, _ = own.arch_gradients(x, y)
    g_shared, _ = shared.arch_gradients(x, y)
    assert torch.allclose(g_shared[0], g_own[0] + g_own[3], atol=1e-6)
    assert torch.allclose(g_shared[1], g_own[1] + g_own[2], atol=1e-6)
    g = shared.genotype("darts")
    assert g.kind == "darts" and g.normal == parse_cell(torch.sigmoid(normal).tolist(), "darts", 0.8)
    with pytest.raises(SystemExit):
        parse_args(["--share_alphas"])  # the ablation loss needs one architecture per cell


def test_dominant_shares_fig4():
    w = [[[0.95, 0.5, 0.05, 0.9]], [[0.1, 0.91, 0.99, 0.2]]]  # 8 weights: 3 above 0.9, 1 below 0.1
    assert dominant_shares(w) == (37.5, 12.5)


def test_figure_numbers_of_finished_searches(tmp_path):
    """search_stats.py: Fig. 3's smallest loss over the epochs (not the last), Fig. 4's shares after the
    last epoch, Fig. 5's best validation top-1, each the mean over the searches; an unfinished search is
    refused with one line."""
    records = [(3.0, 2.0, 20.0, 1.0, 2.0), (1.0, 2.5, 50.0, 3.0, 4.0), (2.0, 1.5, 40.0, 5.0, 6.0)]
    runs = []
    for i, shift in enumerate((0, 2)):
        run = tmp_path / f"s{i}"
        run.mkdir()
        (run / "metrics.jsonl").write_text("".join(json.dumps(
            {"epoch": e, "train_loss": t + shift, "valid_loss": v + shift, "valid_top1": a + shift,
             "ops_above_0.9_pct": hi + shift, "ops_below_0.1_pct": lo + shift}) + "\n"
            for e, (t, v, a, hi, lo) in enumerate(records)))
        (run / "summary.json").write_text("{}")
        runs.append(str(run))
    out = search_stats.main(["--search_dirs", *runs, "--save", str(tmp_path / "m")])
    assert (out["min_train_loss"], out["min_train_loss_epoch"], out["min_valid_loss"], out["min_valid_loss_epoch"]) \
        == (2.0, 1, 2.5, 2)
    assert (out["ops_above_0.9_pct"], out["ops_below_0.1_pct"], out["best_valid_top1"]) == (6.0, 7.0, 51.0)
    assert json.loads((tmp_path / "m" / "summary.json").read_text())["per_search"][1]["best_valid_top1"] == 52.0
    (tmp_path / "s1" / "summary.json").unlink()
    with pytest.raises(SystemExit):
        search_stats.main(["--search_dirs", *runs, "--save", str(tmp_path / "m2")])
    assert not (tmp_path / "m2").exists()


# ---------------------------------------------------------------- parsing (Sec. 5.1)

def _cell_weights(entries):
    w = [[0.1] * len(PRIMITIVES) for _ in range(14)]
    for (edge, op), v in entries.items():
        w[edge][OP[op]] = v
    return w


# edges 0-1: node 2; 2-4: node 3; 5-8: node 4; 9-13: node 5 (inputs in order)
HAND = _cell_weights({
    (0, "sep_conv_3x3"): 0.9, (0, "max_pool_3x3"): 0.85, (1, "skip_connect"): 0.95,  # node 2
    (4, "dil_conv_3x3"): 0.7,  # node 3: nothing above the threshold, so it is dropped
    (5, "dil_conv_5x5"): 0.8, (6, "avg_pool_3x3"): 0.81, (8, "sep_conv_5x5"): 0.99,  # node 4; 8 reads node 3
    (10, "sep_conv_3x3"): 0.9, (10, "dil_conv_3x3"): 0.9, (13, "skip_connect"): 0.9,  # node 5: ties
})


def test_sparse_parsing():
    cell = parse_cell(HAND, "sparse", 0.8)
    # node 4: its two best edges read node 3 (dropped) and input 1; input 0 (0.8) is third.
    # node 5: tied edges -> both; tied ops on edge 10 -> the lower op index. Node 5 becomes state 4.
    assert cell == Cell(((("sep_conv_3x3", 0), ("skip_connect", 1)), (("avg_pool_3x3", 1),),
                         (("sep_conv_3x3", 1), ("skip_connect", 3))), (2, 3, 4))
    assert parse_cell(HAND, "sparse", 0.95) == Cell(((("skip_connect", 1),),), (2,))  # 0.95 is kept


def test_edge_parsing():
    cell = parse_cell(HAND, "edge", 0.8)
    assert cell == Cell(((("sep_conv_3x3", 0), ("max_pool_3x3", 0), ("skip_connect", 1)),
                         (("dil_conv_5x5", 0), ("avg_pool_3x3", 1)),
                         (("sep_conv_3x3", 1), ("dil_conv_3x3", 1), ("skip_connect", 3))), (2, 3, 4))
    # at 0.86 node 4 loses its last input too, and node 5 the op that read it
    assert parse_cell(HAND, "edge", 0.86) == Cell(((("sep_conv_3x3", 0), ("skip_connect", 1)),
                                                   (("sep_conv_3x3", 1), ("dil_conv_3x3", 1))), (2, 3))


def test_darts_parsing():
    cell = parse_cell(HAND, "darts", 0.8)  # no threshold: two edges per node, ties to the lower index;
    # each node's inputs strongest first, as DARTS prints them
    assert cell == Cell(((("skip_connect", 1), ("sep_conv_3x3", 0)), (("dil_conv_3x3", 2), ("max_pool_3x3", 0)),
                         (("sep_conv_5x5", 3), ("avg_pool_3x3", 1)), (("sep_conv_3x3", 1), ("skip_connect", 4))),
                        (2, 3, 4, 5))


def test_empty_nodes_cascade_and_empty_cells_pass_through(tmp_path):
    chain = _cell_weights({(4, "sep_conv_3x3"): 0.9})  # node 3 reads only node 2, which has no input
    assert parse_cell(chain, "sparse", 0.8) is None and parse_cell(chain, "edge", 0.8) is None
    g = parse_genotype([HAND, chain, chain], (1, 2), "sparse", 0.8)
    assert g.kind == "per_cell" and g.reductions == (1, 2) and g.cells[1:] == (PASS_THROUGH, PASS_THROUGH)
    assert g.meta["pass_through_cells"] == [1, 2]
    g.validate()


# ---------------------------------------------------------------- Alg. 1

def test_derive_layers_by_hand():
    assert derive_layers(8, 14) == [0, 1, 0, 1, 2, 4, 3, 4, 3, 5, 6, 7, 6, 7]
    assert derive_layers(8, 20) == [0, 1, 0, 1, 0, 1, 2, 4, 3, 4, 3, 4, 3, 5, 6, 7, 6, 7, 6, 7]
    assert derive_layers(6, 9) == [0, 1, 0, 2, 3, 3, 4, 5, 5]
    assert derive_layers(5, 8) == [0, 0, 1, 2, 2, 3, 4, 4]
    assert derive_layers(8, 8) == list(range(8)) and derive_layers(8, 5) == list(range(5))
    with pytest.raises(GenotypeError, match="second third"):
        derive_layers(4, 6)


def _distinct_cells(n):
    """n cells told apart by their number of nodes (1..4), hence their output channels."""
    return tuple(Cell(tuple((("sep_conv_3x3", 0),) for _ in range(1 + i % 4)), tuple(range(2, 3 + i % 4)))
                 for i in range(n))


def test_deeper_network_copies_cells_by_alg1():
    g = Genotype(cells=_distinct_cells(8), reductions=(2, 5))
    layout = derived_layout(g, 14)
    assert [i for i, (_, red) in enumerate(layout) if red] == [14 // 3, 2 * 14 // 3]
    args = train.train_eval.parse_args(["--arch", "x", "--layers", "14", "--init_channels", "4"],
                                       cifar=train.CIFAR)
    net = train.build(g, 10, args)
    assert [c.multiplier for c in net.cells] == [1 + c % 4 for c in derive_layers(8, 14)]
    with pytest.raises(GenotypeError, match="reduction cells at 2 and 5"):
        derived_layout(Genotype(cells=g.cells, reductions=(3, 5)), 14)


# ---------------------------------------------------------------- the authors' genotypes

def _params(arch, dataset="cifar10", layers=8):
    """Parameters (M) of a genotype through train.py's network, as training it would build it."""
    args = train.train_eval.parse_args(["--arch", "x", "--dataset", dataset, "--layers", str(layers)],
                                       cifar=train.CIFAR, imagenet=train.IMAGENET)
    return count_params(train.build(arch, 1000 if dataset == "imagenet" else 10, args))


def test_published_genotypes_by_name_and_text(tmp_path):
    """d_darts/published.json: the authors' Genotype_nested files, cell for cell, with the reduction
    cells where they were searched (2 and 5, not the files' [2, 6])."""
    names = [n for n, (_, source) in published().items() if source.startswith("aheuillet/D-DARTS")]
    assert names == ["DD-1", "DD-2", "DD-4", "DD-5"]  # no genotype of DD-3 is published
    entries = json.loads((Path(train.__file__).parent / "published.json").read_text())
    for name in names:
        g, text = load(name), parse_text(entries[name]["text"])
        assert g.kind == "per_cell" and g.cells == text.cells and len(g.cells) == 8
        assert g.reductions == (2, 5) and text.reductions == (2, 6)
        assert load(entries[name]["text"]) == text  # pasted as --arch
    (tmp_path / "authors.txt").write_text(entries["DD-4"]["text"] + "\n")  # or their file given as --arch
    assert load(tmp_path / "authors.txt") == parse_text(entries["DD-4"]["text"])
    assert [len(load(n).cells[0].pairs()) for n in names] == [8, 28, 26, 8]  # sparse: 2 ops per node; edge: more
    # Table 1 at 36 channels: DD-2 3.3M, DD-4 3.9M, DD-5 1.7M (DD-1, printed 1.7M, counts 1.6M)
    assert [round(_params(load(n)), 2) for n in names] == [1.60, 3.28, 3.88, 1.71]
    assert round(_params(load("DD-4"), layers=14), 2) == 6.28  # Alg. 1, 14 layers: the authors' README, 6.28M
    assert round(_params(parse_text(entries["DD-4"]["text"])), 1) == 2.9  # the file's reductions [2, 6]: not 3.9M
    # Table 3, ImageNet at 14 layers (48 channels): DD-5 5.74M; "DD-2, sparse" 5.44M is DD-1's cells
    assert _params(load("DD-5"), "imagenet", 14) == pytest.approx(5.74, abs=0.02)
    assert _params(load("DD-1"), "imagenet", 14) == pytest.approx(5.44, abs=0.03)


def test_nested_text_form():
    g = parse_text("Genotype_nested(genes=[[('sep_conv_3x3', 2, 0), ('skip_connect', 4, 3), ('max_pool_3x3', 4, 1), "
                   "('skip_connect', 5, 4), ('dil_conv_3x3', 5, 0)]], concat=range(2, 6), reductions=[])")
    # node 3 has no op: it is skipped with the op reading it; nodes 4 and 5 become states 3 and 4
    assert g.cells == (Cell(((("sep_conv_3x3", 0),), (("max_pool_3x3", 1),), (("skip_connect", 3), ("dil_conv_3x3", 0))),
                            (2, 3, 4)),) and g.reductions == ()
    for bad in ("Genotype_nested(genes=[[('sep_conv_3x3', 2, 2)]], concat=[2], reductions=[])",
                "Genotype_nested(genes=[[]], concat=[2], reductions=[])",
                "Genotype_nested(genes=[[('sep_conv_3x3', 2, 0)]], concat=[2])",
                "Genotype_nested(genes=__import__('os'), concat=[2], reductions=[])"):
        with pytest.raises(GenotypeError):
            parse_text(bad)


# ---------------------------------------------------------------- scripts

def test_defaults_and_bad_flags():
    a = parse_args([])
    assert (a.batch_size, a.epochs, a.init_channels, a.layers, a.learning_rate, a.learning_rate_min) == \
        (72, 50, 16, 8, 0.005, 0.001)
    assert (a.arch_learning_rate, a.arch_weight_decay, a.w01, a.w_abl, a.threshold, a.parse, a.ablation_loss,
            a.share_alphas, a.seed) == (3e-3, 1e-3, 7.0, 0.5, 0.8, "sparse", "constant", False, 2)
    e = train.train_eval.parse_args(["--arch", "x"], cifar=train.CIFAR, imagenet=train.IMAGENET)
    assert (e.epochs, e.batch_size, e.learning_rate, e.layers, e.drop_path_prob, e.auxiliary, e.cutout) == \
        (600, 96, 0.025, 8, 0.2, True, True)
    for bad in (["--layers", "2"], ["--threshold", "1.5"]):  # --layers: common.utils.check_flags, in main
        with pytest.raises(SystemExit):
            train_search.main(bad)


SEARCH = [*SMALL, "--image_size", "8", "--subset", "16", "--batch_size", "8", "--init_channels", "4"]


def test_search_then_train_end_to_end(tmp_path):
    save = tmp_path / "search"
    run(["d_darts/train_search.py", *SEARCH, "--layers", "5", "--epochs", "1", "--save", save])
    for stem in ("genotype", "genotype_sparse", "genotype_edge", "genotype_darts"):
        assert (save / f"{stem}.json").exists() and (save / f"{stem}.dot").exists()
    assert json.loads((save / "genotype.json").read_text())["parse"] == "sparse"
    record = MetricsLog.read(save / "metrics.jsonl")[0]
    assert len(record["mc"]) == len(record["l_ab"]) == 5
    assert [len(record["sigmoid_alpha"]), len(record["sigmoid_alpha"][0]), len(record["sigmoid_alpha"][0][0])] == \
        [5, 14, 7]
    assert (record["ops_above_0.9_pct"], record["ops_below_0.1_pct"]) == dominant_shares(record["sigmoid_alpha"])
    # one epoch leaves every sigmoid weight near 0.5: the thresholded parsings keep no op, and say so
    summary = json.loads((save / "summary.json").read_text())
    assert summary["pass_through_cells"] == {"sparse": [0, 1, 2, 3, 4], "edge": [0, 1, 2, 3, 4], "darts": []}
    assert len(summary["max_sigmoid"]) == 5 and max(summary["max_sigmoid"]) < 0.8
    assert len(summary["warnings"]) == 2 and all(w in (save / "log.txt").read_text() for w in summary["warnings"])
    assert (save / "summary.json").stat().st_mtime_ns >= (save / "genotype_darts.json").stat().st_mtime_ns
    # parsed again: at the search's threshold the same genotypes, at a lower one every cell keeps ops
    parse.main([str(save), "--threshold", "0.8", "--save", str(tmp_path / "same")])
    for method in ("sparse", "edge", "darts"):
        assert load(tmp_path / "same" / f"genotype_{method}.json") == load(save / f"genotype_{method}.json")
    low = parse.main([str(save), "--threshold", "0.5"])
    assert low["pass_through_cells"] == {"sparse": [], "edge": [], "darts": []} and not low["warnings"]
    assert (save / "threshold-0.5" / "genotype_edge.json").exists()
    with pytest.raises(SystemExit):
        parse.main([str(tmp_path), "--threshold", "0.5"])  # not a search folder
    g = load(save / "genotype_darts.json")
    assert len(g.cells) == 5 and g.reductions == (1, 3)
    # 8 layers from the 5 searched cells by Alg. 1
    model = train.main(["--arch", str(save / "genotype_darts.json"), *SEARCH, "--layers", "8", "--epochs", "1",
                        "--save", str(tmp_path / "eval")])
    assert len(model.cells) == 8 and [c.multiplier for c in model.cells] == [4] * 8
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["layers"] == 8


def test_resume_is_exact(tmp_path, monkeypatch):
    flags = [*SEARCH, *TINY[:2], "--epochs", "2"]
    full = train_search.main([*flags, "--save", str(tmp_path / "full")])
    step = Searcher.step
    calls = []

    def crash_in_second_epoch(self, *batches):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return step(self, *batches)

    monkeypatch.setattr(Searcher, "step", crash_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_search.main([*flags, "--save", str(tmp_path / "crash")])
    monkeypatch.setattr(Searcher, "step", step)
    resumed = train_search.main([*flags, "--save", str(tmp_path / "crash"), "--resume"])
    a, b = full.state_dict()["net"], resumed.state_dict()["net"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert MetricsLog.read(tmp_path / "full" / "metrics.jsonl") == MetricsLog.read(tmp_path / "crash" / "metrics.jsonl")
