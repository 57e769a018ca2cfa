"""A warm parent for one toolchain environment: imports the frameworks once, forks one child per stage.

Run by the worker (``worker.warm``) as::

    <toolchain-env>/bin/python -m stages.kit.forkserver <module>[,<module>...]

It imports the listed modules (torch, tensorflow, onnx2tf…: the seconds every fresh stage
process would spend), then reads one JSON request per line on stdin::

    {"entry": "export.prepare", "request": "/w/request.json", "result": "/w/result.json",
     "log": "/w/stage.log", "cwd": "/w", "env": {...}, "nice": 10, "sandbox": true}

and for each forks a child that runs that one stage of one job and exits; the parent
never opens an upload or a request file. Replies, one JSON line each on stdout:

    {"ready": true, "sandbox": ["network_namespace", "no_new_privileges"], "preloaded": [...]}  # at start
    {"pid": 1234}                                            # the child is running
    {"pid": 1234, "status": 0, "maxrss_kib": 123456}          # the child is over (os.wait4)

The child gets what a fresh stage process gets from ``worker.runner``: its own session
(process group: the worker's watchdog kills it whole), nice, death with its parent
(PR_SET_PDEATHSIG), a network namespace of its own and no new privileges (when the host
allows them: probed once at start), the stage's environment (HOME, TMPDIR, thread counts),
its working directory and its log on stdout/stderr. It is a fork, so whatever a stage
changes in its memory (globals, monkeypatches, caches) ends with it.

The parent is a child subreaper (PR_SET_CHILD_SUBREAPER): a process a stage started and
left behind is re-parented here, and killed once the stage is over.

Unlike the cold runner, the child has no PID namespace of its own (the namespace would need
a second fork and a private /proc per stage); it is reported in the stage's isolation list.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import json
import os
import signal
import sys
import tempfile
import time
from typing import Any

from stages.kit.forked_cli import EXIT_SETUP_FAILED, finish_fork

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
CLONE_NEWNET = 0x40000000

_LIBC = ctypes.CDLL(None, use_errno=True)


def _apply_sandbox() -> None:
    """Own network namespace, no new privileges; OSError when the host refuses either."""
    if _LIBC.unshare(CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
    if _LIBC.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")


def probe_sandbox() -> list[str]:
    """Whether a child may create the namespaces: tried once, in a throwaway child."""
    pid = os.fork()
    if pid == 0:
        try:
            _apply_sandbox()
        except OSError:
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    return ["network_namespace", "no_new_privileges"] if os.waitstatus_to_exitcode(status) == 0 else []


def _child(job: dict[str, Any], parent: int) -> None:
    """In the forked child: become the stage's process, run it, never return."""
    try:
        os.setsid()
        log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except BaseException:  # noqa: BLE001 - never back into the server's loop
        os._exit(EXIT_SETUP_FAILED)
    finish_fork(parent, log, lambda: _run_stage(job))


def _run_stage(job: dict[str, Any]) -> int:
    """The stage child's body (after ``finish_fork``'s setup): stdin from /dev/null, line-buffered
    stdout/stderr, the sandbox, nice, cwd, environment; then the stage's exit code."""
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    if job.get("sandbox"):
        _apply_sandbox()  # a promised sandbox that cannot be made is a failed start
    os.nice(int(job.get("nice", 0)))
    os.chdir(job["cwd"])
    os.environ.clear()
    os.environ.update(job["env"])
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again
    import faulthandler

    faulthandler.enable()
    from stages.__main__ import main

    return int(main([job["entry"], job["request"], job["result"]]))


def _kill_orphans() -> None:
    """Kill every process left re-parented to this subreaper, and reap it."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            try:
                os.kill(int(entry), signal.SIGKILL)
            except ProcessLookupError:
                pass
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.01)


def _reply(message: dict[str, Any]) -> None:
    sys.__stdout__.write(json.dumps(message) + "\n")  # type: ignore[union-attr]
    sys.__stdout__.flush()  # type: ignore[union-attr]


def serve(preload: list[str]) -> None:
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # dies with its worker
    _LIBC.prctl(PR_SET_CHILD_SUBREAPER, 1)
    loaded = []
    for name in preload:
        try:
            importlib.import_module(name)
            loaded.append(name)
        except Exception as exc:  # noqa: BLE001 - a module that does not import is imported cold by its stage
            print(f"forkserver.preload_failed module={name} error={type(exc).__name__}: {exc}", file=sys.stderr)
    import stages.__main__  # noqa: F401 - the entry point every child calls

    # What was preloaded stays for good: out of the collector's reach, a child's collections
    # skip it (onnx2tf calls gc.collect() twice per run: 0.5 s with TensorFlow loaded) and do
    # not write to its pages, which stay shared with this parent instead of being copied.
    gc.collect()
    gc.freeze()
    _reply({"ready": True, "sandbox": probe_sandbox(), "preloaded": loaded})
    parent = os.getpid()
    for line in sys.stdin:
        if not line.strip():
            continue
        job = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(job, parent)
        _reply({"pid": pid})
        _, status, usage = os.wait4(pid, 0)
        _kill_orphans()
        _reply({"pid": pid, "status": os.waitstatus_to_exitcode(status), "maxrss_kib": usage.ru_maxrss})


if __name__ == "__main__":
    serve([name for name in (sys.argv[1] if len(sys.argv) > 1 else "").split(",") if name])
