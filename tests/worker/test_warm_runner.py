"""The warm runner: a pre-imported parent per toolchain forks one child per stage, and the
child is as isolated as a fresh process: what a stage changes does not reach the next one,
limits still kill it, a dead parent is replaced, and nothing a stage starts outlives it."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from worker.runner import WATCHDOG_TICK_SECONDS, RunLimits, StageCancelled, StageFailure
from worker.warm import WarmRunner

LIMITS = RunLimits(timeout_seconds=60, memory_bytes=None, threads=1, nice=0)


@pytest.fixture(scope="module")
def runner() -> Iterator[WarmRunner]:
    warm = WarmRunner()
    yield warm
    warm.close()


def run(runner: WarmRunner, workdir: Path, entry: str, limits: RunLimits = LIMITS, cancel=None, **options):  # type: ignore[no-untyped-def]
    workdir.mkdir(parents=True, exist_ok=True)
    request = {"stage": entry, "inputs": {}, "spec": {}, "options": options, "output_dir": str(workdir / "out")}
    return runner.run("torch", entry, request, workdir, limits, should_cancel=cancel or (lambda: False))


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_stages_run_forked_from_one_preloaded_parent(runner: WarmRunner, tmp_path: Path) -> None:
    first = run(runner, tmp_path / "a", "selftest.echo")
    parent = runner.server("torch", LIMITS)
    assert parent is not None
    second = run(runner, tmp_path / "b", "selftest.echo")
    assert runner.server("torch", LIMITS) is parent  # the same warm parent served both
    assert first.result["ok"] is True
    assert (tmp_path / "a" / "out" / "echo.json").is_file()
    assert "warm_fork" in first.isolation
    pids = {first.result["info"]["pid"], second.result["info"]["pid"], parent.proc.pid}
    assert len(pids) == 3  # a child per stage, neither of them the parent
    # The parent imported the framework; a child's torch import is then free.
    assert "torch" in runner.server("torch", LIMITS).proc.args[-1]  # type: ignore[union-attr]


def test_what_a_stage_changes_does_not_reach_the_next(runner: WarmRunner, tmp_path: Path) -> None:
    first = run(runner, tmp_path / "one", "selftest.leak").result["info"]
    second = run(runner, tmp_path / "two", "selftest.leak").result["info"]
    for found, workdir in ((first, tmp_path / "one"), (second, tmp_path / "two")):
        assert found["leaked"] == []  # a module global set by the earlier stage
        assert found["env"] is None  # an environment variable it set
        assert found["cwd"] == str(workdir)  # its chdir("/")
        assert found["stray_file"] is False  # the file it wrote in its working directory
        assert found["tmpdir"] == str(workdir / "tmp")
    assert (tmp_path / "one" / "stray.txt").read_text() == "left behind"


def test_a_process_a_stage_leaves_behind_is_killed(runner: WarmRunner, tmp_path: Path) -> None:
    orphan = run(runner, tmp_path, "selftest.spawn").result["info"]["orphan"]
    deadline = time.monotonic() + 5
    while alive(orphan) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(orphan)


def test_a_crash_is_reported_and_the_parent_survives_it(runner: WarmRunner, tmp_path: Path) -> None:
    parent = runner.server("torch", LIMITS)
    with pytest.raises(StageFailure) as failure:
        run(runner, tmp_path / "crash", "selftest.abort")
    assert failure.value.code == "stage_crashed"
    assert "SIGABRT" in failure.value.message
    assert "selftest: aborting" in failure.value.log_tail
    assert runner.server("torch", LIMITS) is parent
    assert run(runner, tmp_path / "after", "selftest.echo").result["ok"] is True


def test_timeout_and_cancel_kill_the_child_not_the_parent(runner: WarmRunner, tmp_path: Path) -> None:
    parent = runner.server("torch", LIMITS)
    started = time.monotonic()
    with pytest.raises(StageFailure) as failure:
        run(runner, tmp_path / "slow", "selftest.sleep", RunLimits(2, None, 1, 0), seconds=60)
    assert failure.value.code == "timeout"
    assert time.monotonic() - started < 2 + WATCHDOG_TICK_SECONDS + 3
    cancel_at = time.monotonic() + 1.0
    with pytest.raises(StageCancelled):
        run(runner, tmp_path / "cancel", "selftest.sleep", cancel=lambda: time.monotonic() > cancel_at, seconds=60)
    assert time.monotonic() - cancel_at < 2.0  # the cancel promise (docs/api.md)
    assert runner.server("torch", LIMITS) is parent


def test_memory_over_the_limit_is_stopped_and_the_next_stage_runs(runner: WarmRunner, tmp_path: Path) -> None:
    parent = runner.server("torch", LIMITS)
    assert parent is not None
    # A child starts with its parent's pages (the preloaded framework) resident: the limit
    # counts the stage's whole resident set, as for a fresh process that imported it.
    baseline = psutil.Process(parent.proc.pid).memory_info().rss
    limits = RunLimits(timeout_seconds=60, memory_bytes=baseline + 300 * 1024**2, threads=1, nice=0)
    started = time.monotonic()
    with pytest.raises(StageFailure) as failure:
        run(runner, tmp_path / "big", "selftest.allocate", limits, megabytes=900, hold_seconds=20)
    assert failure.value.code == "resource_exhausted"
    assert time.monotonic() - started < 10  # it would hold the memory for 20 s
    assert run(runner, tmp_path / "next", "selftest.echo").result["ok"] is True
    assert runner.server("torch", LIMITS) is parent


def test_a_killed_parent_is_replaced(runner: WarmRunner, tmp_path: Path) -> None:
    parent = runner.server("torch", LIMITS)
    assert parent is not None
    os.kill(parent.proc.pid, signal.SIGKILL)
    parent.proc.wait(timeout=10)
    outcome = run(runner, tmp_path, "selftest.echo")
    assert outcome.result["ok"] is True
    replacement = runner.server("torch", LIMITS)
    assert replacement is not None
    assert replacement.proc.pid != parent.proc.pid
    assert "warm_fork" in outcome.isolation


def test_the_child_has_no_network(runner: WarmRunner, tmp_path: Path) -> None:
    import socket

    parent = runner.server("torch", LIMITS)
    assert parent is not None
    if not parent.sandbox:
        pytest.skip("this host refuses network namespaces (the cold runner reports the same)")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        outcome = run(runner, tmp_path, "selftest.network", port=server.getsockname()[1])
    assert "network_namespace" in outcome.isolation
    assert "unreachable" in outcome.result["info"]["network"]


def test_real_stages_run_warm_in_every_toolchain(runner: WarmRunner, tmp_path: Path, squeezenet_pth: Path) -> None:
    """export.prepare (torch) -> convert.onnx2tf (onnx2tf) -> validate.tflite (torch), every one
    forked from its environment's warm parent: the .tflite matches PyTorch within 1e-4 of scale."""
    from tests.support.stage_runner import ALLOW_TORCHVISION, image_spec

    spec = image_spec("torchvision.models.squeezenet1_1", toolchain="onnx2tf")
    limits = RunLimits(timeout_seconds=600, memory_bytes=None, threads=1, nice=0)

    def stage(toolchain: str, entry: str, name: str, inputs: dict[str, Path], options=None):  # type: ignore[no-untyped-def]
        workdir = tmp_path / name
        workdir.mkdir()
        request = {
            "stage": entry,
            "inputs": {key: str(path) for key, path in inputs.items()},
            "spec": spec,
            "options": options or {},
            "output_dir": str(workdir / "out"),
        }
        outcome = runner.run(toolchain, entry, request, workdir, limits)
        assert outcome.result["ok"], (outcome.result, (workdir / "stage.log").read_text()[-3000:])
        assert "warm_fork" in outcome.isolation
        return {key: workdir / "out" / value for key, value in outcome.result["outputs"].items()}, outcome

    prepared, _ = stage("torch", "export.prepare", "prepare", {"model": squeezenet_pth}, ALLOW_TORCHVISION)
    shared = {"samples": prepared["samples"], "reference": prepared["reference"]}
    converted, _ = stage("onnx2tf", "convert.onnx2tf", "convert", {"onnx": prepared["onnx"], **shared})
    _, validated = stage("torch", "validate.tflite", "validate", {"tflite": converted["tflite_float32"], **shared})
    metrics = validated.result["metrics"]["tflite_float32"]
    assert metrics["verdict"] == "pass", metrics["reasons"]
    numbers = metrics["outputs"]["output"]
    assert numbers["scale"] > 0
    assert numbers["max_abs"] <= 1e-4 * numbers["scale"]
    assert numbers["top1_agreement"] == 1.0


