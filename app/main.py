"""The app factory. Engines, stores and the Celery client are made in the lifespan, never at import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from redis import Redis

from app.api.deps import reject_unknown_query
from app.api.errors import install_error_handlers
from app.api.request_id import RequestIdMiddleware
from app.api.routes import admin, events, health, jobs, toolchains, webhooks
from app.services import keys
from app.web import routes as web
from domain.config import Settings, get_settings
from domain.db import make_engine, make_sessionmaker, session_scope
from domain.logging import configure_logging
from domain.storage import make_object_store
from worker.celery_app import make_celery


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(json=settings.log_json)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The API waits for a lock at most api_lock_timeout_ms, then answers 503. Readers and
        # writers have separate pools, so a burst of writers queued on SQLite's lock never
        # holds every connection a GET needs.
        wait_ms = settings.database.api_lock_timeout_ms
        engine = make_engine(
            settings.database_url, read_only=True, sqlite_busy_timeout_ms=wait_ms, postgresql_lock_timeout_ms=wait_ms
        )
        write_engine = make_engine(
            settings.database_url, sqlite_busy_timeout_ms=wait_ms, postgresql_lock_timeout_ms=wait_ms
        )
        app.state.settings = settings
        app.state.engine = engine
        app.state.sessions = make_sessionmaker(engine)
        app.state.writes = make_sessionmaker(write_engine)
        app.state.store = make_object_store(settings.storage, local_root=str(settings.storage_root))
        app.state.redis = Redis.from_url(settings.queue.redis_url, socket_timeout=5, socket_connect_timeout=5)
        # A client only: it sends stages and asks the broker about workers; runs no task.
        app.state.celery = make_celery(settings)
        if settings.api_key:
            with session_scope(app.state.writes) as session:
                keys.seed_admin_key(session, settings.api_key)
        yield
        app.state.celery.close()
        app.state.redis.close()
        engine.dispose()
        write_engine.dispose()

    app = FastAPI(
        title="ModelPort",
        version="0.1.0",
        description="Convert trained PyTorch models into validated ONNX, TensorFlow SavedModel and TFLite "
        "artifacts, with an accuracy report against the original PyTorch outputs.",
        lifespan=lifespan,
        dependencies=[Depends(reject_unknown_query)],
    )
    install_error_handlers(app)
    app.add_middleware(RequestIdMiddleware)
    for module in (web, health, jobs, events, toolchains, admin, webhooks):
        app.include_router(module.router)
    return app
