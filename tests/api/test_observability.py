"""What an operator sees: /metrics (Prometheus text, read from the database and the broker),
/readyz (database, broker, object store, live workers) and the request id in worker logs."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import struct
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, get_args

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from sqlalchemy import select

from app.main import create_app
from domain.config import QueueSettings, Settings
from domain.db import make_engine, make_sessionmaker, session_scope
from domain.migrate import upgrade
from domain.models import Job, StageRun
from domain.toolchains import CONTROL_QUEUE, QUEUES, queue_name
from modelport.schemas.job import JobStatus
from modelport.schemas.spec import ToolchainChoice
from tests.support.api import SPEC, make_settings, submit
from tests.support.db import sqlite_url
from tests.support.stack import running_service
from worker.context import build_context
from worker.reconcile import reconcile

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def safetensors(floats: int) -> bytes:
    """A state dict of one float32 tensor, written without a framework (``8 + header + 4n`` bytes)."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [floats], "data_offsets": [0, 4 * floats]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\0" * (4 * floats)


def scrape(client: TestClient) -> Samples:
    """Every sample of /metrics, keyed by sample name and sorted labels."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {dict(labels)[label]: value for (sample, labels), value in samples.items() if sample == name}


def clear_queues(settings: Settings) -> None:
    """This test process's queues start empty (the queue prefix is private to it; nobody consumes)."""
    redis = Redis.from_url(settings.queue.redis_url)
    try:
        redis.delete(*(queue_name(settings, queue) for queue in QUEUES))
    finally:
        redis.close()