def test_an_upload_that_runs_its_own_code_gets_the_cold_sandbox(runner: WarmRunner, tmp_path: Path) -> None:
    request = {
        "stage": "selftest.echo",
        "inputs": {},
        "spec": {"model_format": "pickled_module"},
        "options": {},
        "output_dir": str(tmp_path / "out"),
    }
    outcome = runner.run("torch", "selftest.echo", request, tmp_path, LIMITS)
    assert "warm_fork" not in outcome.isolation
    parent = runner.server("torch", LIMITS)
    assert parent is not None
    if parent.sandbox:
        assert "pid_namespace" in outcome.isolation


def test_the_worker_uses_warm_runners_unless_turned_off(tmp_path: Path) -> None:
    from tests.support.api import make_settings
    from tests.support.db import sqlite_url
    from worker.context import build_context
    from worker.runner import SubprocessRunner

    url = sqlite_url(tmp_path)
    assert isinstance(build_context(make_settings(url, tmp_path / "on")).runner, WarmRunner)
    cold = build_context(make_settings(url, tmp_path / "off", warm_runners=False)).runner
    assert type(cold) is SubprocessRunner


@pytest.mark.e2e
def test_warm_parents_start_with_the_worker(tmp_path: Path) -> None:
    """A toolchain worker starts its warm parent before any stage arrives (its first stage then pays
    no framework import): the parent, with its preloaded modules, is among the worker's processes
    while no job exists."""
    import uuid

    from app.local import LocalStack, free_port
    from domain.toolchains import get_toolchain

    env = {**os.environ, "REDIS_URL": "redis://127.0.0.1:6379/0", "MODELPORT_API_KEY": "warm-start",
           "MODELPORT_QUEUE_PREFIX": f"warm-{uuid.uuid4().hex[:6]}-"}  # fmt: skip
    env.pop("DATABASE_URL", None)
    env.pop("MODELPORT_WARM_RUNNERS", None)
    stack = LocalStack(data_dir=tmp_path / "data", port=free_port(), env=env, queues=["onnx2tf"])
    stack.start()
    try:
        worker = psutil.Process(stack.processes["worker-onnx2tf"].pid)
        deadline, parents = time.monotonic() + 90, []
        while time.monotonic() < deadline and not parents:
            parents = [p for p in worker.children(recursive=True) if "stages.kit.forkserver" in " ".join(p.cmdline())]
            time.sleep(0.5)
        assert parents, "no warm parent started with the onnx2tf worker"
        argv = parents[0].cmdline()
        assert "onnx2tf" in argv[-1]  # the preload list of the onnx2tf environment
        assert argv[0] == str(get_toolchain("onnx2tf").interpreter)
    finally:
        stack.stop()
