"""The demo (`bash run_all.sh --demo`): its plan, and the pieces it shows: random cells of a search
space, pictures of every kind of genotype without Graphviz, the summary's pictures."""
import collections
import importlib
import itertools
import json

import pytest
import torch

from common import drawing, train_eval
from common import genotypes as G
from common.genotypes import Cell, Genotype, GenotypeError
from common.network import build_network
from common.operations import NB201_SPACE_OPS, SPACES
from reproduce import __main__ as reproduce_main
from reproduce import demo, summary
from reproduce.registry import Context, plan, to_json
from test_reproduce import _check_dag

DARTS_V2 = G.load("DARTS_V2")
FLEXIBLE = Genotype(  # EnTranNAS-DST / D-DARTS: any number of inputs, several ops on one edge
    Cell(((("sep_conv_3x3", 0),), (("skip_connect", 0), ("dil_conv_3x3", 1), ("sep_conv_5x5", 1), ("max_pool_3x3", 1),
                                   ("sep_conv_5x5", 2))), (2, 3)),
    Cell(((("max_pool_3x3", 0), ("sep_conv_3x3", 0)), (("skip_connect", 2),)), (2, 3)))
PER_CELL = Genotype(cells=(DARTS_V2.normal, DARTS_V2.reduce, FLEXIBLE.normal), reductions=(1,))
NB201 = G.load("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|")
KINDS = {"darts": DARTS_V2, "flexible": FLEXIBLE, "per_cell": PER_CELL, "nb201": NB201}


# ---------------------------------------------------------------- random cells

def test_random_cells_are_seeded_and_valid():
    for space in SPACES:
        a, b = G.random_genotype(space, 7), G.random_genotype(space, 7)
        assert a == b and a.validate() is a
        assert any(G.random_genotype(space, s) != a for s in range(8)), space
    assert G.load("random:darts:3") == G.random_genotype("darts", 3)
    assert G.random_genotype("nb201", 0).kind == "nb201" and G.random_genotype("s1", 0).kind == "darts"


def test_random_darts_cells_take_two_distinct_inputs_and_the_edge_s_ops():
    """Every node: two distinct earlier states, on each one of that edge's candidates but `none`
    (RobustDARTS S1 has its own pair of ops on every edge, different in the reduction cell)."""
    space = SPACES["s1"]
    for seed in range(30):
        g = G.random_genotype(space, seed)
        for reduction, cell in ((False, g.normal), (True, g.reduce)):
            assert cell.concat == (2, 3, 4, 5) and len(cell.nodes) == 4
            for i, node in enumerate(cell.nodes):
                inputs = [j for _, j in node]
                assert len(inputs) == 2 and inputs[0] < inputs[1] < 2 + i
                edge0 = sum(2 + k for k in range(i))  # the node's first edge, as DARTS numbers them
                assert all(op in space.ops(reduction, edge0 + j) for op, j in node), (seed, reduction, i, node)


def test_random_darts_cells_are_uniform_over_ops_and_input_pairs():
    ops, pairs = collections.Counter(), collections.Counter()
    for seed in range(300):
        g = G.random_genotype("darts", seed)
        for cell in (g.normal, g.reduce):
            ops.update(op for _, op, _ in cell.pairs())
            pairs[tuple(j for _, j in cell.nodes[3])] += 1  # the last node: 10 pairs of 5 states
    assert set(ops) == set(SPACES["darts"].all_ops()) - {"none"}
    expected = sum(ops.values()) / 7
    assert all(abs(n - expected) < 0.2 * expected for n in ops.values()), ops
    assert set(pairs) == set(itertools.combinations(range(5), 2))
    assert all(abs(n - 60) < 25 for n in pairs.values()), pairs


