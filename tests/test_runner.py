"""The stage runner with real processes: results, typed errors, crashes, timeouts, memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.runner import RunLimits, StageCancelled, StageFailure, SubprocessRunner

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


def test_timeout_kills_the_stage(tmp_path: Path) -> None:
    limits = RunLimits(timeout_seconds=2, memory_bytes=None, threads=1, nice=0)
    with pytest.raises(StageFailure) as failure:
        run(tmp_path, "selftest.sleep", limits, seconds=60)
    assert failure.value.code == "timeout"


def test_memory_watchdog(tmp_path: Path) -> None:
    limits = RunLimits(timeout_seconds=60, memory_bytes=300 * 1024**2, threads=1, nice=0)
    with pytest.raises(StageFailure) as failure:
        run(tmp_path, "selftest.allocate", limits, megabytes=600, hold_seconds=20)
    assert failure.value.code == "resource_exhausted"


def test_cancellation_stops_the_stage(tmp_path: Path) -> None:
    request = {
        "stage": "selftest.sleep",
        "inputs": {},
        "spec": {},
        "options": {"seconds": 60},
        "output_dir": str(tmp_path / "out"),
    }
    with pytest.raises(StageCancelled):
        SubprocessRunner().run("torch", "selftest.sleep", request, tmp_path, LIMITS, should_cancel=lambda: True)


def test_stage_has_no_network_and_its_own_pid_space(tmp_path: Path) -> None:
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        outcome = run(tmp_path, "selftest.network", port=server.getsockname()[1])
    assert "network_namespace" in outcome.isolation, outcome.isolation
    assert "unreachable" in outcome.result["info"]["network"]
    assert outcome.result["info"]["pid"] < 10  # a fresh PID namespace
