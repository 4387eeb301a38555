"""Datasets, transforms, the DARTS search split and loaders.

`cifar10`, `cifar100`, `svhn` come through torchvision (downloaded only with
`--download`); `imagenet16-120` reads the 16x16 downsampled ImageNet's pickles as NAS-Bench-201
does; `imagenet` and `imagefolder` read `DIR/train/<class>/*` and
`DIR/val/<class>/*`; `synthetic` is generated in memory, offline and
deterministic: the default data of smoke runs and tests. Semantic segmentation:
Pascal VOC 2012 (with SBD for the augmented training set) and its synthetic
counterpart, the DeepLabV3 transforms, a padding collate.

Every dataset gets one of two pipelines, `pipeline(args)`, the same in search and evaluation:
'cifar' (the CIFAR networks, the CIFAR transforms, the DARTS search split by --train_portion, the
CIFAR training protocol) or 'imagenet' (the ImageNet networks and stems, ImageNet's transforms,
the PC-DARTS per-class search subsets, the ImageNet protocol). ImageNet gets ImageNet's; a user's
image folder gets CIFAR's when its images are small (shorter side under 128 pixels, or
--image_size under 128), ImageNet's otherwise; --pipeline overrides.
"""
import argparse
import functools
import math
import os
import pickle
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset
from torchvision import tv_tensors
from torchvision.transforms import v2

from common.utils import die, rank, world_size

DATASETS = ("cifar10", "cifar100", "svhn", "imagenet16-120", "imagenet", "imagefolder", "synthetic")
MEAN_STD = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    # NAS-Bench-201's (AutoDL-Projects, lib/datasets/get_dataset_with_transform.py)
    "imagenet16-120": (tuple(x / 255 for x in (122.68, 116.66, 104.01)), tuple(x / 255 for x in (63.22, 61.26, 65.09))),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "synthetic": ((0.45, 0.45, 0.45), (0.25, 0.25, 0.25)),
}
SYNTHETIC_TRAIN, SYNTHETIC_TEST, SYNTHETIC_CLASSES = 10000, 2000, 10
# the datasets of fixed-size images: their side
FIXED_SIZE = {"cifar10": 32, "cifar100": 32, "svhn": 32, "imagenet16-120": 16}
IMAGENET16 = 120  # ImageNet16-120: the classes 1..120 of the downsampled ImageNet
SMALL_IMAGES = 128  # an image folder whose images are smaller than this gets the CIFAR pipeline
# The networks halve the image this many times: CIFAR: 2 reduction cells; ImageNet: 3 stride-2 stem
# convolutions and 2 reduction cells. Each halving needs an even side.
HALVINGS = {"cifar": 2, "imagenet": 5}


def add_data_args(parser, search=False):
    """The data flags every script shares (DARTS names)."""
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", default="cifar10", choices=DATASETS)
    g.add_argument("--data", default="~/data", help="folder holding (or receiving) the dataset")
    g.add_argument("--download", action="store_true", help="download CIFAR/SVHN into --data if missing")
    g.add_argument("--subset", type=int, default=None,
                   help="use only the first N training images (of an image folder: of its images in a fixed "
                        "shuffled order, so that every class is among them)")
    g.add_argument("--image_size", type=int, default=None,
                   help="synthetic images (default 32); the crop of ImageNet-pipeline data (default 224); the side "
                        "of an image folder's images in the CIFAR pipeline (default: theirs, down to a multiple of 4)")
    g.add_argument("--pipeline", choices=("auto", "cifar", "imagenet"), default="auto",
                   help="imagefolder only: the CIFAR or the ImageNet pipeline (networks, transforms, search split, "
                        f"training protocol); auto: CIFAR's for images under {SMALL_IMAGES} pixels")
    g.add_argument("--workers", type=int, default=2, help="data loading processes")
    g.add_argument("--cutout", action=argparse.BooleanOptionalAction, default=False, help="cutout augmentation")
    g.add_argument("--cutout_length", type=int, default=16, help="cutout length")
    if search:
        g.add_argument("--train_portion", type=float, default=0.5,
                       help="part of the training set that trains the weights; the rest trains the architecture")
        g.add_argument("--imagenet_fractions", type=float, nargs=2, default=(0.1, 0.025),
                       metavar=("TRAIN", "VALID"),
                       help="per-class fractions of ImageNet's training set used for search (PC-DARTS)")
    return g


