"""Perturbation-based architecture selection (DARTS-PT, Sec. 4, Alg. 1) on a trained super-net.

Operations (Alg. 1): the edges are decided one at a time in random order, an edge of the normal
and one of the reduction cell per round. On the chosen edge every op is masked out in turn (its
weight set to 0, the others unchanged) and the super-net's validation accuracy measured
(Sec. 4.1); the op whose removal hurts most is kept and the edge becomes one-hot. Topology (App.
A.3, from the authors' code): then, node by node in random order, every input edge of a node is
removed in turn and the two whose removal hurts most are kept (--topology_rule). Between two
decisions the super-net is tuned for --proj_intv epochs (Sec. 4.2), alpha still trained on the
undecided edges. NAS-Bench-201 cells decide their 6 edges and have no topology phase.
`--selection mag` is the DARTS+PT-Mag ablation (Sec. 6): the same rounds and tuning, choices by
the magnitude of softmax(alpha). The measurements and one decision are in `selection.py`.

Usage: python darts_pt/projection.py --search_dir RUN [--from_epoch E] [--save OUT] [--proj_intv 5]
       [--proj_crit acc|loss] [--selection pt|mag] [--topology_rule top2|backward] [--resume]
"""
import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from common.data import add_data_args, search_loaders
from common.genotypes import export
from common.search import search_cost, search_epoch, write_summary
from common.utils import (DONE, MetricsLog, add_run_args, add_speed_args, check_run, checkpoint_fits, compile_report,
                          die, gather_rng_states, get_device, init_distributed, load_checkpoint, log,
                          made_by_another_script, rank, read_args, resume_state, save_checkpoint, set_rng_state,
                          set_seed, setup_run)
from darts_pt.selection import TOPOLOGY_RULES, decide_op, decide_topology, evaluate_supernet
from darts_pt.train_search import NB201_FILE, Searcher, add_nb201_arg, nb201_lookup
from darts_pt.train_search import get_parser as search_parser


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--search_dir", required=True, help="a finished train_search.py run folder")
    p.add_argument("--from_epoch", type=int, default=None, metavar="E",
                   help="select on the super-net kept after E search epochs (train_search.py --save_epochs E) "
                        "instead of the final one (Fig. 4, 8)")
    p.add_argument("--proj_intv", type=int, default=5, help="tuning epochs between two decisions")
    p.add_argument("--proj_lr", type=float, default=0.0025, help="constant SGD learning rate of the tuning")
    p.add_argument("--proj_crit", choices=["acc", "loss"], default="acc",
                   help="what a removal is measured by: validation accuracy or loss")
    p.add_argument("--selection", choices=["pt", "mag"], default="pt",
                   help="pt: perturbation-based; mag: alpha magnitude with the same tuning (DARTS+PT-Mag)")
    p.add_argument("--topology_rule", choices=TOPOLOGY_RULES, default="top2",
                   help="top2: keep the two input edges whose single removal hurts most, each measured "
                        "against the full node (authors' code); backward: remove the edge whose removal hurts "
                        "least, measure again, until two remain")
    p.add_argument("--batch_size", type=int, help="default: the search's")
    add_nb201_arg(p)
    add_run_args(p)
    add_speed_args(p, cuda_graph="the tuning's search steps")
    add_data_args(p, search=True)
    return p


def parse_args(argv=None):
    """The projection flags over the search run's arguments: data, device and seed flags default to
    the search's (not --compile, --channels_last, --cuda_graph: off unless given); --save
    defaults to SEARCH_DIR/projection_<selection>[_epoch<E>]."""
    args = over_search(get_parser(), argv, own=("selection",))  # SGAS' --selection is a different flag of the search
    if args.method == "sgas":
        die(f"{args.search_dir} is an SGAS search, which decided its edges itself: its genotype.json is the "
            "result (SGAS+PT with --selection pt)")
    epoch = "" if args.from_epoch is None else f"_epoch{args.from_epoch}"
    args.save = args.save or str(Path(args.search_dir) / f"projection_{args.selection}{epoch}")
    if args.selection == "mag" and args.method == "blank":
        die("--selection mag chooses by alpha, but the blank super-net keeps alpha at 0")
    return args


