"""Simultaneous submissions on the embedded default (SQLite, WAL) against a real uvicorn
server: no 5xx, every job committed once, reads never fail, and a truly busy database
answers 503 database_busy with Retry-After, fast. TestClient would serialize the requests,
so the API runs as `make run` starts it (app.local.LocalStack), without workers: the
broker is the tests' private Redis database, which nobody consumes."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient
from redis import Redis

from app.local import LocalStack, free_port
from app.main import create_app
from domain.migrate import upgrade
from tests.support.api import ADMIN_KEY, make_settings
from tests.support.db import sqlite_url

BURST = 20
SPEC = {
    "architecture": {"name": "torchvision.models.squeezenet1_1", "kwargs": {"num_classes": 10}},
    "inputs": [{"name": "input", "shape": [1, 3, 64, 64], "dtype": "float32"}],
}
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


@contextmanager
def api_server(data_dir: Path, **env: str) -> Iterator[httpx.Client]:
    """The API alone (no workers) in a uvicorn process on a free loopback port, on a SQLite file."""
    port = free_port()
    service_env = {
        **os.environ,
        "DATABASE_URL": sqlite_url(data_dir),
        "MODELPORT_API_KEY": ADMIN_KEY,
        **env,
    }
    stack = LocalStack(data_dir=data_dir, port=port, env=service_env, queues=[], log_dir=data_dir / "logs")
    try:
        stack.start()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=AUTH, timeout=60) as client:
            yield client
    finally:
        stack.stop()


def post_job(client: httpx.Client, model: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return client.post(
        "/v1/jobs", data={"spec": json.dumps(SPEC)}, files={"model": ("model.pth", model)}, headers=headers
    )


def job_ids(db_file: Path) -> list[str]:
    with sqlite3.connect(db_file) as connection:
        return [row[0] for row in connection.execute("SELECT id FROM jobs")]


def enqueued_request_ids(job_ids: set[str]) -> dict[str, Any]:
    """job id -> the request_id its first stage's Celery message carries (the tests' Redis)."""
    queue = f"{os.environ['MODELPORT_QUEUE_PREFIX']}torch"  # export_onnx runs on the torch queue
    redis = Redis.from_url(os.environ["REDIS_URL"])
    found: dict[str, Any] = {}
    for raw in redis.lrange(queue, 0, -1):
        args, kwargs, _embed = json.loads(base64.b64decode(json.loads(raw)["body"]))
        if args[0] in job_ids:
            found[args[0]] = kwargs["request_id"]
    return found


def test_a_burst_of_submissions_all_commit_and_reads_never_fail(tmp_path: Path, squeezenet_pth: Path) -> None:
    model = squeezenet_pth.read_bytes()
    data_dir = tmp_path / "data"
    with api_server(data_dir) as client:
        first = post_job(client, model)
        assert first.status_code == 202, first.text
        watched = first.json()["id"]

        barrier = threading.Barrier(BURST + 1)
        answers: list[httpx.Response | BaseException | None] = [None] * BURST
        polls: list[tuple[int, str | None, float]] = []
        burst_over = threading.Event()

        def submit(i: int) -> None:
            # Half send their own request id (echoed), half get one from the service.
            headers = {"X-Request-ID": f"burst-{i}"} if i % 2 else None
            with httpx.Client(base_url=client.base_url, headers=AUTH, timeout=60) as own:
                barrier.wait()
                try:
                    answers[i] = post_job(own, model, headers)
                except httpx.HTTPError as exc:  # a timeout or a dropped connection
                    answers[i] = exc

        def poll() -> None:
            with httpx.Client(base_url=client.base_url, headers=AUTH, timeout=30) as own:
                barrier.wait()
                while not burst_over.is_set():
                    started = time.monotonic()
                    response = own.get(f"/v1/jobs/{watched}")
                    polls.append(
                        (response.status_code, response.headers.get("X-Request-ID"), time.monotonic() - started)
                    )

        threads = [threading.Thread(target=submit, args=(i,)) for i in range(BURST)]
        poller = threading.Thread(target=poll)
        for thread in [*threads, poller]:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        burst_over.set()
        poller.join(timeout=60)

        failures = [
            (i, a.status_code, a.text[:300]) if isinstance(a, httpx.Response) else (i, repr(a))
            for i, a in enumerate(answers)
            if not isinstance(a, httpx.Response) or a.status_code != 202
        ]
        assert failures == [], failures
        responses = [a for a in answers if isinstance(a, httpx.Response)]
        for i, response in enumerate(responses):
            sent = f"burst-{i}" if i % 2 else None
            rid = response.headers.get("X-Request-ID")
            assert rid is not None, i
            assert rid == sent if sent else len(rid) == 32, (i, rid)
        accepted = {r.json()["id"] for r in responses}
        assert len(accepted) == BURST

        assert polls, "the poller never got an answer"
        assert [p for p in polls if p[0] != 200 or not p[1]] == []
        assert max(p[2] for p in polls) < 10, sorted(p[2] for p in polls)[-5:]

        # Every accepted job is in the database exactly once, nothing else is.
        stored = job_ids(data_dir / "modelport.db")
        assert sorted(stored) == sorted(accepted | {watched})
        # Each first stage was enqueued after its commit, carrying the response's request id.
        carried = enqueued_request_ids(accepted)
        assert carried == {r.json()["id"]: r.headers["X-Request-ID"] for r in responses}


def test_a_busy_database_answers_503_with_retry_after(tmp_path: Path, squeezenet_pth: Path) -> None:
    model = squeezenet_pth.read_bytes()
    data_dir = tmp_path / "data"
    with api_server(data_dir, MODELPORT_API_LOCK_TIMEOUT_MS="300") as client:
        db_file = data_dir / "modelport.db"
        holder = sqlite3.connect(db_file, isolation_level=None, timeout=30)
        holder.execute("BEGIN IMMEDIATE")  # another process's writer holds the write lock
        try:
            started = time.monotonic()
            busy = post_job(client, model, {"X-Request-ID": "busy-1"})
            elapsed = time.monotonic() - started
            # Reads are not blocked by a writer (WAL).
            listed = client.get("/v1/jobs")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert busy.status_code == 503, busy.text
        assert busy.headers["content-type"].startswith("application/problem+json")
        assert busy.json()["code"] == "database_busy"
        assert busy.json()["status"] == 503
        assert int(busy.headers["Retry-After"]) >= 1
        assert busy.headers["X-Request-ID"] == "busy-1"
        assert elapsed < 5, elapsed  # the 300 ms lock timeout, not SQLite's 15 s default
        assert listed.status_code == 200
        assert listed.json()["items"] == []
        # The refused submission left nothing behind: no row, no uploaded file.
        assert job_ids(db_file) == []
        assert list((data_dir / "objects").glob("uploads/*/*")) == []

        again = post_job(client, model)
        assert again.status_code == 202, again.text
        assert job_ids(db_file) == [again.json()["id"]]


def test_an_unhandled_error_carries_the_request_id(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    upgrade(url)
    app = create_app(make_settings(url, tmp_path / "data"))

    def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/boom", boom)
    with TestClient(app, raise_server_exceptions=False) as client:
        echoed = client.get("/boom", headers={"X-Request-ID": "client-id-7"})
        made = client.get("/boom")
    assert echoed.status_code == 500
    assert echoed.json()["code"] == "internal_error"
    assert echoed.headers["X-Request-ID"] == "client-id-7"
    assert made.status_code == 500
    assert len(made.headers["X-Request-ID"]) == 32
    assert made.headers["X-Request-ID"] != "client-id-7"
