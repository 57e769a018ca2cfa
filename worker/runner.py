"""Running one stage in its toolchain's interpreter: the only place that starts stage processes.

``SubprocessRunner`` starts ``<env>/bin/python -m stages ...`` per stage. A warm runner
(a pre-imported parent that forks a child per stage) can replace it behind the same
``run`` signature without touching the stages.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from domain.toolchains import get_toolchain, stages_pythonpath
from stages.kit.codes import StageCode
from stages.kit.fields import finite_json


class StageFailure(Exception):
    """A stage ended without a result: the job fails with ``code``. A failure of a stage
    process that ran carries its ``peak_rss_bytes`` and ``process_seconds`` (else None)."""

    def __init__(self, code: StageCode, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.code, self.message, self.log_tail = code, message, log_tail
        self.peak_rss_bytes: int | None = None
        self.process_seconds: float | None = None


class StageCancelled(Exception):
    pass


@dataclass
class RunLimits:
    timeout_seconds: float
    memory_bytes: int | None
    threads: int = 1
    nice: int = 10
    sandbox: bool = True  # namespaces where the host allows them


@dataclass
class RunOutcome:
    """A stage process that wrote its result: ``seconds`` from launch to its end, the peak
    resident memory of its process tree (bytes), and ``startup_seconds``: how much of
    ``seconds`` was start-up (launch until the stage's code began, plus its framework
    imports: ``stages.kit.usage``; None when the result does not say)."""

    result: dict[str, Any]
    seconds: float
    peak_rss_bytes: int
    isolation: list[str] = field(default_factory=list)
    startup_seconds: float | None = None


# Namespaces from util-linux: no network, own PID space (and /proc), no new privileges.
# The stage must not be PID 1 of its namespace (PID 1 ignores signals it has no handler
# for, so a crash by SIGABRT would not end it): a shell stays PID 1 and reports a signal
# death as 128 + the signal number. --kill-child: the namespace dies with unshare.
SANDBOX_PREFIX = [
    "unshare",
    "--net",
    "--pid",
    "--fork",
    "--kill-child",
    "--mount-proc",
    "setpriv",
    "--no-new-privs",
    "sh",
    "-c",
    '"$0" "$@"; exit $?',
]
SANDBOX_LAYERS = ["network_namespace", "pid_namespace", "no_new_privileges"]
_sandbox_works: bool | None = None
# How often the watchdog asks whether the job was cancelled (a database query each time):
# a cancelled stage is killed within this period plus one watchdog tick (docs/api.md "Cancel").
CANCEL_CHECK_SECONDS = 1.0
WATCHDOG_TICK_SECONDS = 0.25


def sandbox_available() -> bool:
    """Whether this host lets us create the namespaces (root, or user namespaces allowed)."""
    global _sandbox_works
    if _sandbox_works is None:
        try:
            probe = subprocess.run([*SANDBOX_PREFIX, "/bin/true"], capture_output=True, timeout=10)
            _sandbox_works = probe.returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            _sandbox_works = False
    return _sandbox_works


_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded before any fork: a child only calls it
PR_SET_PDEATHSIG = 1


def _stage_child_setup(nice: int, parent: int) -> None:
    """In the stage's child before exec: niced, and killed when the worker dies, since
    without the worker's watchdog a stage has no timeout and no memory limit left."""
    os.nice(nice)
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the worker died before the line above
        os._exit(1)


def log_tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return ""
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - 16_000))
        text = handle.read().decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


def _tree_rss(proc: psutil.Process) -> int:
    """The memory of ``proc`` and every process under it, in bytes: the sum of their RSS,
    except that a fork which did not exec (its command line is its parent's: onnx2tf's
    attempt, stages.kit.forked_cli) counts its USS, the pages it made its own, since RSS
    would count the pages it still shares with its parent twice. The stage process itself
    counts its whole RSS, pages shared with a warm parent included, as a fresh process would."""
    total = 0
    try:
        for member in [proc, *proc.children(recursive=True)]:
            try:
                total += _resident(member, proc)
            except psutil.Error:
                continue
    except psutil.Error:
        pass
    return total


