"""`--compile`: every method's compiled step computes what its eager step computes (the same losses,
weights, BN statistics and alphas after the same steps), and a changing sampled path, decision,
mask or derived sub-graph compiles nothing new once each kind of op has run. The ops are compiled
with torch.compile's `aot_eager` backend (its graphs and autograd, without generating code, which
is slow on a CPU); one test runs inductor on one op. And `--cuda_graph`'s recorded steps, as far
as a CPU can tell: no host synchronisation, one step per batch."""
import importlib
import json

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from common import train_eval
from common.genotypes import load
from common.network import build_network
from common.operations import ReLUConvBN, get_space
from common.search import StepGraph
from common.utils import compile_ops, compiled_graphs, folder_problem, regions
from darts_pt.model_search import DartsSuperNet
from darts_pt.selection import op_strength

CPU = torch.device("cpu")
TINY = ["--layers", "1", "--init_channels", "4", "--batch_size", "4", "--device", "cpu", "--dataset", "synthetic",
        "--image_size", "8"]


@pytest.fixture(autouse=True, scope="module")
def aot_eager_one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.compiler.set_default_backend("aot_eager")
    yield
    torch.compiler.set_default_backend(None)
    torch.set_num_threads(n)


def _batches(n, seed=1):
    g = torch.Generator().manual_seed(seed)

    def batch():
        return torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 10, (4,), generator=g)
    return [(batch(), batch()) for _ in range(n)]


def _searcher(module, flags, compile, cls="Searcher", **kw):
    ts = importlib.import_module(f"{module}.train_search")
    args = ts.parse_args([*TINY, *flags, *(["--compile"] if compile else [])])
    torch.manual_seed(0)
    return getattr(ts, cls)(args, 10, CPU, **kw), args


def _assert_same(eager, compiled):
    """The same records, and the same state (weights, alphas, BN statistics) within float rounding."""
    for r_e, r_c in zip(eager[0], compiled[0], strict=True):
        assert r_e.keys() == r_c.keys()
        for k in r_e:
            assert r_c[k] == pytest.approx(r_e[k], rel=1e-4, abs=1e-5), k
    s_e, s_c = eager[1], compiled[1]
    assert s_e.keys() == s_c.keys()
    for k in s_e:
        if torch.is_tensor(s_e[k]) and s_e[k].is_floating_point():
            assert torch.allclose(s_e[k], s_c[k], rtol=1e-4, atol=1e-5), k


def _both(run):
    """run(compile) -> (records, state dict, graph counts); eager and compiled, compared."""
    eager, compiled = run(False), run(True)
    _assert_same(eager, compiled)
    return compiled[2]


def test_regions_are_the_ops_and_the_state_dict_is_unchanged():
    net = DartsSuperNet(get_space("darts_no_none"), 4, 10, 3)
    keys = list(net.state_dict())
    found = regions(net)
    ops = [op for cell in net.cells for edge in cell.edges for op in edge.ops if next(op.buffers(), None) is not None]
    preprocess = [m for cell in net.cells for m in (cell.preprocess0, cell.preprocess1)]
    assert {id(m) for m in found} == {id(m) for m in [net.stem, *preprocess, *ops]}  # skip (identity) stays eager
    assert len({repr(m) for m in found}) < len(found) / 3  # kinds of op: what is compiled, once each per shape
    compile_ops(net)
    assert list(net.state_dict()) == keys  # compiled in place: checkpoints do not change


def test_darts_pt_steps_decisions_and_masked_evaluations():
    loader = DataLoader(TensorDataset(*_batches(1, seed=7)[0][1]), batch_size=4,
                        sampler=DistributedSampler(range(4), 1, 0, shuffle=False))

    def run(compile):
        s, _ = _searcher("darts_pt", [], compile)
        s.start_epoch(0)
        b = _batches(3)
        out = [s.step(*b[0]), {"scores": op_strength(s.model, "reduce", 0, loader)}]
        graphs = [compiled_graphs()]
        s.model.project_op("reduce", 1, 3)  # Alg. 1: a decided edge runs one op ...
        s.model.remove_edge("reduce", 2)  # ... a removed edge none
        out += [s.step(*b[1]), {"scores": op_strength(s.model, "reduce", 3, loader)}, s.step(*b[2])]
        graphs.append(compiled_graphs())
        return out, s.model.state_dict(), graphs

    graphs = _both(run)
    kinds = len({repr(m) for m in regions(_searcher("darts_pt", [], False)[0].model)})
    assert 0 < graphs[0] <= 2 * kinds  # one graph per kind of op, in training and masked evaluation
    assert graphs[1] == graphs[0]  # decisions and masks run the compiled ops


def test_msg_das_changing_sampled_paths_do_not_recompile():
    def run(compile):  # K = 8: the sub-graphs of a step run every op of every edge once
        s, _ = _searcher("msg_das", ["--K", "8"], compile)
        s.start_epoch(s.args.epochs - 1)  # DropBlock and guidance at their final values
        out, graphs = [], []
        for b in _batches(3):
            out.append(s.step(*b))
            graphs.append(compiled_graphs())
        return out, s.net.state_dict(), graphs

    graphs = _both(run)
    assert graphs[0] > 0 and graphs[2] == graphs[0]  # new paths every step, no new graph


