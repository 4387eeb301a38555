import pytest
import torch
import torch.nn.functional as F

from common import genotypes as G
from common.genotypes import Cell, Genotype
from common.network import AuxiliaryHead, NetworkCIFAR, build_network, drop_path

V2 = G.load("DARTS_V2")
FLEX = Genotype(Cell(((("sep_conv_3x3", 0),), (("skip_connect", 0), ("dil_conv_3x3", 1), ("conv_1x3_3x1", 2))),
                     (2, 3)),
                Cell(((("max_pool_3x3", 0), ("sep_conv_3x3", 0)), (("skip_connect", 2), ("avg_pool_3x3", 1))),
                     (2, 3)))
PER_CELL = Genotype(cells=(V2.normal, V2.reduce, FLEX.normal, FLEX.reduce, V2.normal), reductions=(1, 3))
NB201 = G.load("|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|none~1|nor_conv_3x3~2|")


@pytest.mark.parametrize("g, layers", [(V2, 5), (FLEX, 4), (PER_CELL, 5), (NB201, 0)])
@pytest.mark.parametrize("dataset", ["cifar10", "imagenet"])
def test_every_genotype_kind_forward_backward(g, layers, dataset):
    if dataset == "imagenet" and g.kind == "nb201":
        pytest.skip("NAS-Bench-201 is a CIFAR-sized skeleton")
    torch.manual_seed(0)
    C = 4 if g.kind != "nb201" else 4
    net = build_network(g, dataset, C, layers, 7, auxiliary=True)
    net.drop_path_prob = 0.2
    size = 64 if dataset == "imagenet" else 16
    logits, aux = net(torch.randn(2, 3, size, size))
    assert logits.shape == (2, 7)
    assert (aux is not None) == (g.kind != "nb201")
    (logits.sum() + (aux.sum() if aux is not None else 0)).backward()
    assert all(p.grad is not None for n, p in net.named_parameters() if "auxiliary" not in n)
    net.eval()
    assert net(torch.randn(2, 3, size, size))[1] is None


def test_reductions_at_one_and_two_thirds():
    net = build_network(V2, "cifar10", 4, 8, 10)
    strided = [i for i, c in enumerate(net.cells) if isinstance(c.preprocess0, torch.nn.Sequential) is False]
    assert strided == [3, 6]  # cells after a reduction take a FactorizedReduce'd s0
    per = build_network(PER_CELL, "cifar10", 4, 5, 10)
    assert [c.multiplier for c in per.cells] == [4, 4, 2, 2, 4]


def test_per_cell_layers_must_match():
    with pytest.raises(G.GenotypeError, match="has 5 cells"):
        build_network(PER_CELL, "cifar10", 4, 8, 10)


def test_drop_path_only_on_non_identity_ops():
    g = Genotype(Cell(((("skip_connect", 0), ("skip_connect", 1)),), (2,)),
                 Cell(((("skip_connect", 0), ("skip_connect", 1)),), (2,)))
    net = build_network(g, "cifar10", 4, 3, 10)  # cell 0 is a normal cell
    cell = net.cells[0]
    cell.train()
    s0, s1 = torch.randn(8, 12, 8, 8), torch.randn(8, 12, 8, 8)
    expected = cell.preprocess0(s0) + cell.preprocess1(s1)
    assert torch.allclose(cell(s0, s1, drop_prob=0.9), expected)  # identities are never dropped


def test_drop_path_statistics():
    torch.manual_seed(0)
    x = torch.ones(20000, 1, 1, 1)
    y = drop_path(x, 0.3)
    assert abs((y == 0).float().mean().item() - 0.3) < 0.02
    assert abs(y.mean().item() - 1) < 0.03  # unbiased


def test_auxiliary_head_matches_darts_pooling():
    head = AuxiliaryHead(16, 10)
    assert head.pool.kernel_size == 5 and head.pool.stride == 3
    assert head(torch.randn(2, 16, 8, 8)).shape == (2, 10)
    im = AuxiliaryHead(16, 10, imagenet=True)
    assert im.pool.stride == 2 and im(torch.randn(2, 16, 7, 7)).shape == (2, 10)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in im.modules()) == 1  # DARTS omits the second BN


def test_network_cifar_is_darts_shaped():
    net = NetworkCIFAR(36, 10, V2.layout(20), auxiliary=True)
    assert net.stem[0].out_channels == 108 and len(net.cells) == 20 and net.aux_index == 13


# ---------------------------------------------------------------- the evaluation network, re-derived by hand

