"""Throwaway databases for tests: a fresh PostgreSQL database or SQLite file per use."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text

# The machine's PostgreSQL (trust auth); the test database is created inside that server.
PG_SERVER_URL = os.environ.get("MODELPORT_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    name = f"modelport_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_SERVER_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_SERVER_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'modelport.db'}"
