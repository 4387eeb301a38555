import json

import pytest
import torch

from common import genotypes as G
from common.genotypes import Cell, Genotype, GenotypeError
from common.network import build_network
from common.utils import count_madds, count_madds_thop, count_params
from conftest import run

DARTS_V2 = G.load("DARTS_V2")


def test_published_genotypes_load():
    for name in G.PUBLISHED:
        g = G.load(name)
        assert g.kind == "darts" and len(g.normal.nodes) == 4 and g.normal.concat == (2, 3, 4, 5)
    assert set(G.PUBLISHED) < set(G.published())
    assert DARTS_V2.normal.nodes[3] == (("skip_connect", 0), ("dil_conv_3x3", 2))


def test_text_form_round_trip():
    text = str(DARTS_V2)
    assert text.startswith("Genotype(normal=[('sep_conv_3x3', 0)")
    assert G.load(text) == DARTS_V2
    # positional arguments and range() concat, as published in other repositories
    pos = G.parse_darts_text(G.PUBLISHED["PC_DARTS_cifar"].replace("normal=", "").replace("normal_concat=", "")
                             .replace("reduce=", "").replace("reduce_concat=", ""))
    assert pos == G.load("PC_DARTS_cifar")


@pytest.mark.parametrize("text", [
    "__import__('os').system('touch /tmp/pwned')",
    "Genotype(normal=__import__('os').system('x'), normal_concat=[2], reduce=[], reduce_concat=[2])",
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], normal_concat=range(2, 3), "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1)], reduce_concat=eval('[2]'))",
    "Genotype(normal=[('sep_conv_3x3', 0)], normal_concat=[2], reduce=[('skip_connect', 0)], reduce_concat=[2])",
    "Genotype(normal=[(1, 0), (2, 1)], normal_concat=[2], reduce=[], reduce_concat=[2])",
    "Genotype(normal=[], normal_concat=[2], reduce=[], reduce_concat=[2], extra=1)",
    "Genotype(",
])
def test_malicious_or_malformed_text_is_rejected(text, tmp_path):
    with pytest.raises(GenotypeError):
        G.load(text)
    assert not (tmp_path / "pwned").exists()


def test_json_round_trip_every_kind(tmp_path):
    flexible = Genotype(
        Cell(((("sep_conv_3x3", 0),), (("skip_connect", 0), ("dil_conv_3x3", 1), ("sep_conv_5x5", 2))), (2, 3)),
        Cell(((("max_pool_3x3", 0), ("sep_conv_3x3", 0)), (("skip_connect", 2),)), (2, 3)))
    per_cell = Genotype(cells=(DARTS_V2.normal, DARTS_V2.reduce, flexible.normal), reductions=(1,))
    nb201 = G.load("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|")
    for i, g in enumerate([DARTS_V2, flexible, per_cell, nb201]):
        path = tmp_path / f"g{i}.json"
        G.save(path, g, method="test", seed=3)
        back = G.load(str(path))
        assert back == g and back.kind == g.kind
        assert back.meta["method"] == "test" and back.meta["seed"] == 3
        assert json.loads(path.read_text())["text"] == str(g)
    assert G.to_nb201_string(nb201.normal) == "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|"


@pytest.mark.parametrize("change, message", [
    (lambda d: d["normal"]["nodes"][0].__setitem__(0, ["conv_9x9", 0]), "unknown op 'conv_9x9'"),
    (lambda d: d["normal"]["nodes"][1].__setitem__(0, ["sep_conv_3x3", 3]), "node 3 takes input 3"),
    (lambda d: d["normal"]["nodes"][0].__setitem__(1, ["sep_conv_3x3", -1]), "node 2 takes input -1"),
    (lambda d: d["reduce"]["nodes"].__setitem__(2, []), "node 4 has no input"),
    (lambda d: d["reduce"].__setitem__("concat", [2, 9]), "concat"),
    (lambda d: d.pop("reduce"), "needs 'normal' and 'reduce'"),
])
def test_invalid_genotypes_give_clear_errors(tmp_path, change, message):
    d = G.to_dict(DARTS_V2)
    change(d)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    with pytest.raises(GenotypeError, match=message):
        G.load(str(path))


def test_wrong_reduction_positions():
    for reductions in [(3,), (1, 1), (2, 1)]:
        with pytest.raises(GenotypeError, match="reduction positions"):
            Genotype(cells=(DARTS_V2.normal,) * 3, reductions=reductions).validate()


def test_derive_darts_rule():
    ops = ("none", "skip_connect", "sep_conv_3x3")
    w = torch.zeros(14, 3)
    # node 0 (edges 0, 1): edge 1 strongest via sep_conv; edge 0 via skip
    w[0] = torch.tensor([9.0, 0.2, 0.1])  # `none` is ignored, however large
    w[1] = torch.tensor([0.0, 0.3, 0.6])
    # node 1 (edges 2, 3, 4): edges 4 and 2 win, edge 3 loses
    w[2] = torch.tensor([0.0, 0.5, 0.4])
    w[3] = torch.tensor([5.0, 0.1, 0.1])
    w[4] = torch.tensor([0.0, 0.1, 0.7])
    cell = G.derive_darts(w, [ops] * 14)
    # strongest input first, as DARTS prints its genotypes (DARTS_V2's node 4: sep_conv from 1, then skip from 0)
    assert cell.nodes[0] == (("sep_conv_3x3", 1), ("skip_connect", 0))
    assert cell.nodes[1] == (("sep_conv_3x3", 2), ("skip_connect", 0))
    assert all(len(n) == 2 for n in cell.nodes) and cell.concat == (2, 3, 4, 5)
    # ties keep the lower index (DARTS' stable sort)
    tie = G.derive_darts(torch.ones(14, 3), [ops] * 14)
    assert tie.nodes[3] == (("skip_connect", 0), ("skip_connect", 1))