def pipeline(args):
    """'cifar' or 'imagenet': the one pipeline `args` gets in search and in evaluation (see the top
    of this module). An image folder's images are measured on its first training image."""
    if args.dataset != "imagefolder":
        if getattr(args, "pipeline", "auto") != "auto":
            die(f"--pipeline {args.pipeline}: only --dataset imagefolder has a choice; leave --pipeline out")
        return "imagenet" if args.dataset == "imagenet" else "cifar"
    if getattr(args, "pipeline", "auto") != "auto":
        return args.pipeline
    size = getattr(args, "image_size", None) or min(_first_image_size(_root(args)))
    return "cifar" if size < SMALL_IMAGES else "imagenet"


def is_imagenet_like(args):
    return pipeline(args) == "imagenet"


def image_size(args):
    """The side of the images the network sees: --image_size, else 32 (CIFAR, SVHN, synthetic), 16
    (ImageNet16-120), 224 (the ImageNet pipeline), or, in the CIFAR pipeline of an image folder, its
    images' shorter side rounded down to a multiple of 4."""
    if getattr(args, "image_size", None):
        return args.image_size
    if is_imagenet_like(args):
        return 224
    if args.dataset == "imagefolder":
        return max(4, min(_first_image_size(_root(args))) // 4 * 4)
    return FIXED_SIZE.get(args.dataset, 32)


def check_image_size(args):
    """One clear line when the images do not fit the networks of the pipeline."""
    size, name = image_size(args), pipeline(args)
    if args.dataset in FIXED_SIZE and size != FIXED_SIZE[args.dataset]:
        side = FIXED_SIZE[args.dataset]
        die(f"--image_size {size}: {args.dataset} images are {side}x{side}; leave --image_size out")
    step = 2 ** HALVINGS[name]
    if size < step or size % step:
        die(f"--image_size {size}: the networks of the {name} pipeline halve the images {HALVINGS[name]} times, "
            f"so the size must be a multiple of {step}; try --image_size {max(step, round(size / step) * step)}")


def _root(args):
    return Path(args.data).expanduser()


# ---------------------------------------------------------------- synthetic data

_PALETTE = torch.tensor([[0.9, 0.2, 0.2], [0.2, 0.8, 0.2], [0.2, 0.3, 0.9], [0.9, 0.8, 0.1]])


def _draw(g, n, size, shape, colour, orient, freq, radius):
    """Masks [n, 1, H, W] and striped colours [n, 3, H, W] of one object per image."""
    def rand():  # one uniform draw per image, shaped to broadcast over [n, H, W]
        return torch.rand(n, generator=g).view(n, 1, 1)

    lin = torch.linspace(-1, 1, size)
    yy, xx = lin.view(1, -1, 1), lin.view(1, 1, -1)
    cx, cy = rand() * 1.2 - 0.6, rand() * 1.2 - 0.6
    r, rot = radius[0] + (radius[1] - radius[0]) * rand(), rand() * 2 * math.pi
    u = ((xx - cx) * rot.cos() + (yy - cy) * rot.sin()) / r
    v = (-(xx - cx) * rot.sin() + (yy - cy) * rot.cos()) / r
    rho = (u ** 2 + v ** 2).sqrt()
    masks = torch.stack([
        rho < 1,  # disk
        torch.maximum(u.abs(), v.abs()) < 0.8,  # square
        (v > -0.5) & (v + 3 ** 0.5 * u < 1) & (v - 3 ** 0.5 * u < 1),  # triangle
        ((u.abs() < 0.3) & (v.abs() < 0.9)) | ((v.abs() < 0.3) & (u.abs() < 0.9)),  # cross
        (rho > 0.55) & (rho < 0.95),  # ring
    ], 1).float()
    mask = masks[torch.arange(n), shape].unsqueeze(1)
    phi = (orient * math.pi / 3).view(-1, 1, 1) + (rand() - 0.5) * 0.4
    f = (1.5 + 0.5 * freq.float()).view(-1, 1, 1)
    stripes = 0.5 + 0.5 * torch.sin(2 * math.pi * f * (xx * phi.cos() + yy * phi.sin()) + rand() * 6.3)
    tint = _PALETTE[colour] + 0.3 * (torch.rand(n, 3, generator=g) - 0.5)
    fg = tint.view(n, 3, 1, 1) * (0.5 + 0.5 * rand().unsqueeze(1)) * (0.4 + 0.6 * stripes.unsqueeze(1))
    return mask, fg


def make_synthetic(n, image_size=32, num_classes=SYNTHETIC_CLASSES, seed=0, chunk=1000):
    """`n` uint8 images [n, 3, H, W] and labels. A class is a combination of a shape (5), a
    colour (4), a stripe orientation (3) and a stripe frequency (7), so no single cue names it.
    Position, size, rotation, brightness and background vary; a smaller distractor object with
    random attributes sits behind the main one; Gaussian pixel noise covers everything.
    Images come in seeded chunks, so the first k images are the same whatever `n` is."""
    xs, ys = [], []
    for start in range(0, n, chunk):
        g = torch.Generator().manual_seed(seed * 1_000_003 + start)
        m = chunk
        y = torch.randperm(m, generator=g) % num_classes
        img = (0.1 + 0.5 * torch.rand(m, 3, generator=g)).view(m, 3, 1, 1).expand(m, 3, image_size, image_size)
        other = torch.randint(420, (m,), generator=g)
        for c, radius in ((other, (0.25, 0.4)), (y, (0.4, 0.7))):
            mask, fg = _draw(g, m, image_size, c % 5, c % 4, c % 3, c % 7, radius)
            img = mask * fg + (1 - mask) * img
        img = img + 0.15 * torch.randn(m, 3, image_size, image_size, generator=g)
        xs.append((img.clamp(0, 1) * 255).round().to(torch.uint8))
        ys.append(y)
    return torch.cat(xs)[:n], torch.cat(ys)[:n]


class SyntheticDataset(Dataset):
    """The built-in data: 10,000 training and 2,000 test images of 10 classes."""

    def __init__(self, train, image_size=32, transform=None, limit=None):
        n = SYNTHETIC_TRAIN if train else SYNTHETIC_TEST
        self.data, targets = make_synthetic(min(n, limit or n), image_size, seed=0 if train else 1)
        self.targets = targets.tolist()
        self.transform = transform

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        x = self.data[i]
        return (self.transform(x) if self.transform else x), self.targets[i]


# ---------------------------------------------------------------- transforms

class Cutout:
    """Zero one `length` x `length` square at a random centre (DeVries & Taylor, 2017)."""

    def __init__(self, length):
        self.length = length

    def __call__(self, img):
        h, w = img.shape[-2:]
        cy, cx = torch.randint(h, ()).item(), torch.randint(w, ()).item()
        y0, y1 = max(cy - self.length // 2, 0), min(cy + self.length // 2, h)
        x0, x1 = max(cx - self.length // 2, 0), min(cx + self.length // 2, w)
        img = img.clone()
        img[..., y0:y1, x0:x1] = 0
        return img


def transforms(args, train, cutout_length=0, search=False):
    """The transforms of the pipeline of `args` (DARTS'). CIFAR: random crop (padding 4), flip, with
    an image folder's images first resized and centre-cropped to the image size; ImageNet16-120:
    NAS-Bench-201's flip, then random crop (padding 2); ImageNet: random
    resized crop, flip and, to train an evaluation network, colour jitter (a search, `search=True`,
    has none: PC-DARTS' train_search_imagenet.py); evaluation: resize 256 / centre crop 224. Cutout
    after normalising (DARTS' utils.py), so the cut square is 0 in the normalised image. Image
    folders are normalised with ImageNet's statistics."""
    mean, std = MEAN_STD.get(args.dataset, MEAN_STD["imagenet"])
    to_float = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    size = image_size(args)
    if is_imagenet_like(args):
        if train:
            aug = [v2.RandomResizedCrop(size), v2.RandomHorizontalFlip()]
            if not search:
                aug.append(v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2))
        else:
            aug = [v2.Resize(round(size * 256 / 224)), v2.CenterCrop(size)]
    elif args.dataset == "imagenet16-120":  # AutoDL-Projects, lib/datasets/get_dataset_with_transform.py
        aug = [v2.RandomHorizontalFlip(), v2.RandomCrop(size, padding=2)] if train else []
    else:
        aug = [v2.Resize(size), v2.CenterCrop(size)] if args.dataset == "imagefolder" else []
        aug += [v2.RandomCrop(size, padding=4), v2.RandomHorizontalFlip()] if train else []
    extra = [Cutout(cutout_length)] if train and cutout_length > 0 else []
    return v2.Compose([v2.ToImage()] + aug + to_float + extra)


# ---------------------------------------------------------------- datasets

class DataError(Exception):
    """A file of a dataset that cannot be used; `Loader` turns it into one clear line."""


def read_image(path):
    """An image file as RGB, or a DataError naming the file (a corrupt image must not end a run
    in a PIL traceback mid-epoch)."""
    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0][:100]
        raise DataError(f"{path} is not a readable image ({reason}): remove or replace it") from None


def _missing(name, folder, root):
    die(f"{name}: no folder {folder}. Put the images in {root}/train/<class>/* and {root}/val/<class>/* "
        "(ImageNet: the ILSVRC-2012 train and val sets, val sorted into class folders) and pass --data " + str(root))


def _classes(folder):
    return sorted(e.name for e in os.scandir(folder) if e.is_dir())


@functools.lru_cache(maxsize=None)
def _first_image_size(root):
    """(width, height) of the first image of the first class of `root`/train."""
    folder = root / "train"
    if not folder.is_dir():
        _missing("imagefolder", folder, root)
    for c in _classes(folder):
        for f in sorted(os.scandir(folder / c), key=lambda e: e.name):
            if f.is_file() and f.name.lower().endswith(torchvision.datasets.folder.IMG_EXTENSIONS):
                try:
                    return read_image(f.path).size
                except DataError as e:
                    die(str(e))
    die(f"{folder} holds no images: put each class's images in {folder}/<class>/")


def _shorten(names, n=5):
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def image_folder(name, root, train, transform):
    """`root`/train or `root`/val as an ImageFolder, or one clear line: no folder, no class
    folders, class folders without images, a single class, val/ classes that differ from train/'s
    (the labels would silently shift). The training images come in a fixed shuffled order (seed 0),
    as CIFAR's files do, so that --subset N and the DARTS split by --train_portion see every class."""
    folder = root / ("train" if train else "val")
    if not folder.is_dir():
        _missing(name, folder, root)
    classes = _classes(folder)
    if len(classes) < 2:
        die(f"{folder} holds {len(classes)} class folder{'s' * (len(classes) != 1)}; a classifier needs at least two: "
            f"put each class's images in {folder}/<class>/")
    if not train and (root / "train").is_dir() and classes != _classes(root / "train"):
        ours, theirs = set(classes), set(_classes(root / "train"))
        die(f"{folder} and {root / 'train'} have different classes (only in val: {_shorten(sorted(ours - theirs)) or '-'}; "
            f"only in train: {_shorten(sorted(theirs - ours)) or '-'}), so the labels would not match: "
            "give both the same class folders")
    ds = torchvision.datasets.ImageFolder(str(folder), transform, loader=read_image, allow_empty=True)
    found = set(ds.targets)
    empty = [c for i, c in enumerate(ds.classes) if i not in found]
    if empty:
        die(f"{folder}: the class folders {_shorten(empty)} hold no images "
            f"({', '.join(torchvision.datasets.folder.IMG_EXTENSIONS[:4])}, ...): add images or remove those folders")
    if train:
        order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0)).tolist()
        ds.samples = ds.imgs = [ds.samples[i] for i in order]
        ds.targets = [t for _, t in ds.samples]
    return ds


