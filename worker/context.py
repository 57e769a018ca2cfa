"""Per-process worker resources, made lazily after Celery forks its pool process."""

from __future__ import annotations

import os
from dataclasses import dataclass

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from domain.config import Settings
from domain.db import make_engine, make_sessionmaker
from domain.storage import ObjectStore, make_object_store
from worker.celery_app import enqueue_stage, make_celery
from worker.runner import SubprocessRunner
from worker.warm import WarmRunner


@dataclass
class WorkerContext:
    settings: Settings
    sessions: sessionmaker[Session]
    store: ObjectStore
    runner: SubprocessRunner
    celery: Celery  # sends the next stages (the worker's own app, or a client in tests)

    def enqueue(self, job_id: str, stage: str, toolchain: str, *, request_id: str | None = None) -> None:
        enqueue_stage(self.celery, self.settings, job_id, stage, toolchain, request_id=request_id)


_context: tuple[int, WorkerContext] | None = None


def build_context(settings: Settings, celery: Celery | None = None) -> WorkerContext:
    """Resources for ``settings``; stages are sent through ``celery`` (default: a new client)."""
    engine = make_engine(settings.database_url, sqlite_busy_timeout_ms=settings.database.sqlite_busy_timeout_ms)
    store = make_object_store(settings.storage, local_root=str(settings.storage_root))
    celery = celery or make_celery(settings)
    runner = WarmRunner() if settings.limits.warm_runners else SubprocessRunner()
    return WorkerContext(settings, make_sessionmaker(engine), store, runner, celery)


def get_context(settings: Settings, celery: Celery) -> WorkerContext:
    """This process's context for the worker app ``celery`` made from ``settings``."""
    global _context
    # An engine must not cross a fork: rebuild in each process.
    if _context is None or _context[0] != os.getpid():
        _context = (os.getpid(), build_context(settings, celery))
    return _context[1]
