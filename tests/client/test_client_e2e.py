"""The client and the command end to end: real API, real Celery workers, real converters, three tiny jobs.

1. ``Client``: submit a squeezenet state dict for a .tflite → wait → download (sha256 checked) → report.
   The command then reads the same job (``status``, ``report``, ``download``: no new job).
2. ``modelport convert`` on the same model: exit 0, the files flat in --out, the table with their names.
3. ``modelport convert`` with a float32 tolerance no artifact can meet: the job fails its accuracy check,
   exit 1, the files and the report still written, the table says ``fail``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelport import Client, JobOut
from tests.support.stack import API_KEY, Service, running_service

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SQUEEZENET = {
    "architecture": {"name": "torchvision.models.squeezenet1_1", "kwargs": {"num_classes": 10}},
    "inputs": [{"name": "input", "shape": [1, 3, 64, 64], "dtype": "float32"}],
    "targets": ["tflite"],
    "validation_samples": 2,
}
CONVERT = ["--arch", "squeezenet1_1", "--arch-kwargs", '{"num_classes": 10}', "--input", "1x3x64x64",
           "--validation-samples", "2", "--timeout", "900"]  # fmt: skip


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("client-e2e")) as running:
        yield running


@pytest.fixture
def url(service: Service) -> str:
    return str(service.client.base_url).rstrip("/")


def modelport(url: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it (URL and key from the environment), from the checkout."""
    env = {**os.environ, "MODELPORT_URL": url, "MODELPORT_API_KEY": API_KEY, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "modelport", *argv], capture_output=True, text=True, env=env, cwd=ROOT, timeout=1200
    )


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The report table's rows by artifact name: artifact, toolchain, size, max abs, max/scale, mean abs,
    cosine, top-1, latency ms, verdict."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 10 and cells[0].startswith("model"):
            rows[cells[0]] = cells
    return rows


def test_client_submit_wait_download_report(service: Service, url: str, squeezenet_pth: Path, tmp_path: Path) -> None:
    seen: list[JobOut] = []
    with Client(url, API_KEY) as client:
        job = client.submit(squeezenet_pth, spec=SQUEEZENET)
        final = job.wait(timeout=900, on_progress=seen.append, poll_interval=0.5)
        assert final.status == "succeeded", final.error
        assert seen[-1].status == "succeeded"
        assert seen[0].status in ("queued", "running")
        assert any(s.stage == "export_onnx" for s in seen) or seen[0].status == "queued"

        listed = {a.name: a for a in job.artifacts()}
        assert set(listed) == {"model_float32.tflite"}
        paths = job.download(tmp_path / "out")
        assert set(paths) == {"model_float32.tflite"}
        tflite = paths["model_float32.tflite"]
        assert tflite == tmp_path / "out" / "model_float32.tflite"
        assert tflite.read_bytes()[4:8] == b"TFL3"  # the FlatBuffer's file identifier
        assert tflite.stat().st_size == listed["model_float32.tflite"].size
        assert hashlib.sha256(tflite.read_bytes()).hexdigest() == listed["model_float32.tflite"].sha256
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model_float32.tflite"]  # no .part left

        typed = job.report()
        assert typed.verdict == "pass"
        (typed_entry,) = typed.artifacts
        assert typed_entry.sha256 == listed["model_float32.tflite"].sha256
        assert typed_entry.verdict == "pass"
        report = job.report_json()
        (entry,) = report["artifacts"]
        assert entry["sha256"] == typed_entry.sha256

    # The command on the finished job: no new job.
    status = modelport(url, "status", job.id)
    assert status.returncode == 0, status.stderr
    assert "succeeded" in status.stdout
    assert "convert_onnx2tf" in status.stdout
    shown = modelport(url, "report", job.id)
    assert shown.returncode == 0, shown.stderr
    row = table_rows(shown.stdout)["model_float32.tflite"]
    assert row[1] == "onnx2tf"
    assert row[-1] == "pass"
    assert float(row[3]) == pytest.approx(max(o["max_abs"] for o in entry["outputs"].values()), rel=0.01)
    as_json = modelport(url, "report", job.id, "--json")
    assert json.loads(as_json.stdout) == report
    fetched = modelport(url, "download", job.id, "--out", str(tmp_path / "again"))
    assert fetched.returncode == 0, fetched.stderr
    assert (tmp_path / "again" / "model_float32.tflite").read_bytes() == tflite.read_bytes()
    assert json.loads((tmp_path / "again" / "report.json").read_text()) == report


def test_convert_writes_the_artifacts_and_prints_the_table(
    service: Service, url: str, squeezenet_pth: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = modelport(url, "convert", str(squeezenet_pth), *CONVERT, "--targets", "onnx,tflite", "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "model_float32.tflite", "report.json"]
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"] == "pass"
    listed = {a["name"]: a for a in report["artifacts"]}
    for name in ("model.onnx", "model_float32.tflite"):
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == listed[name]["sha256"]
    rows = table_rows(result.stdout)
    assert set(rows) == {"model.onnx", "model_float32.tflite"}
    assert all(row[-1] == "pass" for row in rows.values())
    assert rows["model_float32.tflite"][8] != "–"  # a latency was measured
    # The stages went by on stderr as they ended.
    assert "succeeded  export_onnx" in result.stderr
    assert "convert_onnx2tf" in result.stderr


def test_convert_exits_1_when_an_artifact_misses_its_tolerance(
    service: Service, url: str, squeezenet_pth: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = modelport(
        url, "convert", str(squeezenet_pth), *CONVERT, "--targets", "onnx", "--tolerance", "float32=1e-12",
        "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "accuracy_check_failed" in result.stderr
    # The job failed, but its artifact and report are kept, and written.
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "report.json"]
    report = json.loads((out / "report.json").read_text())
    assert report["verdict"] == "fail"
    assert table_rows(result.stdout)["model.onnx"][-1] == "fail"
    assert "exceeds 1e-12 x scale" in result.stdout
