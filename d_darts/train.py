"""Train a D-DARTS genotype from scratch (Sec. 5.1, 5.4, 5.5): the FairDARTS/DARTS protocol, with
the searched cells used as they are (--layers = their number) or stacked deeper by Alg. 1.

Usage: python d_darts/train.py --arch RUN/genotype.json [--layers 14] [--dataset cifar100 --data DIR]
       torchrun --nproc_per_node 8 d_darts/train.py --arch RUN/genotype.json --dataset imagenet --data DIR
"""
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python d_darts/train.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import train_eval
from common.data import pipeline
from common.network import build_network
from d_darts.model import derived_layout

# Sec. 5.1: "the same data processing, hyperparameters and training tricks as FairDARTS and DARTS",
# 8 layers (the searched cells) on CIFAR. Sec. 5.5: ImageNet at 14 layers, 400 epochs.
CIFAR = dict(layers=8)
IMAGENET = dict(layers=14, epochs=400)


def build(genotype, num_classes, args):
    """The DARTS evaluation network; a per-cell genotype fills `args.layers` layers by Alg. 1."""
    layout = derived_layout(genotype, args.layers) if genotype.kind == "per_cell" else None
    return build_network(genotype, pipeline(args), args.init_channels, args.layers, num_classes, args.auxiliary,
                         layout=layout)


def main(argv=None):
    args = train_eval.parse_args(argv, cifar=CIFAR, imagenet=IMAGENET, description=__doc__.split("\n")[0])
    return train_eval.main(args, build=build)


if __name__ == "__main__":
    main()
