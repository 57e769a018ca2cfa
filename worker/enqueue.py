"""Sending stage tasks. Callers commit the job first: tasks get ids, never ORM objects."""

from __future__ import annotations

from worker.celery_app import celery_app, queue_name

RUN_STAGE_TASK = "modelport.run_stage"


def enqueue_stage(job_id: str, stage: str, toolchain: str, *, request_id: str | None = None) -> None:
    celery_app.send_task(
        RUN_STAGE_TASK,
        args=[job_id, stage],
        kwargs={"request_id": request_id},
        queue=queue_name(toolchain),
    )
