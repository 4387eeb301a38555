"""bench/search_cost.py: every configuration builds and runs; the command line writes the table and resumes."""
import json

import pytest

from bench import search_cost
from conftest import run


@pytest.mark.parametrize("name", [*search_cost.CONFIGS, *search_cost.EVAL])
def test_every_configuration_runs_a_step(name):
    opts = search_cost.parse_args(["--quick", "--device", "cpu", "--threads", "1"])
    r = search_cost.run_config(name, opts)  # in this process: the figures are not the point here
    assert r["name"] == name and r["time_s"] > 0 and r["peak_memory_MB"] >= 0


def test_command_line_writes_the_table_and_resumes(tmp_path):
    quick = ["-m", "bench.search_cost", "--quick", "--device", "cpu", "--threads", "1", "--out", tmp_path]
    run([*quick, "--only", "darts_pd stage 2"], timeout=300)
    (md,), (js,) = tmp_path.glob("*.md"), tmp_path.glob("*.json")
    first = json.loads(js.read_text())
    assert [r["name"] for r in first["results"]] == ["darts (reference)", "darts_pd stage 2"]
    assert {"cpu", "cores", "torch", "device"} <= set(first["machine"]) and "--quick" in first["command"]
    text = md.read_text()
    assert "| darts (reference) | first-order DARTS, 7 ops |" in text and " 1.00 | " in text
    assert text.count("\n| ") == 3  # header + one row per configuration

    run([*quick, "--only", "darts_pd stage 2,msg_das K=1 no", "--resume"], timeout=300)
    second = json.loads(js.read_text())["results"]
    assert [r["name"] for r in second] == ["darts (reference)", "msg_das K=1 no guidance", "darts_pd stage 2"]
    assert [second[0], second[2]] == first["results"]  # measured ones are kept, not measured again


def test_compiled_figures_join_an_old_table_on_resume(tmp_path, monkeypatch):
    """--compile --resume adds the compiled figures to the rows of a table measured before (eagerly,
    in the old format) and measures only what is missing; the table shows them beside eager."""
    calls = []

    def fake(ctx, fn, args):  # a measurement: 10 ms eager, 5 ms compiled
        name, opts, mode = args
        calls.append((name, mode))
        p = search_cost.PREFIX[mode]
        return {"name": name, "what": "w", **({"batch": opts.eval_batch} if name in search_cost.EVAL else {}),
                p + "time_s": 0.01 if mode == "eager" else 0.005, p + "peak_memory_MB": 8.0}

    monkeypatch.setattr(search_cost, "fresh", fake)
    old = {"machine": {}, "command": "old", "results": [
        {"name": "darts (reference)", "what": "first-order DARTS, 7 ops", "time_s": 0.02, "peak_memory_MB": 16.0}]}
    (tmp_path / "cpu-quick.json").write_text(json.dumps(old))
    argv = ["--quick", "--device", "cpu", "--out", str(tmp_path), "--only", "darts_pd stage 2,eval network", "--resume"]
    results = search_cost.main([*argv, "--compile"])
    assert calls == [("darts (reference)", "compiled"), ("darts_pd stage 2", "eager"),
                     ("darts_pd stage 2", "compiled"), ("eval network float32", "eager"),
                     ("eval network float32", "compiled")]  # AMP rows: CUDA only
    assert results[0]["time_s"] == 0.02 and results[0]["compiled_time_s"] == 0.005  # the old figure is kept
    text = (tmp_path / "cpu-quick.md").read_text()
    assert "| compiled ms / step | x eager |" in text
    assert "| darts (reference) | w | 20.0 | 1.00 | 16 | 1.00 | 5.0 | 0.25 | 8 |" in text
    assert "| eval network float32 | w | 8 | 800.0 | 8 | 1600.0 | 0.50 | 8 |" in text  # images / s
    calls.clear()
    search_cost.main([*argv, "--compile"])
    assert calls == []  # everything measured