def over_search(parser, argv, own=(), words=()):
    """`parser`'s flags over the arguments of the finished search in --search_dir: the flags both
    have (data, device, seed, ...) default to the search's, except the run folder's and `own`
    (`words`: the positional arguments `parser` needs besides the flags) and how fast the network
    computes (--compile, --channels_last, --cuda_graph: this run's own, off unless given)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--search_dir")
    search_dir = pre.parse_known_args(argv)[0].search_dir
    search = {}
    if search_dir:
        search = finished_search(Path(search_dir))
        ours = vars(parser.parse_args([*words, "--search_dir", search_dir]))
        parser.set_defaults(**{k: v for k, v in search.items()
                               if k in ours and k not in ("save", "resume", "overwrite", "compile", "channels_last",
                                                          "cuda_graph", *own)})
    return argparse.Namespace(**{**search, **vars(parser.parse_args(argv))})


def finished_search(folder):
    """The flags of the finished darts_pt/train_search.py run in `folder`, or one clear line."""
    stored = read_args(folder)
    if stored is None:
        die(f"{folder / 'args.json'} not found: --search_dir must be a run folder of darts_pt/train_search.py")
    problem = made_by_another_script(folder, stored, vars(search_parser().parse_args([])),
                                     "--search_dir needs a run of darts_pt/train_search.py")
    if problem:
        die(problem)
    if not (folder / DONE).is_file():
        die(f"the search in {folder} is not finished (no {DONE}): finish it with darts_pt/train_search.py --resume "
            f"--save {folder} first")
    return stored


def load_supernet(args, device):
    """(the search checkpoint the selection starts from: the final one, or the --from_epoch snapshot;
    its path)."""
    folder = Path(args.search_dir)
    if args.from_epoch is not None:
        path = folder / f"checkpoint_epoch{args.from_epoch}.pt"
        if not path.is_file():
            kept = sorted(int(f.stem.split("epoch")[1]) for f in folder.glob("checkpoint_epoch*.pt"))
            die(f"{path} not found: the search kept the super-net after epochs {kept or 'none'}; "
                f"search with train_search.py --save_epochs {args.from_epoch}")
        return load_checkpoint(path, device), path
    path = folder / "checkpoint.pt"
    if not path.is_file():
        die(f"{path} not found: run darts_pt/train_search.py --save {args.search_dir} first")
    state = load_checkpoint(path, device)
    if state["epoch"] < args.epochs:
        die(f"the search in {args.search_dir} stopped at epoch {state['epoch']} of {args.epochs}; "
            "finish it with train_search.py --resume first")
    return state, path


# ---------------------------------------------------------------- the schedule (Alg. 1)

def plan(model, proj_intv, seed):
    """The schedule: one decision round per edge (a random edge of every cell type), then on DARTS
    cells one round per node with more than 2 inputs (random order), with `proj_intv` tuning
    epochs after every round but the last (whose result is the final architecture)."""
    g = torch.Generator().manual_seed(seed)

    def shuffled(items):
        return [items[i] for i in torch.randperm(len(items), generator=g).tolist()]

    edges = {ct: shuffled(list(range(model.num_edges))) for ct in model.cell_types}
    rounds = [("op", {ct: edges[ct][r] for ct in model.cell_types}) for r in range(model.num_edges)]
    if model.num_inputs == 2:
        nodes = [model.num_inputs + i for i in range(model.steps) if model.num_inputs + i > 2]
        order = {ct: shuffled(nodes) for ct in model.cell_types}
        rounds += [("topology", {ct: order[ct][r] for ct in model.cell_types}) for r in range(len(nodes))]
    events = []
    for r, (kind, targets) in enumerate(rounds):
        events.append({"kind": kind, "round": r, "targets": targets})
        if r < len(rounds) - 1:
            events += [{"kind": "tune", "round": r, "targets": {}}] * proj_intv
    return events


# ---------------------------------------------------------------- main

def main(argv=None):
    args = parse_args(argv)
    init_distributed(args.device)
    device = get_device(args.device)
    check_run(args, "projection")  # every input is checked before the run folder is touched
    set_seed(args.seed, args.deterministic)
    search_state, search_ckpt = load_supernet(args, device)
    train_queue, valid_queue, num_classes = search_loaders(args)
    searcher = Searcher(args, num_classes, device)
    with checkpoint_fits(search_ckpt):
        searcher.load_state_dict(search_state["searcher"])
    save = setup_run(args, "projection")
    searcher.start_tuning(args.proj_lr)
    model = searcher.model

    events, done, rounds, wall = plan(model, args.proj_intv, args.seed), 0, [], 0.0
    ckpt = resume_state(args, device)
    if ckpt:
        with checkpoint_fits(save / "checkpoint.pt"):
            searcher.load_state_dict(ckpt["searcher"])
            events, done, rounds, wall = ckpt["events"], ckpt["done"], ckpt["rounds"], ckpt["wall_time_s"]
            set_rng_state(ckpt["rng"][rank()])
    tuned = sum(ev["kind"] == "tune" for ev in events[:done])
    metrics = MetricsLog(save / "metrics.jsonl", tuned)
    n_rounds = sum(ev["kind"] != "tune" for ev in events)
    log.info("%d decision rounds, %d tuning epochs, selection %s by %s", n_rounds,
             len(events) - n_rounds, args.selection, args.proj_crit if args.selection == "pt" else "alpha")
    t0, t_start = time.time() - wall, time.time()
    for i in range(done, len(events)):
        ev = events[i]
        if ev["kind"] == "tune":
            stats = search_epoch(searcher, train_queue, valid_queue, search_state["epoch"] + tuned)  # Sec. 4.2
            top1, loss = evaluate_supernet(model, valid_queue, amp=args.amp, running=True)  # as the authors log it
            metrics.write({"epoch": tuned, "round": ev["round"], **stats, "valid_top1": top1, "valid_loss": loss})
            rounds[-1]["valid_top1_after_tuning"] = top1
            tuned += 1
            line = f"tuning epoch {tuned} (round {ev['round'] + 1}) train {stats['train_top1']:.2f}% valid {top1:.2f}%"
        else:
            alpha_of = {(d["cell"], d["edge"]): d["alpha"][d["ops"].index(d["chosen"])]
                        for r in rounds if r["kind"] == "op" for d in r["decisions"]}
            how = dict(selection=args.selection, crit=args.proj_crit, amp=args.amp)
            decisions = [decide_op(model, ct, t, valid_queue, **how) if ev["kind"] == "op"
                         else decide_topology(model, ct, t, valid_queue, **how, rule=args.topology_rule,
                                              alpha_of=alpha_of)
                         for ct, t in ev["targets"].items()]
            top1 = evaluate_supernet(model, valid_queue, amp=args.amp, running=True)[0]
            rounds.append({"round": ev["round"], "kind": ev["kind"], "decisions": decisions,
                           "valid_top1_after_decision": top1, "valid_top1_after_tuning": None})
            if rank() == 0:
                (save / "decisions.json").write_text(json.dumps(rounds, indent=1) + "\n")
            line = f"round {ev['round'] + 1}/{n_rounds} " + "; ".join(
                f"{d['cell']} {d['name']} -> {d['chosen']}" if "edge" in d else f"{d['cell']} node {d['node']} keeps "
                + ", ".join(d["kept"]) for d in decisions) + f"; valid {top1:.2f}%"
        elapsed = time.time() - t0
        save_checkpoint(save / "checkpoint.pt", {"searcher": searcher.state_dict(), "events": events, "done": i + 1,
                                                 "rounds": rounds, "wall_time_s": elapsed, "rng": gather_rng_states()})
        eta = (time.time() - t_start) / (i + 1 - done) * (len(events) - i - 1)
        log.info("[%d/%d elapsed %s eta %s] %s", i + 1, len(events), time.strftime("%H:%M:%S", time.gmtime(elapsed)),
                 time.strftime("%H:%M:%S", time.gmtime(eta)), line)
        if report := compile_report():
            log.info("%s", report)

    genotype = model.genotype()
    meta = dict(method=f"darts_pt/{args.method}+{args.selection}", search_dir=str(args.search_dir),
                from_epoch=search_state["epoch"], search_space=args.search_space, proj_crit=args.proj_crit,
                proj_intv=args.proj_intv, topology_rule=args.topology_rule, seed=args.seed, dataset=args.dataset,
                projection_time_s=round(time.time() - t0, 1))
    if genotype.kind == "nb201" and rank() == 0:
        lookup = nb201_lookup(args.nb201_benchmark or Path(args.data) / NB201_FILE)
        if lookup:
            meta["nb201_test_accuracy"] = lookup(str(genotype))
            log.info("NAS-Bench-201 test accuracy %s", json.dumps(meta["nb201_test_accuracy"]))
    if rank() == 0:
        (save / "decisions.json").write_text(json.dumps(rounds, indent=1) + "\n")
        export(save, genotype, **meta)
        # valid_top1: the selected super-net's accuracy on the search's validation half, which picks the
        # best of several searches (Table 2's "best") without looking at the test set
        write_summary(save, search_cost(time.time() - t0, device), method=meta["method"], genotype=str(genotype),
                      rounds=len(rounds), valid_top1=rounds[-1]["valid_top1_after_decision"])
    log.info("final genotype %s", genotype)
    return genotype


if __name__ == "__main__":
    main(sys.argv[1:])
