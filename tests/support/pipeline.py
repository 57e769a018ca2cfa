"""Driving worker/pipeline.py by hand on a real database: jobs, stage outcomes, sent messages."""

from __future__ import annotations

import base64
import json
from collections import Counter
from typing import Any

import redis
from sqlalchemy.orm import Session

from app.services import jobs
from app.services.keys import DEFAULT_TENANT
from domain.config import Settings
from domain.db import session_scope
from domain.models import Job
from domain.models.base import new_id
from domain.toolchains import TOOLCHAINS, queue_name
from worker import pipeline
from worker.context import WorkerContext
from worker.runner import StageFailure

SPEC = {"targets": ["onnx"], "quantization": ["float32"], "toolchain": "auto", "model_format": "state_dict"}


def new_job_row(
    session: Session,
    job_id: str,
    spec: dict[str, Any],
    size: int = 1,
    model: dict[str, Any] | None = None,
    inputs_key: str | None = None,
    calibration_key: str | None = None,
) -> Job:
    """A job row of the admin key's tenant with the plan of ``spec``; ``model`` defaults to a
    ``size``-byte upload under ``uploads/<id>/model``."""
    return jobs.create_job(
        session,
        job_id=job_id,
        tenant=DEFAULT_TENANT,
        spec=spec,
        model=model or {"key": f"uploads/{job_id}/model", "size": size, "sha256": "0" * 64, "filename": "m.pth"},
        inputs_key=inputs_key,
        calibration_key=calibration_key,
        idempotency_key=None,
        req_hash=None,
    )


def make_job(ctx: WorkerContext, spec: dict[str, Any] = SPEC) -> str:
    """A queued job of the admin key's tenant (so the API serves it) with the plan of ``spec``."""
    job_id = new_id()
    with session_scope(ctx.sessions) as session:
        new_job_row(session, job_id, spec)
    return job_id


def run(ctx: WorkerContext, job_id: str, stage: str, result: dict[str, Any] | None = None) -> list[str]:
    """Claim ``stage`` and record it succeeded with ``result``; the stages it released."""
    claimed = pipeline.claim(ctx, job_id, stage)
    assert isinstance(claimed, pipeline.Claim), claimed
    released = pipeline.record_outcome(ctx, job_id, claimed.definition, result or {}, 0.1, None)
    return [d.name for d in released]


def fail(ctx: WorkerContext, job_id: str, stage: str, code: str, message: str, tail: str = "") -> list[str]:
    """Claim ``stage`` and record it failed as the runner reports a failure; the stages it released."""
    claimed = pipeline.claim(ctx, job_id, stage)
    assert isinstance(claimed, pipeline.Claim), claimed
    failure = StageFailure(code, message, tail)
    return [d.name for d in pipeline.record_outcome(ctx, job_id, claimed.definition, {}, 0.1, failure)]


def converted(name: str) -> dict[str, Any]:
    """A convert stage's result holding a float32 .tflite."""
    return {"outputs": {"tflite_float32": {"key": f"k/{name}", "size": 1, "sha256": "0" * 64, "file": "m.tflite"}}}


def validated(verdict: str = "pass", flex: bool = False, latency_ms: float = 1.0) -> dict[str, Any]:
    """A validate stage's result for a float32 .tflite with ``verdict``."""
    metrics = {
        "verdict": verdict,
        "requires_flex": flex,
        "reasons": [] if verdict == "pass" else ["output: max_abs 0.5 above 1e-4 x scale 1.0"],
        "latency_ms": {"median_1_thread": latency_ms},
        "outputs": {"output": {"max_abs": 1e-6 if verdict == "pass" else 0.5, "scale": 1.0}},
    }
    return {"metrics": {"tflite_float32": metrics}}


def states(ctx: WorkerContext, job_id: str) -> dict[str, str]:
    with session_scope(ctx.sessions) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return {s.name: s.state for s in job.stages}


def sent_stages(settings: Settings, job_id: str) -> Counter[str]:
    """How many run_stage messages for ``job_id`` wait in the toolchain queues, per stage.

    Read from the broker itself (kombu's Redis transport keeps a queue as a list of JSON
    envelopes whose base64 body is ``[args, kwargs, embed]``).
    """
    client = redis.Redis.from_url(settings.queue.redis_url)
    found: Counter[str] = Counter()
    try:
        for toolchain in TOOLCHAINS:
            for raw in client.lrange(queue_name(settings, toolchain), 0, -1):
                envelope = json.loads(raw)
                args, _kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
                if args[0] == job_id:
                    found[args[1]] += 1
    finally:
        client.close()
    return found
