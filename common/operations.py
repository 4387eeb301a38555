"""Candidate operations and search spaces.

The DARTS ops are built exactly as in the DARTS code (Liu et al., 2019); the
extended set is the one of EnTranNAS (Sec. 4.2); `noise` is the op of the
RobustDARTS space S4 (Zela et al., 2020); the NAS-Bench-201 ops follow Dong &
Yang (2020). Every op maps `C` channels to `C` channels; stride 2 halves the
resolution. `affine=False` is the search-time BatchNorm, `True` evaluation.
"""
from dataclasses import dataclass

import torch
import torch.nn as nn


class ReLUConvBN(nn.Sequential):
    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True, dilation=1):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel_size, stride=stride, padding=padding,
                      dilation=dilation, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class DilConv(nn.Sequential):
    """ReLU - depthwise (dilated) conv - pointwise conv - BN."""

    def __init__(self, C_in, C_out, kernel_size, stride, padding, dilation, affine=True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, kernel_size, stride=stride, padding=padding,
                      dilation=dilation, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """Two stacked DilConv blocks of dilation 1; the first carries the stride."""

    def __init__(self, C_in, C_out, kernel_size, stride, padding, affine=True):
        super().__init__(
            DilConv(C_in, C_in, kernel_size, stride, padding, 1, affine),
            DilConv(C_in, C_out, kernel_size, 1, padding, 1, affine),
        )


class FactorizedConv(nn.Sequential):
    """ReLU - (1 x k) conv - (k x 1) conv - BN (DARTS' `conv_7x1_1x7` is this with k = 7)."""

    def __init__(self, C, k, stride, affine=True):
        p = k // 2
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C, C, (1, k), stride=(1, stride), padding=(0, p), bias=False),
            nn.Conv2d(C, C, (k, 1), stride=(stride, 1), padding=(p, 0), bias=False),
            nn.BatchNorm2d(C, affine=affine),
        )


class FactorizedReduce(nn.Module):
    """Halves the resolution with two 1x1 stride-2 convs, the second shifted by one pixel."""

    def __init__(self, C_in, C_out, affine=True):
        super().__init__()
        assert C_out % 2 == 0, "FactorizedReduce needs an even number of output channels"
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x):
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


class Identity(nn.Identity):
    """The parameter-free skip; drop-path is never applied to it (DARTS convention)."""


class Zero(nn.Module):
    """The `none` op: zeros of the output shape (strided at stride 2)."""

    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, ::self.stride, ::self.stride].mul(0.0)


class Noise(nn.Module):
    """RobustDARTS S4 `noise`: N(0, 1) samples of the output shape, whatever the input values."""

    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        x = x[:, :, ::self.stride, ::self.stride]
        return torch.randn_like(x)


class Pool(nn.Module):
    """NAS-Bench-201 pooling: a 1x1 ReLU-conv-BN first when the channel counts differ."""

    def __init__(self, C_in, C_out, stride, mode, affine=True):
        super().__init__()
        self.preprocess = ReLUConvBN(C_in, C_out, 1, 1, 0, affine) if C_in != C_out else nn.Identity()
        if mode == "avg":
            self.pool = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
        else:
            self.pool = nn.MaxPool2d(3, stride=stride, padding=1)

    def forward(self, x):
        return self.pool(self.preprocess(x))


class ResNetBasicBlock(nn.Module):
    """The residual block between the NAS-Bench-201 stages (3x3 ReLU-conv-BN twice + shortcut)."""

    def __init__(self, C_in, C_out, stride, affine=True):
        super().__init__()
        self.conv_a = ReLUConvBN(C_in, C_out, 3, stride, 1, affine)
        self.conv_b = ReLUConvBN(C_out, C_out, 3, 1, 1, affine)
        if stride == 2:
            self.downsample = nn.Sequential(nn.AvgPool2d(2, stride=2),
                                            nn.Conv2d(C_in, C_out, 1, bias=False))
        elif C_in != C_out:
            self.downsample = ReLUConvBN(C_in, C_out, 1, 1, 0, affine)
        else:
            self.downsample = nn.Identity()

    def forward(self, x):
        return self.downsample(x) + self.conv_b(self.conv_a(x))


def _skip(C, stride, affine):
    return Identity() if stride == 1 else FactorizedReduce(C, C, affine)


# name -> constructor(C, stride, affine). DARTS ops first, then EnTranNAS' extended ops.
OPS = {
    "none": lambda C, stride, affine: Zero(stride),
    "noise": lambda C, stride, affine: Noise(stride),
    "skip_connect": _skip,
    "avg_pool_3x3": lambda C, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1,
                                                           count_include_pad=False),
    "max_pool_3x3": lambda C, stride, affine: nn.MaxPool2d(3, stride=stride, padding=1),
    "sep_conv_3x3": lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine),
    "sep_conv_5x5": lambda C, stride, affine: SepConv(C, C, 5, stride, 2, affine),
    "sep_conv_7x7": lambda C, stride, affine: SepConv(C, C, 7, stride, 3, affine),
    "dil_conv_3x3": lambda C, stride, affine: DilConv(C, C, 3, stride, 2, 2, affine),
    "dil_conv_5x5": lambda C, stride, affine: DilConv(C, C, 5, stride, 4, 2, affine),
    "conv_7x1_1x7": lambda C, stride, affine: FactorizedConv(C, 7, stride, affine),
    "conv_1x1": lambda C, stride, affine: ReLUConvBN(C, C, 1, stride, 0, affine),
    "conv_3x3": lambda C, stride, affine: ReLUConvBN(C, C, 3, stride, 1, affine),
    "conv_1x3_3x1": lambda C, stride, affine: FactorizedConv(C, 3, stride, affine),
    "conv_1x5_5x1": lambda C, stride, affine: FactorizedConv(C, 5, stride, affine),
    "conv_1x7_7x1": lambda C, stride, affine: FactorizedConv(C, 7, stride, affine),
}

