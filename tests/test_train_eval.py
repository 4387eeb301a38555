import json
import math
import subprocess
import sys
import time
from argparse import Namespace

import pytest
import torch

from common import train_eval
from common.data import make_loader
from common.utils import MetricsLog, init_distributed
from conftest import ENV, ROOT, SMALL, run, two_ranks

TINY = ["--arch", "DARTS_V2", *SMALL, "--subset", "64", "--batch_size", "16", "--layers", "3",
        "--init_channels", "4", "--deterministic"]


def test_get_device_gives_cuda_an_index(monkeypatch):
    """torch.cuda.set_device refuses a bare "cuda" (found on an H100): the device carries LOCAL_RANK."""
    from common import utils
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: chosen.append(d.index))
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert utils.get_device("cuda") == torch.device("cuda:3") and utils.get_device("auto").index == 3
    monkeypatch.delenv("LOCAL_RANK")
    assert utils.get_device("cuda:1").index == 1 and utils.get_device("cuda").index == 0
    assert chosen == [3, 3, 1, 0]


def test_lr_schedules():
    a = Namespace(warmup_epochs=0, epochs=10, learning_rate=0.1, learning_rate_min=0.001, decay_rate=0.97,
                  lr_scheduler="cosine")
    assert train_eval.lr_factor(0, a) == 1 and train_eval.lr_factor(10, a) == pytest.approx(0.01)
    assert train_eval.lr_factor(5, a) == pytest.approx(0.01 + 0.99 * 0.5)
    a.lr_scheduler = "step"
    assert train_eval.lr_factor(3, a) == pytest.approx(0.97 ** 3)
    a.lr_scheduler, a.warmup_epochs, a.linear_tail = "linear", 5, 0
    # epoch 10: the scheduler's step after the last epoch (a tail of 0 epochs is the straight line to 0)
    assert [train_eval.lr_factor(e, a) for e in (0, 4, 5, 9, 10)] == pytest.approx([0.2, 1.0, 0.5, 0.1, 0.0])


def test_linear_schedule_is_pc_darts_imagenet():
    """PC-DARTS' train_imagenet.py at E = 250, batch 1024: lr (e + 1) / 5 for 5 warm-up epochs, lr (245 - e) / 245
    until epoch 245, then lr (250 - e) / (5 * 245): the last epochs decay 5 times more slowly."""
    a = Namespace(warmup_epochs=5, epochs=250, lr_scheduler="linear", linear_tail=5)
    epochs = (0, 4, 5, 100, 244, 245, 246, 249)
    expected = (1 / 5, 5 / 5, 240 / 245, 145 / 245, 1 / 245, 5 / 1225, 4 / 1225, 1 / 1225)
    assert [train_eval.lr_factor(e, a) for e in epochs] == pytest.approx(expected)


class _Fixed(torch.nn.Module):
    """Returns the given logits and auxiliary logits whatever the input (plus a zero weight to train)."""

    def __init__(self, logits, aux):
        super().__init__()
        self.w, self.logits, self.aux = torch.nn.Parameter(torch.zeros(())), logits, aux

    def forward(self, x):
        return self.logits + self.w, self.aux + self.w


def _smoothed_ce(logits, y, eps):
    """By hand: -(1 - eps) log p_y - eps * mean_k log p_k, averaged over the batch."""
    total = 0.0
    for row, t in zip(logits.tolist(), y.tolist()):
        log_z = math.log(sum(math.exp(v) for v in row))
        log_p = [v - log_z for v in row]
        total += -(1 - eps) * log_p[t] - eps * sum(log_p) / len(row)
    return total / len(y)


def test_training_loss_is_smoothed_ce_plus_weighted_auxiliary():
    logits, aux = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]]), torch.tensor([[0.0, 1.0, 3.0], [1.0, 0.0, 0.0]])
    y = torch.tensor([0, 2])
    model = _Fixed(logits, aux)
    args = Namespace(amp=False, auxiliary_weight=0.4, label_smooth=0.1, grad_clip=5.0, report_freq=0)
    optimizer = torch.optim.SGD(model.parameters(), 0.0)
    loss, top1 = train_eval.train_epoch(model, [(torch.zeros(2, 3, 4, 4), y)], optimizer,
                                        torch.amp.GradScaler("cpu", enabled=False), args, torch.device("cpu"))
    assert loss == pytest.approx(_smoothed_ce(logits, y, 0.1) + 0.4 * _smoothed_ce(aux, y, 0.1), rel=1e-6)
    assert top1 == 50


