"""Restarting Redis (it keeps nothing on disk) loses no accepted job: the control worker's
reconcile finds jobs queued in the database but in no queue, and sends them again."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from app.local import LocalStack, free_port, redis_command, wait_for_port
from tests.support.db import throwaway_postgres
from worker.reconcile import job_ids_in_broker

pytestmark = pytest.mark.e2e
KEY = "restart-key"


def start_redis(port: int, directory: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(redis_command(port, directory), stdout=subprocess.DEVNULL)
    wait_for_port(port)
    return proc


def wait_until(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_redis_restart_loses_no_accepted_job(tmp_path: Path, squeezenet_pth: Path) -> None:
    redis_port = free_port()
    redis = start_redis(redis_port, tmp_path)
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    prefix = f"restart-{uuid.uuid4().hex[:6]}-"
    with throwaway_postgres() as db_url:
        env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "REDIS_URL": redis_url,
            "MODELPORT_QUEUE_PREFIX": prefix,
            "MODELPORT_API_KEY": KEY,
            "MODELPORT_RECONCILE_INTERVAL_SECONDS": "2",
            "MODELPORT_RECONCILE_GRACE_SECONDS": "3",
        }
        port = free_port()
        # No torch worker yet: the job's first stage waits in the broker.
        stack = LocalStack(
            data_dir=tmp_path / "data", port=port, env=env, queues=["control"], log_dir=tmp_path / "logs"
        )
        try:
            stack.start()
            client = httpx.Client(
                base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {KEY}"}, timeout=60
            )
            spec = {
                "architecture": {"name": "torchvision.models.squeezenet1_1", "kwargs": {"num_classes": 10}},
                "inputs": [{"name": "input", "shape": [1, 3, 64, 64], "dtype": "float32"}],
                "targets": ["onnx"],
            }
            response = client.post(
                "/v1/jobs", data={"spec": json.dumps(spec)}, files={"model": ("m.pth", squeezenet_pth.read_bytes())}
            )
            assert response.status_code == 202, response.text
            job_id = response.json()["id"]
            queues = [f"{prefix}torch"]
            assert job_id in job_ids_in_broker(redis_url, queues)

            redis.kill()  # SIGKILL: everything it held is gone
            redis.wait()
            redis = start_redis(redis_port, tmp_path)
            assert job_id not in job_ids_in_broker(redis_url, queues)

            wait_until(lambda: job_id in job_ids_in_broker(redis_url, queues), 60, "the job to be re-enqueued")
            stack.start_worker("torch")
            wait_until(
                lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] in ("succeeded", "failed"),
                300,
                "the job to finish",
            )
            job = client.get(f"/v1/jobs/{job_id}").json()
            assert job["status"] == "succeeded", job["error"]
            assert [s["attempts"] for s in job["stages"]] == [1, 1]
        finally:
            stack.stop()
            redis.kill()
            redis.wait()