# NAS-Bench-201 ops (Dong & Yang, 2020): name -> constructor(C_in, C_out, stride, affine).
NB201_OPS = {
    "none": lambda C_in, C_out, stride, affine: Zero(stride),
    "skip_connect": lambda C_in, C_out, stride, affine: (
        Identity() if stride == 1 and C_in == C_out else FactorizedReduce(C_in, C_out, affine)),
    "nor_conv_1x1": lambda C_in, C_out, stride, affine: ReLUConvBN(C_in, C_out, 1, stride, 0, affine),
    "nor_conv_3x3": lambda C_in, C_out, stride, affine: ReLUConvBN(C_in, C_out, 3, stride, 1, affine),
    "avg_pool_3x3": lambda C_in, C_out, stride, affine: Pool(C_in, C_out, stride, "avg", affine),
}

DARTS_OPS = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
             "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
EXTENDED_OPS = ("conv_1x1", "conv_3x3", "conv_1x3_3x1", "conv_1x5_5x1", "conv_1x7_7x1")
NB201_SPACE_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

# RobustDARTS S1: a different pair of ops on each of the 14 edges (Zela et al., 2020, App. A;
# the table of their `spaces.py`), separately for the normal and the reduction cell.
_S1_NORMAL = (
    ("skip_connect", "dil_conv_3x3"), ("skip_connect", "dil_conv_5x5"),
    ("skip_connect", "dil_conv_5x5"), ("skip_connect", "sep_conv_3x3"),
    ("skip_connect", "dil_conv_3x3"), ("max_pool_3x3", "skip_connect"),
    ("skip_connect", "sep_conv_3x3"), ("skip_connect", "sep_conv_3x3"),
    ("skip_connect", "dil_conv_3x3"), ("skip_connect", "sep_conv_3x3"),
    ("max_pool_3x3", "skip_connect"), ("skip_connect", "dil_conv_3x3"),
    ("dil_conv_3x3", "dil_conv_5x5"), ("dil_conv_3x3", "dil_conv_5x5"),
)
_S1_REDUCE = (
    ("max_pool_3x3", "avg_pool_3x3"), ("max_pool_3x3", "dil_conv_3x3"),
    ("max_pool_3x3", "avg_pool_3x3"), ("max_pool_3x3", "avg_pool_3x3"),
    ("skip_connect", "dil_conv_5x5"), ("max_pool_3x3", "avg_pool_3x3"),
    ("max_pool_3x3", "sep_conv_3x3"), ("skip_connect", "dil_conv_3x3"),
    ("skip_connect", "dil_conv_5x5"), ("max_pool_3x3", "avg_pool_3x3"),
    ("max_pool_3x3", "avg_pool_3x3"), ("skip_connect", "dil_conv_5x5"),
    ("skip_connect", "dil_conv_5x5"), ("skip_connect", "dil_conv_5x5"),
)


@dataclass(frozen=True)
class SearchSpace:
    """Candidate ops by name, either one tuple for every edge or one tuple per edge.

    `normal` and `reduce` are tuples of op-name tuples: of length 1 (same ops on
    every edge) or one entry per edge (RobustDARTS S1).
    """
    name: str
    normal: tuple
    reduce: tuple
    nb201: bool = False

    def ops(self, reduction: bool, edge: int) -> tuple:
        table = self.reduce if reduction else self.normal
        return table[edge] if len(table) > 1 else table[0]

    def all_ops(self) -> tuple:
        """Every op name the space can use, in first-seen order."""
        seen = dict.fromkeys(op for table in (self.normal, self.reduce) for ops in table for op in ops)
        return tuple(seen)

    def build(self, name: str, C: int, stride: int, affine: bool) -> nn.Module:
        if self.nb201:
            return NB201_OPS[name](C, C, stride, affine)
        return OPS[name](C, stride, affine)


def _uniform(name, ops, nb201=False):
    return SearchSpace(name, (tuple(ops),), (tuple(ops),), nb201)


SPACES = {
    "darts": _uniform("darts", DARTS_OPS),
    "darts_no_none": _uniform("darts_no_none", DARTS_OPS[1:]),
    "entrannas_ext": _uniform("entrannas_ext", DARTS_OPS[1:] + EXTENDED_OPS),
    "s1": SearchSpace("s1", _S1_NORMAL, _S1_REDUCE),
    "s2": _uniform("s2", ("skip_connect", "sep_conv_3x3")),
    "s3": _uniform("s3", ("none", "skip_connect", "sep_conv_3x3")),
    "s4": _uniform("s4", ("noise", "sep_conv_3x3")),
    "nb201": _uniform("nb201", NB201_SPACE_OPS, nb201=True),
}


def get_space(name: str) -> SearchSpace:
    if name not in SPACES:
        raise ValueError(f"unknown search space {name!r}; choose one of {', '.join(SPACES)}")
    return SPACES[name]


def search_op(space: SearchSpace, name: str, C: int, stride: int) -> nn.Module:
    """A candidate op as DARTS super-nets build it: affine-free BN, and a BN after pooling."""
    op = space.build(name, C, stride, affine=False)
    if "pool" in name and not space.nb201:
        op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
    return op
