"""Cancelling a running job through the service stops it end to end: the job is cancelled
at once, the stage's processes are killed within 2 s (docs/api.md "Cancel"), its work
directory is removed, and the same worker then runs the next job as usual."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.api import SLOW_RESNET18
from tests.support.stack import kill_left, running_service, wait_gone

pytestmark = pytest.mark.e2e

# docs/api.md "Cancel": the stage's processes are killed within 2 s (the runner asks every
# second); the margin is for a loaded 2-core machine (the POST's own answer, a busy database).
CANCEL_PROMISE, MARGIN = 2.0, 1.0

QUICK = {
    "architecture": {"name": "torchvision.models.squeezenet1_1", "kwargs": {"num_classes": 10}},
    "inputs": [{"name": "input", "shape": [1, 3, 64, 64], "dtype": "float32"}],
    "targets": ["onnx"],
}


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def test_cancelling_a_running_job_stops_its_stage(tmp_path: Path, resnet18_pth: Path, squeezenet_pth: Path) -> None:
    data_dir = tmp_path / "data"
    with running_service(data_dir, queues=["control", "torch"]) as service:
        worker_pid = service.stack.processes["worker-torch"].pid
        job_id = service.submit(resnet18_pth, SLOW_RESNET18)["id"]
        stage = service.wait_for_stage_process(job_id, "export_onnx", "torch")
        (workdir,) = (data_dir / "work").glob(f"{job_id}-export_onnx-*")

        cancelled_at = time.monotonic()
        response = service.client.post(f"/v1/jobs/{job_id}/cancel")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "cancelled"
        try:
            survivors = wait_gone(stage, timeout=CANCEL_PROMISE + MARGIN)
            assert not survivors, [p.cmdline() for p in survivors]
        finally:
            kill_left(stage)
        assert time.monotonic() - cancelled_at < CANCEL_PROMISE + MARGIN
        wait_until(lambda: not workdir.exists(), 10, f"{workdir} to be removed")
        # Stopped by the cancel, not finished on its own before the runner looked.
        worker_log = service.log_dir / "worker-torch.log"
        wait_until(lambda: "job.stage.cancelled" in worker_log.read_text(), 10, "the worker to log the cancel")

        job = service.client.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "cancelled"
        assert {s["name"]: s["state"] for s in job["stages"]} == {"export_onnx": "cancelled", "report": "cancelled"}
        assert job["error"] is None
        assert service.client.get(f"/v1/jobs/{job_id}/artifacts").json() == []

        # The same worker process takes the next job as usual.
        following = service.submit(squeezenet_pth, QUICK)["id"]
        final = service.wait(following, timeout=300)
        assert final["status"] == "succeeded", final["error"]
        assert [s["attempts"] for s in final["stages"]] == [1, 1]
        assert service.stack.processes["worker-torch"].pid == worker_pid
        assert service.stack.check_alive() is None
        assert [a["name"] for a in service.client.get(f"/v1/jobs/{following}/artifacts").json()] == ["model.onnx"]

        assert service.client.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
        assert list((data_dir / "work").iterdir()) == []
