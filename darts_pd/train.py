"""Train a DARTS-PD architecture from scratch with the PC-DARTS evaluation protocol (Sec. 4.1, 4.2:
"our setup of stand-alone model training follows that of PC-DARTS").

`--arch` takes any genotype: RUN/genotype.json (the best path of the search), RUN/buckets/<name>.json
(the best path of one size bucket, listed in RUN/buckets.json), a published name, DARTS text.

Usage:
  python darts_pd/train.py --arch RUN/genotype.json --data ~/data
  python darts_pd/train.py --arch RUN/buckets/3.5-3.6M.json --data ~/data
  torchrun --nproc_per_node 8 darts_pd/train.py --arch RUN/genotype.json --dataset imagenet --data ~/imagenet
"""
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python darts_pd/train.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import train_eval  # noqa: E402

# PC-DARTS' CIFAR-10 protocol: 20 cells, 36 channels, 600 epochs, batch 96, SGD lr 0.025 cosine,
# momentum 0.9, wd 3e-4, grad clip 5, cutout 16, drop-path 0.3, auxiliary head 0.4.
CIFAR = dict(epochs=600, batch_size=96, learning_rate=0.025, learning_rate_min=0.0, lr_scheduler="cosine",
             weight_decay=3e-4, grad_clip=5.0, init_channels=36, layers=20, auxiliary=True, cutout=True,
             cutout_length=16, drop_path_prob=0.3, label_smooth=0.0)
# PC-DARTS' ImageNet protocol: 14 cells, 48 channels, 250 epochs, batch 1024, SGD lr 0.5 decayed linearly
# (the last 5 epochs with a fifth of the slope) after a 5-epoch warm-up, wd 3e-5, label smoothing 0.1,
# auxiliary head, no drop-path.
IMAGENET = dict(epochs=250, batch_size=1024, learning_rate=0.5, learning_rate_min=0.0, lr_scheduler="linear",
                linear_tail=5, warmup_epochs=5, weight_decay=3e-5, grad_clip=5.0, init_channels=48, layers=14,
                auxiliary=True, cutout=False, drop_path_prob=0.0, label_smooth=0.1)


def parse_args(argv=None):
    return train_eval.parse_args(argv, CIFAR, IMAGENET,
                                 "Train a DARTS-PD architecture from scratch (PC-DARTS protocol)")


def main(argv=None):
    return train_eval.main(parse_args(argv))


if __name__ == "__main__":
    main()
