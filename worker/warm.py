"""Warm runners: one pre-imported parent per toolchain environment, one forked child per stage.

A fresh stage interpreter spends most of a small model's stage importing its framework
(measured here, median of 3: torch + torchvision 6.0 s, torch + litert_torch 8.0 s,
tensorflow + onnx_tf.backend 5.3 s). ``WarmRunner`` keeps, per toolchain, a parent process
(``stages.kit.forkserver``) that imported those modules once, and asks it to fork a child
for each stage. The child is what ``SubprocessRunner`` would have started: same request and
result files, same log, same environment, its own process group, nice, killed with its
parent, a network namespace and no new privileges where the host allows them; the same
watchdog (timeout, memory of the process tree, cancellation) kills it from here. Each child
runs one stage of one job and exits, so nothing a stage does in memory reaches the next.

Parents start with the worker (``worker.main`` calls ``warm`` for the toolchains its queues
serve, ``keep_warm``), which also starts again one that died; a stage that finds its
parent dead starts it itself; one that cannot start (or a stage
whose parent died under it) falls back to a cold ``SubprocessRunner`` run for that stage.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import structlog

from domain.toolchains import get_toolchain
from stages.kit.codes import StageCode
from worker.runner import (
    RunLimits,
    RunOutcome,
    StageFailure,
    SubprocessRunner,
    _stage_child_setup,
    _Watchdog,
    log_tail,
    outcome_of,
)

log = structlog.get_logger()

# What each environment's stages import at their start (a module that does not import there
# is left out, and imported by its stage as before).
# Measured here (fresh interpreter, after the modules before them): transformers and its
# modeling_utils 2.8 s and ~60 MB (every stage that builds a transformers model paid it),
# tensorflow in the onnx2tf environment 5.1 s and ~510 MB (its SavedModel check, and onnx2tf
# with -fdosm), onnx2tf's converter (``onnx2tf.onnx2tf``: the package itself is a lazy stub)
# 0.8 s after it and tf_keras (onnx2tf's require_tensorflow) 0.4 s: convert.onnx2tf runs
# onnx2tf in a fork of itself (stages.kit.forked_cli), which finds them loaded. None of them
# starts a Python thread; tensorflow starts one native thread, which a fork leaves behind.
PRELOAD: dict[str, list[str]] = {
    "torch": [
        "numpy",
        "torch",
        "torchvision",
        "transformers",
        "transformers.modeling_utils",
        "onnx",
        "onnxruntime",
        "litert_torch",
        "ai_edge_litert.interpreter",
    ],
    "onnx-tf": ["numpy", "tensorflow", "onnx", "onnx_tf.backend"],
    "onnx2tf": [
        "numpy",
        "onnx",
        "onnxruntime",
        "onnxsim",
        "onnx2tf",
        "ai_edge_litert.interpreter",
        "tensorflow",
        "tf_keras",
        "onnx2tf.onnx2tf",
    ],
}
START_TIMEOUT_SECONDS = 180
COLD_FORMATS = frozenset({"pickled_module"})


class _Child:
    """What the watchdog needs of a stage process: its pid (its process group is its pid)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid


class ForkServer:
    """One toolchain's warm parent, spoken to over its stdin/stdout (one JSON line each way)."""

    def __init__(self, toolchain: str, env: dict[str, str]) -> None:
        self.toolchain = toolchain
        interpreter = get_toolchain(toolchain).interpreter
        parent = os.getpid()
        self.proc = subprocess.Popen(
            [str(interpreter), "-m", "stages.kit.forkserver", ",".join(PRELOAD.get(toolchain, []))],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=lambda: _stage_child_setup(0, parent),
            text=True,
            bufsize=1,
        )
        started = time.monotonic()
        hello = self._read(START_TIMEOUT_SECONDS)
        if not hello or not hello.get("ready"):
            self.close()
            raise RuntimeError(f"the {toolchain!r} warm parent did not start")
        self.sandbox: list[str] = list(hello.get("sandbox", []))
        log.info(
            "runner.warm.started",
            toolchain=toolchain,
            pid=self.proc.pid,
            seconds=round(time.monotonic() - started, 2),
            preloaded=hello.get("preloaded"),
            sandbox=self.sandbox,
        )

    def _read(self, timeout: float | None = None) -> dict[str, Any] | None:
        stdout: IO[str] = self.proc.stdout  # type: ignore[assignment]
        if timeout is not None:
            import select

            ready, _, _ = select.select([stdout], [], [], timeout)
            if not ready:
                return None
        line = stdout.readline()
        return json.loads(line) if line else None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def start_stage(self, job: dict[str, Any]) -> int | None:
        """Ask for a child; its pid, or None when the parent is gone."""
        try:
            self.proc.stdin.write(json.dumps(job) + "\n")  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
        except (BrokenPipeError, OSError):
            return None
        reply = self._read()
        return int(reply["pid"]) if reply else None

    def finish_stage(self) -> dict[str, Any] | None:
        """Block until the child is over: ``{"status", "maxrss_kib"}``, or None when the parent died."""
        return self._read()

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


