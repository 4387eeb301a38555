import pytest
import torch
import torch.nn as nn

from common.operations import DARTS_OPS, EXTENDED_OPS, NB201_OPS, OPS, SPACES, Noise, get_space, search_op
from common.utils import count_madds, count_madds_thop


def _bn_affine(module):
    return {m.affine for m in module.modules() if isinstance(m, nn.BatchNorm2d)}


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("affine", [False, True])
def test_every_op_shape_and_affine(name, stride, affine):
    op = OPS[name](8, stride, affine)
    x = torch.randn(2, 8, 16, 16)
    y = op(x)
    assert y.shape == (2, 8, 16 // stride, 16 // stride)
    assert _bn_affine(op) <= {affine}


@pytest.mark.parametrize("name", sorted(NB201_OPS))
def test_nb201_ops(name):
    op = NB201_OPS[name](8, 8, 1, True)
    assert op(torch.randn(2, 8, 8, 8)).shape == (2, 8, 8, 8)


def test_nb201_pool_projects_when_channels_differ():
    op = NB201_OPS["avg_pool_3x3"](4, 8, 1, True)
    assert op(torch.randn(2, 4, 8, 8)).shape == (2, 8, 8, 8)
    assert any(isinstance(m, nn.Conv2d) for m in op.modules())
    assert not any(isinstance(m, nn.Conv2d) for m in NB201_OPS["avg_pool_3x3"](8, 8, 1, True).modules())


def test_darts_op_structure():
    sep = OPS["sep_conv_3x3"](4, 2, True)
    convs = [m for m in sep.modules() if isinstance(m, nn.Conv2d)]
    # two ReLU-depthwise-pointwise-BN blocks, the stride on the first depthwise conv only
    assert [c.groups for c in convs] == [4, 1, 4, 1]
    assert [c.stride for c in convs] == [(2, 2), (1, 1), (1, 1), (1, 1)]
    dil = [m for m in OPS["dil_conv_5x5"](4, 1, True).modules() if isinstance(m, nn.Conv2d)]
    assert dil[0].dilation == (2, 2) and dil[0].padding == (4, 4)
    assert OPS["avg_pool_3x3"](4, 1, True).count_include_pad is False
    assert isinstance(OPS["skip_connect"](4, 1, True), nn.Identity)
    assert not isinstance(OPS["skip_connect"](4, 2, True), nn.Identity)


C, H = 4, 8  # per-op counts at C channels on H x H inputs


def _sep(k, A):  # a depthwise k x k and a pointwise conv at output area A: (params, mult-adds)
    return C * k * k + C * C, A * (C * k * k + C * C)


def _factorized(k, s):  # (1 x k) with stride (1, s) at H x H/s, then (k x 1) with stride (s, 1) at H/s x H/s
    return 2 * C * C * k, C * C * k * (H * H // s + (H // s) ** 2)


def _hand_counts(name, s):
    """(params, conv + fc mult-adds, BN layers) of OPS[name](C, s, affine=True) on a 1 x C x H x H input,
    derived from DARTS' definitions of the ops."""
    A = (H // s) ** 2
    if name == "skip_connect":  # Identity, or FactorizedReduce: two 1x1 convs to C/2 channels each
        return (0, 0, 0) if s == 1 else (C * C, A * C * C, 1)
    if name in ("avg_pool_3x3", "max_pool_3x3", "none", "noise"):
        return 0, 0, 0
    k = int(name[-1])
    if name.startswith("sep_conv"):  # two ReLU-dw-pw-BN blocks; the stride on the first depthwise conv
        p, m = _sep(k, A)
        return 2 * p, 2 * m, 2
    if name.startswith("dil_conv"):
        return (*_sep(k, A), 1)
    factorized = {"conv_7x1_1x7": 7, "conv_1x3_3x1": 3, "conv_1x5_5x1": 5, "conv_1x7_7x1": 7}
    if name in factorized:
        return (*_factorized(factorized[name], s), 1)
    return C * C * k * k, A * C * C * k * k, 1  # conv_1x1, conv_3x3


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("stride", [1, 2])
def test_every_op_params_and_mult_adds_by_hand(name, stride):
    params, madds, bns = _hand_counts(name, stride)
    op = OPS[name](C, stride, True)
    assert sum(p.numel() for p in op.parameters()) == params + 2 * C * bns  # + each BN's weight and bias
    assert count_madds(op, (1, C, H, H)) * 1e6 == pytest.approx(madds, abs=1e-6)
    # thop adds 4 per element entering an affine BN (all at the output size) and 1 per average-pool output
    out = C * (H // stride) ** 2
    thop = madds + 4 * bns * out + (out if name == "avg_pool_3x3" else 0)
    assert count_madds_thop(op, (1, C, H, H)) * 1e6 == pytest.approx(thop, abs=1e-6)


def test_zero_and_noise_ignore_input():
    x = torch.randn(2, 4, 8, 8)
    assert torch.count_nonzero(OPS["none"](4, 2, False)(x)) == 0
    torch.manual_seed(0)
    a = Noise(1)(x)
    torch.manual_seed(0)
    b = Noise(1)(x * 100 + 7)
    assert torch.equal(a, b)  # same draw whatever the input
    assert abs(Noise(1)(torch.zeros(64, 4, 16, 16)).std().item() - 1) < 0.05


def test_spaces():
    assert get_space("darts").ops(False, 0) == DARTS_OPS
    assert "none" not in get_space("darts_no_none").ops(True, 3)
    assert get_space("entrannas_ext").all_ops() == DARTS_OPS[1:] + EXTENDED_OPS
    s1 = get_space("s1")
    assert all(len(s1.ops(r, e)) == 2 for r in (False, True) for e in range(14))
    assert s1.ops(False, 0) != s1.ops(True, 0) and s1.ops(False, 0) != s1.ops(False, 12)
    assert get_space("s2").ops(True, 5) == ("skip_connect", "sep_conv_3x3")
    assert get_space("s3").ops(False, 1) == ("none", "skip_connect", "sep_conv_3x3")
    assert get_space("s4").ops(False, 1) == ("noise", "sep_conv_3x3")
    assert get_space("nb201").ops(False, 0) == ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    with pytest.raises(ValueError, match="unknown search space"):
        get_space("s9")


@pytest.mark.parametrize("space", sorted(SPACES))
def test_search_ops_of_every_space(space):
    sp = get_space(space)
    strides = [1] if sp.nb201 else [1, 2]
    for name in sp.all_ops():
        for stride in strides:
            op = search_op(sp, name, 8, stride)
            assert op(torch.randn(2, 8, 8, 8)).shape == (2, 8, 8 // stride, 8 // stride)
            assert _bn_affine(op) <= {False}
            if "pool" in name and not sp.nb201:
                assert isinstance(op[-1], nn.BatchNorm2d)  # DARTS adds an affine-free BN after pooling
