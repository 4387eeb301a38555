"""bench/search_cost.py: every configuration builds and runs; the command line writes the table and resumes."""
import json

import pytest

from bench import search_cost
from conftest import run


@pytest.mark.parametrize("name", list(search_cost.CONFIGS))
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
