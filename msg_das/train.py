"""Train a searched MSG-DAS cell from scratch with the paper's evaluation protocol (Sec. 4.2).

Usage: python msg_das/train.py --arch RUN/genotype.json [--dataset cifar10|imagenet --data DIR] [--save RUN] [--resume]
"""
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import train_eval

# Sec. 4.2, "Evaluation Setup". CIFAR-10: 20 cells, 36 channels, 600 epochs, batch 64, cutout,
# drop-path 0.2, auxiliary weight 0.4; "other hyper-parameters remain the same as the ones in
# search phase": SGD lr 0.025 cosine, momentum 0.9, weight decay 3e-4.
CIFAR = dict(epochs=600, batch_size=64, learning_rate=0.025, learning_rate_min=0.0, weight_decay=3e-4,
             init_channels=36, layers=20, auxiliary=True, cutout=True, drop_path_prob=0.2, lr_scheduler="cosine")
# ImageNet: 14 cells, 48 channels, 250 epochs, batch 256, weight decay 3e-4, lr 0.1 decayed by 0.97
# per epoch, label smoothing and the auxiliary tower (their values are DARTS': 0.1 and 0.4).
IMAGENET = dict(epochs=250, batch_size=256, learning_rate=0.1, weight_decay=3e-4, init_channels=48, layers=14,
                lr_scheduler="step", decay_rate=0.97, label_smooth=0.1, auxiliary=True)


def parse_args(argv=None):
    return train_eval.parse_args(argv, cifar=CIFAR, imagenet=IMAGENET, description=__doc__.split("\n")[0])


def main(argv=None):
    return train_eval.main(parse_args(argv))


if __name__ == "__main__":
    main()
