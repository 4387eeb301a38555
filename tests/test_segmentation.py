"""EnTranNAS Table 5: DeepLabV3 on a searched backbone (entrannas/segmentation.py) and its data."""
import copy
import json
import sys
import types
from argparse import Namespace

import numpy as np
import pytest
import torch
from PIL import Image

from common import data
from common import genotypes as G
from common.genotypes import Cell, Genotype
from common.network import build_network
from common.utils import MetricsLog
from entrannas import segmentation as seg

# Every op of the evaluation networks, on the cell inputs (strided in the reduction cell) and on
# intermediate nodes (dilated past the output stride), several per node as DST genotypes have.
EVERY_OP = Genotype(
    Cell(((("sep_conv_3x3", 0), ("dil_conv_5x5", 1), ("avg_pool_3x3", 1)),
          (("max_pool_3x3", 2), ("conv_7x1_1x7", 0), ("skip_connect", 1)),
          (("sep_conv_5x5", 3), ("dil_conv_3x3", 2), ("conv_3x3", 0)),
          (("avg_pool_3x3", 4), ("conv_1x3_3x1", 1))), (2, 3, 4, 5)),
    Cell(((("avg_pool_3x3", 0), ("skip_connect", 1), ("conv_7x1_1x7", 0), ("none", 1)),
          (("max_pool_3x3", 1), ("sep_conv_3x3", 2), ("dil_conv_3x3", 0), ("conv_1x1", 1)),
          (("avg_pool_3x3", 3), ("sep_conv_5x5", 0), ("dil_conv_5x5", 1)),
          (("skip_connect", 4), ("max_pool_3x3", 2), ("conv_1x5_5x1", 0))), (2, 3, 4, 5)))


def test_miou_of_a_hand_computed_confusion_matrix():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 1]])  # the last two pixels are ignored, whatever predicted
    confusion = seg.confusion_matrix(pred, target, 4)  # class 3 is in neither labels nor predictions
    assert confusion.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    miou, per_class = seg.iou(confusion)
    # IoU = TP / (TP + FP + FN): 1 / 3, 2 / 3, 1 / 2; class 3 (0 / 0) stays out of the mean
    assert per_class[:3] == pytest.approx([100 / 3, 200 / 3, 50]) and np.isnan(per_class[3])
    assert miou == pytest.approx(50)


def _backbone(output_stride, net):
    net = copy.deepcopy(net)
    net.classifier = None
    assert seg.set_output_stride(net, output_stride) == (32, 32)  # the features' stride on ImageNet
    return net.eval()


@pytest.mark.parametrize("genotype", [EVERY_OP, "NASNet"])
def test_atrous_backbone_has_the_output_stride_and_computes_the_imagenet_features_densely(genotype):
    torch.manual_seed(0)
    # 4 cells: normal, reduction, reduction, normal (the last one reads a FactorizedReduce'd s0)
    net = build_network(G.load(genotype) if isinstance(genotype, str) else genotype, "imagenet", 4, 4, 10).eval()
    for m in net.modules():  # BN statistics that are not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        f32, f16, f8 = (_backbone(os, net).features(x) for os in (32, 16, 8))
        assert torch.equal(f32, net.features(x))  # output stride 32 is the ImageNet network unchanged
    assert f32.shape[-2:] == (2, 2) and f16.shape[-2:] == (4, 4) and f8.shape[-2:] == (8, 8)
    # the atrous algorithm computes the same features, only at every 1/16 (1/8) position
    assert torch.allclose(f16[..., ::2, ::2], f32, atol=1e-5)
    assert torch.allclose(f8[..., ::4, ::4], f32, atol=1e-5)


def test_resnet50_backbone_output_stride():
    args = Namespace(output_stride=16, backbone=None)
    torch.manual_seed(0)
    backbone, channels = seg.resnet_backbone(args)
    with torch.no_grad():
        assert backbone.eval()(torch.randn(1, 3, 64, 64))["out"].shape == (1, channels, 4, 4)


def _args(**kw):
    return Namespace(**{**dict(arch="DARTS_V2", backbone=None, layers=4, init_channels=4, output_stride=16,
                               backbone_model="genotype", atrous_rates=[6, 12, 18], bn_momentum=0.0003), **kw})


