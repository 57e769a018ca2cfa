"""The worker process's entry point: ``celery -A worker.main worker -Q <queue> ...``.

Celery's command line loads an app *instance* by name (``-A module`` finds ``module.app``;
unlike ``uvicorn --factory`` it calls no factory), so this module is the worker's ``main``:
importing it reads the settings from the environment, builds the app with its tasks and
wires the logging. Nothing else imports it (an import-linter contract in pyproject.toml).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import signals

from domain.config import get_settings
from domain.logging import configure_logging
from worker.celery_app import PeriodicTaskNoise
from worker.tasks import make_worker

settings = get_settings()
app = make_worker(settings)


@signals.setup_logging.connect
def _configure_worker_logging(loglevel: int | str | None = None, **_: Any) -> None:
    """Workers log like the API: structlog, JSON with ``MODELPORT_LOG_JSON``.

    Connecting this signal makes Celery leave logging to us (no handlers of its own, no
    stdout redirection); its own records (task received/succeeded, beat) render through the
    same formatter. Pool children are forked after this runs and inherit the setup.
    """
    level = logging.getLevelName(loglevel) if isinstance(loglevel, str) else (loglevel or logging.INFO)
    configure_logging(json=settings.log_json, level=level, library_level=level)
    for handler in logging.getLogger().handlers:
        handler.addFilter(PeriodicTaskNoise())
