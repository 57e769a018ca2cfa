"""The Celery app's delivery settings (worker/celery_app.py): late acks, one prefetch, ordered time limits."""

from __future__ import annotations

from domain.config import Settings
from worker.celery_app import make_celery


def test_queue_time_limits_are_ordered() -> None:
    conf = make_celery(Settings()).conf
    assert conf.task_acks_late
    assert conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_soft_time_limit < conf.task_time_limit < conf.broker_transport_options["visibility_timeout"]
