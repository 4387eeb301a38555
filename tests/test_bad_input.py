"""Careless and hostile input (issue 17), tried as a user would: every command of the table ends
with one line that says what is wrong and what to do (`error: ...` on stderr), exit status 2, no
traceback, and leaves every finished run folder as it was; refused commands do not create their
run folder. The commands run in forks of one process that has imported torch and the project
(tests/_forkrun.py), so that a row costs its own work, not Python's start-up."""
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from common import data, genotypes, train_eval
from common.network import NetworkCIFAR, NetworkImageNet, build_network
from common.utils import MetricsLog
from conftest import ENV, ROOT

TINY = ["--dataset", "synthetic", "--image_size", "8", "--workers", "0", "--device", "cpu", "--subset", "32",
        "--batch_size", "16", "--layers", "3", "--init_channels", "4", "--epochs", "1"]
SEARCH = ["msg_das/train_search.py", *TINY]
EVAL = ["-m", "common.train_eval", "--arch", "DARTS_V2", *TINY]
SCRIPTS = {"msg_das": "msg_das/train_search.py", "entrannas": "entrannas/train_search.py",
           "darts_pt": "darts_pt/train_search.py", "darts_pd": "darts_pd/train_search.py",
           "d_darts": "d_darts/train_search.py"}


class Commands:
    """The fork server of tests/_forkrun.py: `run(argv)` -> (exit status, stdout, stderr, files written)."""

    def __init__(self, out):
        self.out, self.n = out, 0
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "_forkrun.py")], cwd=ROOT, env=ENV,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def run(self, argv, timeout=300):
        self.n += 1
        out = self.out / f"cmd{self.n}"
        self.proc.stdin.write(json.dumps({"argv": list(map(str, argv)), "out": str(out), "timeout": timeout}) + "\n")
        self.proc.stdin.flush()
        rc = json.loads(self.proc.stdout.readline())["rc"]
        return rc, (out / "stdout").read_text(), (out / "stderr").read_text(), (out / "writes").read_text().split()

    def ok(self, argv):
        rc, stdout, stderr, writes = self.run(argv)
        assert rc == 0, f"{argv} failed ({rc}):\n{stdout[-2000:]}\n{stderr[-2000:]}"
        return writes

    def refused(self, argv, message):
        """The command ends with `error: ...message...` alone on stderr, exit status 2."""
        rc, stdout, stderr, _ = self.run(argv)
        assert "Traceback" not in stderr, stderr
        assert rc == 2 and stderr.startswith("error: ") and stderr.count("\n") == 1, (rc, stderr)
        assert message in stderr, stderr
        return stderr


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    commands = Commands(tmp_path_factory.mktemp("commands"))
    yield commands
    commands.proc.kill()  # nothing to finish: every command has answered
    commands.proc.wait()


def _images(root, classes, n=4, size=8, val=None):
    """root/train/<class>/<i>.png (and val/ with the classes `val`, default the same)."""
    for split, names in (("train", classes), ("val", classes if val is None else val)):
        for c in names:
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (size, size), (40 * i, 100, 200)).save(root / split / c / f"{i}.png")
    return root


def _cell(nodes, concat=(2,)):
    return {"nodes": nodes, "concat": list(concat)}


OK_CELL = _cell([[["sep_conv_3x3", 0], ["sep_conv_3x3", 1]]])
GENOTYPES = {  # the broken genotype files of the table: name -> JSON
    "input_5": {"normal": _cell([[["sep_conv_3x3", 0], ["sep_conv_3x3", 5]]]), "reduce": OK_CELL},
    "nb201_number": {"nb201": 5},
    "reductions_mixed": {"cells": [OK_CELL, OK_CELL, OK_CELL], "reductions": ["a", 1]},
    "fractional_input": {"normal": _cell([[["sep_conv_3x3", 0], ["sep_conv_3x3", 1.9]]]), "reduce": OK_CELL},
}
DARTS_TEXT = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)], normal_concat={}, "
              "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1)], reduce_concat=[2])")