class ImageNet16(Dataset):
    """ImageNet16-120 as NAS-Bench-201 builds it (Dong & Yang, 2020; AutoDL-Projects,
    lib/datasets/DownsampledImageNet.py): the 16x16 downsampled ImageNet of Chrabaszcz et al. (2017),
    `root`/train_data_batch_1..10 (training) or `root`/val_data (test), pickled dicts of 'data'
    (N x 768 uint8, channel-major 3x16x16) and 'labels' (ImageNet classes 1..1000); only the images
    of classes 1..120 are kept, labelled 0..119. Items are PIL images, as torchvision's CIFAR."""
    TRAIN = tuple(f"train_data_batch_{i}" for i in range(1, 11))
    TEST = ("val_data",)

    def __init__(self, root, train, transform=None):
        files = [root / f for f in (self.TRAIN if train else self.TEST)]
        absent = [f.name for f in files if not f.is_file()]
        if absent:
            die(f"imagenet16-120: {_shorten(absent)} not in {root}. Put the 16x16 downsampled ImageNet's "
                "train_data_batch_1..10 and val_data there (image-net.org: Imagenet16_train.zip, "
                "Imagenet16_val.zip; --download cannot fetch it) and pass --data DIR")
        data, labels = [], []
        for f in files:
            try:
                with open(f, "rb") as fh:
                    entry = pickle.load(fh, encoding="latin1")
                x, y = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 16, 16), np.asarray(entry["labels"])
            except (OSError, ValueError, KeyError, TypeError, pickle.UnpicklingError, EOFError) as e:
                die(f"imagenet16-120: {f} is not a downsampled-ImageNet batch ({type(e).__name__}): replace it")
            keep = (y >= 1) & (y <= IMAGENET16)
            data.append(x[keep])
            labels.append(y[keep] - 1)
        self.data = np.concatenate(data).transpose(0, 2, 3, 1)  # HWC, for PIL
        self.targets = np.concatenate(labels).tolist()
        self.transform = transform

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        x = Image.fromarray(self.data[i])
        return (self.transform(x) if self.transform else x), self.targets[i]