def test_derive_darts_text_is_darts_text():
    """Weights under which DARTS' own rule gives DARTS_V2 give DARTS_V2's published text, character for character."""
    ops = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
           "dil_conv_3x3", "dil_conv_5x5")
    cells = []
    for cell in (DARTS_V2.normal, DARTS_V2.reduce):
        w, e = torch.zeros(14, len(ops)), 0
        for i, node in enumerate(cell.nodes):
            for rank, (op, j) in enumerate(node):  # listed strongest first
                w[e + j, ops.index(op)] = 0.9 - 0.1 * rank
            e += 2 + i
        cells.append(G.derive_darts(w, [ops] * 14))
    assert str(Genotype(*cells)) == str(DARTS_V2)


def test_published_counts_match_papers():
    """DARTS (Liu et al., 2019, Tables 1 and 2): 3.3M params on CIFAR-10, 4.7M on ImageNet. Mult-adds
    on CIFAR-10 as DARTS-PD's Table 1 prints them: DARTS 528M, PC-DARTS 558M (convolutions and linear
    layers). On ImageNet PC-DARTS prints 597M, thop's count (599.5M); DARTS' 574M matches no counter."""
    assert abs(count_params(build_network(DARTS_V2, "imagenet", 48, 14, 1000, auxiliary=True)) - 4.7) / 4.7 < 0.02
    cifar = build_network(DARTS_V2, "cifar10", 36, 20, 10, auxiliary=True)
    assert abs(count_params(cifar) - 3.3) / 3.3 < 0.02  # auxiliary head excluded
    assert count_madds(cifar, (1, 3, 32, 32)) == pytest.approx(528, rel=0.003)
    pc = build_network(G.load("PC_DARTS_cifar"), "cifar10", 36, 20, 10)
    assert count_madds(pc, (1, 3, 32, 32)) == pytest.approx(558, rel=0.003)
    pc = build_network(G.load("PC_DARTS_image"), "imagenet", 48, 14, 1000)
    assert count_madds_thop(pc, (1, 3, 224, 224)) == pytest.approx(597, rel=0.005)


def test_madds_counts_conv_by_hand():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.nn.Flatten(),
                              torch.nn.Linear(8 * 4 * 4, 5))
    assert count_madds(net, (1, 3, 4, 4)) == pytest.approx((3 * 9 * 8 * 16 + 128 * 5) / 1e6)
    head = torch.nn.Sequential(torch.nn.BatchNorm2d(8, affine=False), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(8, 5))
    # thop: 2 per BN input without affine parameters, ReLU 0, adaptive pooling (window 16 + 1) per output, fc
    assert count_madds_thop(head, (1, 8, 4, 4)) == pytest.approx((2 * 128 + 17 * 8 + 8 * 5) / 1e6)


def test_dot_export(tmp_path):
    dot = G.to_dot(DARTS_V2)
    assert dot.count("->") == 2 * (8 + 4) and "cluster_normal" in dot and "cluster_reduce" in dot
    per_cell = Genotype(cells=(DARTS_V2.normal,) * 3, reductions=(1,))
    assert G.to_dot(per_cell).count("subgraph") == 3
    files = G.export(tmp_path, DARTS_V2, method="test")
    assert (tmp_path / "genotype.dot").exists() and G.load(str(tmp_path / "genotype.json")) == DARTS_V2
    assert len(files) >= 2


def test_cli_show(tmp_path, capsys):
    G.main(["show", "DARTS_V2", "--dot", str(tmp_path / "g.dot")])  # in-process: no interpreter start-ups
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert abs(last["params_M"] - 3.3) < 0.066 and last["layers"] == 20 and last["init_channels"] == 36
    assert last["mult_adds_M"] == pytest.approx(528.36) and last["mult_adds_thop_M"] == pytest.approx(549.81)
    assert (tmp_path / "g.dot").read_text().startswith("digraph")
    bad = tmp_path / "bad.json"
    bad.write_text('{"normal": {"nodes": [[["warp_drive", 0], ["sep_conv_3x3", 1]]], "concat": [2]}, '
                   '"reduce": {"nodes": [[["max_pool_3x3", 0], ["max_pool_3x3", 1]]], "concat": [2]}}')
    with pytest.raises(SystemExit) as e:
        G.main(["show", str(bad)])
    err = capsys.readouterr().err
    assert e.value.code != 0 and err.count("\n") == 1 and "unknown op 'warp_drive'" in err


def test_every_published_name_works_from_the_cli_without_importing_a_method():
    """Each method folder's published.json is found by name wherever a genotype is expected."""
    listed = run(["-m", "common.genotypes", "list"]).stdout
    assert "DARTS_V2" in listed and "DARTS_PT_3" in listed
    shown = run(["-m", "common.genotypes", "show", "DARTS_PT"]).stdout
    assert json.loads(shown.splitlines()[-1])["params_M"] == pytest.approx(3.33, abs=0.01)  # the paper's best: 3.3M
