"""Self-test stages: exercise the runner's limits with real processes (no framework needed).

``selftest.echo`` writes its request back as an output; ``selftest.sleep`` sleeps
``options.seconds``; ``selftest.abort`` kills itself with SIGABRT, as a crashing
runtime does; ``selftest.allocate`` holds ``options.megabytes`` of memory;
``selftest.imports`` imports numpy (in every toolchain environment), the start-up a
framework import costs a fresh process and not a warm child; ``selftest.fork_sleep`` sleeps
in a fork run as a command-line tool (``stages.kit.forked_cli``), as onnx2tf is run.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import dataclass

from stages.kit.codes import StageCode
from stages.kit.contract import StageError, StageRequest, StageResult
from stages.kit.options import read_options


@dataclass(frozen=True)
class SelftestOptions:
    """``fail_with``: echo fails with this code; ``seconds``: how long sleep sleeps;
    ``megabytes`` allocate holds for ``hold_seconds`` (in a fork of itself, sharing the
    pages, when ``in_fork``); ``port``: where network connects."""

    fail_with: str | None = None
    seconds: float = 60
    megabytes: int = 512
    hold_seconds: float = 10
    in_fork: bool = False
    port: int = 0


def echo(request: StageRequest) -> StageResult:
    out = request.output_dir / "echo.json"
    out.write_text(json.dumps({"inputs": sorted(request.inputs), "spec": request.spec.to_json()}))
    fail_with = read_options(SelftestOptions, request.options).fail_with
    if fail_with:
        raise StageError(StageCode(fail_with), "selftest failure on request")
    return StageResult(outputs={"echo": out.name}, metrics={"ok": 1}, info={"pid": os.getpid()})


def sleep(request: StageRequest) -> StageResult:
    time.sleep(float(read_options(SelftestOptions, request.options).seconds))
    return StageResult()


def abort(request: StageRequest) -> StageResult:
    print("selftest: aborting", flush=True)
    os.kill(os.getpid(), signal.SIGABRT)
    return StageResult()


def allocate(request: StageRequest) -> StageResult:
    options = read_options(SelftestOptions, request.options)
    block = bytearray(int(options.megabytes) * 1024 * 1024)
    for i in range(0, len(block), 4096):  # touch every page so it counts as resident
        block[i] = 1
    if options.in_fork:  # the stage and a fork both hold the block, as onnx2tf's fork shares the stage's pages
        from stages.kit.forked_cli import run_module

        statement = f"import time; time.sleep({float(options.hold_seconds)})"
        run_module("timeit", ["-n", "1", "-r", "1", statement], request.output_dir, {}, request.output_dir / "fork.log")
    else:
        time.sleep(float(options.hold_seconds))
    return StageResult(metrics={"bytes": len(block)})


def imports(request: StageRequest) -> StageResult:
    """Import numpy as a stage imports its framework; report whether it was loaded already,
    and how many objects its process found frozen out of the collector's reach (a warm parent's)."""
    import gc
    import sys

    preloaded = "numpy" in sys.modules
    import numpy

    return StageResult(info={"preloaded": preloaded, "numpy": numpy.__version__, "frozen": gc.get_freeze_count()})


def network(request: StageRequest) -> StageResult:
    """Try to reach ``options.port`` on loopback; report what happened."""
    import socket

    try:
        socket.create_connection(("127.0.0.1", int(request.options["port"])), timeout=3).close()
        outcome = "connected"
    except OSError as exc:
        outcome = f"{type(exc).__name__}: {exc.strerror or exc}"
    return StageResult(info={"network": outcome, "pid": os.getpid()})


# Module state a stage may leave behind: under a warm runner the next stage must not see it.
_LEAKED: list[str] = []


def leak(request: StageRequest) -> StageResult:
    """Change what a careless stage could change in its process, and report what it found there
    first: a module global, an environment variable, the working directory, a file in the cwd."""
    found = {
        "leaked": list(_LEAKED),
        "env": os.environ.get("MODELPORT_SELFTEST_LEAK"),
        "cwd": os.getcwd(),
        "stray_file": os.path.exists("stray.txt"),
        "tmpdir": __import__("tempfile").gettempdir(),
    }
    _LEAKED.append(str(os.getpid()))
    os.environ["MODELPORT_SELFTEST_LEAK"] = "set by an earlier stage"
    with open("stray.txt", "w") as handle:
        handle.write("left behind")
    os.chdir("/")
    return StageResult(info={**found, "pid": os.getpid()})


def spawn(request: StageRequest) -> StageResult:
    """Start a process in a session of its own that outlives the stage; report its pid."""
    import subprocess

    child = subprocess.Popen(["sleep", "120"], start_new_session=True)
    return StageResult(info={"orphan": child.pid})


def fork_sleep(request: StageRequest) -> StageResult:
    """Sleep ``options.seconds`` in a fork of this stage run as ``python -m timeit`` through
    ``stages.kit.forked_cli`` (as convert.onnx2tf runs onnx2tf); report the fork's exit code."""
    from stages.kit.forked_cli import run_module

    seconds = float(read_options(SelftestOptions, request.options).seconds)
    statement = f"import time; time.sleep({seconds})"
    out = request.output_dir
    code = run_module("timeit", ["-n", "1", "-r", "1", statement], out, {}, out / "fork.log")
    return StageResult(info={"code": code, "pid": os.getpid()})