def test_random_nb201_cells_draw_every_op_on_every_edge():
    seen = collections.defaultdict(set)
    for seed in range(100):
        cell = G.random_genotype("nb201", seed).normal
        assert [[j for _, j in node] for node in cell.nodes] == [[0], [0, 1], [0, 1, 2]]
        for i, op, j in cell.pairs():
            seen[(i, j)].add(op)
    assert len(seen) == 6 and all(ops == set(NB201_SPACE_OPS) for ops in seen.values())  # `none` too


@pytest.mark.parametrize("spec, message", [
    ("random:darts:x", "random:SPACE:SEED"), ("random:darts", "random:SPACE"), ("random:darts:1:2", "random:SPACE"),
    ("random:nope:1", "unknown search space")])
def test_bad_random_specs_say_what_is_wrong(spec, message):
    with pytest.raises(GenotypeError, match=message):
        G.load(spec)


# ---------------------------------------------------------------- pictures

def _on_curve(point, bezier, tol=1e-9):
    (x0, y0), (cx, cy), (x1, y1) = bezier
    ts = [k / 1000 for k in range(1001)]
    return min(((1 - t) ** 2 * x0 + 2 * t * (1 - t) * cx + t * t * x1 - point[0]) ** 2 +
               ((1 - t) ** 2 * y0 + 2 * t * (1 - t) * cy + t * t * y1 - point[1]) ** 2 for t in ts) < tol + 1e-6


def _distance_to_curve(point, bezier):
    (x0, y0), (cx, cy), (x1, y1) = bezier
    return min((((1 - t) ** 2 * x0 + 2 * t * (1 - t) * cx + t * t * x1 - point[0]) ** 2 +
                ((1 - t) ** 2 * y0 + 2 * t * (1 - t) * cy + t * t * y1 - point[1]) ** 2) ** 0.5
               for t in (k / 200 for k in range(201)))


