"""A real service for end-to-end tests: API + one Celery worker per queue, as `make run` starts
them, on a throwaway PostgreSQL database, a private Redis database and test-only queue names."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from app.local import LocalStack, free_port
from tests.support.db import throwaway_postgres

E2E_REDIS_URL = os.environ.get("MODELPORT_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
API_KEY = "e2e-admin-key"


@dataclass
class Service:
    client: httpx.Client
    stack: LocalStack
    log_dir: Path

    def submit(self, model: Path, spec: dict[str, Any], **files: Path) -> dict[str, Any]:
        import json

        parts = {"model": (model.name, model.read_bytes())}
        parts.update({name: (path.name, path.read_bytes()) for name, path in files.items()})
        response = self.client.post("/v1/jobs", data={"spec": json.dumps(spec)}, files=parts)
        assert response.status_code == 202, response.text
        return response.json()

    def wait(self, job_id: str, timeout: float = 900) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.client.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return job
            problem = self.stack.check_alive()
            if problem:
                raise AssertionError(f"{problem}; logs in {self.log_dir}")
            time.sleep(0.5)
        raise AssertionError(f"job {job_id} did not finish in {timeout} s; logs in {self.log_dir}")


@contextmanager
def running_service(data_dir: Path) -> Iterator[Service]:
    with throwaway_postgres() as db_url:
        env = dict(os.environ)
        env.update(
            DATABASE_URL=db_url,
            REDIS_URL=E2E_REDIS_URL,
            MODELPORT_QUEUE_PREFIX=f"e2e-{uuid.uuid4().hex[:8]}-",
            MODELPORT_API_KEY=API_KEY,
            MODELPORT_DATA_DIR=str(data_dir),
            MODELPORT_STAGE_TIMEOUT_SECONDS="900",
        )
        port = free_port()
        log_dir = data_dir / "logs"
        stack = LocalStack(data_dir=data_dir, port=port, env=env, log_dir=log_dir)
        try:
            stack.start()
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}",
                timeout=60,
                headers={"Authorization": f"Bearer {API_KEY}"},
            ) as client:
                yield Service(client=client, stack=stack, log_dir=log_dir)
        finally:
            stack.stop()
