"""A worker killed mid-stage (SIGKILL of its process group, as the OOM killer or a lost
machine does) costs the job one attempt, never its final state.

The stage's own processes die with their worker (nothing runs on without the worker's
watchdog); the message the dead worker held stays unacknowledged in Redis until the
visibility timeout (longer than the longest stage), so the control worker's reconcile
goes by the stage's heartbeat instead and sends the stage again; the restarted worker
runs it as attempt 2, and the job ends once, succeeded, with one set of artifacts.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from tests.support.api import SLOW_RESNET18
from tests.support.stack import kill_left, running_service, wait_gone
from worker.reconcile import job_ids_in_broker

pytestmark = pytest.mark.e2e

# Short enough for a test, well above the runner's check-in every 5 s.
HEARTBEAT_STALE_SECONDS = 15
SETTINGS = {
    "MODELPORT_HEARTBEAT_STALE_SECONDS": str(HEARTBEAT_STALE_SECONDS),
    "MODELPORT_RECONCILE_INTERVAL_SECONDS": "2",
    "MODELPORT_RECONCILE_GRACE_SECONDS": "5",
}


def test_a_worker_killed_mid_stage_costs_one_attempt(tmp_path: Path, resnet18_pth: Path) -> None:
    data_dir = tmp_path / "data"
    with running_service(data_dir, queues=["control", "torch"], private_redis=True, env=SETTINGS) as service:
        job_id = service.submit(resnet18_pth, SLOW_RESNET18)["id"]
        stage = service.wait_for_stage_process(job_id, "export_onnx", "torch")
        try:
            service.kill_worker("torch")
            killed_at = time.monotonic()
            # The sandbox, its shell and the stage itself go with the worker.
            survivors = wait_gone(stage, timeout=5)
            assert not survivors, [p.cmdline() for p in survivors]
        finally:
            kill_left(stage)
        service.restart_worker("torch")

        final = service.wait(job_id, timeout=300)
        recovered_in = time.monotonic() - killed_at
        assert final["status"] == "succeeded", final["error"]
        runs = {s["name"]: s for s in final["stages"]}
        assert runs["export_onnx"]["attempts"] == 2  # the lost run counted
        assert runs["report"]["attempts"] == 1
        assert all(s["state"] == "succeeded" for s in final["stages"])
        # Sent again on the heartbeat, not after Redis's visibility timeout (the stage's hard limit).
        assert recovered_in < 240, recovered_in

        artifacts = service.client.get(f"/v1/jobs/{job_id}/artifacts").json()
        assert [a["name"] for a in artifacts] == ["model.onnx"]
        onnx = service.client.get(f"/v1/jobs/{job_id}/artifacts/model.onnx")
        assert hashlib.sha256(onnx.content).hexdigest() == artifacts[0]["sha256"]
        report = service.client.get(f"/v1/jobs/{job_id}/report").json()
        assert [a["name"] for a in report["artifacts"]] == ["model.onnx"]
        # The killed attempt's work directory went with the attempt that replaced it.
        assert list((data_dir / "work").glob(f"{job_id}-*")) == []

        # Exactly one final state: reconcile rounds later nothing moved, nothing was re-sent.
        time.sleep(6)
        again = service.client.get(f"/v1/jobs/{job_id}").json()
        assert (again["status"], again["finished_at"], again["updated_at"]) == (
            final["status"],
            final["finished_at"],
            final["updated_at"],
        )
        assert [s["attempts"] for s in again["stages"]] == [2, 1]
        prefix = service.stack.env["MODELPORT_QUEUE_PREFIX"]
        waiting = job_ids_in_broker(
            service.stack.env["REDIS_URL"], [f"{prefix}torch", f"{prefix}control"], unacked=False
        )
        assert job_id not in waiting
