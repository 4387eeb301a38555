"""Parse a D-DARTS search again with another threshold (Sec. 5.1: sparse / edge parsing), from
the architecture parameters of its checkpoint, without searching again.

A search writes every parsing at its --threshold; when a parsing leaves cells without any op
(their largest sigmoid weight is below the threshold, e.g. after a short search), the search's log
and summary.json say which, and this script writes the parsings at a threshold you choose.

Usage: python d_darts/parse.py RUN --threshold 0.6 [--save RUN/threshold-0.6]
"""
import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python d_darts/parse.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from common.genotypes import export
from common.search import write_summary
from common.utils import die, load_checkpoint, log, setup_run
from d_darts.model_search import PARSE_METHODS, SearchNetwork, parse_genotype


def write_parsings(save, weights, reductions, threshold, shared, run, **meta):
    """`genotype_<parsing>.json` (+ `.dot`) for every parsing of the sigmoid weights `weights` in
    `save`; a parsing that leaves a cell without any op is logged with the cells' largest weights.
    Returns the entries of summary.json that say so."""
    labels = ("normal", "reduce") if shared else [f"cell {i}" for i in range(len(weights))]
    report = {"threshold": threshold, "pass_through_cells": {}, "warnings": []}
    for method in PARSE_METHODS:
        g = parse_genotype(weights, reductions, method, threshold, shared)
        export(save, g, stem=f"genotype_{method}", method="d_darts", **meta)
        report["max_sigmoid"] = g.meta["max_sigmoid"]
        cells = report["pass_through_cells"][method] = g.meta["pass_through_cells"]
        if cells:
            largest = ", ".join(f"{labels[i]} {g.meta['max_sigmoid'][i]:.4f}" for i in cells)
            msg = (f"the {method} parsing at threshold {threshold} keeps no op in {len(cells)} of {len(weights)} "
                   f"cells, which only pass their input on (largest sigmoid weight: {largest}); parse again with "
                   f"a lower threshold (python d_darts/parse.py {run} --threshold T) or search longer")
            log.warning(msg)
            report["warnings"].append(msg)
    return report


def searched_weights(run):
    """(sigmoid weights of every architecture, reduction positions, the search's args, epochs done)
    of a search folder, from its checkpoint (the super-net after its last finished epoch)."""
    run = Path(run)
    if not (run / "args.json").is_file() or not (run / "checkpoint.pt").is_file():
        die(f"{run}: no args.json and checkpoint.pt here; give the folder of a D-DARTS search (d_darts/train_search.py)")
    args = json.loads((run / "args.json").read_text())
    ckpt = load_checkpoint(run / "checkpoint.pt")
    state = ckpt.get("searcher", {}).get("net", {})
    if "classifier.weight" not in state or "layers" not in args:
        die(f"{run}: not a D-DARTS search (its checkpoint holds no D-DARTS super-net)")
    net = SearchNetwork(args["init_channels"], len(state["classifier.weight"]), args["layers"],
                        share_alphas=args.get("share_alphas", False))
    net.load_state_dict(state)
    return [torch.sigmoid(a.detach()).tolist() for a in net.alphas()], net.reductions, args, ckpt["epoch"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", help="the folder of a D-DARTS search")
    p.add_argument("--threshold", type=float, required=True, help="sigmoid threshold of the sparse and edge parsings")
    p.add_argument("--save", default=None, help="output folder (default: RUN/threshold-T)")
    args = p.parse_args(argv)
    if not 0 < args.threshold <= 1:
        die(f"--threshold {args.threshold}: a sigmoid threshold lies in (0, 1]")
    args.save = args.save or str(Path(args.run) / f"threshold-{args.threshold:g}")
    weights, reductions, search, epoch = searched_weights(args.run)
    save = setup_run(args, "parse-d_darts")
    log.info("%s: the architecture after epoch %d of %d", args.run, epoch, search["epochs"])
    meta = {k: search.get(k) for k in ("dataset", "seed", "w01", "w_abl", "ablation_loss", "share_alphas")}
    report = write_parsings(save, weights, reductions, args.threshold, search.get("share_alphas", False),
                            args.run, search=str(args.run), **meta)
    write_summary(save, {}, method="d_darts parse", search=str(args.run), **report)
    return report


if __name__ == "__main__":
    main()
