"""Private Redis databases for the tests, one pair per pytest-xdist worker.

`make test` runs the suite in several processes (tests/run.py). Queue names already carry a
per-process prefix, but some keys are global to a database (idempotency locks per tenant and
key, Celery's broadcast mailboxes, worker heartbeats), so each process gets its own databases:
worker ``gwN`` uses ``13 - 2N`` for API tests and ``14 - 2N`` for the end-to-end stack.
A plain ``pytest`` run (no xdist) is ``gw0``: databases 13 and 14, as before.
"""

from __future__ import annotations

import os

REDIS = "redis://127.0.0.1:6379"


def worker_index() -> int:
    """This process's xdist worker number (0 without xdist); at most 5, Redis has 16 databases."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(name.removeprefix("gw") or 0)
    if index > 5:
        raise RuntimeError(f"at most 6 test processes share this Redis (got {name}): run with -n 6 or fewer")
    return index


def api_redis_url() -> str:
    """The Redis the API and unit tests use (a database nobody consumes)."""
    return f"{REDIS}/{13 - 2 * worker_index()}"


def e2e_redis_url() -> str:
    """The Redis the end-to-end stacks share (their queue names are unique per stack)."""
    return os.environ.get("MODELPORT_TEST_REDIS_URL") or f"{REDIS}/{14 - 2 * worker_index()}"