def num_classes(dataset, root=None):
    if dataset == "imagefolder":
        folder = Path(root).expanduser() / "train"
        if not folder.is_dir():
            _missing(dataset, folder, Path(root).expanduser())
        return len(_classes(folder))
    return {"cifar10": 10, "cifar100": 100, "svhn": 10, "imagenet16-120": IMAGENET16, "imagenet": 1000,
            "synthetic": SYNTHETIC_CLASSES}[dataset]


def get_dataset(args, train, transform):
    """The training (`train=True`) or test split of `args.dataset`, or one clear error."""
    root = _root(args)
    name = args.dataset
    if name == "synthetic":
        return SyntheticDataset(train, image_size(args), transform, args.subset if train else None)
    if name in ("imagenet", "imagefolder"):
        return image_folder(name, root, train, transform)
    if name == "imagenet16-120":
        return ImageNet16(root, train, transform)
    try:
        if name == "svhn":
            return torchvision.datasets.SVHN(str(root), split="train" if train else "test",
                                             transform=transform, download=args.download)
        cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
        return cls(str(root), train=train, transform=transform, download=args.download)
    except RuntimeError:
        die(f"{name} not found in {root}. Pass --download to fetch it there (needs internet), "
            f"or --data DIR for a folder that already holds it.")


def class_fraction_split(targets, fractions, seed=0):
    """Per class, disjoint random samples of the given fractions of its images (the PC-DARTS
    ImageNet search subsets: 10% for the weights, 2.5% for the architecture)."""
    targets = torch.as_tensor(targets)
    g = torch.Generator().manual_seed(seed)
    parts = [[] for _ in fractions]
    for c in targets.unique():
        idx = (targets == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        start = 0
        for part, frac in zip(parts, fractions):
            k = max(1, int(len(idx) * frac))
            part += idx[start:start + k].tolist()
            start += k
    return [sorted(p) for p in parts]


def limit(ds, subset):
    """The first `subset` images of `ds` (`--subset`; all when None)."""
    return Subset(ds, range(min(subset, len(ds)))) if subset else ds


class ShardSampler(Sampler):
    """Rank r of w reads images r, r + w, r + 2w, ...: over the ranks every image exactly once.
    (DistributedSampler pads to a multiple of w with repeated images: 10,002 CIFAR test images on
    3 GPUs.) The order never changes, so `set_epoch` has nothing to do."""

    def __init__(self, n, num_replicas, rank):
        self.indices = range(rank, n, num_replicas)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)

    def set_epoch(self, epoch):
        pass


