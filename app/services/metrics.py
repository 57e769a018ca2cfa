"""Prometheus metrics, read from the database and the broker at scrape time.

A custom prometheus-client ``Collector`` rather than counters kept in the process: the API
runs as several processes (uvicorn workers, replicas) and the work happens in Celery
workers, so no process sees everything. The database and the broker do, and every API
process answers a scrape with the same numbers. See docs/architecture.md ("Metrics").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import get_args

import structlog
from celery import Celery
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from redis import Redis
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, sessionmaker

from app.services import monitor
from domain.config import Settings
from domain.jobs.states import StageState
from domain.models import Job, StageRun
from modelport.schemas.job import JobStatus
from modelport.schemas.spec import ToolchainChoice

log = structlog.get_logger()

# Upper bounds (seconds) of the stage duration buckets: from the report (under a second)
# to the default stage limit (30 minutes).
STAGE_BUCKETS: tuple[float, ...] = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
FINISHED_STAGE_STATES = (StageState.SUCCEEDED, StageState.FAILED)


class ServiceCollector(Collector):
    """Yields every ``modelport_*`` family; a source that fails is left out of the scrape
    and shows as ``modelport_metrics_source_up{source=...} 0``."""

    def __init__(self, sessions: sessionmaker[Session], redis: Redis, celery: Celery, settings: Settings) -> None:
        self.sessions = sessions
        self.redis = redis
        self.celery = celery
        self.settings = settings

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "modelport_metrics_source_up", "1 when the source answered this scrape, 0 when not.", labels=["source"]
        )
        sources: list[tuple[str, Callable[[], list[Metric]]]] = [
            ("database", self._database),
            ("broker", self._broker),
            ("workers", self._workers),
        ]
        for source, read in sources:
            try:
                families = read()
            except Exception as exc:  # noqa: BLE001 - a scrape reports what it can
                log.warning("metrics.source_failed", source=source, error=f"{type(exc).__name__}: {exc}")
                up.add_metric([source], 0)
                continue
            up.add_metric([source], 1)
            yield from families
        yield up

    def _database(self) -> list[Metric]:
        with self.sessions() as session:
            return [jobs_family(session), stage_duration_family(session), upload_bytes_family(session)]

    def _broker(self) -> list[Metric]:
        depth = GaugeMetricFamily(
            "modelport_queue_depth", "Stage messages waiting in the queue, not yet taken by a worker.", labels=["queue"]
        )
        for queue, length in monitor.queue_depths(self.redis, self.settings).items():
            depth.add_metric([queue], length)
        return [depth]

    def _workers(self) -> list[Metric]:
        alive = GaugeMetricFamily(
            "modelport_workers_alive",
            "Celery workers consuming the queue that answered a broadcast within the ping timeout.",
            labels=["queue"],
        )
        for queue, count in monitor.live_workers(self.celery, self.settings).items():
            alive.add_metric([queue], count)
        return [alive]


def jobs_family(session: Session) -> GaugeMetricFamily:
    """Jobs in the database by status and by the toolchain their spec asked for (every
    status x toolchain pair, zeros included)."""
    toolchain = func.coalesce(Job.spec["toolchain"].as_string(), "auto")
    rows = session.execute(select(Job.status, toolchain, func.count()).group_by(Job.status, toolchain)).all()
    counts: dict[tuple[str, str], int] = {
        (status, choice): 0 for status in get_args(JobStatus) for choice in get_args(ToolchainChoice)
    }
    for status, choice, count in rows:
        counts[(status, choice)] = int(count)
    family = GaugeMetricFamily(
        "modelport_jobs", "Jobs by status and by the spec's toolchain.", labels=["status", "toolchain"]
    )
    for (status, choice), count in sorted(counts.items()):
        family.add_metric([status, choice], count)
    return family


def stage_duration_family(session: Session) -> HistogramMetricFamily:
    """Durations (``stage_runs.seconds``, measured by the worker around the stage) of every
    finished stage (succeeded or failed) in the database, by stage name and by the
    toolchain environment that ran it. Rows are never deleted (retention removes objects,
    not rows), so the counts only grow, as a Prometheus histogram's must."""
    finished = StageRun.state.in_(FINISHED_STAGE_STATES) & StageRun.seconds.is_not(None)
    buckets = [func.sum(case((StageRun.seconds <= bound, 1), else_=0)) for bound in STAGE_BUCKETS]
    rows = session.execute(
        select(StageRun.name, StageRun.toolchain, func.count(), func.sum(StageRun.seconds), *buckets)
        .where(finished)
        .group_by(StageRun.name, StageRun.toolchain)
        .order_by(StageRun.name, StageRun.toolchain)
    ).all()
    family = HistogramMetricFamily(
        "modelport_stage_duration_seconds",
        "Seconds a finished stage ran, by stage and by the toolchain environment that ran it.",
        labels=["stage", "toolchain"],
    )
    for name, toolchain, count, total, *cumulative in rows:
        points = [(_le(bound), float(n or 0)) for bound, n in zip(STAGE_BUCKETS, cumulative, strict=True)]
        points.append(("+Inf", float(count)))
        family.add_metric([name, toolchain], points, float(total or 0))
    return family


def upload_bytes_family(session: Session) -> CounterMetricFamily:
    """Bytes of model files accepted (the sum of every job's ``model_size``; job rows are
    kept after retention, so the sum never decreases)."""
    total = session.scalar(select(func.coalesce(func.sum(Job.model_size), 0)))
    family = CounterMetricFamily("modelport_upload_bytes", "Bytes of model files accepted with a job.")
    family.add_metric([], float(total or 0))
    return family


def _le(bound: float) -> str:
    # prometheus-client's own formatting of bucket bounds (1 -> "1.0").
    return str(float(bound))


def make_registry(
    sessions: sessionmaker[Session], redis: Redis, celery: Celery, settings: Settings
) -> CollectorRegistry:
    """A registry of this app's own (never the global one: each app, and each test, reads
    its own database and broker)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(sessions, redis, celery, settings))
    return registry