@pytest.fixture(scope="module")
def world(cli, tmp_path_factory):
    """Finished runs (a search, an evaluation) and the bad inputs the table points at."""
    w = tmp_path_factory.mktemp("world")
    cli.ok([*SEARCH, "--save", w / "search"])
    writes = cli.ok([*EVAL, "--save", w / "eval"])
    assert _last_output(writes, w / "eval") == "summary.json"
    (w / "file").write_text("a file, not a folder\n")
    for name, d in GENOTYPES.items():
        (w / f"{name}.json").write_text(json.dumps(d))
    stale = w / "stale_search"  # a darts_pt search that failed before its first epoch
    stale.mkdir()
    from darts_pt.train_search import parse_args
    (stale / "args.json").write_text(json.dumps(vars(parse_args([*TINY, "--save", str(stale)]))))
    (w / "images" / "empty" / "train").mkdir(parents=True)
    _images(w / "images" / "empty_class", ["a"])
    (w / "images" / "empty_class" / "train" / "b").mkdir()
    _images(w / "images" / "one_class", ["a"])
    _images(w / "images" / "val_differs", ["a", "b"], val=["a", "c"])
    return w


def _snapshot(folder, skip=()):
    return {p.relative_to(folder): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(Path(folder).rglob("*"))
            if p.is_file() and p.name not in skip}


def _last_output(writes, folder):
    """The name of the last file written into `folder` (the log and the lock aside)."""
    names = [Path(p).name for p in writes if Path(p).parent == Path(folder)]
    return [n for n in names if n not in ("log.txt", ".lock") and not n.endswith(".tmp")][-1]


def _unfinished(w, tmp):
    """A copy of the finished search without its done-marker: an unfinished run (killed after its last epoch)."""
    run = tmp / "unfinished"
    shutil.copytree(w / "search", run)
    (run / "summary.json").unlink()
    return run


def _no_args_json(w, tmp):
    run = _unfinished(w, tmp)
    (run / "args.json").unlink()
    return run


def _truncated(w, tmp):
    run = _unfinished(w, tmp)
    with (run / "checkpoint.pt").open("r+b") as f:
        f.truncate(4000)
    return run


def _locked(w, tmp):
    """A folder whose lock another process holds (here: this one, as a running search would)."""
    run = tmp / "busy"
    run.mkdir()
    fd = os.open(run / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"pid 1234 on host: msg_das/train_search.py\n")
    return run


