"""Celery tasks: thin. Validate arguments, call one plain function, record the outcome."""

from __future__ import annotations

import uuid

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import OperationalError

from domain.db import session_scope
from domain.models import Job
from worker import pipeline, retention
from worker.celery_app import CONTROL_QUEUE, RECONCILE_TASK, RETENTION_TASK, WEBHOOK_TASK, celery_app
from worker.context import get_context
from worker.enqueue import RUN_STAGE_TASK

log = structlog.get_logger()

# Only infrastructure errors are retried; a conversion error is a final answer.
TRANSIENT = (OperationalError, RedisConnectionError, ConnectionError)


@celery_app.task(
    name=RUN_STAGE_TASK,
    bind=True,
    autoretry_for=TRANSIENT,
    retry_backoff=5,
    retry_backoff_max=120,
    retry_jitter=True,
    max_retries=5,
)
def run_stage(self, job_id: str, stage: str, request_id: str | None = None) -> None:  # type: ignore[no-untyped-def]
    try:
        uuid.UUID(job_id)
    except (ValueError, TypeError):
        log.error("task.rejected", reason="malformed job id", job_id=job_id)
        return
    ctx = get_context()
    # Every line logged while the task runs (pipeline, runner, store, Celery's own) carries
    # the job, the stage and the id of the request that submitted the job.
    with structlog.contextvars.bound_contextvars(job_id=job_id, stage=stage, request_id=request_id):
        try:
            pipeline.run_stage(ctx, job_id, stage, request_id=request_id)
        except TRANSIENT:
            if self.request.retries < self.max_retries:
                raise
            _fail_internal(job_id, stage, "the service's database or queue was unreachable; resubmit the job")
        except Exception as exc:  # noqa: BLE001 - an accepted job must reach a final state
            log.exception("job.stage.internal_error")
            _fail_internal(job_id, stage, f"internal error in stage {stage!r}: {type(exc).__name__}: {exc}")


def _fail_internal(job_id: str, stage: str, message: str) -> None:
    ctx = get_context()
    with session_scope(ctx.sessions) as session:
        job = session.get(Job, job_id)
        if job is None or job.status in pipeline.FINAL:
            return
        run = next((s for s in job.stages if s.name == stage), None)
        pipeline.fail_job(job, run, "internal_error", message)


@celery_app.task(name=RECONCILE_TASK, ignore_result=True)
def reconcile() -> None:
    from datetime import timedelta

    from domain.toolchains import TOOLCHAINS
    from worker.celery_app import queue_name
    from worker.reconcile import reconcile as find_and_resend

    ctx = get_context()
    queues = [queue_name(name) for name in (CONTROL_QUEUE, *TOOLCHAINS)]
    find_and_resend(ctx, queues, timedelta(seconds=ctx.settings.queue.reconcile_grace_seconds))


@celery_app.task(name=RETENTION_TASK, ignore_result=True)
def expire() -> None:
    # Periodic: a sweep that fails is simply the next beat's work, so no retry here.
    retention.sweep(get_context())


@celery_app.task(name=WEBHOOK_TASK, ignore_result=True)
def deliver_webhooks() -> None:
    # Periodic: each due delivery gets one attempt; its retry time is kept in the database.
    from domain.webhooks import deliver_due

    ctx = get_context()
    deliver_due(ctx.sessions, ctx.settings.webhook)
