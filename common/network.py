"""Evaluation networks built from any genotype (the DARTS macro-architecture, Liu et al., 2019).

NetworkCIFAR / NetworkImageNet: stem, `layers` cells with reduction cells at 1/3
and 2/3 of the depth (or where a per-cell genotype puts them), the two-input cell
preprocessing, drop-path on every non-identity op output, an auxiliary head after
the cell at 2/3 depth; `features(x)` is the last cell's output (the feature map a
backbone gives). NetworkNB201: the NAS-Bench-201 skeleton. Every network
returns `(logits, logits_aux)`; `logits_aux` is None outside training.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from common.genotypes import GenotypeError
from common.operations import NB201_OPS, OPS, FactorizedReduce, Identity, ReLUConvBN, ResNetBasicBlock


def drop_path(x, drop_prob):
    """Zero whole samples with probability `drop_prob`, rescaling the kept ones (DARTS)."""
    keep = 1.0 - drop_prob
    mask = torch.empty(x.size(0), 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x / keep * mask


class EvalCell(nn.Module):
    """A cell of a genotype with affine BN; a node sums its (op, input) pairs."""

    def __init__(self, cell, C_prev_prev, C_prev, C, reduction, reduction_prev):
        super().__init__()
        self.preprocess0 = (FactorizedReduce(C_prev_prev, C) if reduction_prev
                            else ReLUConvBN(C_prev_prev, C, 1, 1, 0))
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)
        self.inputs = [[j for _, j in node] for node in cell.nodes]
        self.concat = list(cell.concat)
        self.multiplier = len(self.concat)
        self.ops = nn.ModuleList(nn.ModuleList(OPS[op](C, 2 if reduction and j < 2 else 1, True)
                                               for op, j in node) for node in cell.nodes)

    def forward(self, s0, s1, drop_prob=0.0):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for ops, inputs in zip(self.ops, self.inputs):
            s = 0
            for op, j in zip(ops, inputs):
                h = op(states[j])
                if self.training and drop_prob > 0 and not isinstance(op, Identity):
                    h = drop_path(h, drop_prob)
                s = s + h
            states.append(s)
        return torch.cat([states[c] for c in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """DARTS' auxiliary towers. CIFAR (8x8 input): avg-pool 5 stride 3; ImageNet (7x7 input):
    avg-pool 5 stride 2 and, as in the DARTS experiments, no BN after the 2x2 conv. Other sizes
    (tiny synthetic images) pool adaptively to 2x2 so the head still fits."""

    def __init__(self, C, num_classes, imagenet=False):
        super().__init__()
        self.size, stride = (7, 2) if imagenet else (8, 3)
        self.pool = nn.AvgPool2d(5, stride=stride, padding=0, count_include_pad=False)
        self.features = nn.Sequential(
            nn.Conv2d(C, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            *([] if imagenet else [nn.BatchNorm2d(768)]), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x):
        x = F.relu(x)
        x = self.pool(x) if x.shape[-1] == self.size else F.adaptive_avg_pool2d(x, 2)
        return self.classifier(self.features(x).flatten(1))


class _DartsNetwork(nn.Module):
    def _build_cells(self, layout, C, C_prev_prev, C_prev, reduction_prev, num_classes, auxiliary, imagenet):
        self.cells = nn.ModuleList()
        self.aux_index = 2 * len(layout) // 3
        C_curr, C_aux = C, None
        for i, (cell, reduction) in enumerate(layout):
            if cell.num_inputs != 2:
                raise GenotypeError("this network takes two-input (DARTS-style) cells")
            if reduction:
                C_curr *= 2
            c = EvalCell(cell, C_prev_prev, C_prev, C_curr, reduction, reduction_prev)
            self.cells.append(c)
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, c.multiplier * C_curr
            if i == self.aux_index:
                C_aux = C_prev
        self.auxiliary_head = AuxiliaryHead(C_aux, num_classes, imagenet) if auxiliary else None
        self.classifier = nn.Linear(C_prev, num_classes)
        self.drop_path_prob = 0.0

    def _cells_forward(self, x):
        s0, s1 = self._stems(x)
        logits_aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_index and self.auxiliary_head is not None and self.training:
                logits_aux = self.auxiliary_head(s1)
        return s1, logits_aux

    def features(self, x):
        """The last cell's output, before the global pooling: the feature map a dense-prediction
        head reads when the network serves as a backbone."""
        return self._cells_forward(x)[0]

    def forward(self, x):
        s, logits_aux = self._cells_forward(x)
        return self.classifier(F.adaptive_avg_pool2d(s, 1).flatten(1)), logits_aux


class NetworkCIFAR(_DartsNetwork):
    def __init__(self, C, num_classes, layout, auxiliary=False):
        super().__init__()
        C_stem = 3 * C
        self.stem = nn.Sequential(nn.Conv2d(3, C_stem, 3, padding=1, bias=False), nn.BatchNorm2d(C_stem))
        self._build_cells(layout, C, C_stem, C_stem, False, num_classes, auxiliary, imagenet=False)

    def _stems(self, x):
        s = self.stem(x)
        return s, s


def imagenet_stems(C):
    """DARTS' ImageNet stems, 224 -> 28 in three stride-2 convolutions: stem0 (224 -> 56, C channels)
    gives the first cell's s0, stem1 (56 -> 28) its s1. Super-nets searched on ImageNet use them too."""
    stem0 = nn.Sequential(
        nn.Conv2d(3, C // 2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C // 2), nn.ReLU(inplace=True),
        nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C))
    stem1 = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C))
    return stem0, stem1


