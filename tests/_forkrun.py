"""Run commands as a user types them, without paying Python's and torch's start-up for each.

This process imports torch and the project once, then runs every command it is given in a fork
of itself: a new process whose `sys.argv`, `__main__`, standard output and error, exit status and
uncaught exceptions are those of `python SCRIPT ARGS...` (or `python -m MODULE ARGS...`). The
parent never runs project code, so every fork starts from the same clean state.

Protocol: one JSON object per line on stdin, {"argv": [...], "out": DIR, "timeout": seconds};
one per line on stdout, {"rc": exit status}. The command's output lands in DIR/stdout and
DIR/stderr, and DIR/writes lists, in order, the files it opened for writing or renamed into place.
"""
import importlib
import json
import os
import runpy
import sys
import time
import traceback
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
torch.set_num_threads(1)
for name in ("common.train_eval", "common.search", "msg_das.train_search", "entrannas.train_search",
             "darts_pt.train_search", "darts_pt.projection", "darts_pd.train_search", "d_darts.train_search",
             "d_darts.train"):
    importlib.import_module(name)
# runpy's warning that a preloaded module is run as __main__ is an artefact of this preloading
warnings.filterwarnings("ignore", category=RuntimeWarning, module="runpy")


def child(argv, out):
    for fd, name in ((1, "stdout"), (2, "stderr")):
        os.dup2(os.open(out / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    writes = []

    def audit(event, args):
        if event == "open" and isinstance(args[1], str) and set(args[1]) & set("wxa+"):
            writes.append(str(args[0]))
        elif event == "os.rename":
            writes.append(str(args[1]))
    sys.addaudithook(audit)
    try:
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(argv)
            runpy.run_path(argv[0], run_name="__main__")
        rc = 0
    except SystemExit as e:  # as the interpreter does with an uncaught SystemExit
        rc = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
        if not isinstance(e.code, (int, type(None))):
            print(e.code, file=sys.stderr)
    except BaseException:  # as the interpreter does with any other uncaught exception
        traceback.print_exc()
        rc = 1
    sys.stdout.flush()
    sys.stderr.flush()
    (out / "writes").write_text("".join(w + "\n" for w in writes))
    os._exit(rc)


def main():
    for line in sys.stdin:
        job = json.loads(line)
        out = Path(job["out"])
        out.mkdir(parents=True, exist_ok=True)
        pid = os.fork()
        if pid == 0:
            child(job["argv"], out)
        deadline = time.time() + job.get("timeout", 300)
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                rc = os.waitstatus_to_exitcode(status)
                break
            if time.time() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                rc = -9
                break
            time.sleep(0.01)
        print(json.dumps({"rc": rc}), flush=True)


if __name__ == "__main__":
    main()
