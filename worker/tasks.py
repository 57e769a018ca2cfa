"""Celery tasks: thin. Validate arguments, call one plain function, record the outcome."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import structlog
from celery import Celery, Task
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import OperationalError

from domain import webhooks
from domain.config import Settings
from domain.db import session_scope
from domain.models import Job
from domain.toolchains import QUEUES, queue_name
from stages.kit.codes import StageCode
from worker import pipeline, retention
from worker.celery_app import RECONCILE_TASK, RETENTION_TASK, RUN_STAGE_TASK, WEBHOOK_TASK, make_celery
from worker.context import WorkerContext, get_context
from worker.reconcile import reconcile as find_and_resend

log = structlog.get_logger()

# Only infrastructure errors are retried; a conversion error is a final answer.
TRANSIENT = (OperationalError, RedisConnectionError, ConnectionError)


def make_worker(settings: Settings) -> Celery:
    """The worker's app: ``make_celery(settings)`` with the tasks registered on it. Each task
    runs on this process's ``WorkerContext`` (made from ``settings`` after the fork)."""
    app = make_celery(settings)

    def context() -> WorkerContext:
        return get_context(settings, app)

    @app.task(
        name=RUN_STAGE_TASK,
        bind=True,
        autoretry_for=TRANSIENT,
        retry_backoff=5,
        retry_backoff_max=120,
        retry_jitter=True,
        max_retries=5,
    )
    def run_stage_task(self: Task[Any, None], job_id: str, stage: str, request_id: str | None = None) -> None:
        run_stage(self, context(), job_id, stage, request_id)

    @app.task(name=RECONCILE_TASK, ignore_result=True)
    def reconcile_task() -> None:
        ctx = context()
        queues = [queue_name(ctx.settings, name) for name in QUEUES]
        find_and_resend(ctx, queues, timedelta(seconds=ctx.settings.queue.reconcile_grace_seconds))

    @app.task(name=RETENTION_TASK, ignore_result=True)
    def expire_task() -> None:
        # Periodic: a sweep that fails is simply the next beat's work, so no retry here.
        retention.sweep(context())

    @app.task(name=WEBHOOK_TASK, ignore_result=True)
    def webhooks_task() -> None:
        # Periodic: each due delivery gets one attempt; its retry time is kept in the database.
        ctx = context()
        webhooks.deliver_due(ctx.sessions, ctx.settings.webhook)

    return app


def run_stage(task: Task[Any, None], ctx: WorkerContext, job_id: str, stage: str, request_id: str | None) -> None:
    """The body of the ``run_stage`` task (``task`` is the bound task: its retry count)."""
    try:
        uuid.UUID(job_id)
    except (ValueError, TypeError):
        log.error("task.rejected", reason="malformed job id", job_id=job_id)
        return
    # Every line logged while the task runs (pipeline, runner, store, Celery's own) carries
    # the job, the stage and the id of the request that submitted the job.
    with structlog.contextvars.bound_contextvars(job_id=job_id, stage=stage, request_id=request_id):
        try:
            pipeline.run_stage(ctx, job_id, stage, request_id=request_id)
        except TRANSIENT:
            if task.request.retries < (task.max_retries or 0):
                raise
            _fail_internal(ctx, job_id, stage, "the service's database or queue was unreachable; resubmit the job")
        except Exception as exc:  # noqa: BLE001 - an accepted job must reach a final state
            log.exception("job.stage.internal_error")
            _fail_internal(ctx, job_id, stage, f"internal error in stage {stage!r}: {type(exc).__name__}: {exc}")


def _fail_internal(ctx: WorkerContext, job_id: str, stage: str, message: str) -> None:
    with session_scope(ctx.sessions) as session:
        job = session.get(Job, job_id)
        if job is None or job.status in pipeline.FINAL:
            return
        run = next((s for s in job.stages if s.name == stage), None)
        pipeline.fail_job(job, run, StageCode.INTERNAL_ERROR, message)
