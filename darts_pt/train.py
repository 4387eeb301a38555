"""Train a DARTS-PT genotype from scratch with the DARTS evaluation protocol (Sec. 5.1, App. A.8).

CIFAR: 20 cells, 36 channels, 600 epochs, batch 96, SGD lr 0.025 cosine, weight decay 3e-4,
cutout, drop-path 0.2, auxiliary tower 0.4 (Liu et al., 2019); ImageNet: DARTS' mobile setting.
The published DARTS-PT cells are available by name (DARTS_PT, DARTS_PT_FIX_ALPHA, DARTS_PT_<seed>,
DARTS_PT_FIX_ALPHA_<seed>).

Usage: python darts_pt/train.py --arch RUN/projection_pt/genotype.json [--dataset cifar10 --data DIR]
"""
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import train_eval


def main(argv=None):
    return train_eval.main(train_eval.parse_args(argv, description=__doc__.split("\n")[0]))


if __name__ == "__main__":
    main(sys.argv[1:])
