"""Stages forked from a warm interpreter: the CPU stages of `run_all.sh --jobs N` (the smoke plan,
the demo) without paying Python's start and the import of torch and torchvision in every stage.

A fresh `python script.py` spends about 3-4 s importing torch and torchvision (torchvision's ops
import torch._dynamo) before the first line of the script runs, more than a whole smoke stage's
work. `preload()` imports them once in the driver; `Forked` forks it for each stage and runs the
stage's command in the child as `python` would (`runpy`: `__main__`, sys.argv, sys.path[0] the
script's folder or, with -m, the working directory), in a session of its own, with its own
environment, working directory and output, and only the descriptors it is given: the stage's
lock stays held by the child alone, as with subprocess.Popen(pass_fds=...).

Only for CPU stages: the driver has imported torch but never run an op or touched CUDA, so the
child starts as a fresh process would (its OpenMP threads are created on first use, with the
OMP_NUM_THREADS of its own environment). GPU stages and torchrun start cold (subprocess.Popen).
"""
import atexit
import gc
import importlib
import os
import runpy
import signal
import subprocess
import sys
import time
import traceback
import weakref

PRELOAD = ("numpy", "torch", "torchvision", "common.data", "common.utils")  # what every stage imports first


def runs(cmd):
    """Whether `Forked` runs this command: python with a script, -m module or -c code (no other option)."""
    return len(cmd) > 1 and cmd[0] == sys.executable and (not cmd[1].startswith("-") or cmd[1] in ("-m", "-c"))


def preload():
    """Import what every stage imports, once, in this (the driver's) process."""
    for name in PRELOAD:
        importlib.import_module(name)


class Forked:
    """A stage's process forked from this one: `cmd` ([python, script | -m module | -c code, args...]) run
    in `cwd` with `env`, stdout and stderr into the descriptor `output`, holding `keep` (a lock's
    descriptor). The part of subprocess.Popen the engine uses: pid, returncode, poll(), wait()."""

    def __init__(self, cmd, cwd, env, output, keep=None):
        sys.stdout.flush()
        sys.stderr.flush()
        self.args, self.returncode = cmd, None
        self.pid = os.fork()
        if self.pid == 0:
            os._exit(_child(cmd, cwd, env, output, keep))

    def poll(self):
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)  # -N when killed by signal N, as Popen
        return self.returncode

    def wait(self, timeout=None):
        end = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if end is not None and time.monotonic() > end:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(0.02)
        return self.returncode


def _child(cmd, cwd, env, output, keep):
    """In the forked child: become the process `python cmd[1:]` would be, run it, return its exit code."""
    try:
        os.setsid()  # a process group of its own: stop() signals the stage, not the driver
        for f in list(weakref.finalize._registry):  # the driver's (e.g. a TemporaryDirectory's removal) stay the
            f.atexit = False                          # driver's: the stage's exit must not run them
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(output, 1)
        os.dup2(output, 2)
        kept = sorted({0, 1, 2, *([keep] if keep is not None else [])})
        for low, high in zip(kept, [*kept[1:], os.sysconf("SC_OPEN_MAX")]):
            os.closerange(low + 1, high)  # the driver's other files and locks are not the stage's
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        if "torch" in sys.modules and env.get("OMP_NUM_THREADS", "").isdigit():
            sys.modules["torch"].set_num_threads(int(env["OMP_NUM_THREADS"]))
        extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
        args = cmd[1:]
        if args[0] == "-m":
            sys.argv = [args[1], *args[2:]]
            sys.path[0:1] = [os.getcwd(), *extra]
            sys.modules.pop(args[1], None)  # run as __main__, as `python -m` does, not as the driver imported it
            runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        elif args[0] == "-c":
            sys.argv = ["-c", *args[2:]]
            sys.path[0:1] = ["", *extra]
            exec(compile(args[1], "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
        else:
            sys.argv = list(args)
            sys.path[0:1] = [os.path.dirname(os.path.abspath(args[0])), *extra]
            runpy.run_path(args[0], run_name="__main__")
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = -signal.SIGINT  # python ends by SIGINT itself after an uncaught KeyboardInterrupt
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        gc.collect()
        atexit._run_exitfuncs()  # what the libraries registered (logging, multiprocessing, ...), as at exit
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        pass
    if code == -signal.SIGINT:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    return code