def test_metrics_count_jobs_uploads_queues_and_workers(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    clear_queues(settings)
    sizes: list[int] = []
    ids: dict[str, str] = {}
    for name, floats, toolchain in [("a", 10, "auto"), ("b", 20, "auto"), ("c", 30, "onnx2tf"), ("d", 40, "best")]:
        model = safetensors(floats)
        response = submit(client, auth, model, {**SPEC, "targets": ["onnx"], "toolchain": toolchain})
        assert response.status_code == 202, response.text
        ids[name] = response.json()["id"]
        sizes.append(len(model))
    assert client.post(f"/v1/jobs/{ids['c']}/cancel", headers=auth).json()["status"] == "cancelled"
    sessions = make_sessionmaker(make_engine(settings.database_url))
    with session_scope(sessions) as session:
        session.get_one(Job, ids["b"]).status = "running"  # as a worker's claim would
        first_queues = [
            session.scalars(select(StageRun.toolchain).where(StageRun.job_id == id_, StageRun.position == 0)).one()
            for id_ in ids.values()
        ]

    samples = scrape(client)

    jobs = {
        (dict(labels)["status"], dict(labels)["toolchain"]): value
        for (name, labels), value in samples.items()
        if name == "modelport_jobs"
    }
    expected = {(status, choice): 0.0 for status in get_args(JobStatus) for choice in get_args(ToolchainChoice)}
    expected.update({("queued", "auto"): 1, ("running", "auto"): 1, ("cancelled", "onnx2tf"): 1, ("queued", "best"): 1})
    assert jobs == expected
    assert samples[("modelport_upload_bytes_total", ())] == sum(sizes)
    # Each submission sent its first stage; nobody consumes this process's queues.
    assert by_label(samples, "modelport_queue_depth", "queue") == {
        queue: float(first_queues.count(queue)) for queue in QUEUES
    }
    assert sum(by_label(samples, "modelport_queue_depth", "queue").values()) == 4
    assert by_label(samples, "modelport_workers_alive", "queue") == dict.fromkeys(QUEUES, 0.0)
    assert by_label(samples, "modelport_metrics_source_up", "source") == {
        "database": 1.0,
        "broker": 1.0,
        "workers": 1.0,
    }


def test_stage_duration_histogram_counts_finished_stages(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    ids = [submit(client, auth, safetensors(4), {**SPEC, "targets": ["onnx"]}).json()["id"] for _ in range(3)]
    sessions = make_sessionmaker(make_engine(settings.database_url))
    durations = {0: ("succeeded", 0.3), 1: ("failed", 7.0), 2: ("succeeded", 45.0)}
    with session_scope(sessions) as session:
        for index, job_id in enumerate(ids):
            first = session.get_one(Job, job_id).stages[0]
            first.state, first.seconds = durations[index]
        # A running stage (no duration yet) and a skipped one are not finished stages.
        running = session.get_one(Job, ids[0]).stages[1]
        running.state, running.seconds = "running", None
        skipped = session.get_one(Job, ids[1]).stages[1]
        skipped.state, skipped.seconds = "skipped", 99.0
        stage, toolchain = first.name, first.toolchain

    samples = scrape(client)

    labels = (("stage", stage), ("toolchain", toolchain))
    assert samples[("modelport_stage_duration_seconds_count", labels)] == 3
    assert samples[("modelport_stage_duration_seconds_sum", labels)] == pytest.approx(52.3)
    buckets = {
        dict(sample_labels)["le"]: value
        for (name, sample_labels), value in samples.items()
        if name == "modelport_stage_duration_seconds_bucket" and dict(sample_labels)["stage"] == stage
    }
    # Durations 0.3, 7 and 45 s, cumulative over the bounds (seconds).
    assert buckets == {
        "0.5": 1.0, "1.0": 1.0, "2.5": 1.0, "5.0": 1.0, "10.0": 2.0, "30.0": 2.0, "60.0": 3.0,
        "120.0": 3.0, "300.0": 3.0, "600.0": 3.0, "1800.0": 3.0, "+Inf": 3.0,
    }  # fmt: skip
    # Only the stage given durations has a series: the running and skipped ones are left out.
    stages = {dict(lab)["stage"] for (name, lab) in samples if name == "modelport_stage_duration_seconds_count"}
    assert stages == {stage}


def test_metrics_report_what_they_can_when_redis_is_down(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    upgrade(url)
    settings = make_settings(url, tmp_path / "data")
    with socket.socket() as sock:  # a port nothing listens on: connections are refused
        sock.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    settings.queue = QueueSettings(REDIS_URL=dead)
    with TestClient(create_app(settings)) as client:
        samples = scrape(client)
    assert by_label(samples, "modelport_metrics_source_up", "source")["broker"] == 0
    assert by_label(samples, "modelport_metrics_source_up", "source")["database"] == 1
    assert samples[("modelport_upload_bytes_total", ())] == 0
    assert not any(name == "modelport_queue_depth" for name, _ in samples)


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    url = sqlite_url(tmp_path)
    upgrade(url)
    return make_settings(url, tmp_path / "data")


@pytest.fixture
def sqlite_client(sqlite_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(sqlite_settings)) as test_client:
        yield test_client


def ready(client: TestClient) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    response = client.get("/readyz")
    elapsed = time.monotonic() - started
    if response.status_code != 200:
        assert response.headers["content-type"].startswith("application/problem+json")
    return response.status_code, response.json(), elapsed


def test_readyz_needs_a_live_worker_on_every_queue(sqlite_client: TestClient, sqlite_settings: Settings) -> None:
    status, body, elapsed = ready(sqlite_client)
    assert status == 503
    assert body["code"] == "not_ready"
    assert body["checks"] == {
        "database": "ok",
        "broker": "ok",
        "object_store": "ok",
        "workers": f"error: no live worker on queue(s) {', '.join(QUEUES)}",
    }
    assert body["workers"] == dict.fromkeys(QUEUES, 0)
    assert "workers" in body["detail"]
    # Bounded by the ping timeout (1 s), not by how long a worker might take.
    assert elapsed < sqlite_settings.queue.worker_ping_timeout_seconds + 2

    sqlite_settings.queue.ready_requires_workers = False
    status, body, _ = ready(sqlite_client)
    assert status == 200, body
    assert body["status"] == "ready"
    assert body["checks"]["workers"].startswith("error: no live worker")


def test_readyz_names_a_broken_object_store(sqlite_client: TestClient, sqlite_settings: Settings) -> None:
    sqlite_settings.queue.ready_requires_workers = False
    assert ready(sqlite_client)[0] == 200
    root = sqlite_settings.storage_root
    shutil.rmtree(root)
    root.write_text("the object store's directory is now a file")

    status, body, _ = ready(sqlite_client)

    assert status == 503
    assert body["code"] == "not_ready"
    assert body["checks"]["object_store"].startswith("error: ")
    assert body["checks"]["database"] == body["checks"]["broker"] == "ok"
    assert body["detail"].startswith("not ready: object_store failed")


def test_a_request_id_is_kept_on_the_job(sqlite_client: TestClient, sqlite_settings: Settings) -> None:
    auth = {"Authorization": f"Bearer {sqlite_settings.api_key}"}
    given = f"client-{uuid.uuid4().hex}"
    sent = submit(sqlite_client, auth, safetensors(4), headers={"X-Request-ID": given})
    made = submit(sqlite_client, auth, safetensors(4))
    sessions = make_sessionmaker(make_engine(sqlite_settings.database_url))
    with session_scope(sessions) as session:
        assert session.get_one(Job, sent.json()["id"]).request_id == given
        # Without the header the API made one, and answered it.
        assert session.get_one(Job, made.json()["id"]).request_id == made.headers["X-Request-ID"]
    assert len(made.headers["X-Request-ID"]) == 32


def test_a_stage_the_reconciler_sends_again_keeps_the_request_id(
    sqlite_client: TestClient, sqlite_settings: Settings
) -> None:
    clear_queues(sqlite_settings)
    auth = {"Authorization": f"Bearer {sqlite_settings.api_key}"}
    given = f"client-{uuid.uuid4().hex}"
    job_id = submit(sqlite_client, auth, safetensors(4), headers={"X-Request-ID": given}).json()["id"]
    clear_queues(sqlite_settings)  # the broker lost the submission's message (a Redis restart)

    sent = reconcile(build_context(sqlite_settings), [queue_name(sqlite_settings, q) for q in QUEUES], timedelta(0))

    assert sent == [(job_id, "export_onnx")]
    redis = Redis.from_url(sqlite_settings.queue.redis_url)
    try:
        raw = redis.lrange(queue_name(sqlite_settings, "torch"), 0, -1)
    finally:
        redis.close()
    assert len(raw) == 1
    args, kwargs, _ = json.loads(base64.b64decode(json.loads(raw[0])["body"]))
    assert args == [job_id, "export_onnx"]
    assert kwargs == {"request_id": given}


# --- with real workers ---------------------------------------------------------------


def json_lines(path: Path) -> list[dict[str, Any]]:
    """The lines of a worker's log that are JSON objects (Celery's start banner is not)."""
    found = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            found.append(record)
    return found


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.5)


@pytest.mark.e2e
def test_worker_logs_carry_the_request_id_and_metrics_see_the_workers(tmp_path: Path, squeezenet_pth: Path) -> None:
    queues = [CONTROL_QUEUE, "torch"]
    with running_service(tmp_path / "service", queues=queues, env={"MODELPORT_LOG_JSON": "1"}) as service:
        alive = lambda: by_label(scrape(service.client), "modelport_workers_alive", "queue")  # noqa: E731
        wait_until(lambda: alive() == {q: float(q in queues) for q in QUEUES}, 60, "both workers to answer")
        given = f"e2e-{uuid.uuid4().hex}"
        response = service.client.post(
            "/v1/jobs",
            data={"spec": json.dumps({**SPEC, "targets": ["onnx"]})},
            files={"model": ("model.pth", squeezenet_pth.read_bytes())},
            headers={"X-Request-ID": given},
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        final = service.wait(job_id, timeout=300)
        assert final["status"] == "succeeded", final["error"]
        logs = {queue: service.log_dir / f"worker-{queue}.log" for queue in queues}

        def finished(queue: str, stage: str) -> bool:
            return any(
                r.get("event") == "job.stage.finished" and r.get("job_id") == job_id and r.get("stage") == stage
                for r in json_lines(logs[queue])
            )

        wait_until(lambda: finished("torch", "export_onnx") and finished(CONTROL_QUEUE, "report"), 20, "the logs")
        samples = scrape(service.client)
        status, body, _ = ready(service.client)

    for queue, stage in [("torch", "export_onnx"), (CONTROL_QUEUE, "report")]:
        records = json_lines(logs[queue])
        about_job = [r for r in records if r.get("job_id") == job_id]
        events = {r["event"] for r in about_job}
        assert {"job.stage.started", "job.stage.finished"} <= events, (queue, events)
        assert {r["stage"] for r in about_job} == {stage}
        # Every line about the job carries the id the client sent, in the workers too.
        assert [r for r in about_job if r.get("request_id") != given] == []
        # Celery's own records go through the same JSON renderer.
        assert any(str(r.get("logger", "")).startswith("celery") for r in records), queue

    seconds = {s["name"]: s["seconds"] for s in final["stages"]}
    for stage, toolchain in [("export_onnx", "torch"), ("report", CONTROL_QUEUE)]:
        labels = (("stage", stage), ("toolchain", toolchain))
        assert samples[("modelport_stage_duration_seconds_count", labels)] == 1
        assert samples[("modelport_stage_duration_seconds_sum", labels)] == pytest.approx(seconds[stage], abs=1e-3)
    assert samples[("modelport_jobs", (("status", "succeeded"), ("toolchain", "auto")))] == 1
    assert status == 503
    missing = [q for q in QUEUES if q not in queues]
    assert body["checks"]["workers"] == f"error: no live worker on queue(s) {', '.join(missing)}"
    assert body["workers"] == {q: int(q in queues) for q in QUEUES}
