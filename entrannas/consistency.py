"""Consistency between search and evaluation (Sec. 4.1, Tables 1 and 2).

Table 1: for finished searches, the validation accuracy of the super-net as it was searched and of
its child-net, the same weights running only the derived paths in every cell (the accuracy drop
measures the gap between the architecture in search and in evaluation). The validation set is
the search split's architecture half (CIFAR: the second half of the training set), without
augmentation. A search records both after its last epoch (`supernet_valid_top1`,
`childnet_valid_top1` in the last line of its metrics.jsonl); for a run folder without them they
are computed here from its checkpoint.

Table 2: the Kendall rank correlation between the super-net accuracies of several searches and
the accuracies of their genotypes retrained from scratch (`train.py`), computed here (tau-b,
equal to Kendall's 1938 tau when there are no ties). The searches are EnTranNAS, EnTranNAS-DST or
DARTS (`train_search.py --darts`) run folders; `--supernet_key valid_top1` takes the super-net
accuracy that another method's search logged instead, e.g. PC-DARTS' from DARTS-PD's stage 1
(`RUN/stage1`: the super-net evaluated on the validation split after its last epoch).

Usage:
  python entrannas/consistency.py table1 RUN_first RUN_last RUN_half RUN_darts [--data DIR]
  python entrannas/consistency.py kendall --search S1 S2 ... --retrained E1 E2 ... [--metric final_top1] [--out K.json]
  python entrannas/consistency.py kendall --search PD1/stage1 ... --retrained E1 ... --supernet_key valid_top1
"""
import argparse
import json
import math
import sys
from argparse import Namespace
from pathlib import Path

if __package__ in (None, ""):  # run as `python entrannas/consistency.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.data import search_loaders  # noqa: E402
from common.utils import (MetricsLog, checkpoint_fits, die, get_device, load_checkpoint,  # noqa: E402
                          made_by_another_script, read_args)
from entrannas.train_search import Searcher, get_parser  # noqa: E402

KEYS = ("supernet_valid_top1", "childnet_valid_top1")


def load_search(run, data=None, device="auto", workers=None):
    """(searcher at the end of the run, its arguments, its validation loader) from a run folder."""
    run = Path(run)
    stored = read_args(run)
    if stored is None or not (run / "checkpoint.pt").is_file():
        die(f"{run}: not a search run folder (needs args.json and checkpoint.pt from entrannas/train_search.py)")
    problem = made_by_another_script(run, stored, vars(get_parser().parse_args([])),
                                     "give runs of entrannas/train_search.py")
    if problem:
        die(problem)
    args = Namespace(**stored)
    args.device = device
    if data is not None:
        args.data = data
    if workers is not None:
        args.workers = workers
    dev = get_device(args.device)
    _, valid_queue, num_classes = search_loaders(args)
    searcher = Searcher(args, num_classes, dev)
    ckpt = load_checkpoint(run / "checkpoint.pt", dev)
    with checkpoint_fits(run / "checkpoint.pt"):
        searcher.load_state_dict(ckpt["searcher"])
    if ckpt["epoch"] < args.epochs:
        print(f"warning: {run} stopped after {ckpt['epoch']} of {args.epochs} epochs", file=sys.stderr)
    return searcher, args, valid_queue


def last_record(run):
    """The last line of RUN/metrics.jsonl, or {} when there is none."""
    path = Path(run) / "metrics.jsonl"
    records = MetricsLog.read(path) if path.is_file() else []
    return records[-1] if records else {}


def table1(run, data=None, device="auto", workers=None):
    """Validation top-1 of the super-net and of its child-net (Table 1): as the search recorded
    them, or computed now from its checkpoint."""
    record = last_record(run)
    if all(k in record for k in KEYS):
        args = json.loads((Path(run) / "args.json").read_text())
        accuracies = {k: record[k] for k in KEYS}
    else:
        searcher, args, valid_queue = load_search(run, data, device, workers)
        accuracies, args = searcher.validate(valid_queue), vars(args)
    return {"run": str(run), "engine": args["engine"], "darts": args.get("darts", False), "dst": args["dst"],
            **accuracies, "drop": accuracies["supernet_valid_top1"] - accuracies["childnet_valid_top1"]}


