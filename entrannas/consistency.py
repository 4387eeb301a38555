"""Consistency between search and evaluation (Sec. 4.1, Tables 1 and 2).

Table 1: for finished searches, the validation accuracy of the super-net as it was searched and of
its child-net, the same weights running only the derived paths in every cell (the accuracy drop
measures the gap between the architecture in search and in evaluation). The validation set is
the search split's architecture half (CIFAR: the second half of the training set), without
augmentation. The result is also written to RUN/consistency.json.

Table 2: the Kendall rank correlation between the super-net accuracies of several searches and
the accuracies of their genotypes retrained from scratch (`train.py`), computed here (tau-b,
equal to Kendall's 1938 tau when there are no ties).

Usage:
  python entrannas/consistency.py table1 RUN_first RUN_last RUN_half RUN_all [--data DIR]
  python entrannas/consistency.py kendall --search S1 S2 ... --retrained E1 E2 ... [--metric final_top1]
"""
import argparse
import json
import math
import sys
from argparse import Namespace
from pathlib import Path

from torch.utils.data import Subset

if __package__ in (None, ""):  # run as `python entrannas/consistency.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.data import search_loaders, transforms  # noqa: E402
from common.train_eval import evaluate  # noqa: E402
from common.utils import checkpoint_fits, die, get_device, load_checkpoint, made_by_another_script, read_args  # noqa: E402
from entrannas.model_search import ChildNet  # noqa: E402
from entrannas.train_search import Searcher, get_parser  # noqa: E402


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
    base = valid_queue.dataset
    while isinstance(base, Subset):
        base = base.dataset
    base.transform = transforms(args, False)  # the images without augmentation
    searcher = Searcher(args, num_classes, dev)
    ckpt = load_checkpoint(run / "checkpoint.pt", dev)
    with checkpoint_fits(run / "checkpoint.pt"):
        searcher.load_state_dict(ckpt["searcher"])
    if ckpt["epoch"] < args.epochs:
        print(f"warning: {run} stopped after {ckpt['epoch']} of {args.epochs} epochs", file=sys.stderr)
    return searcher, args, valid_queue


def table1(run, data=None, device="auto", workers=None):
    """Validation top-1 of the super-net and of its child-net (Table 1); also written to RUN/consistency.json."""
    searcher, args, valid_queue = load_search(run, data, device, workers)
    model = searcher.model
    supernet = evaluate(model, valid_queue, searcher.device)[1]
    childnet = evaluate(ChildNet(model), valid_queue, searcher.device)[1]
    row = {"run": str(run), "engine": args.engine, "dst": args.dst, "supernet_top1": supernet,
           "childnet_top1": childnet, "drop": supernet - childnet}
    (Path(run) / "consistency.json").write_text(json.dumps(row, indent=1) + "\n")
    return row


def supernet_accuracy(run, **kw):
    """The super-net validation accuracy of a finished search: from its consistency.json, or computed now."""
    path = Path(run) / "consistency.json"
    if path.is_file():
        return json.loads(path.read_text())["supernet_top1"]
    return table1(run, **kw)["supernet_top1"]


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
    for q in (t1, t2):
        q.add_argument("--data", default=None, help="dataset folder, if not the one in the runs' args.json")
        q.add_argument("--device", default="auto")
        q.add_argument("--workers", type=int, default=None)
    args = p.parse_args(argv)
    kw = dict(data=args.data, device=args.device, workers=args.workers)
    if args.cmd == "table1":
        rows = [table1(run, **kw) for run in args.runs]
        print(f"{'Engine-cell':<12} {'Super-net Acc. (%)':>18} {'Child-net Acc. (%)':>18}")
        for r in rows:
            name = ("all (DARTS)" if r["engine"] == "all" else r["engine"]) + (" DST" if r["dst"] else "")
            print(f"{name:<12} {r['supernet_top1']:>18.2f} {r['childnet_top1']:>18.2f}")
        return rows
    if len(args.search) != len(args.retrained):
        die(f"--search has {len(args.search)} runs but --retrained {len(args.retrained)}; pair them one to one")
    retrained = []
    for run in args.retrained:
        path = Path(run) / "summary.json"
        if not path.is_file():
            die(f"{run}: no summary.json (a finished entrannas/train.py run folder is needed)")
        retrained.append(json.loads(path.read_text())[args.metric])
    supernet = [supernet_accuracy(run, **kw) for run in args.search]
    try:
        tau = kendall_tau(supernet, retrained)
    except ValueError as e:
        die(str(e))
    for s, r, a, b in zip(args.search, args.retrained, supernet, retrained):
        print(f"{s}  super-net {a:.2f}   {r}  retrained {b:.2f}")
    print(f"Kendall tau {tau:.3f} over {len(supernet)} searches")
    return tau


if __name__ == "__main__":
    main()
