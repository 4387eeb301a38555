import pytest
import torch

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
