"""EnTranNAS Table 5: semantic segmentation on Pascal VOC 2012 with a searched backbone.

The backbone is the ImageNet evaluation network of a genotype (`common.network`: DARTS' ImageNet
stems and 14 cells from 48 channels, the network of Sec. 4.3) with the weights of an ImageNet run of
`entrannas/train.py`, or torchvision's ResNet-50 (Table 5's first column). It is brought to output
stride 16 by the atrous algorithm of DeepLabV3 [10] (Sec. 3.1): the layers that would reduce the
resolution below 1/16 keep stride 1, and every layer after them is dilated by the stride it lost,
so the backbone computes its ImageNet features densely. On it sits torchvision's DeepLabV3 head
(ASPP with image pooling), trained with the protocol of [10] (Sec. 4): trainaug, 30K iterations of
batch 16, 513 x 513 crops, random scale 0.5-2 and flip, poly learning rate from 0.007, BN decay
0.9997; the score is the mIoU on VOC 2012 val at single scale, inputs padded to 513 x 513.

Usage:
  python entrannas/segmentation.py --arch RUN/genotype.json --backbone IMAGENET_RUN/checkpoint.pt --data ~/voc
  python entrannas/segmentation.py --backbone_model resnet50 --backbone resnet50-0676ba61.pth --data ~/voc
  python entrannas/segmentation.py --arch DARTS_V2 --dataset synthetic_seg --iterations 20 --layers 5 \\
      --init_channels 8 --batch_size 8 --device cpu --save RUN          # seconds on a CPU
"""
import argparse
import functools
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torch.utils.data import DataLoader, Subset
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.models.segmentation import DeepLabV3
from torchvision.models.segmentation.deeplabv3 import DeepLabHead

if __package__ in (None, ""):  # run as `python entrannas/segmentation.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import genotypes  # noqa: E402
from common.data import (MEAN_STD, SEG_IGNORE, SYNTHETIC_SEG_CLASSES, VOC_CLASSES,  # noqa: E402
                         SegmentationTransforms, SyntheticSegmentation, collate_padded, voc_segmentation)
from common.network import build_network  # noqa: E402
from common.operations import FactorizedReduce, Noise, Zero  # noqa: E402
from common.utils import (AverageMeter, MetricsLog, Progress, add_run_args, amp_autocast, check_run, count_params,  # noqa: E402
                          die, gather_rng_states, get_device, load_checkpoint, log, resume_state,
                          save_checkpoint, set_rng_state, set_seed, setup_run)



def get_parser():
    p = argparse.ArgumentParser(description="EnTranNAS Table 5: DeepLabV3 on Pascal VOC 2012 with a searched backbone")
    g = p.add_argument_group("backbone")
    g.add_argument("--backbone_model", default="genotype", choices=["genotype", "resnet50"],
                   help="the ImageNet evaluation network of --arch, or torchvision's ResNet-50")
    g.add_argument("--arch", help="genotype of the backbone: published name, genotype.json or DARTS text")
    g.add_argument("--backbone", help="ImageNet weights: checkpoint.pt of an ImageNet train.py run (or a state "
                                      "dict; for resnet50 torchvision's .pth); without it the backbone starts random")
    g.add_argument("--layers", type=int, default=14, help="cells of the ImageNet network (Sec. 4.3)")
    g.add_argument("--init_channels", type=int, default=48, help="initial channels of the ImageNet network (Sec. 4.3)")
    g.add_argument("--output_stride", type=int, default=16, choices=[8, 16, 32],
                   help="input size / feature size; layers past it run dilated (Table 5: 16)")
    g = p.add_argument_group("DeepLabV3 head and training ([10], Sec. 3.3 and 4)")
    g.add_argument("--atrous_rates", type=int, nargs=3, help="ASPP rates (default 6 12 18 at output stride 16, "
                                                             "doubled at 8, halved at 32)")
    g.add_argument("--iterations", type=int, default=30000)
    g.add_argument("--batch_size", type=int, default=16)
    g.add_argument("--learning_rate", type=float, default=0.007, help="initial learning rate of the poly schedule")
    g.add_argument("--lr_power", type=float, default=0.9, help="power of the poly schedule")
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--weight_decay", type=float, default=1e-4)
    g.add_argument("--bn_momentum", type=float, default=0.0003, help="BatchNorm momentum (1 - [10]'s decay 0.9997)")
    g.add_argument("--crop_size", type=int, help="training crop and evaluation input (513; synthetic: --image_size)")
    g.add_argument("--scale_range", type=float, nargs=2, default=(0.5, 2.0), metavar=("MIN", "MAX"),
                   help="random scale of the training images")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="voc2012", choices=["voc2012", "synthetic_seg"])
    g.add_argument("--data", default="~/data", help="folder holding VOCdevkit/VOC2012")
    g.add_argument("--train_set", default="trainaug", choices=["trainaug", "train"],
                   help="trainaug: VOC train + SBD (10,582 images, [10]); train: VOC train alone (1,464)")
    g.add_argument("--sbd", help="SBD folder for trainaug (img/, cls/, train.txt, val.txt; default DATA/SBD)")
    g.add_argument("--download", action="store_true", help="download VOC 2012 (and SBD for trainaug) if missing")
    g.add_argument("--subset", type=int, help="use only the first N training images")
    g.add_argument("--image_size", type=int, default=64, help="size of the synthetic_seg images")
    g.add_argument("--workers", type=int, default=4, help="data loading processes")
    add_run_args(p)
    return p