def supernet_accuracy(run, key, **kw):
    """The super-net validation accuracy of a finished search: the last metrics.jsonl record's `key`;
    for EnTranNAS runs that lack it, Table 1's super-net accuracy computed now."""
    record = last_record(run)
    if key in record:
        return record[key]
    if key == KEYS[0]:
        return table1(run, **kw)[key]
    die(f"{run}: the last line of metrics.jsonl has no {key!r} (a finished search run folder is needed)")


def kendall_tau(x, y):
    """Kendall's tau-b rank correlation of two equally long sequences (Kendall, 1938)."""
    if len(x) != len(y) or len(x) < 2:
        raise ValueError("Kendall's tau needs two sequences of the same length, at least 2")
    n0 = n1 = n2 = concordant = discordant = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = x[i] - x[j], y[i] - y[j]
            n0 += 1
            n1 += dx == 0
            n2 += dy == 0
            if dx * dy > 0:
                concordant += 1
            elif dx * dy < 0:
                discordant += 1
    if n0 == n1 or n0 == n2:
        raise ValueError("Kendall's tau is undefined when one sequence is constant")
    return (concordant - discordant) / math.sqrt((n0 - n1) * (n0 - n2))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t1 = sub.add_parser("table1", help="super-net vs child-net validation accuracy of finished searches")
    t1.add_argument("runs", nargs="+", help="search run folders")
    t2 = sub.add_parser("kendall", help="Kendall tau between super-net and retrained accuracies")
    t2.add_argument("--search", nargs="+", required=True, help="search run folders")
    t2.add_argument("--retrained", nargs="+", required=True,
                    help="train.py run folders of the same genotypes, in the same order")
    t2.add_argument("--metric", default="final_top1", choices=["final_top1", "best_top1"],
                    help="retrained accuracy taken from each summary.json")
    t2.add_argument("--supernet_key", default=KEYS[0],
                    help="super-net accuracy: this key of the last line of each search's metrics.jsonl "
                         f"(default {KEYS[0]}, EnTranNAS/DARTS runs; valid_top1 for DARTS-PD's RUN/stage1)")
    t2.add_argument("--out", help="also write the result to this JSON file: kendall_tau and every pair")
    for q in (t1, t2):
        q.add_argument("--data", default=None, help="dataset folder, if not the one in the runs' args.json")
        q.add_argument("--device", default="auto")
        q.add_argument("--workers", type=int, default=None)
    args = p.parse_args(argv)
    kw = dict(data=args.data, device=args.device, workers=args.workers)
    if args.cmd == "table1":
        rows = [table1(run, **kw) for run in args.runs]
        print(f"{'Engine-cell':<14} {'Super-net Acc. (%)':>18} {'Child-net Acc. (%)':>18}")
        for r in rows:
            name = ("all (DARTS)" if r["darts"] else r["engine"]) + (" DST" if r["dst"] else "")
            print(f"{name:<14} {r['supernet_valid_top1']:>18.2f} {r['childnet_valid_top1']:>18.2f}")
        return rows
    if len(args.search) != len(args.retrained):
        die(f"--search has {len(args.search)} runs but --retrained {len(args.retrained)}; pair them one to one")
    retrained = []
    for run in args.retrained:
        path = Path(run) / "summary.json"
        if not path.is_file():
            die(f"{run}: no summary.json (a finished train.py run folder is needed)")
        retrained.append(json.loads(path.read_text())[args.metric])
    supernet = [supernet_accuracy(run, args.supernet_key, **kw) for run in args.search]
    try:
        tau = kendall_tau(supernet, retrained)
    except ValueError as e:
        die(str(e))
    pairs = [{"search": s, "supernet": a, "retrained_run": r, "retrained": b}
             for s, r, a, b in zip(args.search, args.retrained, supernet, retrained)]
    for q in pairs:
        print(f"{q['search']}  super-net {q['supernet']:.2f}   {q['retrained_run']}  retrained {q['retrained']:.2f}")
    print(f"Kendall tau {tau:.3f} over {len(supernet)} searches")
    if args.out:
        Path(args.out).write_text(json.dumps({"kendall_tau": tau, "supernet_key": args.supernet_key,
                                              "metric": args.metric, "pairs": pairs}, indent=1) + "\n")
    return tau


if __name__ == "__main__":
    main()
