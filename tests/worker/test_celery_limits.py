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


def test_the_periodic_sweeps_info_lines_are_dropped_and_nothing_else() -> None:
    import logging

    from worker.celery_app import RUN_STAGE_TASK, WEBHOOK_TASK, PeriodicTaskNoise

    def record(name: str, level: int, message: str, *args: object) -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, message, args, None)

    noise = PeriodicTaskNoise()
    assert not noise.filter(record("celery.worker.strategy", logging.INFO, "Task %s[%s] received", WEBHOOK_TASK, "1"))
    assert not noise.filter(
        record("celery.beat", logging.INFO, "Scheduler: Sending due task webhooks (%s)", WEBHOOK_TASK)
    )
    assert noise.filter(record("celery.app.trace", logging.ERROR, "Task %s[%s] raised", WEBHOOK_TASK, "1"))
    assert noise.filter(record("celery.app.trace", logging.INFO, "Task %s[%s] succeeded", RUN_STAGE_TASK, "2"))
    assert noise.filter(record("modelport", logging.INFO, "webhook.attempt %s", WEBHOOK_TASK))
