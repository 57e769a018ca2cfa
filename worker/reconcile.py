"""Finding accepted jobs the broker lost, and sending their next stage again.

Redis here keeps nothing on disk: a restart drops every queued and unacknowledged
message. The database still knows each job's next stage, so a periodic task compares
the two: a released (``queued``) stage whose message is in no queue after a grace
period, a running stage whose heartbeat stopped, or - when nothing was released yet -
the job's first waiting stage, is enqueued again. Claims are idempotent, so a
message sent twice never runs a stage twice.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import structlog
from redis import Redis
from sqlalchemy import select

from domain.db import session_scope
from domain.jobs.plan import Plan, StageDef
from domain.jobs.states import FINAL, JobStatus, StageState
from domain.models import Job
from domain.models.base import as_utc, utcnow
from worker.context import WorkerContext

log = structlog.get_logger()


def _job_id_of(raw: bytes | str) -> str | None:
    """The job id (first task argument) of a kombu Redis message."""
    try:
        message: Any = json.loads(raw)
        if isinstance(message, list):  # the `unacked` hash stores [message, exchange, routing_key]
            message = message[0]
        args_repr = (message.get("headers") or {}).get("argsrepr")
        if args_repr and args_repr.startswith("["):
            return str(json.loads(args_repr.replace("'", '"'))[0])
        body = json.loads(base64.b64decode(message["body"]))
        return str(body[0][0])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def job_ids_in_broker(redis_url: str, queues: Iterable[str], *, unacked: bool = True) -> set[str]:
    """Jobs with a message waiting in ``queues`` or (``unacked``) delivered but not acknowledged."""
    client = Redis.from_url(redis_url)
    try:
        found: set[str] = set()
        for queue in queues:
            for raw in client.lrange(queue, 0, -1):
                if (job_id := _job_id_of(raw)) is not None:
                    found.add(job_id)
        for raw in client.hvals("unacked") if unacked else []:
            if (job_id := _job_id_of(raw)) is not None:
                found.add(job_id)
        return found
    finally:
        client.close()


def _last_change(job: Job, now: datetime) -> datetime:
    moments = [job.updated_at, *(s.updated_at for s in job.stages)]
    return max((as_utc(m) for m in moments if m is not None), default=now)


def reconcile(ctx: WorkerContext, queues: list[str], grace: timedelta) -> list[tuple[str, str]]:
    """Re-enqueue what the broker lost; returns the (job, stage) pairs sent."""
    in_broker = job_ids_in_broker(ctx.settings.queue.redis_url, queues)
    # A message the worker took stays unacknowledged until the visibility timeout (past the
    # longest stage) when that worker dies; the stage's heartbeat tells much sooner.
    waiting = job_ids_in_broker(ctx.settings.queue.redis_url, queues, unacked=False)
    stale = ctx.settings.queue.heartbeat_stale
    now = utcnow()
    resend: list[tuple[str, str, str, str | None]] = []
    with session_scope(ctx.sessions) as session:
        for job in session.scalars(select(Job).where(Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)))):
            if job.status in FINAL or job.id in waiting:
                continue
            held = job.id in in_broker  # by a worker: only a stale heartbeat says it is lost
            runs = {s.name: s for s in job.stages}
            quiet = now - _last_change(job, now) > grace
            lost: list[StageDef] = []
            plan = Plan.of(job.spec)
            for definition in plan.stages:
                run = runs.get(definition.name)
                if run is None:
                    continue
                if run.state == StageState.RUNNING:
                    beat = run.heartbeat_at
                    if beat is None or now - as_utc(beat) > stale:
                        lost.append(definition)
                elif run.state == StageState.QUEUED and quiet and not held:
                    lost.append(definition)
            busy = any(s.state in (StageState.QUEUED, StageState.RUNNING) for s in job.stages)
            if not lost and quiet and not held and not busy:
                # Nothing released yet (the submission's first message was lost): the
                # first stage still waiting is the one to send.
                first = next(
                    (d for d in plan.stages if d.name in runs and runs[d.name].state == StageState.PENDING), None
                )
                lost = [first] if first is not None else []
            resend += [(job.id, d.name, d.toolchain, job.request_id) for d in lost]
    for job_id, stage, toolchain, request_id in resend:
        # The stage sent again keeps the id of the request that submitted its job.
        log.warning("job.reenqueued", job_id=job_id, stage=stage, reason="not in the broker", request_id=request_id)
        ctx.enqueue(job_id, stage, toolchain, request_id=request_id)
    return [(job_id, stage) for job_id, stage, _, _ in resend]