# (id, command: function of (world, tmp, new run folder) -> argv, what the one line must say).
# `new` is a folder that must not exist afterwards; `tmp` holds copies a row may prepare.
TABLE = [
    # Finished results
    ("rerun a finished folder", lambda w, t, new: [*SEARCH, "--save", w / "search"], "holds a finished run"),
    ("broken genotype on a finished folder",
     lambda w, t, new: [*EVAL, "--arch", w / "input_5.json", "--save", w / "eval"], "holds a finished run"),
    ("broken genotype with --overwrite, checked before the folder is emptied",
     lambda w, t, new: [*EVAL, "--arch", w / "input_5.json", "--save", w / "eval", "--overwrite"],
     "node 2 takes input 5"),
    ("--resume --epochs 6 on a finished run", lambda w, t, new: [*SEARCH, "--save", w / "search", "--resume",
                                                                 "--epochs", "6"], "there is nothing to resume"),
    ("--resume --epochs 6 on an unfinished run",
     lambda w, t, new: [*SEARCH, "--save", _unfinished(w, t), "--resume", "--epochs", "6"], "--epochs 1 (not 6)"),
    ("an unfinished folder without --resume", lambda w, t, new: [*SEARCH, "--save", _unfinished(w, t)],
     "add --resume to continue it"),
    ("--resume and --overwrite", lambda w, t, new: [*SEARCH, "--save", new, "--resume", "--overwrite"],
     "give one of them"),
    ("projection.py on a search that never finished (stale args.json)",
     lambda w, t, new: ["darts_pt/projection.py", "--search_dir", w / "stale_search", "--save", new],
     "is not finished"),
    ("a second writer on a folder in use", lambda w, t, new: [*SEARCH, "--save", _locked(w, t)],
     "is in use by another process (pid 1234"),
    # Values that must be refused
    ("--epochs 0", lambda w, t, new: [*SEARCH, "--epochs", "0", "--save", new], "--epochs 0: it must be at least 1"),
    ("--epochs -3 (evaluation)", lambda w, t, new: [*EVAL, "--epochs", "-3", "--save", new], "--epochs -3"),
    *[(f"--layers 2 ({m})", lambda w, t, new, m=m: [SCRIPTS[m], *TINY, "--layers", "2", "--save", new],
       "--layers 2: it must be at least 3") for m in ("msg_das", "darts_pt", "darts_pd")],
    ("--batch_size 0", lambda w, t, new: [SCRIPTS["d_darts"], *TINY, "--batch_size", "0", "--save", new],
     "--batch_size 0"),
    ("--subset 0", lambda w, t, new: [SCRIPTS["entrannas"], *TINY, "--subset", "0", "--save", new], "--subset 0"),
    ("--subset -5", lambda w, t, new: [SCRIPTS["darts_pt"], *TINY, "--subset", "-5", "--save", new], "--subset -5"),
    ("--train_portion 0", lambda w, t, new: [*SEARCH, "--train_portion", "0", "--save", new], "--train_portion 0"),
    ("--train_portion 1", lambda w, t, new: [SCRIPTS["d_darts"], *TINY, "--train_portion", "1", "--save", new],
     "--train_portion 1"),
    ("--image_size 2", lambda w, t, new: [*SEARCH, "--image_size", "2", "--save", new], "multiple of 4"),
    ("--image_size 30 (evaluation)", lambda w, t, new: [*EVAL, "--image_size", "30", "--save", new],
     "try --image_size 32"),
    ("--seed -1", lambda w, t, new: [SCRIPTS["d_darts"], *TINY, "--seed", "-1", "--save", new], "--seed -1"),
    ("--save pointing at a file", lambda w, t, new: [*SEARCH, "--save", w / "file"], "is a file"),
    ("--learning_rate inf", lambda w, t, new: [*EVAL, "--learning_rate", "inf", "--save", new],
     "--learning_rate inf"),
    *[(f"--cuda_graph on a CPU ({m})", lambda w, t, new, m=m: [SCRIPTS[m], *TINY, "--cuda_graph", "--save", new],
       "--cuda_graph records the search's steps as CUDA graphs: it needs --device cuda")
      for m in ("entrannas", "darts_pt", "darts_pd", "d_darts", "msg_das")],
    # Genotypes
    *[(f"genotype JSON: {name}", lambda w, t, new, name=name: [*EVAL, "--arch", w / f"{name}.json", "--save", new],
       message) for name, message in (("nb201_number", "not a NAS-Bench-201 string: 5"),
                                      ("reductions_mixed", "'reductions' must be a list of layer indices"),
                                      ("fractional_input", "takes input 1.9; it must be a whole number"))],
    *[(f"DARTS text: normal_concat={concat}", lambda w, t, new, concat=concat:
       [*EVAL, "--arch", DARTS_TEXT.format(concat), "--save", new], message)
      for concat, message in (("['x']", "a concat index must be a whole number"),
                              ("range('a')", "range bound must be a whole number"),
                              ("range(2, 20000000)", "concat range(2, 20000000) must lie within"))],
    # Checkpoints
    ("a checkpoint of another method (--resume)",
     lambda w, t, new: [SCRIPTS["entrannas"], *TINY, "--save", _unfinished(w, t), "--resume"],
     "was made by another script"),
    ("a checkpoint of another size (--resume)",
     lambda w, t, new: [*SEARCH, "--layers", "4", "--save", _unfinished(w, t), "--resume"], "--layers 3 (not 4)"),
    ("a checkpoint of another size, no args.json",
     lambda w, t, new: [*SEARCH, "--init_channels", "8", "--save", _no_args_json(w, t), "--resume"],
     "does not fit this run (Error(s) in loading state_dict"),
    ("a truncated checkpoint", lambda w, t, new: [*SEARCH, "--save", _truncated(w, t), "--resume"],
     "cannot be read"),
    ("projection.py on another method's run",
     lambda w, t, new: ["darts_pt/projection.py", "--search_dir", w / "search", "--save", new],
     "was made by another script"),
    # Image folders
    *[(f"image folder: {case}", lambda w, t, new, case=case:
       [*EVAL, "--dataset", "imagefolder", "--data", w / "images" / case, "--image_size", "8", "--save", new], message)
      for case, message in (("empty", "holds 0 class folders"), ("empty_class", "the class folders b hold no images"),
                            ("one_class", "a classifier needs at least two"),
                            ("val_differs", "only in val: c; only in train: b"))],
    ("--pipeline with CIFAR-10", lambda w, t, new: [*EVAL, "--dataset", "cifar10", "--pipeline", "imagenet",
                                                    "--save", new], "only --dataset imagefolder has a choice"),
]


