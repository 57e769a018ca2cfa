from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import func, select, text

from app.models import Job
from app.schemas.problem import problem_responses
from worker.celery_app import celery_app

router = APIRouter(tags=["health"])


@router.get("/", summary="What this service is")
def root() -> dict[str, str]:
    return {"service": "modelport", "docs": "/docs", "openapi": "/openapi.json", "api": "/v1/jobs"}


@router.get("/healthz", summary="Liveness")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses=problem_responses(503), summary="Readiness: database and broker reachable")
def readyz(request: Request) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        with request.app.state.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - readiness reports, it does not raise
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        with celery_app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["broker"] = f"error: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    if ready:
        return JSONResponse({"status": "ready", "checks": checks})
    return JSONResponse(
        {
            "type": "https://modelport.dev/problems/not_ready",
            "title": "Service unavailable",
            "status": 503,
            "detail": "a dependency is unreachable",
            "code": "not_ready",
            "checks": checks,
        },
        status_code=503,
        media_type="application/problem+json",
    )


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics")
def metrics(request: Request) -> PlainTextResponse:
    with request.app.state.sessions() as session:
        counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
    lines = ["# HELP modelport_jobs Jobs by status.", "# TYPE modelport_jobs gauge"]
    for status in ("queued", "running", "succeeded", "failed", "cancelled"):
        lines.append(f'modelport_jobs{{status="{status}"}} {counts.get(status, 0)}')
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")
