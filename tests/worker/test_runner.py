"""The stage runner with real processes: results, typed errors, crashes, timeouts, memory."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

from worker.runner import (
    CANCEL_CHECK_SECONDS,
    WATCHDOG_TICK_SECONDS,
    RunLimits,
    StageCancelled,
    StageFailure,
    SubprocessRunner,
)

LIMITS = RunLimits(timeout_seconds=60, memory_bytes=2 * 1024**3, threads=1, nice=0)


def run(tmp_path: Path, entry: str, limits: RunLimits = LIMITS, **options: object):  # type: ignore[no-untyped-def]
    request = {
        "stage": entry,
        "inputs": {"a": "/x"},
        "spec": {"k": 1},
        "options": options,
        "output_dir": str(tmp_path / "out"),
    }
    return SubprocessRunner().run("torch", entry, request, tmp_path, limits)


def test_result_comes_back(tmp_path: Path) -> None:
    outcome = run(tmp_path, "selftest.echo")
    assert outcome.result["ok"] is True
    assert outcome.result["outputs"] == {"echo": "echo.json"}
    assert (tmp_path / "out" / "echo.json").is_file()
    assert outcome.peak_rss_bytes > 0


def test_typed_stage_error_is_a_result(tmp_path: Path) -> None:
    outcome = run(tmp_path, "selftest.echo", fail_with="input_mismatch")
    assert outcome.result["ok"] is False
    assert outcome.result["error"]["code"] == "input_mismatch"


def test_unknown_stage(tmp_path: Path) -> None:
    assert run(tmp_path, "nope").result["error"]["code"] == "unknown_stage"


def test_crash_is_reported_with_signal_and_log(tmp_path: Path) -> None:
    with pytest.raises(StageFailure) as failure:
        run(tmp_path, "selftest.abort")
    assert failure.value.code == "stage_crashed"
    assert "SIGABRT" in failure.value.message
    assert "selftest: aborting" in failure.value.log_tail


class GroupWatch:
    """A ``should_cancel`` that also notes the process groups of the stage's processes while
    they run (found by their request file in ``workdir``, named in their command line), and answers
    True from ``cancel_after`` seconds on."""

    def __init__(self, workdir: Path, cancel_after: float | None = None) -> None:
        self.marker, self.pgids = str(workdir / "request.json"), set[int]()
        self.cancel_at = None if cancel_after is None else time.monotonic() + cancel_after

    def __call__(self) -> bool:
        for proc in stage_processes(self.marker):
            try:
                self.pgids.add(os.getpgid(proc.pid))
            except ProcessLookupError:  # ended since it was listed
                continue
        return self.cancel_at is not None and time.monotonic() >= self.cancel_at


def stage_processes(marker: str) -> list[psutil.Process]:
    """Live processes (not zombies) whose command line names ``marker``."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and marker in " ".join(proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.Error, ProcessLookupError):
            continue
    return found


def assert_killed(watch: GroupWatch, within: float = 2.0) -> None:
    """The stage's process groups no longer exist and no process of its work directory runs.
    The sandbox's namespace init is reaped by the host's init after the kill: a short wait."""
    assert watch.pgids, "the stage's processes were never seen running"
    deadline = time.monotonic() + within
    while True:
        left = [pgid for pgid in watch.pgids if group_exists(pgid)] + [p.pid for p in stage_processes(watch.marker)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not left, f"still running after the kill: {left}"


def group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def run_watched(tmp_path: Path, entry: str, limits: RunLimits, watch: GroupWatch, **options: object):  # type: ignore[no-untyped-def]
    request = {
        "stage": entry,
        "inputs": {},
        "spec": {},
        "options": options,
        "output_dir": str(tmp_path / "out"),
    }
    return SubprocessRunner().run("torch", entry, request, tmp_path, limits, should_cancel=watch)


# A broken kill leaves the stage to sleep (or hold its memory) on to its own end, 20-60 s:
# the time bounds below are far under that, and far over what a working kill takes.


def test_timeout_kills_the_stage(tmp_path: Path) -> None:
    limits = RunLimits(timeout_seconds=2, memory_bytes=None, threads=1, nice=0)
    watch = GroupWatch(tmp_path)
    started = time.monotonic()
    with pytest.raises(StageFailure) as failure:
        run_watched(tmp_path, "selftest.sleep", limits, watch, seconds=60)
    elapsed = time.monotonic() - started
    assert failure.value.code == "timeout"
    assert 2 <= elapsed < 2 + WATCHDOG_TICK_SECONDS + 3, elapsed
    assert_killed(watch)


def test_memory_watchdog(tmp_path: Path) -> None:
    limits = RunLimits(timeout_seconds=60, memory_bytes=300 * 1024**2, threads=1, nice=0)
    watch = GroupWatch(tmp_path)
    started = time.monotonic()
    with pytest.raises(StageFailure) as failure:
        run_watched(tmp_path, "selftest.allocate", limits, watch, megabytes=600, hold_seconds=20)
    elapsed = time.monotonic() - started
    assert failure.value.code == "resource_exhausted"
    assert elapsed < 8, elapsed  # the stage would hold its 600 MB for 20 s
    # Killed before the watchdog looked again: the work directory names no live process.
    assert not stage_processes(watch.marker)


def test_cancellation_stops_the_stage_within_the_check_period(tmp_path: Path) -> None:
    watch = GroupWatch(tmp_path, cancel_after=1.5)
    with pytest.raises(StageCancelled):
        run_watched(tmp_path, "selftest.sleep", LIMITS, watch, seconds=60)
    assert watch.cancel_at is not None
    latency = time.monotonic() - watch.cancel_at
    # docs/api.md promises 2 s: one check period and one watchdog tick, plus the kill.
    assert latency < 2.0, latency
    assert CANCEL_CHECK_SECONDS + WATCHDOG_TICK_SECONDS < 2.0
    assert_killed(watch)


def test_stage_has_no_network_and_its_own_pid_space(tmp_path: Path) -> None:
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        outcome = run(tmp_path, "selftest.network", port=server.getsockname()[1])
    assert "network_namespace" in outcome.isolation, outcome.isolation
    assert "unreachable" in outcome.result["info"]["network"]
    assert outcome.result["info"]["pid"] < 10  # a fresh PID namespace


def test_a_stage_result_with_nan_or_infinity_is_read_as_strict_json(tmp_path: Path) -> None:
    """Python's json writes NaN/Infinity (an error over a scale of 0, a constant channel in
    error_sources); PostgreSQL's json type and the API refuse them. The one reader of stage
    results (both runners) makes them None, nested values included; the report does the same
    to itself (domain.jobs.report)."""
    from worker.runner import _read_result

    path = tmp_path / "result.json"
    path.write_text('{"ok": true, "metrics": {"e": Infinity, "rows": [NaN, 1.5, {"x": -Infinity}]}}')
    assert _read_result(path) == {"ok": True, "metrics": {"e": None, "rows": [None, 1.5, {"x": None}]}}
