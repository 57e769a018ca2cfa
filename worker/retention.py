"""Retention: a finished job's objects are removed once it is older than the retention.

Uploads (`uploads/<id>/`), stage outputs and logs, the report (`jobs/<id>/`) and with them
every artifact go; the rows stay, with `expired_at` on the job and on its artifacts, so a
client still sees what was produced (names, sizes, sha256) and a download answers 410.
Queued and running jobs are never touched.

Safe to run twice or concurrently: objects are deleted first (deletes are idempotent) and
the job is marked by a conditional UPDATE (`expired_at IS NULL`), so of two sweepers one
marks each job, and a sweep that dies between the two steps is finished by the next one.
No transaction is held while objects are deleted, so SQLite's single writer never waits
on the object store.
"""

from __future__ import annotations

from datetime import datetime

import structlog
from sqlalchemy import func, select, update

from domain.db import session_scope
from domain.jobs.states import FINAL
from domain.models import Artifact, Job
from domain.models.base import utcnow
from worker.context import WorkerContext

log = structlog.get_logger()

BATCH = 100  # jobs read per query; each job is then deleted and marked on its own


def job_prefixes(job_id: str) -> tuple[str, ...]:
    """Where a job's objects live: its uploads, and its stage outputs, logs and report."""
    return (f"uploads/{job_id}", f"jobs/{job_id}")


def _recorded_keys(job: Job) -> set[str]:
    """Every key the rows point at, in case one lives outside the job's prefixes."""
    keys = {job.model_key, job.inputs_key, job.calibration_key, job.report_key}
    keys.update(a.object_key for a in job.artifacts)
    keys.update(s.log_key for s in job.stages)
    return {key for key in keys if key}


def _due(ctx: WorkerContext, cutoff: datetime, after: str) -> list[str]:
    finished = func.coalesce(Job.finished_at, Job.updated_at)
    with session_scope(ctx.sessions) as session:
        query = (
            select(Job.id)
            .where(Job.status.in_(FINAL), Job.expired_at.is_(None), finished < cutoff, Job.id > after)
            .order_by(Job.id)
            .limit(BATCH)
        )
        return list(session.scalars(query))


def expire_job(ctx: WorkerContext, job_id: str) -> bool:
    """Delete a finished job's objects and mark it and its artifacts expired; False when
    there was nothing to do (unknown, not finished, or already expired by someone else)."""
    with session_scope(ctx.sessions) as session:
        job = session.get(Job, job_id)
        if job is None or job.status not in FINAL or job.expired_at is not None:
            return False
        keys = _recorded_keys(job)
    removed = sum(ctx.store.delete_prefix(prefix) for prefix in job_prefixes(job_id))
    removed += sum(ctx.store.delete(key) for key in sorted(keys))
    now = utcnow()
    with session_scope(ctx.sessions) as session:
        marked = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.expired_at.is_(None))
            .values(expired_at=now)
            .execution_options(synchronize_session=False)
        )
        if marked.rowcount != 1:  # type: ignore[attr-defined]
            return False
        session.execute(
            update(Artifact)
            .where(Artifact.job_id == job_id, Artifact.expired_at.is_(None))
            .values(expired_at=now)
            .execution_options(synchronize_session=False)
        )
    log.info("job.expired", job_id=job_id, objects_removed=removed)
    return True


def sweep(ctx: WorkerContext) -> list[str]:
    """Expire every finished job older than the retention; returns the ids this call marked."""
    period = ctx.settings.retention.period
    if period is None:
        return []  # retention 0: keep everything
    cutoff = utcnow() - period
    expired: list[str] = []
    after = ""
    while batch := _due(ctx, cutoff, after):
        for job_id in batch:
            try:
                if expire_job(ctx, job_id):
                    expired.append(job_id)
            except Exception:  # noqa: BLE001 - one job's store error must not stop the others
                log.exception("job.expire_failed", job_id=job_id)
        after = batch[-1]
    if expired:
        log.info("retention.swept", jobs=len(expired), hours=ctx.settings.retention.hours)
    return expired