def test_d_darts_ablation_runs():
    def run(compile):
        s, _ = _searcher("d_darts", [], compile)
        out, graphs = [], []
        for b in _batches(2):
            out.append(s.step(*b))
            graphs.append(compiled_graphs())
        return out, s.net.state_dict(), graphs

    graphs = _both(run)
    assert graphs[1] == graphs[0]
    # the differentiable L_AB back-propagates twice through the shared forward, which compiled
    # backwards donating their saved tensors refuse (inductor's; aot_eager does not donate)
    _searcher("d_darts", ["--ablation_loss", "differentiable"], True)
    assert torch._functorch.config.donated_buffer is False


def test_darts_pd_stage_1_fair_steps_and_fitness_over_changing_paths():
    def run(compile):  # 8 channels, K = 2: the partial channels' ops are those of the other tests (shared graphs)
        s, args = _searcher("darts_pd", ["--stage", "1", "--init_channels", "8", "--K", "2"], compile)
        s.start_epoch(args.epochs - 1)  # past --begin: alpha and beta train too
        out = [s.step(*b) for b in _batches(2)]
        fair, args = _searcher("darts_pd", ["--pruned", "random", "--subset", "16", "--fair_batch_size", "4",
                                            "--bn_batches", "2"], compile, cls="FairTrainer", steps_per_epoch=3)
        fair.start_epoch(1)  # drop-path on
        graphs = []
        for (batch, _) in _batches(3, seed=2):  # each group of paths runs every op of S' once
            out.append(fair.step(batch))
            graphs.append(compiled_graphs())
        search = importlib.import_module("darts_pd.train_search").PathSearch(args, 10, CPU, supernet=fair.net)
        for path in [*next(fair.groups), next(fair.groups)[0]]:  # stage 3: BN re-estimated per path, then its
            out.append({"fitness": search.fitness(path)})  # accuracy; a group's paths run every op of S'
            graphs.append(compiled_graphs())
        return out, {**s.net.state_dict(), **{f"fair.{k}": v for k, v in fair.net.state_dict().items()}}, graphs

    graphs = _both(run)
    assert graphs[2] == graphs[0] and graphs[5] == graphs[4]


def test_entrannas_transit_cells_follow_the_derived_sub_graph_without_recompiling():
    def run(compile):
        s, _ = _searcher("entrannas", ["--bottleneck", "1"], compile)
        s.start_epoch(0)
        model, b = s.model, _batches(4)
        out = [s.step(*b[0])]  # the one cell an Engine-cell: every op runs
        graphs, derived, model.engines = [compiled_graphs()], [], set()  # then a Transit-cell
        g = torch.Generator().manual_seed(3)
        for batch in b[1:]:
            with torch.no_grad():  # another derived sub-graph
                model.alpha_reduce.copy_(torch.randn(model.alpha_reduce.shape, generator=g))
            derived.append(str(model.genotype().reduce))
            out.append(s.step(*batch))
            graphs.append(compiled_graphs())
        assert len(set(derived)) == len(derived)
        return out, model.state_dict(), graphs

    graphs = _both(run)
    assert graphs[-1] == graphs[0]


def test_evaluation_network_epochs():
    genotype = load("DARTS_V2")
    args = train_eval.parse_args(["--arch", "DARTS_V2", "--layers", "1", "--init_channels", "4", "--auxiliary",
                                  "--drop_path_prob", "0.2", "--device", "cpu"])
    x, y = torch.randn(8, 3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.randint(0, 10, (8,))
    loader = DataLoader(TensorDataset(x, y), batch_size=4)

    def run(compile):
        torch.manual_seed(0)
        model = build_network(genotype, "cifar10", 4, 1, 10, auxiliary=True)
        if compile:
            compile_ops(model)
        opt = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9, weight_decay=3e-4)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        out, graphs = [], []
        for epoch in range(2):  # drop-path ramps up: no new graph
            model.drop_path_prob = 0.2 * (epoch + 1) / 2
            loss, top1 = train_eval.train_epoch(model, loader, opt, scaler, args, CPU)
            out.append({"loss": loss, "test": train_eval.evaluate(model, loader, CPU)[0]})
            graphs.append(compiled_graphs())
        return out, model.state_dict(), graphs

    graphs = _both(run)
    assert graphs[1] == graphs[0]


def test_channels_last_steps():
    def run(channels_last):
        s, _ = _searcher("darts_pt", ["--channels_last"] if channels_last else [], False)
        if channels_last:
            assert s.model.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
        return [s.step(*b) for b in _batches(2)], s.model.state_dict(), None

    _both(run)


