"""A job's resources (report, artifacts, logs) and the listing, on both databases.

Jobs are written to the database directly, in the state each case needs (the data layer
sets up the case; the HTTP answers are what is under test). A finished job's missing
resource answers a final 404; "not ready" (409) is only for what can still come.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from domain.config import Settings
from domain.db import session_scope
from domain.models import Job
from domain.models.base import new_id, utcnow
from tests.support.api import assert_problem
from tests.support.pipeline import new_job_row
from worker.context import WorkerContext, build_context

# Three stages: export_onnx, convert_onnx_tf (the SavedModel's: the only SavedModel
# candidate on a server with onnx-tf alone), report.
SPEC = {
    "targets": ["onnx", "saved_model"],
    "quantization": ["float32"],
    "toolchain": "auto",
    "model_format": "state_dict",
    "available_toolchains": ["onnx-tf"],
}


def insert_job(ctx: WorkerContext, created_at: datetime | None = None, **fields: Any) -> str:
    """A job row with its planned stages; ``fields`` set job columns, ``stage_<name>`` a stage's columns."""
    job_id = new_id()
    with session_scope(ctx.sessions) as session:
        job = new_job_row(session, job_id, SPEC, size=4)
        if created_at is not None:
            job.created_at = created_at
        for name, value in fields.items():
            if name.startswith("stage_"):
                run = next(s for s in job.stages if s.name == name.removeprefix("stage_"))
                for column, stage_value in value.items():
                    setattr(run, column, stage_value)
            else:
                setattr(job, name, value)
    return job_id


