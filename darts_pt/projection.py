"""Perturbation-based architecture selection (DARTS-PT, Sec. 4, Alg. 1) on a trained super-net.

Operations (Alg. 1): the edges are decided one at a time in random order, an edge of the normal
and one of the reduction cell per round. On the chosen edge every op is masked out in turn (its
weight set to 0, the others unchanged) and the super-net's validation accuracy measured
(Sec. 4.1); the op whose removal hurts most is kept and the edge becomes one-hot. Topology (App.
A.3, from the authors' code): then, node by node in random order, the input edges of a node are
removed one at a time, the one whose removal hurts least first, until 2 remain. Between two
decisions the super-net is tuned for --proj_intv epochs (Sec. 4.2), alpha still trained on the
undecided edges. NAS-Bench-201 cells decide their 6 edges and have no topology phase.
`--selection mag` is the DARTS+PT-Mag ablation (Sec. 6): the same rounds and tuning, choices by
the magnitude of softmax(alpha).

Usage: python darts_pt/projection.py --search_dir RUN [--save OUT] [--proj_intv 5] [--proj_crit acc|loss]
       [--selection pt|mag] [--resume]
"""
import argparse
import inspect
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F

from common.data import add_data_args, search_loaders
from common.genotypes import export
from common.search import frozen_bn_stats, search_cost, search_epoch, write_summary
from common.utils import (DONE, MetricsLog, add_run_args, amp_autocast, check_run, checkpoint_fits, die,
                          gather_rng_states, get_device, init_distributed, load_checkpoint, log, made_by_another_script,
                          rank, read_args, resume_state, save_checkpoint, set_rng_state, set_seed, setup_run)
from darts_pt.train_search import Searcher
from darts_pt.train_search import get_parser as search_parser

NB201_FILE = "NAS-Bench-201-v1_0-e61699.pth"


def get_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--search_dir", required=True, help="a finished train_search.py run folder")
    p.add_argument("--proj_intv", type=int, default=5, help="tuning epochs between two decisions")
    p.add_argument("--proj_lr", type=float, default=0.0025, help="constant SGD learning rate of the tuning")
    p.add_argument("--proj_crit", choices=["acc", "loss"], default="acc",
                   help="what a removal is measured by: validation accuracy or loss")
    p.add_argument("--selection", choices=["pt", "mag"], default="pt",
                   help="pt: perturbation-based; mag: alpha magnitude with the same tuning (DARTS+PT-Mag)")
    p.add_argument("--batch_size", type=int, help="default: the search's")
    p.add_argument("--nb201_benchmark", default=None,
                   help=f"the NAS-Bench-201 benchmark file (default: --data/{NB201_FILE})")
    add_run_args(p)
    add_data_args(p, search=True)
    return p


