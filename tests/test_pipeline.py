"""The job state machine on a real database: claims, duplicates, redelivery, worker loss."""

from __future__ import annotations

from datetime import timedelta

from app.core.config import Settings
from app.core.db import session_scope
from app.models import Job, StageRun
from app.models.base import new_id, utcnow
from app.services import jobs
from worker import pipeline
from worker.context import WorkerContext, build_context

SPEC = {"targets": ["onnx"], "quantization": ["float32"], "toolchain": "auto", "model_format": "state_dict"}


def make_job(ctx: WorkerContext) -> str:
    job_id = new_id()
    with session_scope(ctx.sessions) as session:
        jobs.create_job(
            session,
            job_id=job_id,
            tenant="t",
            spec=SPEC,
            model={"key": f"uploads/{job_id}/model", "size": 1, "sha256": "0" * 64, "filename": "m.pth"},
            inputs_key=None,
            calibration_key=None,
            idempotency_key=None,
            req_hash=None,
        )
    return job_id


def age_heartbeat(ctx: WorkerContext, job_id: str) -> None:
    with session_scope(ctx.sessions) as session:
        run = session.query(StageRun).filter_by(job_id=job_id, name="export_onnx").one()
        run.heartbeat_at = utcnow() - timedelta(minutes=10)


def test_duplicates_are_ignored_and_lost_workers_are_counted(settings: Settings) -> None:
    ctx = build_context(settings)
    job_id = make_job(ctx)
    first = pipeline.claim(ctx, job_id, "export_onnx")
    assert isinstance(first, pipeline.Claim)
    # The same message delivered again while the stage runs (fresh heartbeat): ignored.
    assert pipeline.claim(ctx, job_id, "export_onnx") is None
    # The worker died (heartbeat stale): the redelivered message runs it again, counted.
    age_heartbeat(ctx, job_id)
    assert isinstance(pipeline.claim(ctx, job_id, "export_onnx"), pipeline.Claim)
    age_heartbeat(ctx, job_id)
    assert pipeline.claim(ctx, job_id, "export_onnx") is None
    with session_scope(ctx.sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert job.status == "failed"
        assert job.error_code == "worker_lost"
        assert job.error_stage == "export_onnx"
        assert [s.state for s in job.stages] == ["failed", "skipped"]


def test_finished_jobs_are_never_revived(settings: Settings) -> None:
    ctx = build_context(settings)
    job_id = make_job(ctx)
    with session_scope(ctx.sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None
        jobs.cancel_job(session, job)
    assert pipeline.claim(ctx, job_id, "export_onnx") is None
    assert pipeline.claim(ctx, new_id(), "export_onnx") is None