@pytest.mark.parametrize("make, message", [pytest.param(m, msg, id=i) for i, m, msg in TABLE])
def test_refused_with_one_line_and_nothing_touched(cli, world, tmp_path, make, message):
    before = _snapshot(world)
    new = tmp_path / "new"
    argv = make(world, tmp_path, new)
    copies = {p: _snapshot(p, skip=("log.txt", ".lock")) for p in tmp_path.iterdir()}
    stderr = cli.refused(argv, message)
    assert len(stderr) < 500  # bounded: range(2, 20000000) once printed 189 MB
    assert not new.exists() and _snapshot(world) == before
    assert {p: _snapshot(p, skip=("log.txt", ".lock")) for p in copies} == copies


def test_a_driver_can_tell_running_finished_unfinished_and_new_folders(cli, world, tmp_path):
    run = _locked(world, tmp_path)
    assert subprocess.run(["flock", "-n", run / ".lock", "true"]).returncode == 1  # what a shell driver can ask
    for folder, word in ((run, "running"), (world / "search", "finished"), (_unfinished(world, tmp_path), "unfinished"),
                         (tmp_path / "none", "new")):
        rc, stdout, _, _ = cli.run(["-m", "common.utils", "state", folder])
        assert rc == 0 and stdout == word + "\n", (folder, stdout)


# ---------------------------------------------------------------- the rows that need a real run

@pytest.mark.parametrize("argv", [pytest.param([SCRIPTS[m]], id=m) for m in SCRIPTS] +
                         [pytest.param(["-m", "common.train_eval", "--arch", "DARTS_V2"], id="train_eval")])
def test_a_diverging_loss_stops_the_run_and_writes_no_result(cli, tmp_path, argv):
    """--learning_rate 1e9: the loss is NaN within a few steps (2 per epoch here). The run stops with
    one line, the last good checkpoint (if an epoch finished) holds finite numbers, and no genotype
    or summary is written."""
    save = tmp_path / "run"
    cli.refused([*argv, *TINY, "--subset", "32", "--batch_size", "8", "--epochs", "3", "--learning_rate", "1e9",
                 "--save", save], "the run diverged")
    files = {p.name for p in save.rglob("*")}
    assert not files & {"genotype.json", "summary.json", "pruned.json", "supernet.pt"}, files
    for ckpt in save.rglob("checkpoint.pt"):
        state = torch.load(ckpt, weights_only=True)
        tensors = [t for t in _tensors(state) if t.is_floating_point()]
        assert tensors and all(torch.isfinite(t).all() for t in tensors)


def _tensors(x):
    if torch.is_tensor(x):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _tensors(v)
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _tensors(v)


def test_a_corrupt_image_is_named_in_one_line(cli, tmp_path):
    """Found mid-epoch by a DataLoader worker process: the message still comes out as one line."""
    root = _images(tmp_path / "images", ["a", "b"])
    (root / "train" / "b" / "zz.png").write_bytes(b"not an image")
    save = tmp_path / "run"
    cli.refused([*EVAL, "--dataset", "imagefolder", "--data", root, "--workers", "1", "--batch_size", "4",
                 "--save", save], f"{root / 'train' / 'b' / 'zz.png'} is not a readable image")
    assert not (save / "summary.json").exists()


def test_every_stage_writes_its_done_marker_last(cli, tmp_path):
    """D-DARTS' parsed genotypes, DARTS-PD's S' (stage 1) and best genotypes (stage 3) come before
    the summary.json that marks their folder finished; RUN/summary.json ends DARTS-PD's run."""
    save = tmp_path / "d_darts"
    writes = cli.ok([SCRIPTS["d_darts"], *TINY, "--save", save])
    assert _last_output(writes, save) == "summary.json"
    assert {"genotype_sparse.json", "genotype_edge.json"} <= {p.name for p in save.iterdir()}
    save = tmp_path / "darts_pd"
    writes = cli.ok([SCRIPTS["darts_pd"], *TINY, "--population", "2", "--parents", "1", "--mutations", "1",
                     "--crossovers", "1", "--bn_batches", "1", "--eval_layers", "3", "--eval_init_channels", "4",
                     "--fair_epochs", "1", "--no-whole_passes", "--generations", "1", "--save", save])
    assert [_last_output(writes, f) for f in (save / "stage1", save / "stage2", save / "stage3", save)] == \
        ["summary.json"] * 4
    order = [Path(p) for p in writes]  # stage 3's results sit in RUN, and come before its done-marker
    assert order.index(save / "stage3" / "summary.json") > max(order.index(save / f) for f in ("genotype.json",
                                                                                             "buckets.json"))
    assert (save / "stage1" / "pruned.json").exists() and (save / "genotype.json").exists()


