"""What the benchmarks share: the service started as `make run` starts it, jobs sent to it and
waited for, and scripts run in a toolchain's interpreter (not a test helper: tests have
tests/support/stack.py).

``running_stack`` is the one place a benchmark starts the stack (app.local.LocalStack: a
private Redis, the migrations, the API and one worker per queue) in a directory of its own,
on loopback only, with an admin key.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from app.local import QUEUES, LocalStack, free_port
from domain.toolchains import stages_pythonpath
from testkit.toolchains import toolchain_python

KEY = "bench-key"
FINAL = frozenset({"succeeded", "failed", "cancelled"})


@dataclass
class Stack:
    """A running service: ``client`` (authenticated, against ``base_url``) and the processes."""

    client: httpx.Client
    stack: LocalStack
    base_url: str
    log_dir: Path

    def submit(self, model: Path, spec: dict[str, Any]) -> dict[str, Any]:
        """POST the job; its resource (raises on a non-202 answer)."""
        response = self.client.post(
            "/v1/jobs", data={"spec": json.dumps(spec)}, files={"model": (model.name, model.read_bytes())}
        )
        if response.status_code != 202:
            raise RuntimeError(f"submission refused: {response.status_code} {response.text[:500]}")
        job: dict[str, Any] = response.json()
        return job

    def wait(self, job_id: str, timeout: float = 900, poll: float = 0.2) -> dict[str, Any]:
        """The job once final; RuntimeError at ``timeout`` or when a service process died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job: dict[str, Any] = self.client.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in FINAL:
                return job
            problem = self.stack.check_alive()
            if problem:
                raise RuntimeError(f"{problem}; logs in {self.log_dir}")
            time.sleep(poll)
        raise RuntimeError(f"job {job_id} not final after {timeout} s; logs in {self.log_dir}")


@contextmanager
def running_stack(
    data_dir: Path,
    *,
    env: dict[str, str] | None = None,
    queues: list[str] | None = None,
    database_url: str | None = None,
    timeout: float = 600,
) -> Iterator[Stack]:
    """The service in ``data_dir`` (SQLite there unless ``database_url``), workers for
    ``queues`` (default: every queue), ``env`` added to its settings; stopped on exit."""
    service_env = {**os.environ, "MODELPORT_API_KEY": KEY, "MODELPORT_DATA_DIR": str(data_dir)}
    service_env.pop("REDIS_URL", None)  # LocalStack starts a private Redis
    service_env.pop("DATABASE_URL", None)
    if database_url:
        service_env["DATABASE_URL"] = database_url
    service_env.update(env or {})
    port = free_port()
    log_dir = data_dir / "logs"
    stack = LocalStack(data_dir=data_dir, port=port, env=service_env, queues=list(queues or QUEUES), log_dir=log_dir)
    base_url = f"http://127.0.0.1:{port}"
    try:
        stack.start()
        with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=timeout) as client:
            yield Stack(client, stack, base_url, log_dir)
    finally:
        stack.stop()


def toolchain_run(toolchain: str, script: str, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    """``script`` (``python -c``) in a fresh interpreter of ``toolchain``'s environment, with
    the ``stages`` package and testkit importable, no GPU; raises on a non-zero exit."""
    env = {**os.environ, "PYTHONPATH": stages_pythonpath(), "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [str(toolchain_python(toolchain)), "-c", script, *args],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def machine() -> str:
    """The line every benchmark prints first: cores and load averages (the machine is shared)."""
    one, five, fifteen = os.getloadavg()
    return f"cores={os.cpu_count()} load={one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min)"
