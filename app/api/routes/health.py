"""Liveness, readiness and metrics: the operator's routes (no API key)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry
from sqlalchemy import text

from app.api.problems import problem_responses
from app.core.codes import ErrorCode
from app.core.errors import ServiceUnavailable
from app.services import monitor
from app.services.metrics import make_registry

router = APIRouter(tags=["health"])

_registry_lock = threading.Lock()


@router.get("/healthz", summary="Liveness")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses=problem_responses(503),
    summary="Readiness: database, broker, object store and a live worker on every queue",
)
def readyz(request: Request) -> dict[str, Any]:
    """200 when this API can take and run jobs; else 503 ``not_ready`` whose ``checks``
    member names each dependency with ``ok`` or its error, and ``workers`` counts the live
    workers per queue. With ``MODELPORT_READY_REQUIRES_WORKERS=false`` a queue without
    workers is reported but does not make the API unready (docs/architecture.md)."""
    state = request.app.state
    queue_settings = state.settings.queue

    def database() -> None:
        with state.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def broker() -> None:
        with state.celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)

    checks = {
        "database": _check(database),
        "broker": _check(broker),
        "object_store": _check(state.store.probe),
    }
    workers: dict[str, int] = {}
    if checks["broker"] != "ok":
        checks["workers"] = "error: the broker is unreachable"
    else:
        try:
            workers = monitor.live_workers(state.celery, state.settings)
        except Exception as exc:  # noqa: BLE001 - readiness reports, it does not crash
            checks["workers"] = f"error: {type(exc).__name__}: {exc}"
        else:
            idle = [queue for queue, count in workers.items() if count == 0]
            checks["workers"] = "ok" if not idle else f"error: no live worker on queue(s) {', '.join(idle)}"
    required = [name for name in checks if name != "workers" or queue_settings.ready_requires_workers]
    failing = [name for name in required if checks[name] != "ok"]
    if failing:
        raise ServiceUnavailable(
            f"not ready: {', '.join(failing)} failed (see checks); the operator should restore "
            "them, clients may retry later",
            code=ErrorCode.NOT_READY,
            checks=checks,
            workers=workers,
        )
    return {"status": "ready", "checks": checks, "workers": workers}


def _check(probe: Callable[[], object]) -> str:
    try:
        probe()
    except Exception as exc:  # noqa: BLE001 - readiness reports, it does not raise
        return f"error: {type(exc).__name__}: {exc}"[:300]
    return "ok"


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}},
    summary="Prometheus metrics",
)
def metrics(request: Request) -> Response:
    """The ``modelport_*`` families (docs/architecture.md), read from the database and the
    broker at scrape time, so every API process answers the same."""
    return Response(generate_latest(_registry(request.app)), media_type=CONTENT_TYPE_LATEST)


def _registry(app: FastAPI) -> CollectorRegistry:
    # Made on first scrape (after the lifespan opened the database and Redis), once per app.
    with _registry_lock:
        registry: CollectorRegistry | None = getattr(app.state, "metrics_registry", None)
        if registry is None:
            state = app.state
            registry = app.state.metrics_registry = make_registry(
                state.sessions, state.redis, state.celery, state.settings
            )
    return registry
