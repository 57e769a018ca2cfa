"""One place renders every error as RFC 9457 problem+json, the framework's own included."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.request_id import REQUEST_ID_HEADER, request_id_of
from app.core.codes import ErrorCode
from app.core.errors import (
    BY_STATUS,
    PROBLEM_MEDIA_TYPE,
    InternalError,
    InvalidRequest,
    ModelPortError,
    ServiceUnavailable,
    problem_body,
)
from domain.db import is_busy

log = structlog.get_logger()

# Seconds a client should wait before retrying when the database is busy: the API's
# transactions are short, so the lock is usually free again well within this.
RETRY_AFTER_SECONDS = 1


def problem(
    status: int, code: ErrorCode, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse(
        problem_body(status, code, title, detail, **extra),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def render(exc: ModelPortError, headers: dict[str, str] | None = None) -> JSONResponse:
    """The problem+json response of a domain error: its class's status and title, its code."""
    return problem(exc.status, exc.instance_code, exc.title, exc.detail, headers, **exc.extra)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ModelPortError)
    async def _domain(request: Request, exc: ModelPortError) -> JSONResponse:
        return render(exc, {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        known = BY_STATUS.get(exc.status_code)
        code, title = (known.code, known.title) if known else (ErrorCode.HTTP_ERROR, "HTTP error")
        detail = exc.detail if isinstance(exc.detail, str) else title
        if exc.status_code == 404:
            detail = f"no route {request.url.path}; see /docs for the API"
        return problem(exc.status_code, code, title, detail, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": ".".join(str(p) for p in err.get("loc", ())), "message": err.get("msg", "")} for err in exc.errors()
        ]
        detail = "; ".join(f"{e['loc']}: {e['message']}" for e in errors) or "the request is invalid"
        return render(InvalidRequest(detail, code=ErrorCode.VALIDATION_ERROR, errors=errors))

    @app.exception_handler(sa_exc.OperationalError)
    @app.exception_handler(sa_exc.TimeoutError)
    async def _database(request: Request, exc: Exception) -> JSONResponse:
        if not is_busy(exc):
            return _internal_error(request, exc)
        log.warning("http.database_busy", path=request.url.path, error=str(exc).splitlines()[0])
        busy = ServiceUnavailable(
            "the database is busy (a write lock was held longer than the service waits); "
            "the request changed nothing: retry after the Retry-After seconds",
            code=ErrorCode.DATABASE_BUSY,
        )
        return render(busy, {"Retry-After": str(RETRY_AFTER_SECONDS)})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return _internal_error(request, exc)


def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    """500 internal_error, with the request id: Starlette answers an unhandled exception in
    its outermost middleware, outside the one that sets the header on every response."""
    log.error("http.unhandled_error", path=request.url.path, exc_info=exc)
    rid = request_id_of(request)
    internal = InternalError(
        "an unexpected error occurred; the request id in the X-Request-ID header helps the operator"
    )
    return render(internal, {REQUEST_ID_HEADER: rid} if rid else None)
