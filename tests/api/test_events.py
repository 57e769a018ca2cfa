"""``GET /v1/jobs/{id}/events``: auth, tenants, the wire format, and the end at a final state.

Jobs are written to the database directly; a thread moves one through its states while the
stream is open, as the workers would.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.api import job_events
from app.local import LocalStack, free_port
from domain.config import Settings
from domain.db import session_scope
from domain.models import Job
from domain.models.base import utcnow
from tests.api.test_job_resources import insert_job
from tests.support.api import ADMIN_KEY, assert_problem, make_settings
from worker.context import WorkerContext, build_context


@pytest.fixture
def ctx(settings: Settings) -> WorkerContext:
    return build_context(settings)


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(job_events, "POLL_SECONDS", 0.05)


def parse(text: str) -> list[dict[str, str]]:
    """The stream's blocks (separated by a blank line), each as its fields; comments kept as ':'."""
    events = []
    for block in text.split("\n\n"):
        if not block:
            continue
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        events.append(fields)
    return events


def stream(client: TestClient, auth: dict[str, str], job_id: str) -> tuple[str, list[dict[str, str]]]:
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=auth) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        text = response.read().decode()
    return text, parse(text)


def test_a_final_job_streams_its_state_once_then_ends(
    client: TestClient, auth: dict[str, str], ctx: WorkerContext
) -> None:
    job_id = insert_job(ctx, status="succeeded", finished_at=utcnow())
    text, events = stream(client, auth, job_id)
    assert events[0] == {"retry": "2000"}
    assert [e.get("event") for e in events[1:]] == ["job", "end"]
    assert [e["id"] for e in events[1:]] == ["1", "2"]
    # The job event is the resource GET /v1/jobs/{id} answers, on one data line.
    assert json.loads(events[1]["data"]) == client.get(f"/v1/jobs/{job_id}", headers=auth).json()
    assert json.loads(events[2]["data"]) == {"status": "succeeded"}
    assert text.endswith("\n\n")


