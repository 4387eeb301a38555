"""DARTS-PT's Sec. 3 analyses (darts_pt/analysis.py): discretization accuracy at convergence, edge shuffling."""
import copy
import json
import os

import pytest
import torch
from torch.utils.data import TensorDataset

from common.data import SYNTHETIC_TEST, make_loader
from common.search import search_epoch
from common.train_eval import evaluate
from common.utils import init_distributed
from conftest import two_ranks
from darts_pt import analysis
from darts_pt.selection import evaluate_supernet
from darts_pt import train_search
from darts_pt.train_search import Searcher, parse_args

CPU = torch.device("cpu")
TINY = ["--dataset", "synthetic", "--image_size", "8", "--workers", "0", "--device", "cpu", "--subset", "16",
        "--batch_size", "8", "--init_channels", "4", "--layers", "3", "--epochs", "1"]


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    """A finished search on S3 (none, skip_connect, sep_conv_3x3) that kept its super-net after epoch 1
    too; on normal edge 2 its final alpha is set to favour `none`, then sep_conv_3x3."""
    folder = tmp_path_factory.mktemp("analysis") / "search"
    train_search.main([*TINY, "--search_space", "s3", "--save_epochs", "1", "--save", str(folder)])
    state = torch.load(folder / "checkpoint.pt", weights_only=True)
    state["searcher"]["model"]["alphas.normal"][2] = torch.tensor([3.0, 0.0, 1.0])
    torch.save(state, folder / "checkpoint.pt")
    return folder


def _searcher(seed=0):
    torch.manual_seed(seed)  # 3 cells: normal, reduce, reduce
    args = parse_args(["--layers", "3", "--init_channels", "4", "--device", "cpu", "--search_space", "s2",
                       "--batch_size", "8"])
    return Searcher(args, 10, CPU)


