"""DARTS-PT's analysis of magnitude-based selection on a trained super-net (Sec. 3, Figs. 1, 2, 7, Table 1).

strength (Sec. 3.1, Figs. 1, 2, 7): the strength of an op on an edge is its "discretization accuracy at
convergence": the super-net's validation accuracy after the edge is discretized to that op (one-hot, as
the projection does) and the rest of the super-net tuned --tune_epochs epochs. For every chosen edge
(--edges, or --random_edges N drawn with --seed) and every candidate op (not `none` on a DARTS cell,
App. A.1.1), a fresh copy of the super-net is discretized and tuned; the op that softmax(alpha) picks
is compared with the op that the accuracy picks.

shuffle (Sec. 3.2, Table 1): the super-net's test accuracy as trained, then with two randomly chosen
edges of every cell swapped (the two edges' mixed ops, with their weights, trade places; only edges of
the same stride), over --repeats draws: DARTS' super-net is robust to edge shuffling, as ResNet is to
layer shuffling ("unrolled estimation").

Both measure the super-net in evaluation mode (BN running statistics), as the search reports its
accuracy; --bn_stats batch normalises with each batch's statistics, as the selection scores an op.

Usage: python darts_pt/analysis.py strength --search_dir RUN [--edges all | --edges E ... | --random_edges N]
           [--cell_type normal|reduce] [--tune_epochs 5] [--from_epoch E] [--bn_stats running|batch]
           [--save OUT] [--resume]
       python darts_pt/analysis.py shuffle --search_dir RUN [--repeats 10] [--from_epoch E]
           [--bn_stats running|batch] [--save OUT]
"""
import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F

from common.data import add_data_args, get_dataset, make_loader, search_loaders, transforms
from common.search import search_cost, search_epoch, write_summary
from common.utils import (add_run_args, add_speed_args, check_run, checkpoint_fits, die, get_device, init_distributed,
                          is_main, log, resume_state, save_checkpoint, set_seed, setup_run, write_json)
from darts_pt.projection import load_supernet, over_search
from darts_pt.selection import argmax, evaluate_supernet
from darts_pt.train_search import Searcher

COMMANDS = ("strength", "shuffle")
OWN_FLAGS = {"strength": ("edges", "random_edges", "cell_type", "tune_epochs", "tune_lr"), "shuffle": ("repeats",)}


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("command", choices=COMMANDS, help="strength: Figs. 1, 2, 7; shuffle: Table 1")
    p.add_argument("--search_dir", required=True, help="a finished train_search.py run folder")
    p.add_argument("--from_epoch", type=int, default=None, metavar="E",
                   help="analyse the super-net kept after E search epochs (train_search.py --save_epochs E) "
                        "instead of the final one")
    p.add_argument("--batch_size", type=int, help="default: the search's")
    p.add_argument("--bn_stats", choices=("running", "batch"), default="running",
                   help="the BN statistics of the accuracies reported: running (evaluation mode, as the search "
                        "reports valid_top1 and the authors' code a super-net's validation and test accuracy) or "
                        "batch (training mode, as the selection scores a masked op)")
    g = p.add_argument_group("strength")
    g.add_argument("--edges", nargs="+", metavar="E",
                   help="edge indices of --cell_type (alpha's rows, node by node), or `all`")
    g.add_argument("--random_edges", type=int, metavar="N", help="N edges of --cell_type drawn with --seed")
    g.add_argument("--cell_type", choices=("normal", "reduce"), default="normal",
                   help="the cell type whose edges are analysed (a NAS-Bench-201 super-net has one)")
    g.add_argument("--tune_epochs", type=int, default=5,
                   help="tuning epochs after the discretization (Sec. 3.1: 'until it converges again'; the "
                        "projection's 5, Sec. 5.1, App. A.7)")
    g.add_argument("--tune_lr", type=float, default=0.0025,
                   help="constant SGD learning rate of the tuning (projection.py --proj_lr)")
    g = p.add_argument_group("shuffle")
    g.add_argument("--repeats", type=int, default=10, help="random shuffles (Table 1: mean ± std)")
    add_run_args(p)
    add_speed_args(p, cuda_graph="the tuning's search steps")
    add_data_args(p, search=True)
    return p


