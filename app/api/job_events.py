"""A job's server-sent events: its state each time it changes, until it is final.

The database is polled every ``POLL_SECONDS`` in the thread pool (never on the event loop),
with a short read session per poll, so a stream that lasts as long as its job holds no
pooled connection between polls. The wire format is in docs/api.md.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, joinedload, lazyload, sessionmaker
from starlette.concurrency import run_in_threadpool

from app.api.presenters import job_out
from domain.jobs.states import FINAL
from domain.models import Job
from modelport.schemas.job import JobOut

log = structlog.get_logger(__name__)

# Seconds between two reads of the job; a comment line keeps idle proxies from closing a
# quiet stream every HEARTBEAT_SECONDS; RETRY_MS is the reconnection delay sent to clients.
POLL_SECONDS = 1.0
HEARTBEAT_SECONDS = 15.0
RETRY_MS = 2000


def frame(event: str, data: str, event_id: int | None = None) -> str:
    """One event: ``id`` (when given), ``event`` and one ``data`` line (``data`` is JSON, one line)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n"


def _read(sessions: sessionmaker[Session], tenant: str, job_id: str) -> JobOut | None:
    """The job as ``GET /v1/jobs/{id}`` shows it; None if it is no longer there.

    The job and its stages come from one statement: read by two, a worker's commit between
    them (PostgreSQL's READ COMMITTED takes a snapshot per statement) would give an event
    that mixes the job before the commit with its stages after it.
    """
    with sessions() as session:
        job = session.get(Job, job_id, options=[joinedload(Job.stages), lazyload(Job.artifacts)])
        if job is None or job.tenant != tenant:
            return None
        return job_out(job)


async def stream(
    sessions: sessionmaker[Session],
    tenant: str,
    first: JobOut,
    *,
    poll_seconds: float | None = None,
    heartbeat_seconds: float | None = None,
) -> AsyncIterator[str]:
    """``job`` events (the job resource) from ``first`` on, one per change, then ``end``.

    A database that cannot answer one poll (busy, restarting) is skipped over, not an end:
    the next poll tries again.
    """
    poll = POLL_SECONDS if poll_seconds is None else poll_seconds
    heartbeat = HEARTBEAT_SECONDS if heartbeat_seconds is None else heartbeat_seconds
    yield f"retry: {RETRY_MS}\n\n"
    sent = 1
    last = first.model_dump_json()
    yield frame("job", last, sent)
    current: JobOut | None = first
    quiet = 0.0
    while current is not None and current.status not in FINAL:
        await asyncio.sleep(poll)
        try:
            read = await run_in_threadpool(_read, sessions, tenant, first.id)
        except SQLAlchemyError as exc:
            log.warning("job.events.poll_failed", job_id=first.id, error=f"{type(exc).__name__}: {exc}"[:300])
            read = current
        if read is None:
            current = None
            break
        current = read
        body = current.model_dump_json()
        if body != last:
            sent += 1
            last, quiet = body, 0.0
            yield frame("job", body, sent)
        else:
            quiet += poll
            if quiet >= heartbeat:
                quiet = 0.0
                yield ": keep-alive\n\n"
    status = current.status if current is not None else "gone"
    yield frame("end", json.dumps({"status": status}), sent + 1)