class WarmRunner(SubprocessRunner):
    """``SubprocessRunner`` with warm parents; same ``run`` signature, same outcomes and failures."""

    def __init__(self) -> None:
        self._servers: dict[str, ForkServer] = {}
        self._lock = threading.Lock()

    def server(self, toolchain: str, limits: RunLimits) -> ForkServer | None:
        """The toolchain's live warm parent, started (again) when needed; None if it cannot start."""
        with self._lock:
            current = self._servers.get(toolchain)
            if current is not None and current.alive():
                return current
            if current is not None:
                log.warning("runner.warm.restart", toolchain=toolchain, exit=current.proc.returncode)
                current.close()
            if not get_toolchain(toolchain).interpreter.exists():
                return None
            base = self.stage_env(Path(os.environ.get("TMPDIR", "/tmp")), limits)
            try:
                self._servers[toolchain] = ForkServer(toolchain, base)
            except (OSError, RuntimeError) as exc:
                log.warning("runner.warm.unavailable", toolchain=toolchain, error=str(exc))
                self._servers.pop(toolchain, None)
                return None
            return self._servers[toolchain]

    def keep_warm(
        self, toolchains: list[str], limits: RunLimits, interval: float = 10.0, stop: threading.Event | None = None
    ) -> None:
        """Start the warm parents of ``toolchains`` now, and start again any that dies, every
        ``interval`` seconds until ``stop`` is set. A worker runs this in a thread of its own as
        it starts (``worker.main``), so its first stage pays no framework import.

        The thread must outlive the parents it starts: a parent is started with
        ``PR_SET_PDEATHSIG``, which Linux fires when the *thread* that forked it ends
        (prctl(2)), so a short-lived warm-up thread would take its parents with it. A toolchain
        whose environment is missing or whose parent cannot start is left to the cold runner,
        as ``server`` does."""
        stop = stop or threading.Event()
        while not stop.is_set():
            for toolchain in toolchains:
                self.server(toolchain, limits)
            stop.wait(interval)

    def close(self) -> None:
        with self._lock:
            for server in self._servers.values():
                server.close()
            self._servers.clear()

    def run(
        self,
        toolchain: str,
        entry: str,
        request: dict[str, Any],
        workdir: Path,
        limits: RunLimits,
        should_cancel: Callable[[], bool] = lambda: False,
    ) -> RunOutcome:
        # An upload whose loading runs its own code (a pickled module) gets the cold runner's
        # fuller sandbox, PID namespace included.
        cold = request.get("spec", {}).get("model_format") in COLD_FORMATS
        server = None if cold else self.server(toolchain, limits)
        if server is None:
            return super().run(toolchain, entry, request, workdir, limits, should_cancel)
        (workdir / "tmp").mkdir(parents=True, exist_ok=True)
        request_path, result_path, log_path = workdir / "request.json", workdir / "result.json", workdir / "stage.log"
        request_path.write_text(json.dumps(request))
        result_path.unlink(missing_ok=True)
        sandboxed = limits.sandbox and bool(server.sandbox)
        job = {
            "entry": entry,
            "request": str(request_path),
            "result": str(result_path),
            "log": str(log_path),
            "cwd": str(workdir),
            "env": self.stage_env(workdir, limits),
            "nice": limits.nice,
            "sandbox": sandboxed,
        }
        started, launched_at = time.monotonic(), time.time()
        pid = server.start_stage(job)
        if pid is None:
            server.close()
            return super().run(toolchain, entry, request, workdir, limits, should_cancel)
        watch = _Watchdog(_Child(pid), limits, should_cancel)  # type: ignore[arg-type]
        watch.start()
        done = server.finish_stage()
        watch.stop()
        seconds = time.monotonic() - started
        if done is None:  # the parent died under the stage, which died with it (PDEATHSIG)
            server.close()
            raise StageFailure(
                StageCode.STAGE_CRASHED, "the stage's warm parent process died while the stage ran", log_tail(log_path)
            )
        peaks = (watch.peak_rss, int(done.get("maxrss_kib", 0)) * 1024)
        isolation = ["warm_fork", "process_group", "nice", "memory_watchdog", "timeout", "own_tmpdir"]
        if sandboxed:
            isolation = [*server.sandbox, *isolation]
        return outcome_of(
            watch.reason, limits, result_path, log_path, int(done["status"]), seconds, peaks, isolation, launched_at
        )