class NetworkImageNet(_DartsNetwork):
    def __init__(self, C, num_classes, layout, auxiliary=False):
        super().__init__()
        self.stem0, self.stem1 = imagenet_stems(C)
        self._build_cells(layout, C, C, C, True, num_classes, auxiliary, imagenet=True)

    def _stems(self, x):
        s0 = self.stem0(x)
        return s0, self.stem1(s0)


class NB201Cell(nn.Module):
    def __init__(self, cell, C):
        super().__init__()
        self.inputs = [[j for _, j in node] for node in cell.nodes]
        self.ops = nn.ModuleList(nn.ModuleList(NB201_OPS[op](C, C, 1, True) for op, _ in node)
                                 for node in cell.nodes)

    def forward(self, x):
        states = [x]
        for ops, inputs in zip(self.ops, self.inputs):
            states.append(sum(op(states[j]) for op, j in zip(ops, inputs)))
        return states[-1]


class NetworkNB201(nn.Module):
    """NAS-Bench-201: stem, N cells, residual reduction, N cells, residual reduction, N cells."""

    def __init__(self, cell, C=16, N=5, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        layers, C_prev = [], C
        for stage, C_curr in enumerate((C, 2 * C, 4 * C)):
            if stage:
                layers.append(ResNetBasicBlock(C_prev, C_curr, 2))
            layers += [NB201Cell(cell, C_curr) for _ in range(N)]
            C_prev = C_curr
        self.cells = nn.Sequential(*layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_prev), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, x):
        x = self.lastact(self.cells(self.stem(x)))
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1)), None


def build_network(genotype, dataset, C, layers, num_classes, auxiliary=False, layout=None):
    """The evaluation network of `genotype` for `dataset`. `layout` ((cell, is_reduction) per
    layer) overrides the genotype's own placement of cells, e.g. to grow a per-cell genotype."""
    if genotype.kind == "nb201":
        return NetworkNB201(genotype.normal, C, N=5, num_classes=num_classes)
    layout = layout or genotype.layout(layers)
    net = NetworkImageNet if dataset == "imagenet" else NetworkCIFAR
    return net(C, num_classes, layout, auxiliary)