class Loader(DataLoader):
    """A DataLoader that ends the run with one clear line when a file cannot be read (`DataError`,
    raised in a worker process or in this one)."""

    def __iter__(self):
        try:
            yield from super().__iter__()
        except DataError as e:  # from a worker, the message ends with the worker's "DataError: ..." line
            die(str(e).strip().splitlines()[-1].split("DataError: ", 1)[-1])


def make_loader(ds, batch_size, train, workers, seed=0):
    """A loader split across ranks under torchrun. Training (`train=True`): shuffled in an order that
    depends only on (seed, epoch), every rank the same number of batches; call
    `loader.sampler.set_epoch(epoch)` before each epoch. Evaluation: in order, each image once."""
    ws = world_size()
    if train:
        sampler = DistributedSampler(ds, num_replicas=ws, rank=rank(), shuffle=True, seed=seed, drop_last=False)
    else:
        sampler = ShardSampler(len(ds), ws, rank())
    return Loader(ds, batch_size=max(1, batch_size // ws), sampler=sampler, num_workers=workers,
                  pin_memory=torch.cuda.is_available(), drop_last=False)


def search_split(ds, args):
    """(weights indices, architecture indices) of the DARTS search split of `ds` (the training set,
    after `--subset`): the first `train_portion` and the rest; ImageNet-like data: the PC-DARTS
    per-class subsets. It depends only on the labels, so any transform of the same set splits alike."""
    if is_imagenet_like(args):
        targets = ds.targets if not isinstance(ds, Subset) else [ds.dataset.targets[i] for i in ds.indices]
        return class_fraction_split(targets, args.imagenet_fractions, args.seed)
    split = int(math.floor(args.train_portion * len(ds)))
    return range(split), range(split, len(ds))


def search_loaders(args):
    """The search split of the training set: (weights loader, architecture loader, classes). The
    CIFAR pipeline splits by --train_portion (DARTS); the ImageNet pipeline takes the PC-DARTS
    per-class subsets (--imagenet_fractions)."""
    check_image_size(args)
    ds = get_dataset(args, True, transforms(args, True, args.cutout_length if args.cutout else 0, search=True))
    ds = limit(ds, args.subset)
    train_idx, valid_idx = search_split(ds, args)
    if not len(train_idx) or not len(valid_idx):
        die(f"{len(ds)} training images leave {len(train_idx)} to train the weights and {len(valid_idx)} to train "
            "the architecture: use more images (--subset) or another --train_portion")
    train = make_loader(Subset(ds, train_idx), args.batch_size, True, args.workers, args.seed)
    valid = make_loader(Subset(ds, valid_idx), args.batch_size, True, args.workers, args.seed + 1)
    return train, valid, num_classes(args.dataset, args.data)


def held_out_split(n, valid_size):
    """(training indices, held-out indices) of a training set of `n` images: `valid_size` of them drawn
    by one fixed permutation (seed 0, whatever --seed is), so every run and every candidate
    architecture is validated on the same images, class-balanced in expectation even when the files
    are sorted by class; the others, in order, train."""
    if not 0 <= valid_size < n:
        die(f"--valid_size {valid_size}: the training set has {n} images (after --subset); hold out "
            f"between 0 and {n - 1}")
    held = torch.zeros(n, dtype=torch.bool)
    held[torch.randperm(n, generator=torch.Generator().manual_seed(0))[:valid_size]] = True
    return (~held).nonzero().flatten().tolist(), held.nonzero().flatten().tolist()


def eval_loaders(args, valid_size=0):
    """(training loader, test loader, classes) for training from scratch; the training set without the
    `valid_size` images `held_out_split` keeps for `valid_loader`. The test loader takes batches of at
    least 256: evaluation does not depend on the batch, and it is faster."""
    check_image_size(args)
    train = get_dataset(args, True, transforms(args, True, args.cutout_length if args.cutout else 0))
    train = limit(train, args.subset)
    if valid_size:
        train = Subset(train, held_out_split(len(train), valid_size)[0])
    test = get_dataset(args, False, transforms(args, False))
    return (make_loader(train, args.batch_size, True, args.workers, args.seed),
            make_loader(test, max(args.batch_size, 256), False, args.workers),
            num_classes(args.dataset, args.data))


def valid_loader(args, valid_size):
    """The `valid_size` training images `eval_loaders` holds out, with the test transforms: a validation
    set for choosing between architectures without reading the test set."""
    ds = limit(get_dataset(args, True, transforms(args, False)), args.subset)
    return make_loader(Subset(ds, held_out_split(len(ds), valid_size)[1]), max(args.batch_size, 256), False,
                       args.workers)


# ---------------------------------------------------------------- semantic segmentation

SEG_IGNORE = 255  # the label of pixels that count in neither the loss nor the mIoU (VOC's object borders)
SYNTHETIC_SEG_TRAIN, SYNTHETIC_SEG_TEST = 2000, 100
SYNTHETIC_SEG_CLASSES = 6  # background and the five shapes of `_draw`
VOC_CLASSES = 21  # Pascal VOC: 20 object classes and the background


def make_synthetic_seg(n, image_size=64, seed=0, chunk=500):
    """`n` uint8 images [n, 3, H, W] and label maps [n, H, W]: every pixel is labelled with the
    shape (1 disk, 2 square, 3 triangle, 4 cross, 5 ring) of the object covering it, 0 where none
    does. Two objects per image, the front one hiding the back one, each with a random shape,
    colour, stripes, position, size and rotation, so only the shape names the class; background
    colour and Gaussian pixel noise vary. Seeded chunks: the first k images do not depend on `n`."""
    xs, ys = [], []
    for start in range(0, n, chunk):
        g = torch.Generator().manual_seed(seed * 1_000_003 + start)
        m = chunk
        img = (0.1 + 0.5 * torch.rand(m, 3, generator=g)).view(m, 3, 1, 1).expand(m, 3, image_size, image_size)
        label = torch.zeros(m, image_size, image_size, dtype=torch.uint8)
        for radius in ((0.5, 0.9), (0.4, 0.7)):  # back, then front
            shape, colour = torch.randint(5, (m,), generator=g), torch.randint(4, (m,), generator=g)
            orient, freq = torch.randint(3, (m,), generator=g), torch.randint(7, (m,), generator=g)
            mask, fg = _draw(g, m, image_size, shape, colour, orient, freq, radius)
            img = mask * fg + (1 - mask) * img
            label = torch.where(mask[:, 0].bool(), (shape + 1).view(m, 1, 1).to(torch.uint8), label)
        img = img + 0.1 * torch.randn(m, 3, image_size, image_size, generator=g)
        xs.append((img.clamp(0, 1) * 255).round().to(torch.uint8))
        ys.append(label)
    return torch.cat(xs)[:n], torch.cat(ys)[:n]


class SyntheticSegmentation(Dataset):
    """The built-in segmentation data: 2,000 training and 100 validation images, 6 classes.
    `transforms(image, labels)` is applied to each pair."""

    def __init__(self, train, image_size=64, transforms=None, limit=None):
        n = SYNTHETIC_SEG_TRAIN if train else SYNTHETIC_SEG_TEST
        self.images, self.labels = make_synthetic_seg(min(n, limit or n), image_size, seed=0 if train else 1)
        self.transforms = transforms

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x, y = self.images[i], self.labels[i]
        return self.transforms(x, y) if self.transforms else (x, y)


class RandomScale:
    """Resize image and labels by one factor drawn uniformly from [lo, hi] (labels: nearest)."""

    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi

    def __call__(self, image, labels):
        s = torch.empty(()).uniform_(self.lo, self.hi).item()
        size = [int(image.shape[-2] * s + 0.5), int(image.shape[-1] * s + 0.5)]
        return v2.functional.resize(image, size, antialias=True), v2.functional.resize(labels, size)


class SegmentationTransforms:
    """The DeepLabV3 data pipeline (Chen et al., 2017, Sec. 4): for training, a random scale in
    `scale`, a random `crop_size` crop (images smaller than the crop are padded with the mean
    image, their labels with SEG_IGNORE) and a random left-right flip; for evaluation, the whole
    image (`collate_padded` pads it). Normalised by `mean_std`. Called with (image, labels) as PIL
    images or uint8 tensors; returns a float image [3, H, W] and int64 labels [H, W]."""

    def __init__(self, train, crop_size, mean_std, scale=(0.5, 2.0)):
        steps = [v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True), v2.Normalize(*mean_std)]
        if train:  # normalised first, so that padding with 0 pads with the mean
            steps = [RandomScale(*scale), *steps, v2.RandomCrop(crop_size, pad_if_needed=True, fill={
                tv_tensors.Image: 0, tv_tensors.Mask: SEG_IGNORE}), v2.RandomHorizontalFlip()]
        self.pipeline = v2.Compose(steps)

    def __call__(self, image, labels):
        labels = labels if isinstance(labels, torch.Tensor) else v2.functional.pil_to_tensor(labels)[0]
        image, labels = self.pipeline(v2.functional.to_image(image), tv_tensors.Mask(labels))
        return image.as_subclass(torch.Tensor), labels.as_subclass(torch.Tensor).long()


