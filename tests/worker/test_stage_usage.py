"""What a stage cost, as recorded: its peak memory, its wall time and how much of that was
start-up, measured by the cold and the warm runner alike and shown per stage in the job
resource and the report."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from domain.toolchains import CONTROL_QUEUE
from modelport.schemas.report import Report
from tests.support.stack import running_service
from worker.runner import RunLimits, RunOutcome, SubprocessRunner
from worker.warm import WarmRunner

MIB = 1024 * 1024
LIMITS = RunLimits(timeout_seconds=120, memory_bytes=None, threads=1, nice=0)


@pytest.fixture(scope="module", params=["cold", "warm"])
def runner(request: pytest.FixtureRequest) -> Iterator[SubprocessRunner]:
    chosen = SubprocessRunner() if request.param == "cold" else WarmRunner()
    yield chosen
    if isinstance(chosen, WarmRunner):
        chosen.close()


def run(runner: SubprocessRunner, workdir: Path, entry: str, **options: object) -> RunOutcome:
    workdir.mkdir(parents=True, exist_ok=True)
    request = {"stage": entry, "inputs": {}, "spec": {}, "options": options, "output_dir": str(workdir / "out")}
    outcome = runner.run("torch", entry, request, workdir, LIMITS)
    assert outcome.result["ok"] is True, outcome.result
    return outcome


@pytest.mark.parametrize(("megabytes", "in_fork"), [(192, False), (384, False), (384, True)])
def test_peak_rss_counts_what_the_stage_allocated(
    runner: SubprocessRunner, tmp_path: Path, megabytes: int, in_fork: bool
) -> None:
    """Counted once also when a fork of the stage shares the pages (onnx2tf's attempt runs in
    one): the watchdog counts such a fork by its USS, as summed RSS would count them twice."""
    idle = run(runner, tmp_path / "idle", "selftest.echo").peak_rss_bytes
    hold = 1.0 if in_fork else 0.3  # a few watchdog ticks (0.25 s) while the fork holds the pages
    options = {"megabytes": megabytes, "hold_seconds": hold, "in_fork": in_fork}
    busy = run(runner, tmp_path / "busy", "selftest.allocate", **options).peak_rss_bytes
    assert busy >= megabytes * MIB
    # Above the same runner's idle stage by what it allocated, give or take the interpreter's own.
    assert megabytes * MIB - 32 * MIB <= busy - idle <= megabytes * MIB + 64 * MIB, (idle / MIB, busy / MIB)


def test_startup_is_the_interpreter_and_framework_import_cold_and_near_zero_warm(tmp_path: Path) -> None:
    cold = run(SubprocessRunner(), tmp_path / "cold", "selftest.imports")
    warm_runner = WarmRunner()
    try:
        run(warm_runner, tmp_path / "first", "selftest.echo")  # the warm parent is up
        warm = run(warm_runner, tmp_path / "warm", "selftest.imports")
    finally:
        warm_runner.close()
    clock = cold.result["startup"]
    assert cold.result["info"]["preloaded"] is False
    assert clock["frameworks"] == ["numpy"]
    assert clock["framework_import_seconds"] > 0.01  # numpy's import, timed in the stage
    assert cold.startup_seconds is not None
    # The interpreter's start comes on top of the import, and all of it lies within the process's time.
    assert clock["framework_import_seconds"] < cold.startup_seconds <= cold.seconds
    assert warm.result["info"]["preloaded"] is True  # the warm parent imported numpy
    # ... and froze what it imported (gc.freeze): a child's collections do not walk it.
    assert cold.result["info"]["frozen"] == 0
    assert warm.result["info"]["frozen"] > 10_000
    assert warm.result["startup"]["frameworks"] == []
    assert warm.startup_seconds is not None
    assert warm.startup_seconds < 0.5
    assert warm.startup_seconds < cold.startup_seconds


TINY = {
    "architecture": {"name": "torchvision.models.squeezenet1_1", "kwargs": {"num_classes": 10}},
    "inputs": [{"name": "input", "shape": [1, 3, 64, 64], "dtype": "float32"}],
    "toolchain": "onnx2tf",
    "targets": ["tflite"],
    "validation_samples": 2,
}


@pytest.mark.e2e
def test_every_stage_that_ran_shows_its_usage_in_the_job_and_the_report(tmp_path: Path, squeezenet_pth: Path) -> None:
    with running_service(tmp_path / "service", queues=[CONTROL_QUEUE, "torch", "onnx2tf"]) as service:
        job = service.wait(service.submit(squeezenet_pth, TINY)["id"], timeout=600)
        assert job["status"] == "succeeded", job["error"]
        report = Report.model_validate(service.client.get(f"/v1/jobs/{job['id']}/report").json())
    ran = [s for s in job["stages"] if s["state"] == "succeeded" and s["toolchain"] != CONTROL_QUEUE]
    assert {s["toolchain"] for s in ran} == {"torch", "onnx2tf"}
    memory_limit = 0.6 * 64 * 1024 * MIB  # the default limit's bound on any machine up to 64 GiB
    for stage in ran:
        name = stage["name"]
        assert 20 * MIB < stage["peak_rss_bytes"] < memory_limit, (name, stage["peak_rss_bytes"])
        assert 0 < stage["process_seconds"] <= stage["seconds"], name
        assert 0 <= stage["startup_seconds"] <= stage["process_seconds"], name
    in_report = {s.name: s for s in report.stages}
    for stage in ran:
        entry = in_report[stage["name"]]
        assert (entry.peak_rss_bytes, entry.process_seconds, entry.startup_seconds) == (
            stage["peak_rss_bytes"],
            stage["process_seconds"],
            stage["startup_seconds"],
        )
    skipped = [s for s in job["stages"] if s["state"] == "skipped"]
    assert all(s["peak_rss_bytes"] is None for s in skipped)