# Every op of OPS but `noise` (random by design), stride 1 in the normal cell and stride 2 on the
# reduction cell's inputs, nodes of 1 to 6 pairs.
EVERY_OP = Genotype(
    Cell(((("sep_conv_3x3", 0), ("dil_conv_3x3", 1)),
          (("sep_conv_5x5", 0), ("dil_conv_5x5", 2), ("skip_connect", 1)),
          (("max_pool_3x3", 1), ("avg_pool_3x3", 3), ("conv_7x1_1x7", 2), ("sep_conv_7x7", 0)),
          (("none", 0), ("conv_1x1", 4), ("conv_3x3", 2), ("conv_1x3_3x1", 1), ("conv_1x5_5x1", 3),
           ("conv_1x7_7x1", 0))), (2, 3, 4, 5)),
    Cell(((("sep_conv_3x3", 0), ("skip_connect", 1), ("dil_conv_5x5", 0)),
          (("max_pool_3x3", 0), ("avg_pool_3x3", 1), ("conv_1x5_5x1", 0), ("skip_connect", 2)),
          (("dil_conv_3x3", 1), ("sep_conv_5x5", 1), ("conv_7x1_1x7", 1)),
          (("sep_conv_7x7", 0), ("conv_1x7_7x1", 1), ("conv_3x3", 0), ("conv_1x1", 1), ("conv_1x3_3x1", 0),
           ("none", 1))), (2, 4, 5)))


