"""Retention: finished jobs past it lose their files, keep their rows, and say so (410)."""

from __future__ import annotations

import hashlib
import threading
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from domain.config import RetentionSettings, Settings
from domain.db import session_scope
from domain.models import Artifact, Job
from domain.models.base import new_id, utcnow
from domain.toolchains import CONTROL_QUEUE, queue_name
from tests.support.pipeline import new_job_row
from worker.celery_app import RETENTION_TASK
from worker.context import WorkerContext, build_context
from worker.retention import sweep

SPEC = {"targets": ["onnx"], "quantization": ["float32"], "toolchain": "auto", "model_format": "state_dict"}
OLD = timedelta(days=8)  # past the default retention of 7 days
RECENT = timedelta(hours=1)


def put(ctx: WorkerContext, key: str, data: bytes) -> tuple[int, str]:
    writer = ctx.store.open_writer(key)
    writer.write(data)
    stored = writer.commit()
    return stored.size, stored.sha256


def make_job(ctx: WorkerContext, status: str, age: timedelta) -> dict[str, str]:
    """A job with every kind of object a real one has; returns its object keys by role."""
    job_id = new_id()
    keys = {
        "model": f"uploads/{job_id}/model",
        "inputs": f"uploads/{job_id}/inputs",
        "calibration": f"uploads/{job_id}/calibration",
        "onnx": f"jobs/{job_id}/stages/export_onnx/model.onnx",
        "log": f"jobs/{job_id}/logs/export_onnx.log",
        "report": f"jobs/{job_id}/report.json",
    }
    sizes = {role: put(ctx, key, f"{role} of {job_id}".encode()) for role, key in keys.items()}
    then = utcnow() - age
    with session_scope(ctx.sessions) as session:
        model = {"key": keys["model"], "size": sizes["model"][0], "sha256": sizes["model"][1], "filename": "m.pth"}
        job = new_job_row(
            session, job_id, SPEC, model=model, inputs_key=keys["inputs"], calibration_key=keys["calibration"]
        )
        job.status, job.created_at, job.started_at = status, then - timedelta(minutes=5), then - timedelta(minutes=4)
        job.stages[0].log_key = keys["log"]
        if status in ("succeeded", "failed", "cancelled"):
            job.finished_at, job.report_key = then, keys["report"]
            size, sha256 = sizes["onnx"]
            job.artifacts.append(
                Artifact(
                    name="model.onnx",
                    object_key=keys["onnx"],
                    size=size,
                    sha256=sha256,
                    media_type="application/octet-stream",
                    precision="float32",
                    toolchain=None,
                )
            )
    return {"id": job_id, **keys}