def failed_at_export(ctx: WorkerContext) -> str:
    """A job that failed in its first stage, as the pipeline leaves one: no report, no artifact."""
    log_key = "jobs/{id}/logs/export_onnx.log"
    job_id = insert_job(
        ctx,
        status="failed",
        finished_at=utcnow(),
        error_code="invalid_model",
        error_message="not a state dict",
        error_stage="export_onnx",
        stage_export_onnx={"state": "failed", "error_code": "invalid_model"},
        stage_convert_onnx_tf={"state": "skipped"},
        stage_report={"state": "skipped"},
    )
    key = log_key.format(id=job_id)
    writer = ctx.store.open_writer(key)
    writer.write(b"Traceback ...\nStageError: invalid_model: not a state dict\n")
    writer.commit()
    with session_scope(ctx.sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.stages[0].log_key = key
    return job_id


def test_a_report_that_will_never_exist_is_a_final_404(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    ctx = build_context(settings)
    failed = failed_at_export(ctx)
    cancelled = insert_job(ctx, status="cancelled", finished_at=utcnow())

    body = assert_problem(client.get(f"/v1/jobs/{failed}/report", headers=auth), 404, "report_not_produced")
    assert body["job_status"] == "failed"
    assert body["job_error"] == {"code": "invalid_model", "stage": "export_onnx"}
    assert "failed with invalid_model at stage export_onnx" in body["detail"]
    assert "will produce nothing more" in body["detail"]

    body = assert_problem(client.get(f"/v1/jobs/{cancelled}/report", headers=auth), 404, "report_not_produced")
    assert body["job_status"] == "cancelled"
    assert "job_error" not in body
    assert "was cancelled" in body["detail"]


def test_a_report_still_to_come_is_409_while_queued_or_running(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    ctx = build_context(settings)
    for status in ("queued", "running"):
        job_id = insert_job(ctx, status=status)
        body = assert_problem(client.get(f"/v1/jobs/{job_id}/report", headers=auth), 409, "report_not_ready")
        assert body["job_status"] == status
        assert "retry later" in body["detail"]


def test_artifacts_of_a_finished_job_say_none_will_come(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    ctx = build_context(settings)
    failed, running = failed_at_export(ctx), insert_job(ctx, status="running")
    assert client.get(f"/v1/jobs/{failed}/artifacts", headers=auth).json() == []

    body = assert_problem(
        client.get(f"/v1/jobs/{failed}/artifacts/model.onnx", headers=auth), 404, "artifact_not_found"
    )
    assert body["job_status"] == "failed"
    assert "failed with invalid_model at stage export_onnx and will produce nothing more" in body["detail"]

    body = assert_problem(
        client.get(f"/v1/jobs/{running}/artifacts/model.onnx", headers=auth), 404, "artifact_not_found"
    )
    assert body["job_status"] == "running"
    assert "appear as its stages finish" in body["detail"]


def test_stage_logs_answer_by_the_stage_state(client: TestClient, auth: dict[str, str], settings: Settings) -> None:
    ctx = build_context(settings)
    failed = failed_at_export(ctx)
    running = insert_job(ctx, status="running", stage="export_onnx", stage_export_onnx={"state": "running"})

    log = client.get(f"/v1/jobs/{failed}/logs/export_onnx", headers=auth)
    assert log.status_code == 200, log.text
    assert log.text == "Traceback ...\nStageError: invalid_model: not a state dict\n"
    assert log.headers["content-type"].startswith("text/plain")

    # A stage that was skipped when the job failed will never have a log.
    body = assert_problem(client.get(f"/v1/jobs/{failed}/logs/report", headers=auth), 404, "log_not_found")
    assert body["stage_state"] == "skipped"
    assert "will produce nothing more" in body["detail"]

    # A running stage's log is stored when it ends: not ready, and the same for one still pending.
    for stage, state in (("export_onnx", "running"), ("convert_onnx_tf", "pending")):
        body = assert_problem(client.get(f"/v1/jobs/{running}/logs/{stage}", headers=auth), 409, "log_not_ready")
        assert body["stage_state"] == state

    body = assert_problem(client.get(f"/v1/jobs/{failed}/logs/quantize", headers=auth), 404, "log_not_found")
    assert "its stages are: export_onnx, convert_onnx_tf, report" in body["detail"]


def test_status_filter_returns_exactly_the_matching_jobs(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    ctx = build_context(settings)
    start = utcnow() - timedelta(hours=1)
    statuses = ["queued", "failed", "running", "succeeded", "failed", "queued", "cancelled", "failed"]
    made = [insert_job(ctx, start + timedelta(seconds=i), status=s) for i, s in enumerate(statuses)]
    for status in ("queued", "running", "succeeded", "failed", "cancelled"):
        page = client.get(f"/v1/jobs?status={status}", headers=auth).json()
        expected = [job_id for job_id, s in zip(made, statuses, strict=True) if s == status][::-1]
        assert [j["id"] for j in page["items"]] == expected, status
        assert {j["status"] for j in page["items"]} == {status}
        assert page["next_cursor"] is None
    assert_problem(client.get("/v1/jobs?status=done", headers=auth), 422, "validation_error")


def test_pages_default_to_20_cap_at_100_and_never_overlap(
    client: TestClient, auth: dict[str, str], settings: Settings
) -> None:
    ctx = build_context(settings)
    start = utcnow() - timedelta(hours=1)
    # Three jobs per second: the cursor must also order jobs created at the same instant.
    made = [insert_job(ctx, start + timedelta(seconds=i // 3), status="queued") for i in range(23)]
    with session_scope(ctx.sessions) as session:
        rows = [session.get(Job, job_id) for job_id in made]
        newest_first = [j.id for j in sorted(rows, key=lambda j: (j.created_at, j.id), reverse=True)]  # type: ignore[union-attr]

    default = client.get("/v1/jobs", headers=auth).json()
    assert default["limit"] == 20
    assert [j["id"] for j in default["items"]] == newest_first[:20]
    rest = client.get(f"/v1/jobs?cursor={default['next_cursor']}", headers=auth).json()
    assert [j["id"] for j in rest["items"]] == newest_first[20:]
    assert rest["next_cursor"] is None

    pages, cursor = [], None
    while True:
        page = client.get(
            "/v1/jobs", headers=auth, params={"limit": 4, **({"cursor": cursor} if cursor else {})}
        ).json()
        pages.append([j["id"] for j in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [4, 4, 4, 4, 4, 3]
    assert [job_id for p in pages for job_id in p] == newest_first  # no overlap, no gap, in order

    assert len(client.get("/v1/jobs?limit=100", headers=auth).json()["items"]) == 23
    for limit in (101, 0):
        body = assert_problem(client.get(f"/v1/jobs?limit={limit}", headers=auth), 422, "validation_error")
        assert "limit" in body["detail"]
