"""Train a DARTS-PD architecture from scratch with the PC-DARTS evaluation protocol (Sec. 4.1, 4.2:
"our setup of stand-alone model training follows that of PC-DARTS").

`--arch` takes any genotype (RUN/genotype.json, the best path of the search, a published name,
DARTS text), or RUN/genotypes.json with `--index I` for its entry I (one per parameter bucket,
best first; 0 when --index is left out).

Usage:
  python darts_pd/train.py --arch RUN/genotype.json --data ~/data
  python darts_pd/train.py --arch RUN/genotypes.json --index 2 --data ~/data
  torchrun --nproc_per_node 8 darts_pd/train.py --arch RUN/genotype.json --dataset imagenet --data ~/imagenet
"""
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python darts_pd/train.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import genotypes, train_eval  # noqa: E402
from common.data import is_imagenet_like  # noqa: E402
from common.utils import die  # noqa: E402

# PC-DARTS' CIFAR-10 protocol: 20 cells, 36 channels, 600 epochs, batch 96, SGD lr 0.025 cosine,
# momentum 0.9, wd 3e-4, grad clip 5, cutout 16, drop-path 0.3, auxiliary head 0.4.
CIFAR = dict(epochs=600, batch_size=96, learning_rate=0.025, learning_rate_min=0.0, lr_scheduler="cosine",
             weight_decay=3e-4, grad_clip=5.0, init_channels=36, layers=20, auxiliary=True, cutout=True,
             cutout_length=16, drop_path_prob=0.3, label_smooth=0.0)
# PC-DARTS' ImageNet protocol: 14 cells, 48 channels, 250 epochs, batch 1024, SGD lr 0.5 decayed linearly
# after a 5-epoch warm-up, wd 3e-5, label smoothing 0.1, auxiliary head, no drop-path.
IMAGENET = dict(epochs=250, batch_size=1024, learning_rate=0.5, learning_rate_min=0.0, lr_scheduler="linear",
                warmup_epochs=5, weight_decay=3e-5, grad_clip=5.0, init_channels=48, layers=14, auxiliary=True,
                cutout=False, drop_path_prob=0.0, label_smooth=0.1)


def get_parser():
    p = train_eval.get_parser("Train a DARTS-PD architecture from scratch (PC-DARTS protocol)")
    p.add_argument("--index", type=int, default=None,
                   help="with --arch RUN/genotypes.json: train its entry INDEX (0 = the best; default 0)")
    return p


def pick(path, index):
    """The DARTS text of entry `index` of a genotypes.json written by train_search.py."""
    try:
        entries = json.loads(Path(path).read_text())["genotypes"]
    except (OSError, ValueError, KeyError, TypeError):
        die(f"--index needs --arch RUN/genotypes.json (written by darts_pd/train_search.py); got {path}")
    if not 0 <= index < len(entries):
        die(f"--index {index}: {path} has entries 0..{len(entries) - 1}")
    try:
        return str(genotypes.from_dict(entries[index]))
    except genotypes.GenotypeError as e:
        die(f"{path} entry {index}: {e}")


def parse_args(argv=None):
    parser = get_parser()
    probe, _ = parser.parse_known_args(argv)
    imagenet = is_imagenet_like(probe)
    parser.set_defaults(**(train_eval.IMAGENET if imagenet else train_eval.CIFAR))
    parser.set_defaults(**(IMAGENET if imagenet else CIFAR))
    args = parser.parse_args(argv)
    if args.index is not None or Path(args.arch).name == "genotypes.json":
        args.arch_file, args.index = args.arch, args.index or 0
        args.arch = pick(args.arch_file, args.index)
    return args


def main(argv=None):
    return train_eval.main(parse_args(argv))


if __name__ == "__main__":
    main()
