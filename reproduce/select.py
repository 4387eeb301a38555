"""The selection stage of a row: which of N searched architectures is kept, never by the test set.

  --rule valid       DARTS' protocol (Liu et al., 2019, Sec. 3.3): each architecture was trained
                     briefly with a held-out validation split of the training set (`--trainings`,
                     in the order of `--genotypes`); the highest final validation accuracy wins.
  --rule search:KEY  the search with the highest KEY in its summary.json (else in the last record
                     of its metrics.jsonl), e.g. EnTranNAS' validation accuracy of the derived
                     child network; `--genotypes` are the searches' genotype files.

Writes SAVE/genotype.json (a copy of the chosen one, with where it came from) and SAVE/summary.json
(the rule, every candidate's value, the choice), summary.json last.

Usage: python -m reproduce.select --rule valid --genotypes G1 G2 .. --trainings T1 T2 .. --save DIR
"""
import argparse
import json
import math
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import genotypes
from common.utils import die

VALID_KEY = "final_valid_top1"  # train_eval: the last epoch's accuracy on its held-out split (--valid_size)


def read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def final_value(folder, key):
    """KEY from FOLDER/summary.json, else from the last record of FOLDER/metrics.jsonl; -inf if neither."""
    summary = read_json(Path(folder) / "summary.json") or {}
    if summary.get(key) is not None:
        return float(summary[key])
    path = Path(folder) / "metrics.jsonl"
    lines = [line for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    try:
        return float(json.loads(lines[-1])[key]) if lines else -math.inf
    except (ValueError, KeyError, TypeError):
        return -math.inf


def choose(rule, genotype_files, trainings=()):
    """(index of the chosen genotype, the value of every candidate, the key compared)."""
    if rule == "valid":
        if len(trainings) != len(genotype_files):
            raise ValueError("--rule valid needs one training per genotype")
        key, folders = VALID_KEY, trainings
    elif rule.startswith("search:"):
        key, folders = rule.split(":", 1)[1], [Path(g).parent for g in genotype_files]
    else:
        raise ValueError(f"unknown rule {rule!r} (valid, search:KEY)")
    values = [final_value(f, key) for f in folders]
    if all(v == -math.inf for v in values):
        raise ValueError(f"no candidate reports {key!r} (in {', '.join(map(str, folders))})")
    return max(range(len(values)), key=lambda i: (values[i], -i)), values, key


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rule", required=True)
    p.add_argument("--genotypes", nargs="+", required=True)
    p.add_argument("--trainings", nargs="*", default=[])
    p.add_argument("--save", required=True)
    p.add_argument("--resume", action="store_true", help="accepted like every stage's; the choice is recomputed")
    a = p.parse_args(argv)
    try:
        i, values, key = choose(a.rule, a.genotypes, a.trainings)
        chosen = genotypes.load(a.genotypes[i])
    except (ValueError, genotypes.GenotypeError) as e:
        die(f"selection in {a.save}: {e}")
    save = Path(a.save)
    save.mkdir(parents=True, exist_ok=True)
    genotypes.export(save, chosen, selected_from=a.genotypes[i], rule=a.rule)
    (save / "summary.json").write_text(json.dumps({
        "rule": a.rule, "key": key, "chosen": a.genotypes[i], "value": values[i],
        "candidates": [{"genotype": g, "value": v} for g, v in zip(a.genotypes, values)]}, indent=1) + "\n")
    print(f"selected {a.genotypes[i]} ({key} {values[i]:.4g}) of {len(values)}")


if __name__ == "__main__":
    sys.exit(main())