def test_imagenet_weights_load_into_the_backbone(tmp_path, capsys):
    torch.manual_seed(0)
    imagenet = build_network(G.load("DARTS_V2"), "imagenet", 4, 4, 10, auxiliary=True)
    torch.save({"model": imagenet.state_dict(), "epoch": 250}, tmp_path / "checkpoint.pt")
    args = _args(backbone=str(tmp_path / "checkpoint.pt"), output_stride=32)
    model = seg.build_model(args, 21).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.backbone(x)["out"], imagenet.eval().features(x))
        assert model(x)["out"].shape == (2, 21, 64, 64)  # logits upsampled to the input
        # 513 x 513 in the paper: sizes that are not multiples of the output stride are padded
        assert torch.equal(model(x[..., :50, :45])["out"], model(torch.nn.functional.pad(
            x[..., :50, :45], (0, 19, 0, 14)))["out"][..., :50, :45])
    assert all(m.momentum == 0.0003 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    with pytest.raises(SystemExit) as e:  # a checkpoint of another network: one line, no traceback
        seg.build_model(_args(backbone=str(tmp_path / "checkpoint.pt"), init_channels=8), 21)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: --backbone") and err.count("\n") == 1


def test_synthetic_segmentation_labels_are_the_shapes():
    x, y = data.make_synthetic_seg(40, 32)
    x2, y2 = data.make_synthetic_seg(700, 32)
    assert torch.equal(x, x2[:40]) and torch.equal(y, y2[:40])  # chunks: a prefix does not depend on n
    assert x.dtype == torch.uint8 and x.shape == (40, 3, 32, 32) and y.shape == (40, 32, 32)
    counts = torch.bincount(y2.flatten().long(), minlength=7)
    assert counts[6] == 0 and (counts[:6] > 0).all() and 0.6 < counts[0] / counts.sum() < 0.95
    fg = y2 > 0  # objects are drawn on a flat background (plus noise): labels follow the drawn pixels
    background = x2.float().mean((2, 3), keepdim=True)
    assert ((x2.float() - background).abs().mean(1)[fg].mean() > (x2.float() - background).abs().mean(1)[~fg].mean())


def test_training_transforms_keep_labels_on_their_pixels():
    labels = torch.arange(12 * 10, dtype=torch.uint8).view(10, 12) % 7
    image = (labels * 30).expand(3, 10, 12).contiguous()  # every pixel shows its label
    t = data.SegmentationTransforms(True, 16, ((0, 0, 0), (1, 1, 1)), scale=(1, 1))
    torch.manual_seed(0)
    for _ in range(4):
        x, y = t(image, labels)
        assert x.shape == (3, 16, 16) and y.shape == (16, 16) and y.dtype == torch.int64
        pad = y == data.SEG_IGNORE
        assert pad.sum() == 16 * 16 - 10 * 12 and (x[:, pad] == 0).all()  # crop > image: mean / ignore padding
        assert torch.allclose(x[0][~pad] * 255, y[~pad].float() * 30)  # crop and flip moved both alike
    y = data.SegmentationTransforms(True, 16, ((0, 0, 0), (1, 1, 1)), scale=(1.7, 1.7))(image, labels)[1]
    assert set(y.unique().tolist()) <= set(range(7)) | {data.SEG_IGNORE}  # labels resized by nearest


def test_evaluation_batches_are_padded_to_the_crop():
    t = data.SegmentationTransforms(False, 8, ((0, 0, 0), (1, 1, 1)))
    batch = [t(torch.full((3, h, w), 255, dtype=torch.uint8), torch.ones(h, w, dtype=torch.uint8))
             for h, w in ((5, 7), (9, 4))]
    x, y = data.collate_padded(batch, min_size=8)
    assert x.shape == (2, 3, 9, 8) and y.shape == (2, 9, 8)
    assert y[0, :5, :7].eq(1).all() and y[0, 5:].eq(255).all() and y[0, :, 7:].eq(255).all()
    assert x[0, :, :5, :7].eq(1).all() and x[0, :, 5:].eq(0).all()
    assert data.collate_padded(batch[:1], min_size=8)[1].shape == (1, 8, 8)


def _fake_voc(root, images, labels, split):
    """VOC 2012 (`images` id -> label value, split name -> ids) or SBD in torchvision's layouts."""
    for name, value in images.items():
        Image.fromarray(np.full((6, 8, 3), value * 20, np.uint8)).save(root[0] / f"{name}.jpg")
        labels(root[1], name, np.full((6, 8), value, np.uint8))
    for part, ids in split.items():
        (root[2] / f"{part}.txt").write_text("".join(i + "\n" for i in ids))


def test_voc_and_trainaug_through_torchvision(tmp_path, monkeypatch, capsys):
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    dirs = [voc / "JPEGImages", voc / "SegmentationClass", voc / "ImageSets" / "Segmentation"]
    sbd = [tmp_path / "SBD" / "img", tmp_path / "SBD" / "cls", tmp_path / "SBD"]
    for d in dirs + sbd:
        d.mkdir(parents=True, exist_ok=True)

    def png(folder, name, a):
        Image.fromarray(a, mode="L").convert("P").save(folder / f"{name}.png")

    def mat(folder, name, a):
        with open(folder / f"{name}.mat", "wb") as f:
            np.save(f, a + 10)  # SBD labels told apart from VOC's
    _fake_voc(dirs, {"a": 1, "b": 2, "c": 3}, png, {"train": ["a", "b"], "val": ["c"]})
    _fake_voc(sbd, {"b": 2, "c": 3, "e": 4, "f": 5}, mat, {"train": ["b", "e"], "val": ["c", "f"]})
    scipy = types.ModuleType("scipy")  # SBD's .mat files are read with scipy.io.loadmat
    scipy.io = types.ModuleType("scipy.io")
    scipy.io.loadmat = lambda path: {"GTcls": [{"Segmentation": [np.load(path)]}]}
    monkeypatch.setitem(sys.modules, "scipy", scipy)
    monkeypatch.setitem(sys.modules, "scipy.io", scipy.io)

    t = data.SegmentationTransforms(False, 8, data.MEAN_STD["imagenet"])
    val = data.voc_segmentation(tmp_path, "val", t)
    x, y = val[0]
    assert len(val) == 1 and x.shape == (3, 6, 8) and y.unique().tolist() == [3]
    aug = data.voc_segmentation(tmp_path, "trainaug", t, tmp_path / "SBD")
    # VOC train with its own labels (a, b), SBD's images outside VOC train and val (e, f)
    assert sorted(y.unique().item() for _, y in aug) == [1, 2, 14, 15]
    with pytest.raises(SystemExit):
        data.voc_segmentation(tmp_path / "nowhere", "train", t)
    assert "no Pascal VOC 2012 in" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        data.voc_segmentation(tmp_path, "trainaug", t, tmp_path / "no-sbd")
    assert "--train_set train" in capsys.readouterr().err


TINY = ["--arch", "DARTS_V2", "--dataset", "synthetic_seg", "--image_size", "32", "--subset", "8",
        "--batch_size", "4", "--iterations", "11", "--layers", "4", "--init_channels", "4", "--bn_momentum", "0.1",
        "--workers", "0", "--device", "cpu"]


def _kill_after_checkpoints(monkeypatch, n):
    """Stop the run as a kill would, right before its checkpoint number n + 1 is written."""
    real, calls = seg.save_checkpoint, []

    def save_checkpoint(path, state):
        calls.append(path)
        if len(calls) > n:
            raise KeyboardInterrupt
        real(path, state)
    monkeypatch.setattr(seg, "save_checkpoint", save_checkpoint)


def test_end_to_end_resume_is_exact_and_finished_runs_are_kept(tmp_path, monkeypatch, capsys):
    full = tmp_path / "full"
    summary = seg.main(TINY + ["--save", str(full)])
    m = MetricsLog.read(full / "metrics.jsonl")
    assert [r["iteration"] for r in m] == [2, 4, 6, 8, 10, 11]  # 2 batches of 4 per epoch, 11 iterations
    for before, r in zip([{"iteration": 0}] + m, m):  # poly: lr0 (1 - iter / max_iter) ^ 0.9, every iteration
        assert r["lr"] == pytest.approx(0.007 * (1 - before["iteration"] / 11) ** 0.9)
    assert json.loads((full / "summary.json").read_text()) == summary
    assert 0 <= summary["miou"] <= 100 and len(summary["iou_per_class"]) == 6 and summary["iterations"] == 11

    killed = tmp_path / "killed"
    with monkeypatch.context() as mp:
        _kill_after_checkpoints(mp, 2)
        with pytest.raises(KeyboardInterrupt):
            seg.main(TINY + ["--save", str(killed)])
    assert len(MetricsLog.read(killed / "metrics.jsonl")) == 3 and not (killed / "summary.json").exists()
    with pytest.raises(SystemExit):  # an unfinished run is continued with --resume, not started again
        seg.main(TINY + ["--save", str(killed)])
    assert "add --resume to continue it" in capsys.readouterr().err
    resumed = seg.main(TINY + ["--save", str(killed), "--resume"])
    assert {**resumed, "wall_time_s": 0} == {**summary, "wall_time_s": 0}
    a, b = (torch.load(p / "checkpoint.pt", weights_only=True)["model"] for p in (full, killed))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert MetricsLog.read(killed / "metrics.jsonl") == m

    before = {p.name: p.read_bytes() for p in full.iterdir()}
    with pytest.raises(SystemExit):  # a finished run is not replaced without --overwrite
        seg.main(TINY + ["--save", str(full)])
    assert "finished run" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # nor resumed: there is nothing left to do
        seg.main(TINY + ["--save", str(full), "--resume"])
    assert "nothing to resume" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in full.iterdir()} == before
