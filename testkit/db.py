"""Throwaway databases: a fresh PostgreSQL database or SQLite file per use (tests and benchmarks)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text

# The machine's PostgreSQL (trust auth); throwaway databases are created inside that server.
PG_SERVER_URL = os.environ.get("MODELPORT_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@contextmanager
def throwaway_postgres(server_url: str = PG_SERVER_URL, prefix: str = "modelport_test") -> Iterator[str]:
    """The URL of a new database ``<prefix>_<12 hex>`` on ``server_url``, dropped (connections and all) on exit."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def sqlite_url(directory: Path) -> str:
    """A SQLite file ``modelport.db`` in ``directory`` (absolute, so a changed cwd does not move it)."""
    return f"sqlite:///{(directory / 'modelport.db').resolve()}"