def parse_args(argv=None):
    args = get_parser().parse_args(argv)
    if args.backbone_model == "genotype" and not args.arch:
        die("--arch is needed: the genotype of the backbone (a published name, genotype.json or DARTS text)")
    if args.backbone_model == "resnet50" and args.arch:
        die("--arch describes a genotype backbone; --backbone_model resnet50 takes none")
    if args.iterations < 1:
        die(f"--iterations must be at least 1, not {args.iterations}")
    if args.batch_size < 2:  # BatchNorm of ASPP's image pooling sees one value per channel and image
        die(f"--batch_size must be at least 2 (ASPP's image-pooling branch normalises over the batch), "
            f"not {args.batch_size}")
    args.crop_size = args.crop_size or (513 if args.dataset == "voc2012" else args.image_size)
    args.atrous_rates = args.atrous_rates or [r * 16 // args.output_stride for r in (6, 12, 18)]
    return args


# ---------------------------------------------------------------- output stride ([10], Sec. 3.1)

def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


class AtrousFactorizedReduce(nn.Module):
    """A FactorizedReduce computed densely: both 1x1 convolutions at stride 1, the second on the
    input shifted by `rate` pixels; its stride-2 outputs are the pixels at multiples of 2 x `rate`."""

    def __init__(self, reduce, rate):
        super().__init__()
        self.relu, self.conv_1, self.conv_2, self.bn = reduce.relu, reduce.conv_1, reduce.conv_2, reduce.bn
        self.conv_1.stride = self.conv_2.stride = (1, 1)
        self.rate = rate

    def forward(self, x):
        x = self.relu(x)
        rh, rw = self.rate
        shifted = F.pad(x[:, :, rh:, rw:], (0, rw, 0, rh))
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


class AtrousPool(nn.Module):
    """A 3x3-style pooling at stride 1 over a dilated window (torch's average pooling has no
    dilation, and its max pooling pads at most half the kernel). Max: over the window's pixels
    inside the image; average: their sum over their number (`count_include_pad=False`, as in the
    DARTS ops) or over the window size."""

    def __init__(self, pool, dilation):
        super().__init__()
        self.kernel_size, self.dilation = _pair(pool.kernel_size), dilation
        self.padding = tuple(r * p for r, p in zip(dilation, _pair(pool.padding)))
        self.mode = "max" if isinstance(pool, nn.MaxPool2d) else "avg"
        self.count_include_pad = self.mode == "avg" and pool.count_include_pad

    def forward(self, x):
        (ph, pw), (kh, kw) = self.padding, self.kernel_size
        if self.mode == "max":
            return F.max_pool2d(F.pad(x, (pw, pw, ph, ph), value=-math.inf), self.kernel_size, 1, 0, self.dilation)
        window = x.new_ones(x.shape[1], 1, kh, kw)
        conv = functools.partial(F.conv2d, padding=self.padding, dilation=self.dilation)
        total = conv(x, window, groups=x.shape[1])
        if self.count_include_pad:
            return total / (kh * kw)
        return total / conv(x.new_ones(1, 1, *x.shape[-2:]), window[:1])


def atrous(m, stride, output_stride):
    """The atrous algorithm ([10], Sec. 3.1) on one module `m` whose input has `stride` (h, w) in the
    original network. A layer whose output stride would exceed `output_stride` runs at stride 1, and
    a layer whose input is already past it (stride = rate x `output_stride`) is dilated by the rate,
    padding included: the module then computes its original outputs densely (they are the pixels at
    multiples of the rate) with the same weights. Returns (module, its output's original stride)."""
    if isinstance(m, nn.Sequential):
        for i, child in enumerate(m):
            m[i], stride = atrous(child, stride, output_stride)
        return m, stride
    if isinstance(m, (nn.ReLU, nn.BatchNorm2d, nn.Identity)):
        return m, stride
    if isinstance(m, (FactorizedReduce, Zero, Noise)):
        step = 2 if isinstance(m, FactorizedReduce) else m.stride
        out = tuple(s * step for s in stride)
        if max(out) <= output_stride:
            return m, out
        rate = tuple(max(s // output_stride, 1) for s in stride)
        if isinstance(m, FactorizedReduce):
            return AtrousFactorizedReduce(m, rate), out
        m.stride = 1  # Zero, Noise: outputs of the input's shape
        return m, out
    if isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        step = _pair(m.stride)
        out = tuple(s * t for s, t in zip(stride, step))
        past = [o > output_stride for o in out]
        if not any(past):
            return m, out
        rate = tuple(max(s // output_stride, 1) if p else 1 for s, p in zip(stride, past))
        new_stride = tuple(1 if p else t for t, p in zip(step, past))
        if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) and rate != (1, 1):
            return AtrousPool(m, rate), out
        m.stride = new_stride
        if not isinstance(m, nn.Conv2d):
            return m, out
        m.dilation = tuple(r * d for r, d in zip(rate, _pair(m.dilation)))
        m.padding = tuple(r * p for r, p in zip(rate, _pair(m.padding)))
        return m, out
    raise TypeError(f"no atrous form for {type(m).__name__}")


def atrous_cell(cell, s0, s1, output_stride):
    """`atrous` on every module of an evaluation cell whose inputs have strides s0 and s1; returns
    the original stride of the cell's output."""
    cell.preprocess0, s0 = atrous(cell.preprocess0, s0, output_stride)
    cell.preprocess1, s1 = atrous(cell.preprocess1, s1, output_stride)
    strides = [s0, s1]
    for ops, inputs in zip(cell.ops, cell.inputs):
        out = set()
        for k, j in enumerate(inputs):
            ops[k], s = atrous(ops[k], strides[j], output_stride)
            out.add(s)
        (s,) = out  # the ops of a node meet on one grid
        strides.append(s)
    return strides[cell.concat[0]]


def set_output_stride(net, output_stride):
    """Make an ImageNet evaluation network (`common.network.NetworkImageNet`) compute its features
    at 1/`output_stride` of the input (stems, then cell by cell); returns their original stride."""
    net.stem0, s0 = atrous(net.stem0, (1, 1), output_stride)
    net.stem1, s1 = atrous(net.stem1, s0, output_stride)
    for cell in net.cells:
        s0, s1 = s1, atrous_cell(cell, s0, s1, output_stride)
    return s1


# ---------------------------------------------------------------- backbones and model

class CellFeatures(nn.Module):
    """A genotype's ImageNet network as a DeepLabV3 backbone: {"out": its last feature map}."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return {"out": self.net.features(x)}


def load_backbone_weights(net, path, drop=()):
    """Load the ImageNet weights of `path` (a train.py checkpoint or a state dict) into `net`, less
    the keys starting with `drop` (the classification layers), or stop with one clear line."""
    if not Path(path).expanduser().is_file():
        die(f"--backbone {path}: no such file (the checkpoint.pt of an ImageNet run, or a state dict)")
    try:
        state = load_checkpoint(Path(path).expanduser())
    except Exception as e:  # a file torch cannot read: one line, not a traceback
        die(f"--backbone {path}: not a PyTorch checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
    state = state.get("model", state) if isinstance(state, dict) else None
    if not isinstance(state, dict):
        die(f"--backbone {path}: holds no state dict")
    try:
        net.load_state_dict({k: v for k, v in state.items() if not k.startswith(drop)})
    except RuntimeError as e:
        die(f"--backbone {path} does not fit this backbone ({' '.join(str(e).split())[:300]}): check "
            "--arch, --layers and --init_channels against the ImageNet run")


def genotype_backbone(args):
    """(backbone, feature channels): the ImageNet evaluation network of `args.arch`, its classifier
    and auxiliary head removed, with `args.backbone`'s weights, at `args.output_stride`."""
    try:
        genotype = genotypes.load(args.arch)
        if genotype.kind == "nb201":
            raise genotypes.GenotypeError("a NAS-Bench-201 cell has no ImageNet network; pass a DARTS-style genotype")
        net = build_network(genotype, "imagenet", args.init_channels, args.layers, 1000, auxiliary=False)
    except genotypes.GenotypeError as e:
        die(f"--arch: {e}")
    channels = net.classifier.in_features
    net.classifier = None  # the ImageNet classifier is not part of the backbone (nor the auxiliary head)
    if args.backbone:
        load_backbone_weights(net, args.backbone, drop=("classifier.", "auxiliary_head."))
    set_output_stride(net, args.output_stride)
    return CellFeatures(net), channels


def resnet_backbone(args):
    """(backbone, 2048): torchvision's ResNet-50 up to its last block, the stride of the blocks
    past `args.output_stride` replaced by dilation (torchvision's own atrous option)."""
    dilate = {32: [False, False, False], 16: [False, False, True], 8: [False, True, True]}[args.output_stride]
    net = torchvision.models.resnet50(replace_stride_with_dilation=dilate)
    if args.backbone:
        load_backbone_weights(net, args.backbone)
    return create_feature_extractor(net, {"layer4": "out"}), 2048


class PaddedDeepLabV3(DeepLabV3):
    """torchvision's DeepLabV3 for a backbone that takes only sizes divisible by `multiple` (a
    strided FactorizedReduce halves even sizes only, so a cell network at output stride 16 needs
    multiples of 16; 513 becomes 528): the input is padded at the bottom and right with zeros (the
    mean pixel, once normalised), and the logits are cropped back to the input's size."""

    def __init__(self, backbone, classifier, multiple=1):
        super().__init__(backbone, classifier)
        self.multiple = multiple

    def forward(self, x):
        h, w = x.shape[-2:]
        out = super().forward(F.pad(x, (0, -w % self.multiple, 0, -h % self.multiple)))
        return {"out": out["out"][..., :h, :w]}


def build_model(args, num_classes):
    """DeepLabV3: the backbone, then torchvision's head (ASPP with `args.atrous_rates` and image
    pooling, 256 channels) whose logits are upsampled bilinearly to the (padded) input size."""
    if args.backbone_model == "resnet50":  # convolutions with padding: any size
        (backbone, channels), multiple = resnet_backbone(args), 1
    else:
        (backbone, channels), multiple = genotype_backbone(args), args.output_stride
    model = PaddedDeepLabV3(backbone, DeepLabHead(channels, num_classes, args.atrous_rates), multiple)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = args.bn_momentum
    return model


# ---------------------------------------------------------------- mIoU

def confusion_matrix(pred, target, num_classes, ignore_index=SEG_IGNORE):
    """[K, K] pixel counts, row = true class, column = predicted class; pixels labelled
    `ignore_index` are left out."""
    keep = target != ignore_index
    index = target[keep] * num_classes + pred[keep]
    return torch.bincount(index, minlength=num_classes * num_classes).view(num_classes, num_classes)


def iou(confusion):
    """(mIoU, per-class IoU), in percent. IoU = TP / (TP + FP + FN) per class; the mean is over the
    classes present in the labels or the predictions (an absent class, 0 / 0, is NaN and left out)."""
    c = confusion.double()
    tp = c.diag()
    per_class = tp / (c.sum(0) + c.sum(1) - tp) * 100
    return per_class.nanmean().item(), per_class.tolist()


@torch.no_grad()
def evaluate(model, loader, num_classes, device, amp=False):
    """The confusion matrix of `model` over `loader` (single scale, full padded images)."""
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with amp_autocast(device, amp):
            logits = model(x)["out"]
        confusion += confusion_matrix(logits.argmax(1), y, num_classes)
    return confusion.cpu()


# ---------------------------------------------------------------- run

def datasets(args):
    """(training set, validation set, number of classes) of `args.dataset`."""
    if args.dataset == "synthetic_seg":
        mean_std, make = MEAN_STD["synthetic"], functools.partial(SyntheticSegmentation, image_size=args.image_size)
        train, val = (make(t, transforms=SegmentationTransforms(t, args.crop_size, mean_std, args.scale_range),
                           limit=args.subset if t else None) for t in (True, False))
        return train, val, SYNTHETIC_SEG_CLASSES
    root = Path(args.data).expanduser()
    sbd = Path(args.sbd).expanduser() if args.sbd else root / "SBD"
    mean_std = MEAN_STD["imagenet"]  # the backbones' ImageNet normalisation
    train = voc_segmentation(root, args.train_set, SegmentationTransforms(True, args.crop_size, mean_std,
                                                                          args.scale_range), sbd, args.download)
    val = voc_segmentation(root, "val", SegmentationTransforms(False, args.crop_size, mean_std))
    return (Subset(train, range(min(args.subset, len(train)))) if args.subset else train), val, VOC_CLASSES


def main(argv=None):
    args = parse_args(argv)
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        die("segmentation.py runs in one process (DeepLabV3's batch of 16 fits one GPU): start it without torchrun")
    check_run(args, "seg")  # every input is checked before the run folder is touched
    device = get_device(args.device)
    set_seed(args.seed, args.deterministic)
    train_set, val_set, num_classes = datasets(args)
    if len(train_set) < args.batch_size:
        die(f"the training set has {len(train_set)} images, fewer than one batch of {args.batch_size}")
    model = build_model(args, num_classes).to(device)
    save = setup_run(args, "seg")
    params, backbone_params = count_params(model), count_params(model.backbone)
    log.info("params %.3fM (backbone %.3fM), train %d images, val %d", params, backbone_params, len(train_set),
             len(val_set))

    # [10] Sec. 4: batch 16 of 513 x 513 crops from trainaug, full-image evaluation padded to 513
    generator = torch.Generator()
    pin = device.type == "cuda"
    train_queue = DataLoader(train_set, args.batch_size, shuffle=True, generator=generator, drop_last=True,
                             num_workers=args.workers, pin_memory=pin)
    val_queue = DataLoader(val_set, args.batch_size, num_workers=args.workers, pin_memory=pin,
                           collate_fn=functools.partial(collate_padded, min_size=args.crop_size))
    criterion = nn.CrossEntropyLoss(ignore_index=SEG_IGNORE)
    optimizer = torch.optim.SGD(model.parameters(), args.learning_rate, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    # [10] Sec. 4: "poly", lr x (1 - iter / max_iter) ^ power, stepped every iteration
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=args.iterations, power=args.lr_power)
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp and device.type == "cuda")
    parts = dict(model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler)  # what a checkpoint holds
    epochs = math.ceil(args.iterations / len(train_queue))
    start_epoch, iteration, wall = 0, 0, 0.0
    ckpt = resume_state(args, device)
    if ckpt:
        for name, part in parts.items():
            part.load_state_dict(ckpt[name])
        start_epoch, iteration, wall = ckpt["epoch"], ckpt["iteration"], ckpt["wall_time_s"]
        set_rng_state(ckpt["rng"][0])
    metrics = MetricsLog(save / "metrics.jsonl", start_epoch)
    progress = Progress(epochs, start_epoch)
    t0 = time.time() - wall
    for epoch in range(start_epoch, epochs):
        generator.manual_seed(args.seed * 100_003 + epoch)  # the epoch's order depends on (seed, epoch) alone
        model.train()
        lr, loss_m = optimizer.param_groups[0]["lr"], AverageMeter()
        for x, y in train_queue:
            if iteration == args.iterations:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with amp_autocast(device, args.amp):
                loss = criterion(model(x)["out"], y)  # [10] Sec. 4: logits upsampled to the labels' size
            if not math.isfinite(loss.item()):
                die(f"the loss is {loss.item()} at iteration {iteration}: the run stops here (its last checkpoint "
                    "is kept); try a lower --learning_rate, or no --amp")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            iteration += 1
            loss_m.update(loss.item(), len(y))
        metrics.write(dict(epoch=epoch, iteration=iteration, lr=lr, train_loss=loss_m.avg))
        save_checkpoint(save / "checkpoint.pt", {name: part.state_dict() for name, part in parts.items()} | dict(
            epoch=epoch + 1, iteration=iteration, wall_time_s=time.time() - t0, rng=gather_rng_states()))
        log.info("%s iteration %d lr %.2e train loss %.4f", progress.line(epoch), iteration, lr, loss_m.avg)

    confusion = evaluate(model, val_queue, num_classes, device, args.amp)
    miou, per_class = iou(confusion)
    summary = dict(backbone_model=args.backbone_model, arch=args.arch, backbone=args.backbone, dataset=args.dataset,
                   train_set=args.train_set if args.dataset == "voc2012" else None, output_stride=args.output_stride,
                   iterations=iteration, batch_size=args.batch_size, crop_size=args.crop_size, miou=miou,
                   iou_per_class=per_class, pixel_accuracy=(confusion.diag().sum() / confusion.sum()).item() * 100,
                   params_M=params, backbone_params_M=backbone_params, wall_time_s=time.time() - t0,
                   device=str(device))
    (save / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    log.info("val mIoU %.2f%% (single scale, %d classes)", miou, num_classes)
    return summary


if __name__ == "__main__":
    main()