def load(ctx: WorkerContext, job_id: str) -> Job:
    with session_scope(ctx.sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def assert_expired(ctx: WorkerContext, settings: Settings, made: dict[str, str], status: str) -> None:
    job = load(ctx, made["id"])
    assert job.status == status  # expiry is not a status change
    assert job.expired_at is not None
    assert job.artifacts
    assert all(a.expired_at is not None for a in job.artifacts)
    assert job.report_key == made["report"]  # the rows keep what was there
    for role, key in made.items():
        if role != "id":
            assert not ctx.store.exists(key), (role, key)
    assert not (settings.storage_root / "uploads" / made["id"]).exists()
    assert not (settings.storage_root / "jobs" / made["id"]).exists()


def assert_untouched(ctx: WorkerContext, made: dict[str, str]) -> None:
    job = load(ctx, made["id"])
    assert job.expired_at is None
    assert all(a.expired_at is None for a in job.artifacts)
    for role, key in made.items():
        if role != "id":
            assert ctx.store.read_bytes(key) == f"{role} of {made['id']}".encode(), (role, key)


def test_sweep_expires_finished_jobs_past_the_retention_only(settings: Settings) -> None:
    ctx = build_context(settings)
    old = {status: make_job(ctx, status, OLD) for status in ("succeeded", "failed", "cancelled")}
    kept = [
        make_job(ctx, "succeeded", RECENT),
        make_job(ctx, "running", OLD),  # running for days: never touched, whatever its age
        make_job(ctx, "queued", OLD),
    ]

    assert sorted(sweep(ctx)) == sorted(made["id"] for made in old.values())

    for status, made in old.items():
        assert_expired(ctx, settings, made, status)
    for made in kept:
        assert_untouched(ctx, made)


def test_a_second_sweep_changes_nothing(settings: Settings) -> None:
    ctx = build_context(settings)
    old, recent = make_job(ctx, "succeeded", OLD), make_job(ctx, "failed", RECENT)
    assert sweep(ctx) == [old["id"]]
    first = load(ctx, old["id"])

    assert sweep(ctx) == []

    again = load(ctx, old["id"])
    assert again.expired_at == first.expired_at
    assert [a.expired_at for a in again.artifacts] == [a.expired_at for a in first.artifacts]
    assert_expired(ctx, settings, old, "succeeded")
    assert_untouched(ctx, recent)


def test_concurrent_sweeps_expire_each_job_once(settings: Settings) -> None:
    contexts = [build_context(settings) for _ in range(2)]
    old = [make_job(contexts[0], "succeeded", OLD) for _ in range(6)]
    recent = make_job(contexts[0], "succeeded", RECENT)
    start = threading.Barrier(len(contexts))
    results: list[list[str]] = [[] for _ in contexts]
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            start.wait()
            results[index] = sweep(contexts[index])
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(contexts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    first, second = (set(found) for found in results)
    assert first.isdisjoint(second)  # each job was marked by exactly one sweeper
    assert first | second == {made["id"] for made in old}
    for made in old:
        assert_expired(contexts[0], settings, made, "succeeded")
    assert_untouched(contexts[0], recent)


def test_the_retention_setting_is_honoured(settings: Settings) -> None:
    hourly = build_context(settings.model_copy(update={"retention": RetentionSettings(hours=1)}))
    two_hours, half_hour = make_job(hourly, "succeeded", timedelta(hours=2)), make_job(hourly, "failed", RECENT / 2)
    assert sweep(hourly) == [two_hours["id"]]
    assert_expired(hourly, settings, two_hours, "succeeded")
    assert_untouched(hourly, half_hour)

    forever = build_context(settings.model_copy(update={"retention": RetentionSettings(hours=0)}))
    ancient = make_job(forever, "succeeded", timedelta(days=3650))
    assert sweep(forever) == []
    assert_untouched(forever, ancient)


def test_expired_files_answer_410_and_the_rows_say_when(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    ctx = build_context(settings)
    old, recent = make_job(ctx, "succeeded", OLD), make_job(ctx, "succeeded", RECENT)
    base = f"/v1/jobs/{old['id']}"
    download = client.get(f"{base}/artifacts/model.onnx", headers=auth)
    assert download.status_code == 200, download.text
    onnx_bytes = f"onnx of {old['id']}".encode()
    assert download.content == onnx_bytes
    digest = hashlib.sha256(onnx_bytes).hexdigest()
    assert download.headers["content-length"] == str(len(onnx_bytes))
    assert download.headers["x-checksum-sha256"] == digest
    assert download.headers["etag"] == f'"{digest}"'
    assert download.headers["content-disposition"] == 'attachment; filename="model.onnx"'
    report = client.get(f"{base}/report", headers=auth)
    assert report.status_code == 200, report.text
    assert report.content == f"report of {old['id']}".encode()
    log = client.get(f"{base}/logs/export_onnx", headers=auth)
    assert log.status_code == 200, log.text
    assert log.text == f"log of {old['id']}"
    before_job = client.get(base, headers=auth).json()
    before_artifacts = client.get(f"{base}/artifacts", headers=auth).json()
    assert before_job["expired_at"] is None
    assert [a["expired_at"] for a in before_artifacts] == [None]

    assert sweep(ctx) == [old["id"]]

    for path, code in ((f"{base}/artifacts/model.onnx", "artifact_expired"), (f"{base}/report", "report_expired")):
        response = client.get(path, headers=auth)
        assert response.status_code == 410, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert problem["code"] == code
        assert problem["status"] == 410
        assert problem["title"]
        assert "MODELPORT_RETENTION_HOURS" in problem["detail"]
        assert problem["expired_at"]
    log = client.get(f"{base}/logs/export_onnx", headers=auth)
    assert log.status_code == 404, log.text
    assert log.headers["content-type"].startswith("application/problem+json")
    assert log.json()["code"] == "log_not_found"
    assert "retention" in log.json()["detail"]
    # An unknown name is still a 404, expired job or not.
    missing = client.get(f"{base}/artifacts/model_int8.tflite", headers=auth)
    assert missing.status_code == 404
    assert missing.json()["code"] == "artifact_not_found"

    job = client.get(base, headers=auth).json()
    assert job["expired_at"] is not None
    assert {k: v for k, v in job.items() if k not in ("expired_at", "updated_at")} == {
        k: v for k, v in before_job.items() if k not in ("expired_at", "updated_at")
    }
    artifacts = client.get(f"{base}/artifacts", headers=auth).json()
    assert [a["expired_at"] for a in artifacts] == [job["expired_at"]]
    assert [{k: v for k, v in a.items() if k != "expired_at"} for a in artifacts] == [
        {k: v for k, v in a.items() if k != "expired_at"} for a in before_artifacts
    ]
    # The recent job downloads as before.
    fresh = client.get(f"/v1/jobs/{recent['id']}/artifacts/model.onnx", headers=auth)
    assert fresh.status_code == 200
    assert fresh.content == f"onnx of {recent['id']}".encode()
    assert client.get(f"/v1/jobs/{recent['id']}", headers=auth).json()["expired_at"] is None


def test_openapi_declares_the_expiry(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    paths = document["paths"]
    for path in ("/v1/jobs/{job_id}/artifacts/{name}", "/v1/jobs/{job_id}/report"):
        gone = paths[path]["get"]["responses"]["410"]
        assert "application/problem+json" in gone["content"], path
    schemas = document["components"]["schemas"]
    assert "expired_at" in schemas["JobOut"]["properties"]
    assert "expired_at" in schemas["ArtifactOut"]["properties"]


def test_the_control_worker_beat_runs_the_sweep() -> None:
    from worker.tasks import make_worker

    settings = Settings(retention=RetentionSettings(sweep_interval_seconds=123))
    app = make_worker(settings)
    entries = [entry for entry in app.conf.beat_schedule.values() if entry["task"] == RETENTION_TASK]
    assert len(entries) == 1
    assert entries[0]["schedule"] == 123
    assert entries[0]["options"]["queue"] == queue_name(settings, CONTROL_QUEUE)
    assert RETENTION_TASK in app.tasks


def test_retention_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELPORT_RETENTION_HOURS", raising=False)
    monkeypatch.delenv("MODELPORT_RETENTION_SWEEP_INTERVAL_SECONDS", raising=False)
    assert Settings().retention.period == timedelta(days=7)
    assert Settings().retention.sweep_interval_seconds == 3600
    monkeypatch.setenv("MODELPORT_RETENTION_HOURS", "12")
    monkeypatch.setenv("MODELPORT_RETENTION_SWEEP_INTERVAL_SECONDS", "60")
    assert Settings().retention.period == timedelta(hours=12)
    assert Settings().retention.sweep_interval_seconds == 60
    monkeypatch.setenv("MODELPORT_RETENTION_HOURS", "0")
    assert Settings().retention.period is None  # keep forever
    monkeypatch.setenv("MODELPORT_RETENTION_HOURS", "-1")
    with pytest.raises(ValidationError):
        Settings()
