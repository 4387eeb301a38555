"""A stand-in stage for the engine tests, as fast as a process can be: it appends one JSON line per
start and end to --record (name, time, attempt, CUDA_VISIBLE_DEVICES, torchrun's WORLD_SIZE),
fails its first --fail attempts (counted in SAVE/attempts), sleeps --sleep seconds, or --steps
steps of --sleep seconds each, one line per step in SAVE/steps.jsonl (with --resume it continues
after the last one there, as a real stage continues from its checkpoint), and writes
SAVE/summary.json last, as a real stage does. Under torchrun only rank 0 records and writes."""
import argparse
import json
import os
import sys
import time
from pathlib import Path

p = argparse.ArgumentParser()
p.add_argument("--save", required=True)
p.add_argument("--resume", action="store_true")
p.add_argument("--record", required=True)
p.add_argument("--sleep", type=float, default=0.0)
p.add_argument("--fail", type=int, default=0, help="attempts that fail before one succeeds (-1: every one)")
p.add_argument("--exit_code", type=int, default=3, help="of a failing attempt")
p.add_argument("--steps", type=int, default=0)
p.add_argument("--forget", action="store_true", help="exit 0 without writing summary.json")
p.add_argument("--needs", nargs="*", default=[], help="files that must exist (the outputs of its dependencies)")
a = p.parse_args()
save = Path(a.save)
if os.environ.get("RANK", "0") != "0":
    time.sleep(a.sleep)
    sys.exit(0)
save.mkdir(parents=True, exist_ok=True)
counter = save / "attempts"
attempt = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(attempt))


def record(event):
    with open(a.record, "a") as f:
        f.write(json.dumps({"name": save.name, "event": event, "t": time.time(), "attempt": attempt,
                            "resume": a.resume, "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
                            "world": int(os.environ.get("WORLD_SIZE", 1)),
                            "threads": os.environ.get("OMP_NUM_THREADS")}) + "\n")


record("start")
missing = [n for n in a.needs if not Path(n).exists()]
steps = save / "steps.jsonl"
done = len(steps.read_text().splitlines()) if a.resume and steps.exists() else 0
for step in range(done, a.steps):
    time.sleep(a.sleep)
    with open(steps, "a") as f:
        f.write(json.dumps({"step": step, "attempt": attempt}) + "\n")
if not a.steps:
    time.sleep(a.sleep)
if missing or a.fail < 0 or attempt <= a.fail:
    record("fail")
    print(f"stand-in stage failing (attempt {attempt}; missing {missing})")
    sys.exit(a.exit_code)
if not a.forget:
    (save / "summary.json").write_text(json.dumps({"attempt": attempt}))
record("end")