def _parts(module):
    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    bns = [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    return convs, bns


def _bn(x, bn, training):
    if training:  # batch statistics
        return F.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def _ref_op(name, module, x, stride, training):
    """DARTS' definition of op `name` (operations.py of quark0/darts and EnTranNAS' extended set),
    with the weights of `module` in their order of construction."""
    (convs, bns), C = _parts(module), x.shape[1]
    if name == "none":
        return x[:, :, ::stride, ::stride] * 0
    if name == "skip_connect":
        return x if stride == 1 else _ref_factorized_reduce(module, x, training)
    if name == "max_pool_3x3":
        return F.max_pool2d(x, 3, stride, 1)
    if name == "avg_pool_3x3":
        return F.avg_pool2d(x, 3, stride, 1, count_include_pad=False)
    if name.startswith("sep_conv"):  # relu, dw k x k (stride), pw, BN; relu, dw k x k, pw, BN
        k = int(name[-1])
        x = F.conv2d(F.relu(x), convs[0].weight, stride=stride, padding=k // 2, groups=C)
        x = _bn(F.conv2d(x, convs[1].weight), bns[0], training)
        x = F.conv2d(F.relu(x), convs[2].weight, padding=k // 2, groups=C)
        return _bn(F.conv2d(x, convs[3].weight), bns[1], training)
    if name.startswith("dil_conv"):  # relu, dw k x k dilated 2 (stride), pw, BN
        k = int(name[-1])
        x = F.conv2d(F.relu(x), convs[0].weight, stride=stride, padding=k - 1, dilation=2, groups=C)
        return _bn(F.conv2d(x, convs[1].weight), bns[0], training)
    factorized = {"conv_7x1_1x7": 7, "conv_1x3_3x1": 3, "conv_1x5_5x1": 5, "conv_1x7_7x1": 7}
    if name in factorized:  # relu, 1 x k (stride along the width), k x 1 (stride along the height), BN
        k = factorized[name]
        x = F.conv2d(F.relu(x), convs[0].weight, stride=(1, stride), padding=(0, k // 2))
        return _bn(F.conv2d(x, convs[1].weight, stride=(stride, 1), padding=(k // 2, 0)), bns[0], training)
    k = int(name[-1])  # conv_1x1, conv_3x3: relu, k x k conv, BN
    return _bn(F.conv2d(F.relu(x), convs[0].weight, stride=stride, padding=k // 2), bns[0], training)


def _ref_factorized_reduce(module, x, training):
    """relu, then two 1x1 stride-2 convs, the second on the input shifted by one pixel, concatenated, BN."""
    (c1, c2), (bn,) = _parts(module)
    x = F.relu(x)
    return _bn(torch.cat([F.conv2d(x, c1.weight, stride=2), F.conv2d(x[:, :, 1:, 1:], c2.weight, stride=2)], 1),
               bn, training)


def _ref_relu_conv_bn(module, x, training):
    (conv,), (bn,) = _parts(module)
    return _bn(F.conv2d(F.relu(x), conv.weight), bn, training)


def _ref_cell(module, cell, s0, s1, reduction, reduction_prev, drop_prob, training):
    """Preprocess both inputs; each node sums its ops' outputs, each non-identity output drop-pathed
    (x / keep * Bernoulli(keep) per sample, masks drawn in op order, in training only); concat."""
    pre0 = _ref_factorized_reduce if reduction_prev else _ref_relu_conv_bn
    states = [pre0(module.preprocess0, s0, training), _ref_relu_conv_bn(module.preprocess1, s1, training)]
    for ops, node in zip(module.ops, cell.nodes):
        total = 0
        for op, (name, j) in zip(ops, node):
            stride = 2 if reduction and j < 2 else 1
            h = _ref_op(name, op, states[j], stride, training)
            if training and drop_prob > 0 and not (name == "skip_connect" and stride == 1):
                keep = 1 - drop_prob
                h = h / keep * torch.empty(h.shape[0], 1, 1, 1).bernoulli_(keep)
            total = total + h
        states.append(total)
    return torch.cat([states[c] for c in cell.concat], 1)


def _ref_network(net, g, x, layers, training, imagenet):
    """DARTS' networks. CIFAR: a 3x3 conv-BN stem to 3C channels feeds both inputs of cell 0.
    ImageNet: stem0 (3x3 stride-2 conv to C/2, BN, relu, 3x3 stride-2 conv to C, BN) gives s0 and
    stem1 (relu, 3x3 stride-2 conv, BN) s1; cell 0 takes s0 FactorizedReduce'd. Reduction cells at
    layers // 3 and 2 layers // 3; the auxiliary tower after cell 2 layers // 3 (relu, 5x5 avg-pool
    stride 3, or 2 on ImageNet, 1x1 conv to 128, BN, relu, 2x2 conv to 768, BN (not on ImageNet),
    relu, linear); global average pooling, linear."""
    if imagenet:
        ((c0, c1), (b0, b1)), ((c2,), (b2,)) = _parts(net.stem0), _parts(net.stem1)
        s0 = F.relu(_bn(F.conv2d(x, c0.weight, stride=2, padding=1), b0, training))
        s0 = _bn(F.conv2d(s0, c1.weight, stride=2, padding=1), b1, training)
        s1 = _bn(F.conv2d(F.relu(s0), c2.weight, stride=2, padding=1), b2, training)
    else:
        (stem,), (stem_bn,) = _parts(net.stem)
        s0 = s1 = _bn(F.conv2d(x, stem.weight, padding=1), stem_bn, training)
    reductions, aux, reduction_prev = (layers // 3, 2 * layers // 3), None, imagenet
    for i, module in enumerate(net.cells):
        reduction = i in reductions
        cell = g.reduce if reduction else g.normal
        s0, s1 = s1, _ref_cell(module, cell, s0, s1, reduction, reduction_prev, net.drop_path_prob, training)
        reduction_prev = reduction
        if i == 2 * layers // 3 and training:
            convs, bns = _parts(net.auxiliary_head)
            a = F.avg_pool2d(F.relu(s1), 5, stride=2 if imagenet else 3, padding=0, count_include_pad=False)
            a = F.conv2d(F.relu(_bn(F.conv2d(a, convs[0].weight), bns[0], training)), convs[1].weight)
            a = F.relu(a if imagenet else _bn(a, bns[1], training))
            aux = F.linear(a.flatten(1), net.auxiliary_head.classifier.weight, net.auxiliary_head.classifier.bias)
    logits = F.linear(s1.mean((2, 3)), net.classifier.weight, net.classifier.bias)
    return logits, aux


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("dataset, size", [("cifar10", 32), ("imagenet", 224)])
def test_evaluation_network_equals_darts_by_hand(dataset, size, training):
    """Every op (both strides), the cell wiring, FactorizedReduce preprocessing, the stems, drop-path
    and the auxiliary tower against a functional re-derivation of DARTS' model.py, at the image
    sizes where the tower sees DARTS' 8 x 8 (CIFAR) or 7 x 7 (ImageNet) input."""
    torch.manual_seed(0)
    layers = 4  # normal, reduce, reduce, normal: FactorizedReduce'd s0 in cells 2 and 3; the tower after cell 2
    net = build_network(EVERY_OP, dataset, 4, layers, 10, auxiliary=True)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5), m.bias.normal_(0, 0.2)
                m.running_mean.normal_(0, 0.2), m.running_var.uniform_(0.5, 1.5)
    net.train(training)
    net.drop_path_prob = 0.4
    x = torch.randn(4, 3, size, size)
    with torch.no_grad():
        torch.manual_seed(1)
        logits, aux = net(x)
        torch.manual_seed(1)
        ref_logits, ref_aux = _ref_network(net, EVERY_OP, x, layers, training, dataset == "imagenet")
        assert torch.allclose(logits, ref_logits, atol=1e-4, rtol=1e-4)
        if training:
            assert torch.allclose(aux, ref_aux, atol=1e-4, rtol=1e-4)
            net.drop_path_prob = 0.0  # and drop-path did change the output
            assert not torch.allclose(net(x)[0], logits, atol=1e-2)
        else:
            assert aux is None
