"""The numbers Figs. 3-5 plot (Sec. 5.2), read from the metrics.jsonl of finished D-DARTS searches.

  Fig. 3  min_train_loss: the smallest "global loss" over the search's epochs, the epoch's mean loss of
          the weight step on the training half (`train_loss`; the value the authors' code logs as
          'global loss', L_CE there as Fig. 3 turns L01 off); min_valid_loss: the smallest loss of the
          super-net on the validation half, the other reading. Each with the epoch it was reached at.
  Fig. 4  ops_above_0.9_pct, ops_below_0.1_pct: the percentages of all sigmoid weights above 0.9 and
          below 0.1 after the last epoch ("in the final architecture").
  Fig. 5  best_valid_top1: the super-net's best validation top-1 over the epochs (its plateau).

Each number is the mean over the searches given; SAVE/summary.json holds them, and each search's own.

Usage: python d_darts/search_stats.py --search_dirs RUN [RUN ...] --save DIR
"""
import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python d_darts/search_stats.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.utils import MetricsLog, die, log, setup_run

NEEDED = ("epoch", "train_loss", "valid_loss", "valid_top1", "ops_above_0.9_pct", "ops_below_0.1_pct")


def figure_numbers(records):
    """Figs. 3-5's numbers of one search from its metrics.jsonl records, one per epoch."""
    low_train = min(records, key=lambda r: r["train_loss"])
    low_valid = min(records, key=lambda r: r["valid_loss"])
    last = records[-1]
    return {"epochs": len(records),
            "min_train_loss": low_train["train_loss"], "min_train_loss_epoch": low_train["epoch"],  # Fig. 3
            "min_valid_loss": low_valid["valid_loss"], "min_valid_loss_epoch": low_valid["epoch"],
            "ops_above_0.9_pct": last["ops_above_0.9_pct"], "ops_below_0.1_pct": last["ops_below_0.1_pct"],  # Fig. 4
            "best_valid_top1": max(r["valid_top1"] for r in records)}  # Fig. 5


def read_search(run):
    """The metrics.jsonl records of a finished D-DARTS search (its summary.json is written last)."""
    run = Path(run)
    if not (run / "metrics.jsonl").is_file():
        die(f"{run}: no metrics.jsonl here; give the folder of a D-DARTS search (d_darts/train_search.py)")
    if not (run / "summary.json").is_file():
        die(f"{run}: the search has not finished (no summary.json); run it to the end with --resume")
    records = MetricsLog.read(run / "metrics.jsonl")
    missing = [k for k in NEEDED if not records or k not in records[-1]]
    if missing:
        die(f"{run}: its metrics.jsonl has no {', '.join(missing)}; give the folder of a D-DARTS search")
    return records


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--search_dirs", nargs="+", required=True, help="finished D-DARTS search folders")
    p.add_argument("--save", required=True, help="output folder (summary.json)")
    p.add_argument("--resume", action="store_true", help="accepted like every stage's; the numbers are recomputed")
    args = p.parse_args(argv)
    per_search = [figure_numbers(read_search(run)) for run in args.search_dirs]
    save = setup_run(args, "search_stats-d_darts")
    means = {k: sum(s[k] for s in per_search) / len(per_search) for k in per_search[0]}
    for run, s in zip(args.search_dirs, per_search):
        log.info("%s: %s", run, json.dumps(s))
    summary = {**means, "searches": args.search_dirs, "per_search": per_search}
    (save / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


if __name__ == "__main__":
    main()