def parse_args(argv=None):
    """The analysis flags over the search run's arguments (data, device, seed default to the search's);
    --save defaults to SEARCH_DIR/analysis_<command>[_epoch<E>]. A flag of the other command ends the run."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = over_search(get_parser(), argv, words=COMMANDS[:1])  # any command: the flags are the same
    given = flags_given(argv, [f for flags in OWN_FLAGS.values() for f in flags])
    if wrong := [f for c, flags in OWN_FLAGS.items() if c != args.command for f in flags if f in given]:
        other = next(c for c in COMMANDS if wrong[0] in OWN_FLAGS[c])
        die(f"--{wrong[0]} is a flag of `{other}`, not of `{args.command}`: leave it out")
    if args.command == "strength":
        if args.edges is None and args.random_edges is None:
            die("strength needs the edges: --edges E [E ...] (or --edges all), or --random_edges N")
        if args.edges is not None and args.random_edges is not None:
            die("--edges and --random_edges both choose the edges: give one of them")
        if args.random_edges is not None and args.random_edges < 1:
            die(f"--random_edges {args.random_edges}: draw at least 1 edge")
        if args.tune_epochs < 0:
            die(f"--tune_epochs {args.tune_epochs}: give 0 or more tuning epochs")
    elif args.repeats < 1:
        die(f"--repeats {args.repeats}: shuffle at least once")
    if args.method == "sgas":
        die(f"{args.search_dir} is an SGAS search, whose super-net decided its edges while it trained: analyse "
            "a super-net of --method darts, sdarts-* or blank")
    if args.method == "blank" and args.command == "strength":
        die(f"{args.search_dir} is a blank super-net, whose alpha is 0 on every op: strength compares the op "
            "softmax(alpha) picks with the one the accuracy picks; analyse a super-net of --method darts or sdarts-*")
    epoch = "" if args.from_epoch is None else f"_epoch{args.from_epoch}"
    args.save = args.save or str(Path(args.search_dir) / f"analysis_{args.command}{epoch}")
    return args


def flags_given(argv, dests):
    """Those of the flags `dests` that `argv` sets itself (not by a default)."""
    unset = object()
    p = get_parser()
    p.set_defaults(**dict.fromkeys(dests, unset))
    return {d for d, v in vars(p.parse_args(argv)).items() if d in dests and v is not unset}


def trained_supernet(args, num_classes, device, search_state, search_ckpt):
    """A Searcher holding the super-net as the search left it, on its own copy of the search's state
    (the Adam moments of alpha included): tuning it leaves the start of the next measurement as it was."""
    searcher = Searcher(args, num_classes, device)
    with checkpoint_fits(search_ckpt):
        searcher.load_state_dict(copy.deepcopy(search_state["searcher"]))
    return searcher


def supernet_accuracy(model, loader, bn_stats, amp=False):
    """Top-1 (%) of the super-net over `loader`: BN with its running statistics (evaluation mode) or,
    `bn_stats="batch"`, with the batch statistics, as the selection scores a masked op."""
    return evaluate_supernet(model, loader, amp=amp, running=bn_stats == "running")[0]


# ---------------------------------------------------------------- strength (Sec. 3.1)

def chosen_edges(model, args):
    """The edge indices of the analysed cell type: --edges (or all), or --random_edges drawn with --seed."""
    E = model.num_edges
    if args.random_edges is not None:
        if args.random_edges > E:
            die(f"--random_edges {args.random_edges}: the cell has {E} edges")
        g = torch.Generator().manual_seed(args.seed)
        return sorted(torch.randperm(E, generator=g)[:args.random_edges].tolist())
    if args.edges == ["all"]:
        return list(range(E))
    try:
        edges = [int(e) for e in args.edges]
    except ValueError:
        die(f"--edges {' '.join(args.edges)}: give edge indices 0-{E - 1}, or `all`")
    if bad := [e for e in edges if not 0 <= e < E]:
        die(f"--edges: {bad} not among the cell's edges 0-{E - 1}")
    return sorted(set(edges))


def candidate_ops(model, ct, edge):
    """The ops an edge can be discretized to: all, but not `none` on a DARTS cell (App. A.1.1)."""
    return [o for o, n in enumerate(model.edge_ops[ct][edge]) if n != "none" or model.num_inputs == 1]


def discretized_accuracy(searcher, ct, edge, op, epochs, train_queue, valid_queue, first_epoch, bn_stats="running",
                         amp=False):
    """Sec. 3.1: discretize `edge` of the super-net in `searcher` to `op` (its one-hot weights, the
    other edges untouched), tune the rest `epochs` epochs (Sec. 4.2's tuning: the weights at a constant
    rate, alpha of the other edges still trained), and return the validation top-1 right after the
    discretization and after the tuning (the discretization accuracy at convergence)."""
    model = searcher.model
    model.project_op(ct, edge, op)
    at_discretization = supernet_accuracy(model, valid_queue, bn_stats, amp)
    for t in range(epochs):
        search_epoch(searcher, train_queue, valid_queue, first_epoch + t)
    return at_discretization, supernet_accuracy(model, valid_queue, bn_stats, amp)


def picks(results, candidates):
    """How many of the analysed edges each op wins, by alpha (Sec. 2's selection) and by the discretization
    accuracy (Sec. 3.1): {"alpha_picks_OP": n, "accuracy_picks_OP": n}, every candidate op of an edge
    (`candidates(edge)`: its op indices) counted, 0 included (Fig. 2: skip_connect on 12 of 14 edges by alpha)."""
    counts = {}
    for r in results:
        for by in ("alpha", "accuracy"):
            for o in candidates(r["edge"]):
                counts.setdefault(f"{by}_picks_{r['ops'][o]}", 0)
            counts[f"{by}_picks_{r[by + '_choice']}"] += 1
    return counts


def strength(args, device, search_state, search_ckpt):
    """Sec. 3.1 (Figs. 1, 2, 7): per chosen edge, softmax(alpha) and the discretization accuracy at
    convergence of every candidate op, and the op each of them picks; resumable op by op."""
    train_queue, valid_queue, num_classes = search_loaders(args)

    def fresh():  # the trained super-net, as the search left it
        return trained_supernet(args, num_classes, device, search_state, search_ckpt)

    model = fresh().model
    ct = model.cell_types[0] if len(model.cell_types) == 1 else args.cell_type
    edges = chosen_edges(model, args)
    save = setup_run(args, "analysis_strength")
    ckpt = resume_state(args, device)  # the edges and ops measured so far
    results = ckpt["results"] if ckpt else []
    done = {(r["cell"], r["edge"]): r for r in results}
    t0 = time.time()
    for edge in edges:
        names = model.edge_ops[ct][edge]
        with torch.no_grad():
            alpha = F.softmax(model.alphas[ct][edge].float(), -1).tolist()
        record = done.get((ct, edge)) or {
            "cell": ct, "edge": edge, "name": "{}<-{}".format(*model.edges[edge]), "ops": list(names),
            "alpha": alpha, "valid_top1": [None] * len(names), "valid_top1_discretized": [None] * len(names)}
        if (ct, edge) not in done:
            results.append(record)
        for o in candidate_ops(model, ct, edge):
            if record["valid_top1"][o] is not None:
                continue
            set_seed(args.seed, args.deterministic)  # every op tuned on the same batches, whatever was resumed
            searcher = fresh()
            searcher.start_tuning(args.tune_lr)
            record["valid_top1_discretized"][o], record["valid_top1"][o] = discretized_accuracy(
                searcher, ct, edge, o, args.tune_epochs, train_queue, valid_queue, search_state["epoch"], args.bn_stats,
                args.amp)
            log.info("%s edge %d (%s) -> %s: valid %.2f%% discretized, %.2f%% after %d tuning epochs (alpha %.3f)",
                     ct, edge, record["name"], names[o], record["valid_top1_discretized"][o], record["valid_top1"][o],
                     args.tune_epochs, alpha[o])
            if is_main():  # under torchrun every rank measured the same (the accuracies are all-reduced)
                write_json(save / "strength.json", results)
            save_checkpoint(save / "checkpoint.pt", {"results": results})
        allowed = candidate_ops(model, ct, edge)
        record["alpha_choice"] = names[argmax(alpha, allowed)]  # the magnitude selection (Sec. 2)
        record["accuracy_choice"] = names[argmax(record["valid_top1"], allowed)]  # the strongest op (Sec. 3.1)
        if is_main():
            write_json(save / "strength.json", results)
    counts = picks(results, lambda edge: candidate_ops(model, ct, edge))
    same = sum(r["alpha_choice"] == r["accuracy_choice"] for r in results)
    log.info("%d edges: alpha and discretization accuracy pick the same op on %d", len(results), same)
    if is_main():
        write_summary(save, search_cost(time.time() - t0, device), command="strength", search_dir=str(args.search_dir),
                      cell=ct, edges=len(results), same_choice=same, tune_epochs=args.tune_epochs, **counts)


# ---------------------------------------------------------------- shuffle (Sec. 3.2, Table 1)

def shuffle_edges(model, generator):
    """Table 1: in every cell of the super-net, two edges drawn uniformly among the pairs that can trade
    places swap (their mixed ops and weights); returns the swapped pair of each cell."""
    swaps = []
    for cell in model.cells:
        if not hasattr(cell, "order"):  # NAS-Bench-201's residual blocks
            continue
        E = len(cell.edges)
        pairs = [(a, b) for a in range(E) for b in range(a + 1, E) if cell.swappable(a, b)]
        a, b = pairs[torch.randint(len(pairs), (1,), generator=generator).item()]
        cell.order[a], cell.order[b] = cell.order[b], cell.order[a]
        swaps.append([a, b])
    return swaps


def unshuffle(model):
    """Every edge back in its place."""
    for cell in model.cells:
        if hasattr(cell, "order"):
            cell.order = list(range(len(cell.edges)))


def shuffle(args, device, search_state, search_ckpt):
    """Sec. 3.2 (Table 1): the super-net's test accuracy as trained and after each of --repeats draws of
    `shuffle_edges`, each draw undone before the next."""
    num_classes = search_loaders(args)[2]
    test = get_dataset(args, False, transforms(args, False))
    test_queue = make_loader(test, args.batch_size, False, args.workers)
    model = trained_supernet(args, num_classes, device, search_state, search_ckpt).model
    save = setup_run(args, "analysis_shuffle")
    t0 = time.time()
    before = supernet_accuracy(model, test_queue, args.bn_stats, args.amp)
    log.info("test top-1 before shuffling: %.2f%%", before)
    g = torch.Generator().manual_seed(args.seed)
    draws = []
    for r in range(args.repeats):
        swaps = shuffle_edges(model, g)
        after = supernet_accuracy(model, test_queue, args.bn_stats, args.amp)
        unshuffle(model)
        draws.append({"swaps": swaps, "test_top1": after})
        log.info("shuffle %d/%d: test top-1 %.2f%%", r + 1, args.repeats, after)
    if is_main():
        write_json(save / "shuffle.json", {"test_top1_before": before, "draws": draws})
        after = [d["test_top1"] for d in draws]
        write_summary(save, search_cost(time.time() - t0, device), command="shuffle", search_dir=str(args.search_dir),
                      test_top1_before=before, test_top1_after=statistics.mean(after),
                      test_top1_after_std=statistics.stdev(after) if len(after) > 1 else 0.0, repeats=args.repeats)


def main(argv=None):
    args = parse_args(argv)
    init_distributed(args.device)  # under torchrun: the data split across the ranks, the accuracies summed over them
    device = get_device(args.device)
    check_run(args, f"analysis_{args.command}")  # every input is checked before the run folder is touched
    set_seed(args.seed, args.deterministic)
    search_state, search_ckpt = load_supernet(args, device)
    {"strength": strength, "shuffle": shuffle}[args.command](args, device, search_state, search_ckpt)


if __name__ == "__main__":
    main(sys.argv[1:])