def test_protocol_defaults_follow_dataset():
    a = train_eval.parse_args(["--arch", "DARTS_V2"])
    assert (a.epochs, a.batch_size, a.layers, a.init_channels, a.auxiliary, a.cutout, a.drop_path_prob) == \
        (600, 96, 20, 36, True, True, 0.2)
    b = train_eval.parse_args(["--arch", "DARTS_V2", "--dataset", "imagenet", "--no-auxiliary"])
    assert (b.epochs, b.layers, b.init_channels, b.label_smooth, b.lr_scheduler, b.auxiliary) == \
        (250, 14, 48, 0.1, "step", False)
    c = train_eval.parse_args(["--arch", "X", "--dataset", "imagenet"], imagenet=dict(batch_size=1024))
    assert c.batch_size == 1024 and c.weight_decay == 3e-5


def test_training_runs_and_writes_run_folder(tmp_path):
    save = tmp_path / "run"
    model = train_eval.main(TINY + ["--epochs", "2", "--save", str(save)])
    files = {p.name for p in save.iterdir()}
    assert {"log.txt", "args.json", "metrics.jsonl", "checkpoint.pt", "summary.json"} <= files
    m = MetricsLog.read(save / "metrics.jsonl")
    assert [r["epoch"] for r in m] == [0, 1]
    assert m[0]["drop_path_prob"] == 0 and m[1]["drop_path_prob"] == pytest.approx(0.1)  # ramped linearly
    assert m[1]["lr"] == pytest.approx(0.025 * (1 + math.cos(math.pi / 2)) / 2)
    summary = json.loads((save / "summary.json").read_text())
    assert summary["best_top1"] == max(r["test_top1"] for r in m) and summary["params_M"] > 0
    assert model.auxiliary_head is not None


class _Recorded(torch.utils.data.Dataset):
    """A dataset that notes every (split, augmented?, index) it serves."""

    def __init__(self, base, split, seen):
        self.base, self.split, self.seen = base, split, seen
        self.augmented = any(type(t).__name__ == "RandomCrop" for t in base.transform.transforms)

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        self.seen.append((self.split, self.augmented, i))
        return self.base[i]


def test_valid_size_holds_out_training_images_and_never_reads_the_test_set(tmp_path, monkeypatch):
    from common import data
    seen, get_dataset = [], data.get_dataset
    monkeypatch.setattr(data, "get_dataset", lambda args, train, transform: _Recorded(
        get_dataset(args, train, transform), "train" if train else "test", seen))
    save = tmp_path / "run"
    model = train_eval.main(TINY + ["--epochs", "1", "--valid_size", "24", "--save", str(save)])
    held = set(data.held_out_split(64, 24)[1])
    assert len(held) == 24 and held != set(range(40, 64))  # a fixed random draw, not the tail (sorted ImageNet)
    trained = {i for split, aug, i in seen if split == "train" and aug}
    validated = [i for split, aug, i in seen if split == "train" and not aug]
    assert trained == set(range(64)) - held and sorted(validated) == sorted(held)  # each held-out image once
    assert sorted(i for split, _, i in seen if split == "test") == list(range(2000))  # the test set, once, as today
    record, summary = MetricsLog.read(save / "metrics.jsonl")[0], json.loads((save / "summary.json").read_text())
    assert summary["valid_size"] == 24 and summary["final_valid_top1"] == summary["best_valid_top1"] == \
        record["valid_top1"]
    # the number is the accuracy on the held-out images (and on nothing else)
    args = train_eval.parse_args(TINY)
    assert train_eval.evaluate(model, data.valid_loader(args, 24), torch.device("cpu"))[1] == \
        pytest.approx(record["valid_top1"])


