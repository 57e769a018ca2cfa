"""The app factory. Engines and stores are made in the lifespan, never at import."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI, Request, Response
from redis import Redis

from app.api.errors import install_error_handlers
from app.api.routes import admin, health, jobs, toolchains
from app.core.config import Settings, get_settings
from app.core.db import make_engine, make_sessionmaker, session_scope
from app.core.logging import configure_logging
from app.services import keys
from app.storage import make_object_store


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(json=settings.log_json)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url, sqlite_busy_timeout_ms=settings.database.sqlite_busy_timeout_ms)
        app.state.settings = settings
        app.state.engine = engine
        app.state.sessions = make_sessionmaker(engine)
        app.state.store = make_object_store(settings.storage, local_root=str(settings.storage_root))
        app.state.redis = Redis.from_url(settings.queue.redis_url, socket_timeout=5, socket_connect_timeout=5)
        if settings.api_key:
            with session_scope(app.state.sessions) as session:
                keys.seed_admin_key(session, settings.api_key)
        yield
        app.state.redis.close()
        engine.dispose()

    app = FastAPI(
        title="ModelPort",
        version="0.1.0",
        description="Convert trained PyTorch models into validated ONNX, TensorFlow SavedModel and TFLite "
        "artifacts, with an accuracy report against the original PyTorch outputs.",
        lifespan=lifespan,
    )
    install_error_handlers(app)

    @app.middleware("http")
    async def request_id(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        # The id travels in a header, never in a body, so idempotent replays stay byte-identical.
        rid = request.headers.get("X-Request-ID") or uuid.uuid4().hex
        structlog.contextvars.bind_contextvars(request_id=rid)
        try:
            response = await call_next(request)
        finally:
            structlog.contextvars.unbind_contextvars("request_id")
        response.headers["X-Request-ID"] = rid
        return response

    for module in (health, jobs, toolchains, admin):
        app.include_router(module.router)
    return app
