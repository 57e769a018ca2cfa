"""The job state machine on a real database: claims, duplicates, redelivery, worker loss."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from app.services import jobs
from domain.config import Settings
from domain.db import session_scope
from domain.models import Job, StageRun
from domain.models.base import new_id, utcnow
from tests.support.pipeline import converted, make_job, run, sent_stages, states, validated
from worker import pipeline
from worker.context import WorkerContext, build_context


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


BEST = {
    "targets": ["tflite"],
    "quantization": ["float32"],
    "toolchain": "best",
    "model_format": "state_dict",
    "available_toolchains": ["onnx-tf", "onnx2tf", "litert-torch"],
}
CONVERTS = ["convert_onnx2tf", "convert_litert_torch", "convert_onnx_tf"]


def record_together(ctx: WorkerContext, job_id: str, claims: list[Any], results: list[dict[str, Any]]) -> list[str]:
    """Record several stages' outcomes at the same moment, as workers on three queues do: a
    barrier holds each thread until all are ready, so their transactions really overlap."""
    barrier = threading.Barrier(len(claims))

    def record(claim: Any, result: dict[str, Any]) -> list[str]:
        barrier.wait(timeout=30)
        return [d.name for d in pipeline.record_outcome(ctx, job_id, claim.definition, result, 1.0, None)]

    with ThreadPoolExecutor(max_workers=len(claims)) as pool:
        return [name for names in pool.map(record, claims, results) for name in names]


def test_best_runs_the_candidates_side_by_side(settings: Settings) -> None:
    ctx = build_context(settings)
    job_id = make_job(ctx, BEST)
    assert run(ctx, job_id, "export_onnx") == CONVERTS
    assert {states(ctx, job_id)[name] for name in CONVERTS} == {"queued"}
    # The export's message delivered again (its worker died after recording, before
    # sending): what it released is sent again, once each.
    resent = pipeline.claim(ctx, job_id, "export_onnx")
    assert isinstance(resent, list)
    assert [d.name for d in resent] == CONVERTS
    before = sent_stages(settings, job_id)
    pipeline.run_stage(ctx, job_id, "export_onnx")  # the task itself sends them (test queues)
    sent = sent_stages(settings, job_id) - before
    assert sent == dict.fromkeys(CONVERTS, 1), sent
    # A stage whose inputs are not there yet is not run, whatever message arrives.
    assert pipeline.claim(ctx, job_id, "validate_onnx2tf") is None
    # The three conversions end at the same moment on three workers: each sees the
    # others' outcomes or waits for them, so every validation is released exactly once.
    claims = [pipeline.claim(ctx, job_id, name) for name in CONVERTS]
    assert all(isinstance(c, pipeline.Claim) for c in claims)

    released = record_together(ctx, job_id, claims, [converted(name) for name in CONVERTS])
    assert sorted(released) == ["validate_litert_torch", "validate_onnx2tf", "validate_onnx_tf"]
    # A file that needs flex ops gets TensorFlow's validation; a builtin-only one skips it.
    assert run(ctx, job_id, "validate_onnx_tf", validated("fail", flex=True)) == ["validate_flex_onnx_tf"]
    assert run(ctx, job_id, "validate_onnx2tf", validated()) == []
    assert states(ctx, job_id)["validate_flex_onnx2tf"] == "skipped"
    assert run(ctx, job_id, "validate_flex_onnx_tf", validated("pass", flex=True)) == []
    # The last candidate's validation releases the report (nothing else to wait for).
    assert run(ctx, job_id, "validate_litert_torch", validated()) == ["report"]
    assert run(ctx, job_id, "report") == []
    with session_scope(ctx.sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert job.status == "succeeded", (job.error_code, job.error_message)
        assert [a.name for a in job.artifacts] == ["model_float32.tflite"]
        assert {s.state for s in job.stages} <= {"succeeded", "skipped"}
    # A redelivered message of a finished stage changes nothing.
    assert pipeline.claim(ctx, job_id, "convert_onnx2tf") is None


def test_the_last_of_simultaneous_validations_releases_the_report(settings: Settings) -> None:
    # Each finishing stage must see the others' outcomes (the job row is locked while it
    # decides), else none of them would see "all validated" and the job would hang.
    ctx = build_context(settings)
    for _ in range(4):
        job_id = make_job(ctx, BEST)
        run(ctx, job_id, "export_onnx")
        for name in CONVERTS:
            run(ctx, job_id, name, converted(name))
        validations = ["validate_onnx2tf", "validate_litert_torch", "validate_onnx_tf"]
        claims = [pipeline.claim(ctx, job_id, name) for name in validations]
        released = record_together(ctx, job_id, claims, [validated() for _ in validations])
        assert released == ["report"]