def parse_args(argv=None):
    """The projection flags over the search run's arguments: data, device and seed flags default to
    the search's; --save defaults to SEARCH_DIR/projection_<selection>."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--search_dir")
    search_dir = pre.parse_known_args(argv)[0].search_dir
    parser = get_parser()
    search = {}
    if search_dir:
        search = finished_search(Path(search_dir))
        ours = vars(parser.parse_args(["--search_dir", search_dir]))
        parser.set_defaults(**{k: v for k, v in search.items() if k in ours and k not in ("save", "resume", "overwrite")})
    args = argparse.Namespace(**{**search, **vars(parser.parse_args(argv))})
    args.save = args.save or str(Path(args.search_dir) / f"projection_{args.selection}")
    if args.selection == "mag" and args.method == "blank":
        die("--selection mag chooses by alpha, but the blank super-net keeps alpha at 0")
    return args


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


# ---------------------------------------------------------------- measurements (Sec. 4.1)

@torch.no_grad()
def evaluate_supernet(model, loader, weights=None, active=None, amp=False, seed=0):
    """(top-1 %, loss) of the super-net over `loader`, as DARTS-PT measures it (authors' code): BN in
    training mode (batch statistics), the running statistics left untouched. Every call sees the
    same batches, augmentations and noise draws (`seed`), so scores differ only by the masking."""
    device = next(model.parameters()).device
    was_training = model.training
    if not was_training:  # train() walks every module of the super-net: only when needed
        model.train()
    loader.sampler.set_epoch(0)
    sums = torch.zeros(3, dtype=torch.float64, device=device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), frozen_bn_stats(model):
        torch.manual_seed(seed)
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with amp_autocast(device, amp):
                logits = model(x, weights, active).float()
            sums[0] += (logits.argmax(1) == y).sum()
            sums[1] += F.cross_entropy(logits, y, reduction="sum")
            sums[2] += len(y)
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(sums)
    if not was_training:
        model.eval()
    return (100 * sums[0] / sums[2]).item(), (sums[1] / sums[2]).item()


def _score(top1_loss, crit):
    return top1_loss[0] if crit == "acc" else top1_loss[1]


def op_strength(model, cell_type, edge, loader, crit="acc", amp=False):
    """Sec. 4.1: for each op of `edge`, the super-net's validation accuracy (`crit="acc"`, or loss)
    with that op masked out: its weight set to 0, every other weight unchanged. One score per op;
    the op whose removal hurts most (lowest accuracy / highest loss) is the strongest."""
    with torch.no_grad():
        base = model.arch_weights()
    scores = []
    for o in range(len(model.edge_ops[cell_type][edge])):
        weights = dict(base)
        weights[cell_type] = base[cell_type].clone()
        weights[cell_type][edge, o] = 0.0
        active = dict(model.active)
        active[cell_type] = list(model.active[cell_type])
        active[cell_type][edge] = [p for p in model.active[cell_type][edge] if p != o]
        scores.append(_score(evaluate_supernet(model, loader, weights, active, amp), crit))
    return scores


def edge_strength(model, cell_type, edges, loader, crit="acc", amp=False):
    """App. A.3: for each of `edges`, the super-net's validation accuracy (or loss) with that whole
    edge removed (all its weights 0). One score per edge."""
    with torch.no_grad():
        base = model.arch_weights()
    scores = []
    for e in edges:
        weights = dict(base)
        weights[cell_type] = base[cell_type].clone()
        weights[cell_type][e] = 0.0
        active = dict(model.active)
        active[cell_type] = list(model.active[cell_type])
        active[cell_type][e] = []
        scores.append(_score(evaluate_supernet(model, loader, weights, active, amp), crit))
    return scores


def strength(scores, measure):
    """Scores turned into "higher is stronger": a removal that lowers accuracy (raises loss) means
    a strong op or edge; for magnitudes, a larger alpha."""
    return [-s for s in scores] if measure == "acc" else list(scores)


def argmax(values, allowed=None):
    """Index of the largest value among `allowed` (all by default); ties keep the lower index."""
    allowed = range(len(values)) if allowed is None else allowed
    return max(allowed, key=lambda i: (values[i], -i))


# ---------------------------------------------------------------- decisions

def decide_op(model, ct, edge, loader, args):
    """Alg. 1: score the ops of `edge`, discretize it to the strongest. `none` is never chosen on a
    DARTS cell (App. A.1.1: it only marks topology there); on a NAS-Bench-201 cell it is an op."""
    names = model.edge_ops[ct][edge]
    with torch.no_grad():
        alpha = F.softmax(model.alphas[ct][edge], -1).cpu().tolist()
    if args.selection == "pt":
        scores = op_strength(model, ct, edge, loader, args.proj_crit, args.amp)
        measure = args.proj_crit
    else:
        scores, measure = alpha, "alpha"
    allowed = [o for o, n in enumerate(names) if n != "none" or model.num_inputs == 1]
    o = argmax(strength(scores, measure), allowed)  # o* = arg min_o ACC\o
    model.project_op(ct, edge, o)
    i, j = model.edges[edge]
    return {"cell": ct, "edge": edge, "name": f"{i}<-{j}", "ops": list(names), "scores": scores,
            "measure": measure, "alpha": alpha, "chosen": names[o]}


def decide_topology(model, ct, node, loader, args, alpha_of):
    """App. A.3: remove input edges of `node` one at a time, the one whose removal hurts least,
    until 2 remain (magnitude selection: the edge whose chosen op had the smallest alpha)."""
    kept = [e for e in model.node_edges(node) if not model.removed[ct][e]]
    steps = []
    while len(kept) > 2:
        if args.selection == "pt":
            scores, measure = edge_strength(model, ct, kept, loader, args.proj_crit, args.amp), args.proj_crit
        else:
            scores, measure = [alpha_of[(ct, e)] for e in kept], "alpha"
        s = strength(scores, measure)
        drop = kept[argmax([-v for v in s])]
        model.remove_edge(ct, drop)
        steps.append({"edges": [f"{model.edges[e][0]}<-{model.edges[e][1]}" for e in kept], "scores": scores,
                      "measure": measure, "removed": f"{model.edges[drop][0]}<-{model.edges[drop][1]}"})
        kept.remove(drop)
    return {"cell": ct, "node": node, "steps": steps, "kept": [f"{node}<-{model.edges[e][1]}" for e in kept]}


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


def nb201_accuracy(arch, path):
    """Test accuracies (%) of an NAS-Bench-201 arch string from the benchmark (200-epoch results),
    or None, with one log line, when its API or file is not installed."""
    try:
        from nas_201_api import NASBench201API
    except ImportError:
        log.info("NAS-Bench-201 API not installed (pip install nas-bench-201): benchmark accuracy skipped")
        return None
    if not Path(path).expanduser().is_file():
        log.info("NAS-Bench-201 benchmark file %s not found: benchmark accuracy skipped", path)
        return None
    api = NASBench201API(str(Path(path).expanduser()), verbose=False)
    index = api.query_index_by_arch(arch)
    hp = {"hp": "200"} if "hp" in inspect.signature(api.get_more_info).parameters else {}
    return {ds: api.get_more_info(index, ds, is_random=False, **hp)["test-accuracy"]
            for ds in ("cifar10", "cifar100", "ImageNet16-120")}


# ---------------------------------------------------------------- main

def main(argv=None):
    args = parse_args(argv)
    init_distributed(args.device)
    device = get_device(args.device)
    check_run(args, "projection")  # every input is checked before the run folder is touched
    set_seed(args.seed, args.deterministic)
    search_ckpt = Path(args.search_dir) / "checkpoint.pt"
    if not search_ckpt.is_file():
        die(f"{search_ckpt} not found: run darts_pt/train_search.py --save {args.search_dir} first")
    search_state = load_checkpoint(search_ckpt, device)
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
            stats = search_epoch(searcher, train_queue, valid_queue, args.epochs + tuned)  # Sec. 4.2: tuning
            top1, loss = evaluate_supernet(model, valid_queue, amp=args.amp)
            metrics.write({"epoch": tuned, "round": ev["round"], **stats, "valid_top1": top1, "valid_loss": loss})
            rounds[-1]["valid_top1_after_tuning"] = top1
            tuned += 1
            line = f"tuning epoch {tuned} (round {ev['round'] + 1}) train {stats['train_top1']:.2f}% valid {top1:.2f}%"
        else:
            alpha_of = {(d["cell"], d["edge"]): d["alpha"][d["ops"].index(d["chosen"])]
                        for r in rounds if r["kind"] == "op" for d in r["decisions"]}
            decisions = [decide_op(model, ct, t, valid_queue, args) if ev["kind"] == "op"
                         else decide_topology(model, ct, t, valid_queue, args, alpha_of)
                         for ct, t in ev["targets"].items()]
            top1, _ = evaluate_supernet(model, valid_queue, amp=args.amp)
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

    genotype = model.genotype()
    meta = dict(method=f"darts_pt/{args.method}+{args.selection}", search_dir=str(args.search_dir),
                search_space=args.search_space, proj_crit=args.proj_crit, proj_intv=args.proj_intv, seed=args.seed,
                dataset=args.dataset, projection_time_s=round(time.time() - t0, 1))
    if genotype.kind == "nb201":
        bench = nb201_accuracy(str(genotype), args.nb201_benchmark or Path(args.data) / NB201_FILE)
        if bench:
            log.info("NAS-Bench-201 test accuracy %s", json.dumps(bench))
            meta["nb201_test_accuracy"] = bench
    if rank() == 0:
        (save / "decisions.json").write_text(json.dumps(rounds, indent=1) + "\n")
        export(save, genotype, **meta)
        write_summary(save, search_cost(time.time() - t0, device), method=meta["method"], genotype=str(genotype),
                      rounds=len(rounds))
    log.info("final genotype %s", genotype)
    return genotype


if __name__ == "__main__":
    main(sys.argv[1:])