def test_inductor_compiles_an_op_to_the_same_forward_and_backward():
    torch.manual_seed(0)
    op, x = ReLUConvBN(4, 4, 1, 1, 0, affine=False), torch.randn(2, 4, 4, 4, requires_grad=True)
    compiled = torch.compile(op, backend="inductor")
    outs = []
    for f in (op, compiled):
        x.grad = None
        op.zero_grad()
        op[2].reset_running_stats()
        y = f(x)
        (y * torch.arange(y.numel()).view_as(y).sin()).sum().backward()
        outs.append([y.detach(), x.grad.clone(), *[p.grad.clone() for p in op.parameters()], op[2].running_var.clone()])
    for a, b in zip(*outs):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_a_resumed_run_may_change_the_speed_flags(tmp_path):
    ts = importlib.import_module("darts_pt.train_search")
    args = ts.parse_args([*TINY, "--save", str(tmp_path), "--resume"])
    (tmp_path / "args.json").write_text(json.dumps({**vars(args), "compile": True, "channels_last": True}))
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    assert folder_problem(tmp_path, args) is None
    (tmp_path / "args.json").write_text(json.dumps({**vars(args), "layers": 2}))
    assert "--layers" in folder_problem(tmp_path, args)


# ---------------------------------------------------------------- --cuda_graph, on a CPU

class NoHostSync(torch.overrides.TorchFunctionMode):
    """Raises on what would synchronise a CUDA device with the host inside a recorded step."""
    SYNC = {"item", "tolist", "numpy", "cpu", "nonzero", "unique", "masked_select", "__bool__", "__int__",
            "__float__", "__index__"}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in self.SYNC:
            raise AssertionError(f"host synchronisation: {func.__name__}")
        return func(*args, **(kwargs or {}))


class ReplayedOnCPU(StepGraph):
    """StepGraph's bookkeeping with CUDA's recording emulated: recording runs nothing, a replay runs
    the step on the fixed input tensors."""

    def __init__(self, step):
        self.step, self.key, self.graph = step, None, None
        self.runs = []

    def warm_up(self, *tensors):
        self.runs.append("eager")
        return self.step(*tensors)

    def record(self):
        return "graph"

    def replay(self):
        self.runs.append("replay")
        return self.step(*self.inputs)


@pytest.mark.parametrize("module, flags", [
    ("darts_pt", []), ("darts_pt", ["--unrolled"]), ("darts_pt", ["--method", "sdarts-adv"]),
    ("darts_pt", ["--method", "sdarts-rs"]), ("darts_pt", ["--method", "blank"]),
    ("d_darts", []), ("d_darts", ["--ablation_loss", "differentiable"]), ("darts_pd", ["--stage", "1"]),
    ("entrannas", []), ("entrannas", ["--dst"]), ("msg_das", [])])
def test_recordable_steps_do_not_synchronise_with_the_host(module, flags, monkeypatch):
    ts = importlib.import_module(f"{module}.train_search")
    monkeypatch.setattr(ts, "fused", lambda device, capturable=False: {"fused": True})  # the optimizers of CUDA
    s, args = _searcher(module, ["--layers", "3", *flags], False)  # normal cells too
    s.start_epoch(args.epochs - 1)
    (x, y), (xv, yv) = _batches(1)[0]
    if module == "entrannas":  # two recordings, on the sub-graph derived before each
        s.derived = s.model.derived()
        steps = [lambda: s.arch_step(xv, yv), lambda: s.weight_step(x, y)]
    elif module == "msg_das":  # the guidance pass
        steps = [lambda: s.soft_labels(x)]
    else:
        steps = [lambda: s.iteration(*((xv, yv, x, y) if module == "d_darts" else (x, y, xv, yv)))]
    for step in steps:
        step()  # the first step creates the optimizers' state
        with NoHostSync():
            step()


def test_a_replayed_step_is_the_eager_step_once_per_batch():
    b = _batches(5)
    b[2] = tuple((x[:3], y[:3]) for x, y in b[2])  # a smaller batch: eagerly

    def run(replayed):
        s, _ = _searcher("darts_pt", [], False)
        if replayed:
            s.graph = ReplayedOnCPU(s.iteration)
        out = []
        for i, batch in enumerate(b):
            if i in (0, 3):
                s.start_epoch(i)  # new schedules: recorded again
            out.append(s.step(*batch))
        return out, s.model.state_dict(), s.graph and s.graph.runs

    runs = _both(run)  # the same steps, so every batch was stepped on once
    assert runs == ["eager", "replay", "eager", "replay"]  # batch 2 (smaller) ran eagerly in between


def test_compile_without_a_cpp_compiler_ends_with_one_line(monkeypatch, capsys):
    """torch.compile builds its kernels with a C++ compiler: without one, --compile says so before
    anything is compiled (not torch's traceback at the first step)."""
    from torch._inductor import cpp_builder, exc

    def missing():
        raise exc.InvalidCxxCompiler()
    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", missing)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    with pytest.raises(SystemExit) as e:
        compile_ops(net)
    assert e.value.code == 2 and "--compile needs a C++ compiler" in capsys.readouterr().err