def _resident(process: psutil.Process, root: psutil.Process) -> int:
    parent = process.parent() if process.pid != root.pid else None
    if parent is not None and parent.cmdline() == process.cmdline():
        return int(process.memory_full_info().uss)
    return int(process.memory_info().rss)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class SubprocessRunner:
    def stage_env(self, workdir: Path, limits: RunLimits) -> dict[str, str]:
        threads = str(limits.threads)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(workdir),
            "TMPDIR": str(workdir / "tmp"),
            "PYTHONPATH": stages_pythonpath(),
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            # A crash in native code (SIGSEGV, SIGABRT...) writes the Python stack to the log.
            "PYTHONFAULTHANDLER": "1",
            "CUDA_VISIBLE_DEVICES": "",
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            "OPENBLAS_NUM_THREADS": threads,
            "TF_NUM_INTRAOP_THREADS": threads,
            "TF_NUM_INTEROP_THREADS": "1",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "MODELPORT_STAGE_THREADS": threads,
        }
        # Older OpenBLAS builds compute wrong results on some CPUs without these.
        for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "LANG", "LC_ALL"):
            if name in os.environ:
                env[name] = os.environ[name]
        return env

    def run(
        self,
        toolchain: str,
        entry: str,
        request: dict[str, Any],
        workdir: Path,
        limits: RunLimits,
        should_cancel: Callable[[], bool] = lambda: False,
    ) -> RunOutcome:
        interpreter = get_toolchain(toolchain).interpreter
        if not interpreter.exists():
            raise StageFailure(
                StageCode.TOOLCHAIN_MISSING,
                f"the {toolchain!r} environment is not built on this worker; run 'make envs'",
            )
        (workdir / "tmp").mkdir(parents=True, exist_ok=True)
        request_path, result_path, log_path = (
            workdir / "request.json",
            workdir / "result.json",
            workdir / "stage.log",
        )
        request_path.write_text(json.dumps(request))
        result_path.unlink(missing_ok=True)
        nice, parent = limits.nice, os.getpid()
        started, launched_at = time.monotonic(), time.time()
        command = [str(interpreter), "-m", "stages", entry, str(request_path), str(result_path)]
        isolation = ["process_group", "nice", "memory_watchdog", "timeout", "own_tmpdir"]
        sandboxed = limits.sandbox and sandbox_available()
        if sandboxed:
            command = [*SANDBOX_PREFIX, *command]
            isolation = [*SANDBOX_LAYERS, *isolation]
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                command,
                cwd=workdir,
                env=self.stage_env(workdir, limits),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: a kill takes its children too
                preexec_fn=lambda: _stage_child_setup(nice, parent),
            )
            watch = _Watchdog(proc, limits, should_cancel)
            watch.start()
            # wait4 reaps the child with its own resource usage: the true peak RSS, however short-lived.
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = returncode = os.waitstatus_to_exitcode(status)
            if sandboxed and 128 < returncode < 128 + 65:
                returncode = -(returncode - 128)  # the shell's report of a signal death
            watch.stop()
        seconds = time.monotonic() - started
        # The reaped process's ru_maxrss also counts its moments as a fork of this worker
        # before its exec (the kernel carries the high-water mark over exec): only a fallback.
        peaks = (watch.peak_rss, usage.ru_maxrss * 1024)
        return outcome_of(
            watch.reason, limits, result_path, log_path, returncode, seconds, peaks, isolation, launched_at
        )


def startup_seconds(result: dict[str, Any], launched_at: float) -> float | None:
    """Launch until the stage's code began, plus its framework imports (``stages.kit.usage``'s
    ``startup`` in the result); None for a result without them."""
    clock = result.get("startup")
    if not isinstance(clock, dict) or not isinstance(clock.get("entered_at"), int | float):
        return None
    launch = max(0.0, float(clock["entered_at"]) - launched_at)
    return round(launch + float(clock.get("framework_import_seconds") or 0.0), 3)


def peak_rss_of(result: dict[str, Any] | None, sampled: int, rusage: int) -> int:
    """A stage's peak RSS in bytes: the watchdog's ``sampled`` peak of its process tree, and
    the peaks the stage reported itself (``stages.kit.usage.peak_memory``: its own and its
    children's). A stage that reported none (it crashed, or was killed): the samples, and
    ``rusage`` (the runner's ``ru_maxrss``, which may count the launching worker's pages)
    only when it ended before the first sample."""
    reported = result.get("usage") if isinstance(result, dict) else None
    own = reported.get("self_peak_rss_bytes") if isinstance(reported, dict) else None
    if not isinstance(own, int):
        return sampled or rusage
    children = reported.get("children_peak_rss_bytes") if isinstance(reported, dict) else None
    return max(sampled, own, children if isinstance(children, int) else 0)