@pytest.mark.parametrize("flags, message", [(["--valid_size", "-1"], "--valid_size -1"),
                                             (["--valid_size", "64"], "has 64 images"),
                                             (["--lr_scheduler", "linear", "--linear_tail", "3"], "--linear_tail 3")])
def test_bad_valid_size_or_tail_is_one_line(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as e:
        train_eval.main(TINY + ["--epochs", "3", *flags, "--save", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert e.value.code != 0 and err.startswith("error:") and message in err and err.count("\n") == 1
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def _state(save):
    return torch.load(save / "checkpoint.pt", weights_only=True)["model"]


def test_resume_after_kill_is_exact(tmp_path):
    args = TINY + ["--epochs", "3"]
    full = tmp_path / "full"
    run(["-m", "common.train_eval", *args, "--save", full])
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "common.train_eval", *args, "--save", str(killed)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=ENV)
    metrics = killed / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.exists() and metrics.read_text().count("\n") >= 1) and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert MetricsLog.read(metrics) and len(MetricsLog.read(metrics)) < 3, "the run was not interrupted"
    run(["-m", "common.train_eval", *args, "--save", killed, "--resume"])
    a, b = _state(full), _state(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert MetricsLog.read(full / "metrics.jsonl") == MetricsLog.read(metrics)


def test_torchrun_two_ranks_stay_in_sync(tmp_path):
    save = tmp_path / "run"
    run(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
         ROOT / "tests" / "_ddp_train.py", tmp_path, *TINY, "--epochs", "1", "--save", save])
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert all(torch.equal(r0[k], r1[k]) for k in r0 if "running" not in k and "num_batches" not in k)
    assert (save / "summary.json").exists() and json.loads((save / "summary.json").read_text())["world_size"] == 2
    assert not (tmp_path / "rank1-run").exists()  # only rank 0 writes


def test_broken_genotype_file_is_one_clear_line(tmp_path, capsys):
    bad = tmp_path / "genotype.json"
    bad.write_text('{"normal": {"nodes": [[["sep_conv_3x3", 0], ["sep_conv_3x3", 5]]], "concat": [2]}, '
                   '"reduce": {"nodes": [[["max_pool_3x3", 0], ["max_pool_3x3", 1]]], "concat": [2]}}')
    for arch in (bad, tmp_path / "missing.json"):  # in-process: die() is how every bad input ends
        with pytest.raises(SystemExit) as e:
            train_eval.main(["--arch", str(arch), *SMALL, "--save", str(tmp_path / "r")])
        err = capsys.readouterr().err
        assert e.value.code != 0 and err.startswith("error:") and err.count("\n") == 1


def test_under_torchrun_every_rank_evaluates_rank_0s_network(tmp_path):
    """A search's super-net is not wrapped in DDP, so its BN running statistics drift apart on ranks
    that see other batches: evaluate() scores every rank's share of the images with rank 0's (those
    its checkpoint keeps), and the shares add up to what one process measures of rank 0's network."""
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(16, 3, 8, 8, generator=g), torch.randint(4, (16,), generator=g)

    def net(rank):
        torch.manual_seed(0)
        m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 4))
        m[1].running_mean.fill_(0.5 * rank)  # what another rank's batches left
        m[1].running_var.fill_(1.0 + 3 * rank)
        return m

    def loader():
        return make_loader(torch.utils.data.TensorDataset(images, labels), 4, train=False, workers=0)

    def rank_fn(rank):
        init_distributed("cpu")
        torch.save(train_eval.evaluate(net(rank), loader(), torch.device("cpu")), tmp_path / f"rank{rank}.pt")

    assert two_ranks(rank_fn) == [0, 0]
    alone = train_eval.evaluate(net(0), loader(), torch.device("cpu"))
    assert train_eval.evaluate(net(1), loader(), torch.device("cpu"))[0] != pytest.approx(alone[0])  # rank 1's differs
    for rank in (0, 1):
        assert torch.load(tmp_path / f"rank{rank}.pt") == pytest.approx(alone, rel=1e-6)
