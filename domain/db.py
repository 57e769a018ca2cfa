"""Database wiring: engines are made by the app factory or the worker, never at import.

SQLite (the embedded default) runs in WAL mode: readers never wait for a writer, and
writers queue on one database-wide lock. A write transaction takes that lock up front
(``BEGIN IMMEDIATE``), so two writers never both read under a shared lock and then
deadlock on the upgrade; it waits at most the busy timeout, after which the statement
raises "database is locked" (``is_busy`` is True; the API answers 503 database_busy).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

AFTER_COMMIT = "after_commit"
# PostgreSQL SQLSTATEs of a transaction that lost a race for a lock or ran out of time:
# lock_not_available (lock_timeout), query_canceled (statement_timeout),
# serialization_failure, deadlock_detected. Retrying later can succeed.
_PG_BUSY_STATES = {"55P03", "57014", "40001", "40P01"}


def make_engine(
    url: str,
    *,
    sqlite_busy_timeout_ms: int = 15_000,
    postgresql_lock_timeout_ms: int | None = None,
    read_only: bool = False,
) -> Engine:
    """An engine for ``url``.

    On SQLite every transaction this engine begins is ``BEGIN IMMEDIATE`` (the write lock
    up front), or a plain deferred ``BEGIN`` with ``read_only`` (readers never wait under
    WAL). A writer waits ``sqlite_busy_timeout_ms`` for the lock, then raises
    OperationalError "database is locked". On PostgreSQL, ``postgresql_lock_timeout_ms``
    (None: wait forever) bounds the wait for a row lock (``lock_timeout``).

    pysqlite would otherwise emit its own deferred BEGIN, and only before a DML statement;
    it is switched off and ours emitted on SQLAlchemy's ``begin`` event, the recipe of
    SQLAlchemy's SQLite dialect docs ("Serializable isolation / Savepoints / Transactional
    DDL", pysqlite section).
    """
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": sqlite_busy_timeout_ms / 1000},
        )
        begin = "BEGIN" if read_only else "BEGIN IMMEDIATE"

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # no implicit BEGIN: _begin emits ours
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={int(sqlite_busy_timeout_ms)}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(connection: Connection) -> None:
            connection.exec_driver_sql(begin)

        return engine
    connect_args: dict[str, Any] = {}
    if postgresql_lock_timeout_ms is not None:
        connect_args["options"] = f"-c lock_timeout={int(postgresql_lock_timeout_ms)}"
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run ``callback`` once the session's transaction has committed (e.g. enqueue a task)."""
    session.info.setdefault(AFTER_COMMIT, []).append(callback)


def commit(session: Session) -> None:
    """Commit, then run the after-commit callbacks in the same thread."""
    session.commit()
    for callback in session.info.pop(AFTER_COMMIT, []):
        callback()


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One short transaction in the calling thread: commit on success (then the after-commit
    callbacks), roll back on error."""
    session = factory()
    try:
        yield session
        commit(session)
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def is_busy(exc: BaseException) -> bool:
    """True when ``exc`` says the database was too busy to answer in time, and a retry
    later can succeed: SQLite's lock still held after the busy timeout ("database is
    locked", SQLITE_BUSY/SQLITE_LOCKED), a PostgreSQL lock or statement timeout, a
    serialization failure or deadlock, or no pooled connection free within the pool timeout."""
    if isinstance(exc, sa_exc.TimeoutError):  # the pool's, not a statement's
        return True
    if not isinstance(exc, sa_exc.OperationalError):
        return False
    orig = exc.orig
    if getattr(orig, "sqlstate", None) in _PG_BUSY_STATES:
        return True
    name = str(getattr(orig, "sqlite_errorname", ""))
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return True
    message = str(orig).lower()
    return "database is locked" in message or "database table is locked" in message