def test_a_cut_last_line_of_metrics_and_a_stale_args_json_do_not_block_resume(cli, world, tmp_path):
    run = _unfinished(world, tmp_path)  # killed after its last epoch, before its outputs
    metrics = MetricsLog.read(run / "metrics.jsonl")
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"epoch": 1, "train_lo')  # power loss in the middle of a line
    cli.ok([*SEARCH, "--save", run, "--resume"])
    assert MetricsLog.read(run / "metrics.jsonl") == metrics and (run / "summary.json").exists()
    assert (run / "metrics.jsonl").read_text().endswith("}\n")
    stale = tmp_path / "stale"  # a first attempt that failed before its first checkpoint, with other flags
    stale.mkdir()
    (stale / "args.json").write_text(json.dumps({**json.loads((world / "search" / "args.json").read_text()),
                                                 "epochs": 9, "save": str(stale)}))
    cli.ok([*SEARCH, "--save", stale, "--resume"])
    assert json.loads((stale / "args.json").read_text())["epochs"] == 1  # the flags of the run that was made


# ---------------------------------------------------------------- one pipeline per image folder

def _folder_args(root, *flags):
    return train_eval.parse_args(["--arch", "DARTS_V2", "--dataset", "imagefolder", "--data", str(root),
                                  "--workers", "0", "--batch_size", "4", *flags])


def test_an_image_folder_gets_one_pipeline_chosen_from_its_image_size(tmp_path):
    small = _images(tmp_path / "small", ["a", "b", "c"], n=6, size=32)
    large = _images(tmp_path / "large", ["a", "b"], n=2, size=160)
    a = _folder_args(small)
    assert data.pipeline(a) == "cifar" and data.image_size(a) == 32
    assert (a.epochs, a.layers, a.init_channels, a.cutout, a.lr_scheduler) == (600, 20, 36, True, "cosine")
    a.train_portion, a.imagenet_fractions, a.seed = 0.5, (0.1, 0.025), 0
    train, valid, n = data.search_loaders(a)  # DARTS' split: half and half, every class in both halves
    assert n == 3 and len(train.dataset) == len(valid.dataset) == 9
    labels = [[train.dataset.dataset.targets[i] for i in part.dataset.indices] for part in (train, valid)]
    assert all(set(l) == {0, 1, 2} for l in labels)
    names = [type(t).__name__ for t in train.dataset.dataset.transform.transforms]
    assert "RandomCrop" in names and "RandomResizedCrop" not in names and "ColorJitter" not in names
    g = genotypes.load("DARTS_V2")
    assert isinstance(build_network(g, data.pipeline(a), 4, 3, n), NetworkCIFAR)
    b = _folder_args(large)
    assert data.pipeline(b) == "imagenet" and data.image_size(b) == 224
    assert (b.epochs, b.layers, b.init_channels, b.lr_scheduler) == (250, 14, 48, "step")
    assert isinstance(build_network(g, data.pipeline(b), 8, 3, 2), NetworkImageNet)
    c = _folder_args(small, "--pipeline", "imagenet")  # the override
    assert data.pipeline(c) == "imagenet" and c.layers == 14
    from entrannas.train_search import parse_args as entrannas_args  # the searches ask the same function
    assert entrannas_args(["--dataset", "imagefolder", "--data", str(small)]).batch_size == 512
    assert entrannas_args(["--dataset", "imagefolder", "--data", str(large)]).batch_size == 1024


def test_metrics_log_reading(tmp_path):
    """A cut last line is dropped (its checkpoint was never written); a damaged line before it is an error."""
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 0}\n{"epoch": 1}\n{"epo')
    assert MetricsLog.read(path) == [{"epoch": 0}, {"epoch": 1}]
    path.write_text('{"epoch": 0}\n{"epo\n{"epoch": 2}\n')
    with pytest.raises(ValueError, match="line 2"):
        MetricsLog.read(path)


def test_every_rule_of_the_common_checks_names_a_flag():
    from common.utils import FLAG_RULES
    names = set(vars(train_eval.get_parser().parse_args(["--arch", "x"])))
    for script in SCRIPTS.values():
        module = __import__(script[:-3].replace("/", "."), fromlist=["get_parser"])
        names |= set(vars(module.get_parser().parse_args([])))
    assert set(FLAG_RULES) <= names, set(FLAG_RULES) - names
