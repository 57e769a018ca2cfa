"""Throwaway databases for tests: ``testkit.db`` (shared with bench/load.py)."""

from __future__ import annotations

from testkit.db import PG_SERVER_URL, sqlite_url, throwaway_postgres

__all__ = ["PG_SERVER_URL", "sqlite_url", "throwaway_postgres"]