def outcome_of(
    reason: str | None,
    limits: RunLimits,
    result_path: Path,
    log_path: Path,
    returncode: int,
    seconds: float,
    peaks: tuple[int, int],
    isolation: list[str],
    launched_at: float,
) -> RunOutcome:
    """What a finished stage process amounts to, for every runner: the watchdog's ``reason``
    (cancelled, timeout, memory) first, then the result file, else a crash named by
    ``returncode`` (negative: the signal). Raises ``StageCancelled`` or ``StageFailure``
    (with the process's peak RSS and seconds). ``peaks`` are the watchdog's sampled peak and
    the process's ``ru_maxrss`` in bytes (``peak_rss_of``); ``launched_at`` is the
    ``time.time()`` at which the runner started (or asked a warm parent to fork) the process."""
    peak_rss = peak_rss_of(_read_result(result_path), *peaks)
    try:
        return _outcome(reason, limits, result_path, log_path, returncode, seconds, peak_rss, isolation, launched_at)
    except StageFailure as failure:
        failure.peak_rss_bytes, failure.process_seconds = peak_rss, round(seconds, 3)
        raise


def _outcome(
    reason: str | None,
    limits: RunLimits,
    result_path: Path,
    log_path: Path,
    returncode: int,
    seconds: float,
    peak_rss: int,
    isolation: list[str],
    launched_at: float,
) -> RunOutcome:
    tail = log_tail(log_path)
    if reason == "cancelled":
        raise StageCancelled()
    if reason == "timeout":
        raise StageFailure(
            StageCode.TIMEOUT,
            f"the stage ran past its limit of {limits.timeout_seconds:.0f} s and was stopped",
            tail,
        )
    if reason == "memory":
        raise StageFailure(
            StageCode.RESOURCE_EXHAUSTED,
            f"the stage used more than {limits.memory_bytes} bytes of memory and was stopped",
            tail,
        )
    result = _read_result(result_path)
    if result is None:
        if returncode < 0:
            message = f"the stage process was killed by {signal.Signals(-returncode).name}"
        else:
            message = f"the stage process exited with status {returncode} without a result"
        raise StageFailure(StageCode.STAGE_CRASHED, message, tail)
    return RunOutcome(
        result=result,
        seconds=seconds,
        peak_rss_bytes=peak_rss,
        isolation=isolation,
        startup_seconds=startup_seconds(result, launched_at),
    )


def _read_result(path: Path) -> dict[str, Any] | None:
    try:
        value = finite_json(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


class _Watchdog(threading.Thread):
    """Kills the stage's process group on timeout, memory over the limit, or cancellation."""

    def __init__(self, proc: subprocess.Popen[bytes], limits: RunLimits, should_cancel: Callable[[], bool]):
        super().__init__(daemon=True)
        self.proc, self.limits, self.should_cancel = proc, limits, should_cancel
        self.reason: str | None = None
        self.peak_rss = 0
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=5)

    def run(self) -> None:
        deadline = time.monotonic() + self.limits.timeout_seconds
        try:
            root = psutil.Process(self.proc.pid)
        except psutil.Error:
            return
        last_cancel_check = 0.0
        while not self._stopped.wait(WATCHDOG_TICK_SECONDS):
            now = time.monotonic()
            self.peak_rss = max(self.peak_rss, _tree_rss(root))
            if now > deadline:
                self.reason = "timeout"
            elif self.limits.memory_bytes and self.peak_rss > self.limits.memory_bytes:
                self.reason = "memory"
            elif now - last_cancel_check >= CANCEL_CHECK_SECONDS:
                last_cancel_check = now
                try:
                    if self.should_cancel():
                        self.reason = "cancelled"
                except Exception:  # noqa: BLE001 - a failed check must not kill the stage
                    pass
            if self.reason:
                _kill_group(self.proc.pid)
                return
