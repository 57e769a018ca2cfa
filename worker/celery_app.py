"""The Celery factory: Redis broker, no result backend (job state lives in the database).

``make_celery(settings)`` is called by the worker's entry point (``worker.main``, which adds
the tasks) and by the API's lifespan (a client that only sends). Nothing here runs at
import, and this module imports nothing else of the worker: it is the one module of
``worker`` the API may import (an import-linter contract in pyproject.toml).
"""

from __future__ import annotations

import logging

from celery import Celery

from domain.config import Settings
from domain.toolchains import CONTROL_QUEUE, queue_name

# Task names: the message contract between the API (which sends by name) and the workers.
RUN_STAGE_TASK = "modelport.run_stage"
RECONCILE_TASK = "modelport.reconcile"
RETENTION_TASK = "modelport.expire"
WEBHOOK_TASK = "modelport.deliver_webhooks"


def make_celery(settings: Settings) -> Celery:
    """A Celery app for ``settings``' broker and queue prefix, with no task registered."""
    hard_limit = settings.limits.stage_timeout_seconds + 300
    control = queue_name(settings, CONTROL_QUEUE)
    app = Celery("modelport", broker=settings.queue.redis_url)
    app.conf.update(
        task_ignore_result=True,
        task_acks_late=True,  # a stage lost with its worker is redelivered...
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # ...and a worker holds one stage at a time
        task_time_limit=hard_limit,
        task_soft_time_limit=hard_limit - 60,
        # Redelivery after a lost worker waits for the visibility timeout: keep it past the hard limit.
        broker_transport_options={"visibility_timeout": hard_limit + 600},
        broker_connection_retry_on_startup=True,
        task_default_queue=control,
        worker_hijack_root_logger=False,
        task_serializer="json",
        # The control worker runs beat (-B): it re-sends what a broker restart lost, and
        # removes the objects of jobs past the retention, and sends the webhooks that are due.
        beat_schedule={
            "reconcile": {
                "task": RECONCILE_TASK,
                "schedule": settings.queue.reconcile_interval_seconds,
                "options": {"queue": control, "expires": settings.queue.reconcile_interval_seconds},
            },
            "webhooks": {
                "task": WEBHOOK_TASK,
                "schedule": settings.webhook.sweep_interval_seconds,
                "options": {"queue": control, "expires": settings.webhook.sweep_interval_seconds},
            },
            "expire": {
                "task": RETENTION_TASK,
                "schedule": settings.retention.sweep_interval_seconds,
                "options": {"queue": control, "expires": settings.retention.sweep_interval_seconds},
            },
        },
        accept_content=["json"],
    )
    return app


def enqueue_stage(
    celery: Celery, settings: Settings, job_id: str, stage: str, toolchain: str, *, request_id: str | None = None
) -> None:
    """Sends ``stage`` of ``job_id`` to ``toolchain``'s queue. Callers commit the job first:
    tasks get ids, never ORM objects."""
    celery.send_task(
        RUN_STAGE_TASK,
        args=[job_id, stage],
        kwargs={"request_id": request_id},
        queue=queue_name(settings, toolchain),
    )


class PeriodicTaskNoise(logging.Filter):
    """Drops the info lines Celery writes for the periodic sweeps (beat sending them, the control
    worker receiving and finishing them): the webhook sweep alone runs every 2 s, and its lines
    would bury everything else ``make run`` prints. Warnings and errors of the sweeps, and every
    line about stages, pass."""

    PERIODIC = (WEBHOOK_TASK, RECONCILE_TASK, RETENTION_TASK)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING or not record.name.startswith("celery"):
            return True
        message = record.getMessage()
        return not any(name in message for name in self.PERIODIC)
