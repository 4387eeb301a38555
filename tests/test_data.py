import argparse

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from common import data
from conftest import run


def _args(**kw):
    p = argparse.ArgumentParser()
    data.add_data_args(p, search=True)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(["--dataset", "synthetic", "--workers", "0", "--image_size", "16"])
    for k, v in kw.items():
        setattr(a, k, v)
    return a


def test_synthetic_is_deterministic_and_balanced():
    a, ya = data.make_synthetic(300, 16)
    b, yb = data.make_synthetic(2000, 16)
    assert torch.equal(a, b[:300]) and torch.equal(ya, yb[:300])
    assert a.dtype == torch.uint8 and a.shape == (300, 3, 16, 16)
    assert torch.bincount(yb).tolist() == [200] * 10
    c, _ = data.make_synthetic(300, 16, seed=1)
    assert not torch.equal(a, c)


def _fit(model, x, y, xt, yt, epochs):
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(epochs):
        for i in range(0, len(x), 64):
            loss = F.cross_entropy(model(x[i:i + 64]), y[i:i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return (model(xt).argmax(1) == yt).float().mean().item()


def test_synthetic_is_learnable_and_not_trivial():
    x, y = data.make_synthetic(3000, 16)
    xt, yt = data.make_synthetic(600, 16, seed=1)
    x, xt = (x.float() / 255 - 0.45) / 0.25, (xt.float() / 255 - 0.45) / 0.25
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 10))
    acc_cnn = _fit(cnn, x, y, xt, yt, 6)
    acc_lin = _fit(linear, x, y, xt, yt, 6)
    assert acc_cnn > 0.45  # far above the 10% chance level (measured: 56%)
    assert acc_cnn > acc_lin + 0.15  # a better architecture does better (linear: 34%)


def test_search_split_and_subset():
    train, valid, n = data.search_loaders(_args(subset=100, train_portion=0.5))
    assert n == 10
    assert len(train.dataset) == 50 and len(valid.dataset) == 50
    assert set(train.dataset.indices).isdisjoint(valid.dataset.indices)
    x, y = next(iter(train))
    assert x.shape == (16, 3, 16, 16) and x.dtype == torch.float32


def test_loader_order_depends_on_epoch_only():
    def first_labels(epoch):
        train, _, _ = data.search_loaders(_args(subset=64))
        train.sampler.set_epoch(epoch)
        return [y.tolist() for _, y in train]
    assert first_labels(3) == first_labels(3)
    assert first_labels(3) != first_labels(4)


def test_test_loader_counts_every_image_once_across_ranks(monkeypatch):
    """10 test images on 3 ranks: 4 + 3 + 3, not 4 + 4 + 4 with two images counted twice."""
    from torch.utils.data import TensorDataset
    ds = TensorDataset(torch.arange(10))
    seen = []
    for r in range(3):
        monkeypatch.setattr(data, "world_size", lambda: 3)
        monkeypatch.setattr(data, "rank", lambda r=r: r)
        seen += [i for (x,) in data.make_loader(ds, 6, False, 0) for i in x.tolist()]
    assert sorted(seen) == list(range(10))
    assert len(data.make_loader(ds, 3, True, 0).sampler) == 4  # training: equal shards, so DDP steps pair up


def test_cutout_and_transforms():
    img = torch.ones(3, 32, 32)
    torch.manual_seed(0)
    out = data.Cutout(16)(img)
    assert 0 < (out == 0).sum() <= 3 * 16 * 16 and img.min() == 1
    cifar, imagenet = argparse.Namespace(dataset="cifar10"), argparse.Namespace(dataset="imagenet")
    tf = data.transforms(cifar, train=True, cutout_length=16)
    assert tf(torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8)).shape == (3, 32, 32)
    names = [type(t).__name__ for t in data.transforms(imagenet, train=True).transforms]
    assert names[:4] == ["ToImage", "RandomResizedCrop", "RandomHorizontalFlip", "ColorJitter"]
    names = [type(t).__name__ for t in data.transforms(imagenet, train=False).transforms]
    assert names[1:3] == ["Resize", "CenterCrop"]


def test_cutout_zeroes_the_normalised_image():
    """DARTS cuts out after normalising: the square is exactly 0, not the normalised value of black."""
    torch.manual_seed(0)
    tf = data.transforms(argparse.Namespace(dataset="cifar10"), train=True, cutout_length=16)
    out = tf(torch.full((3, 32, 32), 128, dtype=torch.uint8))
    zero = (out == 0).all(0)
    assert zero.sum() >= 8 * 8  # at least the quarter of the square that stays inside the image
    assert not (out == 0).any(0)[~zero].any() and (out[:, ~zero] != 0).all()


def _transform(loader):
    ds = loader.dataset
    while not hasattr(ds, "transform"):
        ds = ds.dataset
    return [type(t).__name__ for t in ds.transform.transforms]