@pytest.mark.parametrize("kind", KINDS)
def test_every_arrow_clears_the_nodes_it_passes_and_its_label_sits_on_it(kind):
    """One arrow per (op, input) pair; an arrow keeps 0.25 away from every node but its ends (it
    bows around the columns it skips); the ops of one edge fan out, their labels 0.2 apart; a
    label sits on its arrow."""
    for _, cell in KINDS[kind].named_cells():
        pos, arrows = drawing.positions(cell), drawing.arrows(cell)
        assert [(j, node - cell.num_inputs, op) for j, node, op, _ in arrows] == \
            [(j, i, op) for i, op, j in cell.pairs()]
        for j, node, op, bezier in arrows:
            for s in range(cell.num_states):
                if s not in (j, node):
                    assert _distance_to_curve(pos[s], bezier) > 0.25, (kind, j, node, op, s)
            assert _on_curve(drawing.midpoint(bezier), bezier)
        labels = collections.defaultdict(list)
        for j, node, _, bezier in arrows:
            labels[(j, node)].append(drawing.midpoint(bezier))
        for points in labels.values():
            for a, b in itertools.combinations(points, 2):
                assert ((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2) ** 0.5 >= 0.2


@pytest.mark.parametrize("kind", KINDS)
def test_every_genotype_kind_is_drawn_without_graphviz(kind, tmp_path, monkeypatch):
    """PNG and SVG with matplotlib when Graphviz' `dot` is missing; the SVG holds every op of every
    cell as a label, as many times as the genotype has it, and every cell's title."""
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(G.shutil, "which", lambda name: None)
    g = KINDS[kind]
    assert G.draw(g, tmp_path / "c.png") == tmp_path / "c.png"
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = G.draw(g, tmp_path / "sub" / "c.svg", title=kind).read_text()
    ops = collections.Counter(op for _, c in g.named_cells() for _, op, _ in c.pairs())
    assert {op: svg.count(f">{op}<") for op in ops} == ops
    assert all(f">{name.replace('_', ' ')}<" in svg for name, _ in g.named_cells())


def test_without_matplotlib_or_graphviz_nothing_is_drawn(tmp_path, monkeypatch):
    monkeypatch.setattr(G.shutil, "which", lambda name: None)
    monkeypatch.setattr(drawing, "available", lambda: False)
    assert G.draw(DARTS_V2, tmp_path / "c.png") is None and not (tmp_path / "c.png").exists()


def test_cli_draws_and_refuses_other_formats(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    G.main(["show", "random:darts:0", "--layers", "3", "--init_channels", "4", "--draw", str(tmp_path / "r.svg")])
    assert (tmp_path / "r.svg").read_text().count("<text") > 16
    with pytest.raises(SystemExit) as e:
        G.main(["show", "DARTS_V2", "--draw", str(tmp_path / "r.jpg")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and ".png or .svg" in err


# ---------------------------------------------------------------- the demo's plan

METHODS = ("msg_das", "entrannas", "darts_pt", "darts_pd", "d_darts")


def _demo_plan(methods=METHODS):
    return plan(demo.demo(methods), Context(data="/data"))


def _training_args(stage, monkeypatch):
    """The arguments the training stage's script hands to common.train_eval.main, and its builder."""
    seen = []
    monkeypatch.setattr(train_eval, "main", lambda args, build=None, evaluated_by=None: seen.append((args, build)))
    argv = list(stage.argv)
    if argv[:2] == ["-m", "common.train_eval"]:
        return train_eval.parse_args(argv[2:]), None
    importlib.import_module(argv[0].removesuffix(".py").replace("/", ".")).main(argv[1:])
    return seen[0]


def test_the_demo_searches_every_method_once_and_trains_all_rows_identically(monkeypatch):
    p = _demo_plan()
    searches = [s for s in p.stages.values() if s.kind == "search"]
    assert sorted(s.argv[0].split("/")[0] for s in searches) == sorted(METHODS)
    assert all(s.argv[s.argv.index("--dataset") + 1] == "synthetic" and "--download" not in s.argv
               for s in p.stages.values() if s.kind in ("search", "train"))
    trainings = [s for s in p.stages.values() if s.kind == "train"]
    assert len(trainings) == len(p.rows) == len(METHODS) + 2
    archs = {s.argv[s.argv.index("--arch") + 1] for s in trainings}
    assert {"DARTS_V2", f"random:{demo.SPACE}:0"} < archs
    protocol = vars(train_eval.get_parser().parse_args(["--arch", "x"])).keys() - {"arch"}  # every flag of it
    parsed = []
    for s in trainings:
        args, build = _training_args(s, monkeypatch)
        parsed.append({k: getattr(args, k) for k in protocol})
        if build is not None:  # D-DARTS' builder uses a per-cell genotype of `layers` cells as it is
            cells = [G.random_genotype(demo.SPACE, s) for s in range(args.layers)]  # all different
            per_cell = Genotype(cells=tuple(g.reduce if i in (1, 3) else g.normal for i, g in enumerate(cells)),
                                reductions=(1, 3))
            nets = []
            for make in (build, lambda g, n, a: build_network(g, a.dataset, a.init_channels, a.layers, n, a.auxiliary)):
                torch.manual_seed(0)
                nets.append(make(per_cell, 10, args).state_dict())
            assert nets[0].keys() == nets[1].keys() and all(torch.equal(nets[0][k], nets[1][k]) for k in nets[0])
    assert all(a == parsed[0] for a in parsed), [sorted(set(a.items()) ^ set(parsed[0].items())) for a in parsed]
    assert parsed[0]["dataset"] == "synthetic" and parsed[0]["image_size"] == 16 and not parsed[0]["auxiliary"]


def test_every_demo_search_and_step_takes_its_flags():
    """Each script's own parser accepts the demo's flags (a renamed flag fails here, not after minutes)."""
    for s in _demo_plan().stages.values():
        if s.kind == "search":
            module = importlib.import_module(s.argv[0].removesuffix(".py").replace("/", "."))
            args = module.parse_args([*s.argv[1:], "--save", "x"])
            assert (args.dataset, args.image_size, args.subset, args.layers) == ("synthetic", 16, 256, 5)
        elif s.kind == "step":
            module = importlib.import_module(s.argv[0].removesuffix(".py").replace("/", "."))
            module.get_parser().parse_args(list(s.argv[1:]))


def test_every_demo_training_follows_its_search_and_methods_pick_the_searches():
    _check_dag(_demo_plan())
    one = _demo_plan(["msg_das"])
    assert [r[1] for r in one.rows] == ["MSG-DAS", f"random cell ({demo.SPACE} space)", "DARTS_V2 (published)"]


def test_run_all_demo_flags(tmp_path, capsys):
    assert reproduce_main.main(["--demo", "--plan", "--out", str(tmp_path)]) == 0
    assert f"{len(_demo_plan().stages)} stages" in capsys.readouterr().out
    for bad in (["--demo", "--smoke"], ["--demo", "--imagenet", str(tmp_path)]):
        with pytest.raises(SystemExit) as e:
            reproduce_main.main([*bad, "--plan", "--out", str(tmp_path)])
        assert e.value.code == 2 and capsys.readouterr().err.count("\n") == 1


# ---------------------------------------------------------------- the summary's pictures

def _finished_demo(out, methods=("msg_das",), seeds=(0, 1)):
    """OUT as a finished demo of `methods` with two searches each would leave it, without running
    anything: plan.json, the searches' genotypes, the trainings' summaries."""
    p = plan(demo.demo(methods), Context(data="/data", seeds=seeds))
    (out / "plan.json").write_text(json.dumps(to_json(p)))
    for name, s in p.stages.items():
        (out / name).mkdir(parents=True)
        if s.kind == "search":
            G.save(out / name / "genotype.json", G.random_genotype(demo.SPACE, 5 + len(name)))
        summary = {"final_top1": 60.0, "params_M": 0.05} if s.kind == "train" else {"search_time_s": 36.0}
        (out / name / "summary.json").write_text(json.dumps(summary))
    return p


def test_the_summary_shows_every_trained_cell_as_a_picture(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(G.shutil, "which", lambda name: None)
    _finished_demo(tmp_path)
    assert summary.main([str(tmp_path)]) == 0
    md = (tmp_path / "summary.md").read_text()
    table = md[md.index(f"## demo: {demo.TABLE}"):]
    assert "paper" not in table.split("\n")[2]  # no paper columns in a table without the paper's numbers
    pictures = {"cells/msg_das/demo/s0/genotype.png": "MSG-DAS", "cells/msg_das/demo/s1/genotype.png": "MSG-DAS",
                "cells/random-darts-0.png": "random cell", "cells/DARTS_V2.png": "DARTS_V2"}
    for picture, row in pictures.items():
        assert (tmp_path / picture).read_bytes()[:4] == b"\x89PNG"
        assert f"]({picture})" in next(line for line in table.split("\n") if line.startswith(f"| {row}"))
        assert f"![{row}" in table and f"({picture})\n" in table
    assert table.count("![") == len(pictures) and "40.00 ± 0.00 (2)" in table and "40.00 (1)" in table
    (tmp_path / "msg_das/demo/s1/summary.json").unlink()  # a search that has not finished is not drawn
    (tmp_path / "cells/msg_das/demo/s1/genotype.png").unlink()
    assert summary.main([str(tmp_path)]) == 0
    assert not (tmp_path / "cells/msg_das/demo/s1/genotype.png").exists()
    assert "](msg_das/demo/s1/genotype.json)" in (tmp_path / "summary.md").read_text()


def test_without_a_drawing_tool_the_summary_links_the_genotypes_and_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(G.shutil, "which", lambda name: None)
    monkeypatch.setattr(drawing, "available", lambda: False)
    _finished_demo(tmp_path)
    assert summary.main([str(tmp_path)]) == 0
    md = (tmp_path / "summary.md").read_text()
    assert "install matplotlib" in md and "](msg_das/demo/s0/genotype.json)" in md and "![" not in md
    assert not (tmp_path / "cells").exists()
