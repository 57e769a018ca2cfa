"""The Celery application: Redis broker, no result backend (job state lives in the database)."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals

from domain.config import get_settings
from domain.logging import configure_logging

CONTROL_QUEUE = "control"
RECONCILE_TASK = "modelport.reconcile"
RETENTION_TASK = "modelport.expire"
WEBHOOK_TASK = "modelport.deliver_webhooks"


def queue_name(toolchain: str) -> str:
    return f"{get_settings().queue.queue_prefix}{toolchain}"


def make_celery() -> Celery:
    settings = get_settings()
    hard_limit = settings.limits.stage_timeout_seconds + 300
    app = Celery("modelport", broker=settings.queue.redis_url, include=["worker.tasks"])
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
        task_default_queue=queue_name(CONTROL_QUEUE),
        worker_hijack_root_logger=False,
        task_serializer="json",
        # The control worker runs beat (-B): it re-sends what a broker restart lost, and
        # removes the objects of jobs past the retention, and sends the webhooks that are due.
        beat_schedule={
            "reconcile": {
                "task": RECONCILE_TASK,
                "schedule": settings.queue.reconcile_interval_seconds,
                "options": {"queue": queue_name(CONTROL_QUEUE), "expires": settings.queue.reconcile_interval_seconds},
            },
            "webhooks": {
                "task": WEBHOOK_TASK,
                "schedule": settings.webhook.sweep_interval_seconds,
                "options": {"queue": queue_name(CONTROL_QUEUE), "expires": settings.webhook.sweep_interval_seconds},
            },
            "expire": {
                "task": RETENTION_TASK,
                "schedule": settings.retention.sweep_interval_seconds,
                "options": {"queue": queue_name(CONTROL_QUEUE), "expires": settings.retention.sweep_interval_seconds},
            },
        },
        accept_content=["json"],
    )
    return app


celery_app = make_celery()


@signals.setup_logging.connect
def _configure_worker_logging(loglevel: int | str | None = None, **_: Any) -> None:
    """Workers log like the API: structlog, JSON with ``MODELPORT_LOG_JSON``.

    Connecting this signal makes Celery leave logging to us (no handlers of its own, no
    stdout redirection); its own records (task received/succeeded, beat) render through the
    same formatter. Pool children are forked after this runs and inherit the setup.
    """
    level = logging.getLevelName(loglevel) if isinstance(loglevel, str) else (loglevel or logging.INFO)
    configure_logging(json=get_settings().log_json, level=level, library_level=level)