def _loader(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    ds = TensorDataset(torch.randn(n, 3, 8, 8, generator=g), torch.randint(10, (n,), generator=g))
    return make_loader(ds, 8, train=True, workers=0, seed=seed)


def test_a_discretized_and_tuned_edge_runs_only_its_op_and_the_other_edges_stay_mixed(monkeypatch):
    """Sec. 3.1: the edge becomes one-hot on its op (its alpha frozen, the other op's weights never
    trained and without effect on the output); every other edge keeps softmax(alpha) and trains."""
    s = _searcher()
    net = s.model
    alpha0 = {ct: a.detach().clone() for ct, a in net.alphas.items()}
    other_op = [p.detach().clone() for p in net.cells[0].edges[3].ops[0].parameters()]
    chosen_op = [p.detach().clone() for p in net.cells[0].edges[3].ops[1].parameters()]
    twin = copy.deepcopy(net)
    twin.project_op("normal", 3, 1)
    epochs, measured = [], []  # which accuracy is measured after the tuning: 1000 added per tuning epoch done
    tune, measure = analysis.search_epoch, analysis.supernet_accuracy
    monkeypatch.setattr(analysis, "search_epoch", lambda *a: epochs.append(a[3]) or tune(*a))
    monkeypatch.setattr(analysis, "supernet_accuracy",
                        lambda m, loader, *a: measured.append(loader) or measure(m, loader, *a) + 1000 * len(epochs))
    s.start_tuning(0.0025)
    train, valid = _loader(), _loader(seed=1)
    discretized, tuned = analysis.discretized_accuracy(s, "normal", 3, 1, 2, train, valid, 50)
    assert epochs == [50, 51]  # the epochs after the search's 50, each its own order of the batches (as projection)
    assert measured == [valid, valid]  # both on the validation split
    assert discretized == measure(twin, valid, "running")  # evaluation mode
    assert tuned == measure(net, valid, "running") + 2000
    assert net.decided == {"normal": [None] * 3 + [1] + [None] * 10, "reduce": [None] * 14}
    w = net.arch_weights()
    assert w["normal"][3].tolist() == [0.0, 1.0] and net.active["normal"][3] == [1]
    assert torch.equal(net.alphas["normal"][3], alpha0["normal"][3])
    rest = [e for e in range(14) if e != 3]
    assert torch.allclose(w["normal"][rest], torch.softmax(net.alphas["normal"][rest], -1))
    assert not torch.equal(net.alphas["normal"][rest], alpha0["normal"][rest])  # the rest is tuned, alpha too
    assert all(torch.equal(a, b) for a, b in zip(other_op, net.cells[0].edges[3].ops[0].parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(chosen_op, net.cells[0].edges[3].ops[1].parameters()))
    x = torch.randn(4, 3, 8, 8)
    net.eval()
    out = net(x)
    with torch.no_grad():
        for p in net.cells[0].edges[3].ops[0].parameters():
            p.add_(1.0)
    assert torch.equal(net(x), out)


def test_shuffle_swaps_two_edges_of_every_cell_and_puts_them_back():
    """Table 1: in every cell exactly two edges of the same stride trade places, each with its weights,
    which equals exchanging the two edges' mixed ops and alpha rows; unshuffled, the super-net is the
    untouched one (the 'before' accuracy)."""
    s = _searcher()
    net = s.model
    loader = _loader(seed=2)
    state = copy.deepcopy(net.state_dict())
    before = evaluate_supernet(net, loader)
    x = torch.randn(4, 3, 8, 8)
    net.eval()
    out = net(x)
    swaps = analysis.shuffle_edges(net, torch.Generator().manual_seed(1))
    assert len(swaps) == len(net.cells) == 3
    for cell, (a, b) in zip(net.cells, swaps):
        moved = [p for p in range(14) if cell.order[p] != p]
        assert moved == [a, b] and cell.order[a] == b and cell.order[b] == a
        assert not cell.reduction or (net.edges[a][1] < 2) == (net.edges[b][1] < 2)  # the same stride
    shuffled = net(x)
    # the same network built by exchanging the modules and the alpha rows of the normal cell's pair
    a, b = swaps[0]
    twin = copy.deepcopy(net)
    analysis.unshuffle(twin)
    for cell, (c, d) in zip(twin.cells[1:], swaps[1:]):
        cell.order[c], cell.order[d] = d, c
    edges = twin.cells[0].edges
    edges[a], edges[b] = edges[b], edges[a]
    with torch.no_grad():
        twin.alphas["normal"][[a, b]] = twin.alphas["normal"][[b, a]]
    assert torch.allclose(twin(x), shuffled, atol=1e-6) and not torch.allclose(shuffled, out)
    analysis.unshuffle(net)
    assert torch.equal(net(x), out)
    assert evaluate_supernet(net, loader) == before
    assert _same(net.state_dict(), state)


def test_accuracies_use_the_running_bn_statistics_unless_batch_is_asked():
    """--bn_stats running: evaluation mode, as the search reports valid_top1 (common.train_eval.evaluate);
    batch: the batch statistics, as the selection scores a masked op; neither changes the super-net."""
    net = _searcher().model
    for m in net.modules():  # running statistics far from the batches': the two modes differ
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.fill_(0.5)
    loader = _loader(n=16, seed=3)
    state = copy.deepcopy(net.state_dict())
    running, batch = (analysis.supernet_accuracy(net, loader, bn) for bn in ("running", "batch"))
    assert running == evaluate(net, loader, CPU)[1] and batch == evaluate_supernet(net, loader)[0]
    assert running != batch
    assert _same(net.state_dict(), state)


def test_a_shuffled_edge_moves_whole_a_removed_one_too():
    """Table 1's swap moves an edge with everything that is its own: ops, alpha row, and whether it runs
    (a removed edge stays removed where it lands): the network whose edges were built the other way."""
    net = _searcher().model
    net.remove_edge("normal", 2)
    twin = copy.deepcopy(net)
    net.cells[0].order[2], net.cells[0].order[5] = 5, 2  # 3<-0 and 4<-0 trade places
    edges = twin.cells[0].edges
    edges[2], edges[5] = edges[5], edges[2]
    with torch.no_grad():
        twin.alphas["normal"][[2, 5]] = twin.alphas["normal"][[5, 2]]
    twin.removed["normal"][2] = False
    twin.remove_edge("normal", 5)
    net.eval()
    twin.eval()
    x = torch.randn(4, 3, 8, 8)
    assert torch.allclose(net(x), twin(x), atol=1e-6)


def test_strength_candidates_leave_out_none_only_on_a_darts_cell():
    """App. A.1.1: DARTS' `none` only marks the topology, not a candidate of an edge; on a NAS-Bench-201
    cell `none` (zeroize) is an op like the others."""
    s3 = Searcher(parse_args(["--layers", "3", "--init_channels", "4", "--search_space", "s3"]), 10, CPU).model
    assert s3.edge_ops["normal"][0][0] == "none" and analysis.candidate_ops(s3, "normal", 0) == [1, 2]
    nb = Searcher(parse_args(["--init_channels", "4", "--search_space", "nb201", "--nb201_cells", "1"]), 10, CPU).model
    assert "none" in nb.edge_ops["cell"][0] and analysis.candidate_ops(nb, "cell", 0) == list(range(5))


def test_reduction_cells_only_swap_edges_of_the_same_stride():
    s = _searcher()
    reduce = s.model.cells[1]
    stride2 = [e for e, (_, j) in enumerate(s.model.edges) if j < 2]
    assert reduce.reduction and all(reduce.swappable(a, b) == ((a in stride2) == (b in stride2))
                                    for a in range(14) for b in range(14))
    assert all(s.model.cells[0].swappable(a, b) for a in range(14) for b in range(14))


def _same(a, b):
    """Nested state dicts equal, tensor by tensor."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return torch.equal(a, b) if torch.is_tensor(a) else a == b


def test_every_op_is_tuned_from_the_super_net_as_the_search_left_it():
    """Sec. 3.1: each op's discretization starts from the same trained super-net, Adam's moments of
    alpha included: tuning one op must not move the state the next one is loaded from."""
    s = _searcher()
    search_epoch(s, _loader(), _loader(seed=1), 0)  # alpha's Adam has moments now
    state = {"searcher": s.state_dict()}
    kept = copy.deepcopy(state)
    first = analysis.trained_supernet(s.args, 10, CPU, state, "checkpoint.pt")
    first.start_tuning(0.0025)
    first.model.project_op("normal", 0, 1)
    search_epoch(first, _loader(), _loader(seed=1), 1)
    assert _same(state, kept)
    assert _same(analysis.trained_supernet(s.args, 10, CPU, state, "checkpoint.pt").state_dict(), kept["searcher"])


def test_user_errors_end_with_one_line_before_a_folder_is_made(search, tmp_path, capsys):
    S = str(search)
    unfinished, blank = tmp_path / "unfinished", tmp_path / "blank"
    unfinished.mkdir()
    (unfinished / "args.json").write_text((search / "args.json").read_text())
    blank.mkdir()  # a finished fix-alpha search, as far as the flags tell
    (blank / "args.json").write_text(json.dumps({**json.loads((search / "args.json").read_text()), "method": "blank"}))
    (blank / "summary.json").write_text("{}")
    for argv, says in [
        (["shuffle", "--search_dir", S, "--edges", "3"], "--edges is a flag of `strength`, not of `shuffle`"),
        (["strength", "--search_dir", S, "--edges", "1", "--repeats", "2"], "--repeats is a flag of `shuffle`"),
        (["strength", "--search_dir", S], "strength needs the edges"),
        (["strength", "--search_dir", S, "--edges", "14"], "not among the cell's edges 0-13"),
        (["strength", "--search_dir", S, "--edges", "all", "3"], "give edge indices 0-13, or `all`"),
        (["strength", "--search_dir", S, "--edges", "1", "--random_edges", "2"], "give one of them"),
        (["strength", "--search_dir", S, "--random_edges", "15"], "the cell has 14 edges"),
        (["strength", "--search_dir", S, "--edges", "1", "--from_epoch", "7"], "kept the super-net after epochs [1]"),
        (["strength", "--search_dir", str(search / "genotype.json"), "--edges", "1"], "must be a run folder of"),
        (["shuffle", "--search_dir", str(unfinished)], "is not finished"),
        (["strength", "--search_dir", str(blank), "--edges", "1"], "whose alpha is 0 on every op"),
    ]:
        with pytest.raises(SystemExit) as e:
            analysis.main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and says in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert not [p.name for p in search.iterdir() if p.name.startswith("analysis")]
    # the command anywhere among the flags; a snapshot's analysis has a folder of its own
    args = analysis.parse_args(["--search_dir", S, "strength", "--edges", "1", "--from_epoch", "1"])
    assert args.command == "strength" and args.save == str(search / "analysis_strength_epoch1")


def test_strength_tunes_each_candidate_op_on_the_search_split_and_resumes_exactly(search, tmp_path, monkeypatch):
    """Sec. 3.1 from the command line on normal edge 2 of the S3 super-net, whose alpha favours `none`:
    `none` is neither measured nor chosen (App. A.1.1); each other op is discretized on an untouched
    super-net, tuned on the search's training half and measured on its validation half; a run killed
    after its first op and resumed writes what an uninterrupted one does; a finished folder is not
    written again, nor taken for a search."""
    argv = ["strength", "--search_dir", str(search), "--edges", "2", "--tune_epochs", "1"]
    calls, tuned, measure = [], [], analysis.discretized_accuracy

    def spy(searcher, ct, edge, op, epochs, train_queue, valid_queue, first_epoch, bn_stats, amp):
        untouched = all(d is None for d in searcher.model.decided["normal"])
        calls.append((untouched, ct, edge, op, epochs, list(train_queue.dataset.indices),
                      list(valid_queue.dataset.indices), first_epoch, bn_stats))
        if len(calls) == 4:
            raise KeyboardInterrupt  # the second run is killed at its second op
        at = measure(searcher, ct, edge, op, epochs, train_queue, valid_queue, first_epoch, bn_stats, amp)
        tuned.append(searcher.model.alphas["reduce"].detach().clone())  # what the tuning did, to the bit
        return at[0], at[1] + 100 * op  # accuracies that differ: sep_conv_3x3 (op 2) is the strongest

    monkeypatch.setattr(analysis, "discretized_accuracy", spy)
    full, killed = tmp_path / "full", tmp_path / "killed"
    analysis.main(argv + ["--save", str(full)])
    assert calls == [(True, "normal", 2, op, 1, list(range(8)), list(range(8, 16)), 1, "running") for op in (1, 2)]
    [r] = json.loads((full / "strength.json").read_text())
    assert r["ops"] == ["none", "skip_connect", "sep_conv_3x3"] and r["name"] == "3<-0"
    assert r["valid_top1"][0] is None and r["valid_top1_discretized"][0] is None
    assert r["alpha"] == pytest.approx(torch.softmax(torch.tensor([3.0, 0.0, 1.0]), 0).tolist())
    assert r["alpha_choice"] == "sep_conv_3x3"  # not `none`, whose alpha is the largest
    assert r["accuracy_choice"] == "sep_conv_3x3" and 200 <= r["valid_top1"][2] <= 300  # the tuned accuracy
    summary = json.loads((full / "summary.json").read_text())
    assert (summary["edges"], summary["same_choice"]) == (1, 1)
    assert {k: v for k, v in summary.items() if "_picks_" in k} == {  # every candidate op counted, `none` is none
        "alpha_picks_skip_connect": 0, "alpha_picks_sep_conv_3x3": 1,
        "accuracy_picks_skip_connect": 0, "accuracy_picks_sep_conv_3x3": 1}

    with pytest.raises(KeyboardInterrupt):
        analysis.main(argv + ["--save", str(killed)])
    assert not (killed / "summary.json").exists()
    analysis.main(argv + ["--save", str(killed), "--resume"])
    assert [c[3] for c in calls] == [1, 2, 1, 2, 2]  # the resumed run measures only the op left
    assert (killed / "strength.json").read_text() == (full / "strength.json").read_text()
    assert torch.equal(tuned[3], tuned[1]) and torch.equal(tuned[2], tuned[0])  # op by op, the same tuning

    written = {p.name: p.read_bytes() for p in full.iterdir()}
    for again in (argv + ["--save", str(full)], ["shuffle", "--search_dir", str(full)]):
        with pytest.raises(SystemExit) as e:
            analysis.main(again)
        assert e.value.code == 2
    assert {p.name: p.read_bytes() for p in full.iterdir()} == written


def test_picks_count_each_ops_wins_by_alpha_and_by_accuracy_apart():
    """Fig. 2's numbers: per op, the edges alpha gives it and the edges the accuracy gives it, counted apart
    (they disagree on the first edge), every candidate op listed, `none` (not a candidate) not."""
    ops = ["none", "skip_connect", "sep_conv_3x3"]
    results = [{"edge": 0, "ops": ops, "alpha_choice": "skip_connect", "accuracy_choice": "sep_conv_3x3"},
               {"edge": 1, "ops": ops, "alpha_choice": "sep_conv_3x3", "accuracy_choice": "sep_conv_3x3"}]
    assert analysis.picks(results, lambda edge: [1, 2]) == {
        "alpha_picks_skip_connect": 1, "alpha_picks_sep_conv_3x3": 1,
        "accuracy_picks_skip_connect": 0, "accuracy_picks_sep_conv_3x3": 2}


def test_shuffle_measures_the_test_set_as_trained_then_after_each_draw_alone(search, tmp_path, monkeypatch):
    """Table 1 from the command line: the test split (not the search's), evaluation mode; the first
    measurement on the super-net as trained, each draw's on exactly its swapped pairs (the previous
    draw undone); after = mean and sample std over the draws."""
    seen = []

    def spy(model, loader, bn_stats, amp=False):
        seen.append(([list(cell.order) for cell in model.cells], len(loader.dataset), bn_stats))
        return float(len(seen))

    monkeypatch.setattr(analysis, "supernet_accuracy", spy)
    analysis.main(["shuffle", "--search_dir", str(search), "--repeats", "3", "--save", str(tmp_path / "out")])
    data = json.loads((tmp_path / "out" / "shuffle.json").read_text())
    assert [(n, bn) for _, n, bn in seen] == [(SYNTHETIC_TEST, "running")] * 4
    assert seen[0][0] == [list(range(14))] * 3 and len(data["draws"]) == 3

    def swapped(a, b):
        order = list(range(14))
        order[a], order[b] = b, a
        return order

    assert [orders for orders, _, _ in seen[1:]] == [[swapped(*p) for p in d["swaps"]] for d in data["draws"]]
    assert len({str(d["swaps"]) for d in data["draws"]}) == 3  # three different draws
    assert (data["test_top1_before"], [d["test_top1"] for d in data["draws"]]) == (1.0, [2.0, 3.0, 4.0])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["test_top1_after"], summary["test_top1_after_std"], summary["repeats"]) == (3.0, 1.0, 3)


def _bn_statistics(net, rank):
    """Running statistics of a rank's own: BN layers of different ranks have seen different batches."""
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.fill_(0.3 * rank)
            m.running_var.fill_(1.0 + rank)


def test_under_torchrun_the_running_accuracy_is_rank_0s_super_net_on_every_image(tmp_path):
    """evaluate_supernet(running=True) under torchrun, as the selection logs it and the analyses measure:
    each rank scores its share of the images with rank 0's BN statistics (those the checkpoints keep) and
    the shares add up to what one process measures of rank 0's super-net; the mode is left as found."""
    g = torch.Generator().manual_seed(4)
    ds = TensorDataset(torch.randn(16, 3, 8, 8, generator=g), torch.randint(10, (16,), generator=g))

    def rank_fn(rank):
        init_distributed("cpu")
        net = _searcher().model
        _bn_statistics(net, rank)
        result = evaluate_supernet(net, make_loader(ds, 8, train=False, workers=0), running=True)
        torch.save({"result": result, "training": net.training}, tmp_path / f"rank{rank}.pt")

    assert two_ranks(rank_fn) == [0, 0]
    net = _searcher().model
    _bn_statistics(net, 0)
    top1, loss = evaluate_supernet(net, make_loader(ds, 8, train=False, workers=0), running=True)
    _bn_statistics(net, 1)
    assert evaluate_supernet(net, make_loader(ds, 8, train=False, workers=0), running=True)[1] != \
        pytest.approx(loss, rel=1e-4)  # rank 1's own statistics would measure another super-net
    for rank in (0, 1):
        seen = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert seen["result"][0] == top1 and seen["result"][1] == pytest.approx(loss, rel=1e-5) and seen["training"]


def test_the_analyses_run_under_torchrun_and_only_rank_0_writes(search, tmp_path):
    """analysis.py under torchrun joins the process group (the data split across the ranks, the
    accuracies summed over them) and writes its results from rank 0 alone."""
    def rank_fn(rank):
        if rank:
            for name in ("write_json", "write_summary"):
                setattr(analysis, name, lambda *a, **k: os._exit(3))  # rank 1 must not write
        analysis.main(["strength", "--search_dir", str(search), "--edges", "2", "--tune_epochs", "1", "--save",
                       str(tmp_path / "strength")])
        analysis.supernet_accuracy = lambda *a: 50.0 + rank  # 10,000 test images: the test above measures
        analysis.main(["shuffle", "--search_dir", str(search), "--repeats", "2", "--save", str(tmp_path / "shuffle")])

    assert two_ranks(rank_fn) == [0, 0]
    summary = json.loads((tmp_path / "strength" / "summary.json").read_text())
    assert (summary["world_size"], summary["edges"]) == (2, 1)
    [r] = json.loads((tmp_path / "strength" / "strength.json").read_text())
    assert r["valid_top1"][0] is None and all(isinstance(a, float) for a in r["valid_top1"][1:])
    summary = json.loads((tmp_path / "shuffle" / "summary.json").read_text())
    assert (summary["world_size"], summary["test_top1_before"]) == (2, 50.0)  # rank 0's