def test_imagenet_search_has_no_colour_jitter(tmp_path):
    """PC-DARTS searches on ImageNet with random resized crops and flips only; the colour jitter is
    the evaluation network's training augmentation."""
    from PIL import Image
    for split in ("train", "val"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (20, 20)).save(tmp_path / split / c / f"{i}.png")
    a = _args(dataset="imagefolder", data=str(tmp_path), imagenet_fractions=(0.5, 0.5), pipeline="imagenet",
              image_size=32)
    weights, arch, _ = data.search_loaders(a)
    assert _transform(weights) == _transform(arch) == \
        ["ToImage", "RandomResizedCrop", "RandomHorizontalFlip", "ToDtype", "Normalize"]
    a.cutout = False
    assert "ColorJitter" in _transform(data.eval_loaders(a)[0])


def test_class_fraction_split():
    targets = [c for c in range(4) for _ in range(200)]
    train, valid = data.class_fraction_split(targets, (0.1, 0.025), seed=0)
    assert len(train) == 80 and len(valid) == 20 and set(train).isdisjoint(valid)
    assert [sum(targets[i] == c for i in train) for c in range(4)] == [20] * 4


def test_imagefolder(tmp_path):
    from PIL import Image
    for split in ("train", "val"):
        for c in ("cat", "dog"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (40, 30), (i * 40, 0, 0)).save(tmp_path / split / c / f"{i}.png")
    a = _args(dataset="imagefolder", data=str(tmp_path), image_size=24)
    train, test, n = data.eval_loaders(a)
    assert n == 2 and next(iter(train))[0].shape[-2:] == (24, 24) and next(iter(test))[0].shape[-1] == 24


def _imagenet16(root, labels):
    """A downsampled-ImageNet folder: every batch file holds one image per label; pixel (row h, column w,
    channel c) of image i is i + h, plus 100 in the red channel."""
    import pickle

    import numpy as np
    root.mkdir()
    i, c, h, _ = np.meshgrid(np.arange(len(labels)), range(3), range(16), range(16), indexing="ij")
    x = (i + h + 100 * (c == 0)).astype(np.uint8).reshape(len(labels), 3 * 16 * 16)  # channel-major rows
    for name in [f"train_data_batch_{i}" for i in range(1, 11)] + ["val_data"]:
        with open(root / name, "wb") as f:
            pickle.dump({"data": x, "labels": list(labels)}, f)


def test_imagenet16_120_is_nas_bench_201s(tmp_path):
    """NAS-Bench-201's ImageNet16-120: the classes 1..120 relabelled 0..119, 16x16 PIL images from
    channel-major rows; its flip, crop (padding 2) and statistics; the CIFAR pipeline."""
    _imagenet16(tmp_path / "in16", [1, 121, 120, 1000, 7])
    a = _args(dataset="imagenet16-120", data=str(tmp_path / "in16"), image_size=None)
    ds = data.get_dataset(a, True, None)
    assert len(ds) == 10 * 3 and ds.targets[:3] == [0, 119, 6] and data.num_classes(a.dataset) == 120
    img, y = ds[1]
    assert img.size == (16, 16) and img.getpixel((3, 5)) == (107, 7, 7) and y == 119
    assert len(data.get_dataset(a, False, None)) == 3
    assert data.pipeline(a) == "cifar" and data.image_size(a) == 16
    train = data.transforms(a, train=True).transforms
    assert [type(t).__name__ for t in train] == ["ToImage", "RandomHorizontalFlip", "RandomCrop", "ToDtype",
                                                 "Normalize"]
    assert train[2].size == (16, 16) and train[2].padding == [2, 2, 2, 2]
    assert train[-1].mean == pytest.approx([122.68 / 255, 116.66 / 255, 104.01 / 255])
    assert train[-1].std == pytest.approx([63.22 / 255, 61.26 / 255, 65.09 / 255])
    assert [type(t).__name__ for t in data.transforms(a, train=False).transforms] == ["ToImage", "ToDtype",
                                                                                      "Normalize"]
    weights, arch, n = data.search_loaders(a)
    assert n == 120 and next(iter(weights))[0].shape == (15, 3, 16, 16)
    with pytest.raises(SystemExit):
        data.check_image_size(_args(dataset="imagenet16-120", image_size=32))


@pytest.mark.parametrize("dataset", ["cifar10", "imagenet16-120", "imagenet"])
def test_missing_dataset_is_one_clear_line(tmp_path, dataset):
    proc = run(["-m", "common.train_eval", "--arch", "DARTS_V2", "--dataset", dataset, "--data", tmp_path / "none",
                "--save", tmp_path / "run", "--device", "cpu"], check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    err = proc.stderr.strip()
    assert err.count("\n") == 0 and str(tmp_path / "none") in err
