"""Per-process worker resources, made lazily after Celery forks its pool process."""

from __future__ import annotations

import os
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from domain.config import Settings, get_settings
from domain.db import make_engine, make_sessionmaker
from domain.storage import ObjectStore, make_object_store
from worker.runner import SubprocessRunner
from worker.warm import WarmRunner


@dataclass
class WorkerContext:
    settings: Settings
    sessions: sessionmaker[Session]
    store: ObjectStore
    runner: SubprocessRunner


_context: tuple[int, WorkerContext] | None = None


def build_context(settings: Settings) -> WorkerContext:
    engine = make_engine(settings.database_url, sqlite_busy_timeout_ms=settings.database.sqlite_busy_timeout_ms)
    store = make_object_store(settings.storage, local_root=str(settings.storage_root))
    runner = WarmRunner() if settings.limits.warm_runners else SubprocessRunner()
    return WorkerContext(settings, make_sessionmaker(engine), store, runner)


def get_context() -> WorkerContext:
    global _context
    # An engine must not cross a fork: rebuild in each process.
    if _context is None or _context[0] != os.getpid():
        _context = (os.getpid(), build_context(get_settings()))
    return _context[1]
