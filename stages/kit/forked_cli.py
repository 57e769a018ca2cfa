"""A Python command-line tool (``python -m <module> ...``) run in a fork of the stage process.

Why not a fresh interpreter: it would import the tool and its frameworks again on every run
(onnx2tf's converter 1.4 s, with TensorFlow for a SavedModel 5-6 s), while a stage forked
from its warm parent (``stages.kit.forkserver``) already has them loaded. Why not a call in
the stage process itself: such tools call ``sys.exit``, keep module globals between runs and
change process-wide state (onnx2tf sets the recursion limit and the warning filters), and a
second run must start clean. A fork inherits what is loaded and keeps every run apart.

``run_module`` forks; the fork runs the module as ``-m`` would (``runpy``, ``__main__``),
with its stdout and stderr on a log file, in its own working directory, with extra
environment variables, and ends with the exit code the interpreter would have had. The
fork stays in the stage's process group, so the worker's watchdog (timeout, memory,
cancellation) kills it with the stage, and it is killed when the stage process dies
(``PR_SET_PDEATHSIG``). A cold stage (a fresh interpreter) runs the same code: its fork
then imports the tool itself, as the fresh interpreter did.

``call_forked`` is the same isolation for a function of the stage (litert-torch's PT2E
flow in ``convert.litert_torch``), with a time limit: a native abort or a hang in it costs
that function's result, never the stage.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import NoReturn

PR_SET_PDEATHSIG = 1
EXIT_SETUP_FAILED = 71  # a fork that could not set itself up (finish_fork), or a stage child that could not start


def run_module(module: str, arguments: list[str], cwd: Path, env: Mapping[str, str], log: Path) -> int:
    """Run ``python -m module *arguments`` in a fork of this process and wait for it.

    ``cwd`` is its working directory, ``env`` is added to its environment (subprocesses it
    starts see it too), ``log`` (overwritten) gets its stdout and stderr. Returns its exit
    code as ``subprocess`` does: ``sys.exit``'s code (None: 0, a non-integer: printed and
    1), 1 after an uncaught exception (its traceback in the log), minus the signal number
    when a signal killed it. A failure to fork raises ``OSError``.
    """

    def body() -> int:
        os.chdir(cwd)
        os.environ.update(env)
        sys.argv = [module, *arguments]
        return _run_as_main(module)

    code = call_forked(body, log, None)
    assert code is not None  # no time limit: it ran to its end
    return code


def call_forked(body: Callable[[], int], log: Path, timeout: float | None) -> int | None:
    """Run ``body`` in a fork of this process and wait at most ``timeout`` seconds for it
    (``None``: until it ends).

    The fork is set up by ``finish_fork`` (dies with this process, stdout and stderr on
    ``log``, overwritten) and ends with ``body``'s return value as its exit code
    (``EXIT_SETUP_FAILED`` and the traceback in ``log`` when ``body`` raises). Returns the
    exit code as ``subprocess`` does (minus the signal number when a signal killed it), or
    None when it was still running after ``timeout`` seconds and was killed (SIGKILL).
    What ``body`` produces travels back through files it writes. A failure to fork raises
    ``OSError``. Only this thread exists in the fork: ``body`` must not rely on a thread
    pool the caller had running (torch's OpenMP pool hangs there unless ``body`` first
    sets one thread).
    """
    sys.stdout.flush()  # what the stage printed must not be written twice (once by the fork)
    sys.stderr.flush()
    parent = os.getpid()
    with open(log, "wb") as out:
        pid = os.fork()
        if pid == 0:
            finish_fork(parent, out.fileno(), body)
    try:
        if timeout is None:
            return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        deadline = time.monotonic() + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            if time.monotonic() >= deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return None
            time.sleep(0.05)
    except BaseException:
        # The stage itself is being torn down (an exception in this thread): take the fork along.
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise


def finish_fork(parent: int, log: int, body: Callable[[], int]) -> NoReturn:
    """What every fork of ModelPort does (a warm parent's stage child, a stage's tool fork):
    die with ``parent`` (``PR_SET_PDEATHSIG``, and at once if it is gone already), write
    fds 1 and 2 (``sys.stdout``/``sys.stderr``, faulthandler) to the file descriptor ``log``,
    run ``body`` and end the process with its code, never returning into the caller's code.
    An exception (setup or ``body``) prints its traceback to the log and exits
    ``EXIT_SETUP_FAILED``; stdout and stderr are flushed before ``os._exit``."""
    code = EXIT_SETUP_FAILED
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the line above
            os._exit(EXIT_SETUP_FAILED)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        code = body()
    except BaseException:  # noqa: BLE001 - whatever happens, this process ends here
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _run_as_main(module: str) -> int:
    """``runpy.run_module(module, run_name="__main__")``; the exit code the interpreter would give."""
    import runpy

    # A plain module the stage already imported would make runpy warn that it runs it a
    # second time; here a fresh ``__main__`` copy is the point. A package stays: runpy runs
    # its ``__main__`` submodule, and the loaded package is what the fork is for.
    loaded = sys.modules.get(module)
    if loaded is not None and not hasattr(loaded, "__path__"):
        del sys.modules[module]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code & 0xFF
        print(exc.code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001 - as the interpreter: the traceback, then exit 1
        import traceback

        traceback.print_exc()
        return 1
    return 0