@pytest.fixture
def polls(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """When each of the stream's reads of the job ended (monotonic clock)."""
    ended: list[float] = []
    read = job_events._read

    def counted(*args: object) -> object:
        try:
            return read(*args)  # type: ignore[arg-type]
        finally:
            ended.append(time.monotonic())

    monkeypatch.setattr(job_events, "_read", counted)
    return ended


def set_later(
    ctx: WorkerContext, job_id: str, steps: list[dict[str, object]], pause: float, polls: list[float] | None = None
) -> threading.Thread:
    """Apply each step (job columns, ``stage_<name>`` for a stage's) after ``pause`` seconds, in a
    thread; with ``polls``, also not before the stream has read the job twice since the last step
    (a read that began before a commit may miss it; the second cannot), however slow the machine."""

    def run() -> None:
        committed = time.monotonic()
        for step in steps:
            time.sleep(pause)
            deadline = time.monotonic() + 30
            while polls is not None and sum(t > committed for t in polls) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            with session_scope(ctx.sessions) as session:
                job = session.get(Job, job_id)
                assert job is not None
                for name, value in step.items():
                    if name.startswith("stage_"):
                        run_ = next(s for s in job.stages if s.name == name.removeprefix("stage_"))
                        for column, stage_value in value.items():  # type: ignore[attr-defined]
                            setattr(run_, column, stage_value)
                    else:
                        setattr(job, name, value)
            committed = time.monotonic()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_each_status_and_stage_change_is_an_event_until_the_job_is_final(
    client: TestClient, auth: dict[str, str], ctx: WorkerContext, polls: list[float]
) -> None:
    job_id = insert_job(ctx, status="queued")
    now = utcnow()
    steps: list[dict[str, object]] = [
        {"status": "running", "stage": "export_onnx", "started_at": now,
         "stage_export_onnx": {"state": "running", "started_at": now}},
        {"stage": "convert_onnx_tf", "stage_export_onnx": {"state": "succeeded", "finished_at": now, "seconds": 1.5},
         "stage_convert_onnx_tf": {"state": "running", "started_at": now}},
        {"status": "failed", "stage": None, "finished_at": now, "error_code": "conversion_failed",
         "error_message": "no", "error_stage": "convert_onnx_tf",
         "stage_convert_onnx_tf": {"state": "failed", "error_code": "conversion_failed"},
         "stage_report": {"state": "skipped"}},
    ]  # fmt: skip
    thread = set_later(ctx, job_id, steps, pause=0.2, polls=polls)
    started = time.monotonic()
    _, events = stream(client, auth, job_id)
    thread.join(timeout=10)
    assert time.monotonic() - started < 20
    jobs = [json.loads(e["data"]) for e in events if e.get("event") == "job"]
    # No event without a change: one per step, after the first state.
    assert [(j["status"], j["stage"]) for j in jobs] == [
        ("queued", None),
        ("running", "export_onnx"),
        ("running", "convert_onnx_tf"),
        ("failed", None),
    ]
    states = [{s["name"]: s["state"] for s in j["stages"]} for j in jobs]
    assert states[1]["export_onnx"] == "running"
    assert states[2] == {"export_onnx": "succeeded", "convert_onnx_tf": "running", "report": "pending"}
    assert jobs[-1]["error"]["code"] == "conversion_failed"
    assert events[-1]["event"] == "end"
    assert json.loads(events[-1]["data"]) == {"status": "failed"}
    ids = [int(e["id"]) for e in events if "id" in e]
    assert ids == list(range(1, len(ids) + 1))


def test_a_quiet_stream_sends_keep_alive_comments(
    client: TestClient, auth: dict[str, str], ctx: WorkerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(job_events, "HEARTBEAT_SECONDS", 0.2)
    job_id = insert_job(ctx, status="running")
    thread = set_later(ctx, job_id, [{"status": "cancelled", "finished_at": utcnow()}], pause=0.7)
    text, events = stream(client, auth, job_id)
    thread.join(timeout=10)
    assert ": keep-alive\n\n" in text
    assert [e.get("event") for e in events if "event" in e] == ["job", "job", "end"]


def test_events_need_a_key_and_the_jobs_tenant(client: TestClient, auth: dict[str, str], ctx: WorkerContext) -> None:
    job_id = insert_job(ctx, status="succeeded", finished_at=utcnow())
    assert_problem(client.get(f"/v1/jobs/{job_id}/events"), 401, "missing_api_key")
    assert_problem(
        client.get(f"/v1/jobs/{job_id}/events", headers={"Authorization": "Bearer no"}), 401, "invalid_api_key"
    )
    other = client.post("/v1/admin/keys", headers=auth, json={"tenant": "other"}).json()["key"]
    # Another tenant's job is a 404, like an unknown or malformed id.
    for path in (job_id, "00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        headers = {"Authorization": f"Bearer {other}"} if path == job_id else auth
        assert_problem(client.get(f"/v1/jobs/{path}/events", headers=headers), 404, "job_not_found")


def test_the_stream_is_declared_in_the_openapi_document(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/v1/jobs/{job_id}/events"]["get"]
    assert set(operation["responses"]["200"]["content"]) == {"text/event-stream"}
    assert {"401", "404", "422"} <= set(operation["responses"])


def test_an_open_stream_does_not_hold_the_apis_shutdown(tmp_path: Path) -> None:
    """The API as ``make run`` starts it (no workers here), a stream open on a running job,
    then SIGTERM: the API stops within its 5 s grace, not when the job ends."""
    data_dir = tmp_path / "data"
    env = {**os.environ, "REDIS_URL": os.environ["REDIS_URL"], "MODELPORT_API_KEY": ADMIN_KEY}
    stack = LocalStack(data_dir=data_dir, port=free_port(), env=env, queues=[])
    try:
        stack.start()
        settings = make_settings(f"sqlite:///{(data_dir / 'modelport.db').resolve()}", data_dir)
        job_id = insert_job(build_context(settings), status="running")
        base = f"http://127.0.0.1:{stack.port}"
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        with httpx.stream("GET", f"{base}/v1/jobs/{job_id}/events", headers=headers, timeout=30) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            assert next(lines) == "retry: 2000"
            started = time.monotonic()
            stack.stop()
        assert time.monotonic() - started < 12
    finally:
        stack.stop()
