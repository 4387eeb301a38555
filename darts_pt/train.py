"""Train a DARTS-PT genotype from scratch: DARTS' evaluation protocol (Sec. 5.1, App. A.8), or
NAS-Bench-201's for a NAS-Bench-201 cell (Sec. 5.2, Table 4, when the benchmark file is not at hand).

CIFAR: 20 cells, 36 channels, 600 epochs, batch 96, SGD lr 0.025 cosine, weight decay 3e-4,
cutout, drop-path 0.2, auxiliary tower 0.4 (Liu et al., 2019); ImageNet: DARTS' mobile setting.
A NAS-Bench-201 cell: its skeleton with C = 16, N = 5; 200 epochs, batch 256, SGD lr 0.1 with
Nesterov momentum, cosine to 0, weight decay 5e-4, no cutout, auxiliary tower, drop-path or
clipping (Dong & Yang, 2020). The published DARTS-PT cells are available by name
(`python -m common.genotypes list`).

Usage: python darts_pt/train.py --arch RUN/projection_pt/genotype.json [--dataset cifar10 --data DIR]
"""
import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import genotypes, train_eval

# NAS-Bench-201's training hyper-parameters (its 200-epoch setting), as overrides of DARTS' CIFAR ones.
NB201 = dict(epochs=200, batch_size=256, learning_rate=0.1, learning_rate_min=0.0, weight_decay=5e-4,
             nesterov=True, init_channels=16, auxiliary=False, cutout=False, drop_path_prob=0.0,
             label_smooth=0.0, grad_clip=0.0, lr_scheduler="cosine")


def is_nb201(argv):
    """Whether --arch names a NAS-Bench-201 cell (a bad --arch is left to train_eval to report)."""
    probe = argparse.ArgumentParser(add_help=False)
    probe.add_argument("--arch")
    arch = probe.parse_known_args(argv)[0].arch
    try:
        return arch is not None and genotypes.load(arch).kind == "nb201"
    except genotypes.GenotypeError:
        return False


def main(argv=None):
    nb201 = is_nb201(argv)
    args = train_eval.parse_args(argv, cifar=NB201 if nb201 else None, description=__doc__.split("\n")[0])
    # the paper reads a NAS-Bench-201 cell's error from the benchmark (nb201_lookup.py): say this one was trained
    trained = f"training with NAS-Bench-201's protocol ({args.epochs} epoch{'' if args.epochs == 1 else 's'})"
    return train_eval.main(args, evaluated_by=trained if nb201 else None)


if __name__ == "__main__":
    main(sys.argv[1:])