def collate_padded(batch, min_size=0):
    """Stack (image, labels) pairs of different sizes: each is padded at the bottom and right to
    the largest height and width in the batch, and to at least `min_size` (DeepLab evaluates on
    513 x 513 inputs): images with 0 (the mean, once normalised), labels with SEG_IGNORE."""
    h = max(min_size, *(x.shape[-2] for x, _ in batch))
    w = max(min_size, *(x.shape[-1] for x, _ in batch))

    def pad(t, value):
        return torch.nn.functional.pad(t, (0, w - t.shape[-1], 0, h - t.shape[-2]), value=value)
    return (torch.stack([pad(x, 0.0) for x, _ in batch]), torch.stack([pad(y, SEG_IGNORE) for _, y in batch]))


def voc_segmentation(root, image_set, transforms, sbd_root=None, download=False):
    """Pascal VOC 2012 segmentation through torchvision, from `root`/VOCdevkit/VOC2012: `train`
    (1,464 images), `val` (1,449) or `trainaug` (10,582), the set DeepLabV3 trains on: VOC train
    with its own labels, plus every image of SBD (Hariharan et al., 2011; train and val, read by
    torchvision's SBDataset from `sbd_root`) that is in neither VOC train nor VOC val."""
    where = f"{root}/VOCdevkit/VOC2012"
    try:
        voc = torchvision.datasets.VOCSegmentation(str(root), "2012", "val" if image_set == "val" else "train",
                                                   download=download, transforms=transforms)
        val = voc if image_set == "val" else torchvision.datasets.VOCSegmentation(str(root), "2012", "val")
    except (RuntimeError, FileNotFoundError):
        die(f"voc2012: no Pascal VOC 2012 in {where} (JPEGImages/, SegmentationClass/, "
            f"ImageSets/Segmentation/train.txt, val.txt). Pass --download to fetch it into {root}, "
            "or --data DIR for the folder that holds VOCdevkit/")
    if image_set != "trainaug":
        return voc
    try:
        sbd = [torchvision.datasets.SBDataset(str(sbd_root), part, mode="segmentation", download=download,
                                              transforms=transforms) for part in ("train", "val")]
    except (RuntimeError, FileNotFoundError) as e:
        die(f"voc2012 trainaug needs SBD in {sbd_root} (img/, cls/, train.txt, val.txt; read with scipy): "
            f"{str(e).splitlines()[0]}. Pass --sbd DIR or --download, or --train_set train for VOC train alone")
    taken = {Path(p).stem for p in voc.images + val.images}
    extra = [Subset(d, [i for i, p in enumerate(d.images) if Path(p).stem not in taken]) for d in sbd]
    return torch.utils.data.ConcatDataset([voc, *extra])
