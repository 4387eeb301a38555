"""Train a searched EnTranNAS / EnTranNAS-DST genotype from scratch (Sec. 4.2 CIFAR-10, Sec. 4.3 ImageNet).

Flexible-topology genotypes (DST: any number of inputs per node, several ops on one edge) build
with the same evaluation network (`common.network`), every node summing its (op, input) pairs.

Usage:
  python entrannas/train.py --arch RUN/genotype.json --data ~/data
  torchrun --nproc_per_node 8 entrannas/train.py --arch RUN/genotype.json --dataset imagenet --data ~/imagenet
"""
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python entrannas/train.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import train_eval  # noqa: E402

# Sec. 4.2: 20 cells, 36 channels, 600 epochs, batch 96, SGD lr 0.025 cosine, momentum 0.9, wd 3e-4,
# grad clip 5, cutout 16, drop-path 0.2, auxiliary head.
CIFAR = dict(epochs=600, batch_size=96, learning_rate=0.025, learning_rate_min=0.0, lr_scheduler="cosine",
             weight_decay=3e-4, grad_clip=5.0, init_channels=36, layers=20, auxiliary=True, cutout=True,
             cutout_length=16, drop_path_prob=0.2)
# Sec. 4.3: 14 cells, 48 channels, batch 1024, 250 epochs, SGD lr 0.5 linear to 0, momentum 0.9, wd 3e-5,
# auxiliary head and label smoothing (following PC-DARTS: 0.1).
IMAGENET = dict(epochs=250, batch_size=1024, learning_rate=0.5, learning_rate_min=0.0, lr_scheduler="linear",
                weight_decay=3e-5, init_channels=48, layers=14, auxiliary=True, label_smooth=0.1,
                drop_path_prob=0.0)


def parse_args(argv=None):
    return train_eval.parse_args(argv, cifar=CIFAR, imagenet=IMAGENET,
                                 description="Train an EnTranNAS genotype from scratch")


def main(argv=None):
    return train_eval.main(parse_args(argv))


if __name__ == "__main__":
    main()
