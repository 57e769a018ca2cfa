"""A real service for end-to-end tests: API + one Celery worker per queue, as `make run` starts
them, on a throwaway PostgreSQL database, a private Redis database and test-only queue names."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from app.local import QUEUES, LocalStack, free_port
from tests.support.db import throwaway_postgres
from tests.support.redis_dbs import e2e_redis_url

E2E_REDIS_URL = e2e_redis_url()
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

    def wait_for_stage_process(self, job_id: str, stage: str, queue: str, timeout: float = 120) -> list[psutil.Process]:
        """Wait until ``stage`` runs and its interpreter (``python -m stages`` itself, not only
        its sandbox wrappers) exists; the stage's processes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.client.get(f"/v1/jobs/{job_id}").json()
            states = {s["name"]: s["state"] for s in job["stages"]}
            if job["status"] in ("succeeded", "failed", "cancelled"):
                raise AssertionError(f"job {job_id} ended before {stage} was seen running: {job['status']}")
            processes = self.stage_processes(queue)
            if states.get(stage) == "running" and any(is_stage_interpreter(p) for p in processes):
                return processes
            time.sleep(0.2)
        raise AssertionError(
            f"stage {stage} of job {job_id} was not seen running in {timeout} s; logs in {self.log_dir}"
        )

    def stage_processes(self, queue: str) -> list[psutil.Process]:
        """The stage processes (``python -m stages``, its sandbox wrappers) the queue's worker started."""
        try:
            worker = psutil.Process(self.stack.processes[f"worker-{queue}"].pid)
            descendants = worker.children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        found = []
        for proc in descendants:
            try:
                argv = proc.cmdline()
            except psutil.Error:
                continue
            if any(a == "-m" and b == "stages" for a, b in zip(argv, argv[1:], strict=False)) or is_warm_child(proc):
                found.append(proc)
        return found

    def kill_worker(self, queue: str) -> None:
        """SIGKILL the queue's worker process group (the Celery parent and its pool child)."""
        proc = self.stack.processes[f"worker-{queue}"]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def restart_worker(self, queue: str) -> None:
        self.stack.start_worker(queue)


def is_stage_interpreter(proc: psutil.Process) -> bool:
    """``<env>/bin/python -m stages ...`` itself (the sandbox's unshare and sh name it later in
    their argv), or a stage forked by a warm runner's parent (``worker.warm``)."""
    try:
        argv = proc.cmdline()
    except psutil.Error:
        return False
    cold = bool(argv) and Path(argv[0]).name.startswith("python") and argv[1:3] == ["-m", "stages"]
    return cold or is_warm_child(proc)


def is_warm_child(proc: psutil.Process) -> bool:
    """A stage process forked by a warm parent (``python -m stages.kit.forkserver``), not the parent."""
    try:
        parent = proc.parent()
        return parent is not None and "stages.kit.forkserver" in parent.cmdline()
    except psutil.Error:
        return False


def wait_gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until the processes ended (a zombie has ended); those still running at the deadline."""

    def running(proc: psutil.Process) -> bool:
        try:
            return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + timeout
    while (alive := [p for p in processes if running(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def kill_left(processes: list[psutil.Process]) -> None:
    """SIGKILL whatever of them still runs, so a failed test leaves nothing behind."""
    for proc in processes:
        try:
            proc.kill()  # psutil checks the pid was not reused
        except psutil.Error:
            pass


@contextmanager
def running_service(
    data_dir: Path,
    *,
    queues: list[str] | None = None,
    private_redis: bool = False,
    env: dict[str, str] | None = None,
) -> Iterator[Service]:
    """The service on a throwaway database; ``queues`` limits the workers started,
    ``private_redis`` gives it a Redis of its own (for tests that kill things), ``env`` adds settings."""
    with throwaway_postgres() as db_url:
        service_env = dict(os.environ)
        service_env.update(
            DATABASE_URL=db_url,
            REDIS_URL="" if private_redis else E2E_REDIS_URL,
            MODELPORT_QUEUE_PREFIX=f"e2e-{uuid.uuid4().hex[:8]}-",
            MODELPORT_API_KEY=API_KEY,
            MODELPORT_DATA_DIR=str(data_dir),
            MODELPORT_STAGE_TIMEOUT_SECONDS="900",
        )
        service_env.update(env or {})
        port = free_port()
        log_dir = data_dir / "logs"
        stack = LocalStack(
            data_dir=data_dir, port=port, env=service_env, queues=list(queues or QUEUES), log_dir=log_dir
        )
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
