"""The worker process's entry point: ``celery -A worker.main worker -Q <queue> ...``.

Celery's command line loads an app *instance* by name (``-A module`` finds ``module.app``;
unlike ``uvicorn --factory`` it calls no factory), so this module is the worker's ``main``:
importing it reads the settings from the environment, builds the app with its tasks and
wires the logging. Nothing else imports it (an import-linter contract in pyproject.toml).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import signals

from domain.config import get_settings
from domain.logging import configure_logging
from domain.toolchains import TOOLCHAINS, queue_name
from worker.celery_app import PeriodicTaskNoise
from worker.context import get_context
from worker.execute import stage_limits
from worker.tasks import make_worker
from worker.warm import WarmRunner

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


def served_toolchains() -> list[str]:
    """The toolchains whose queues this worker consumes (``-Q``), in registry order."""
    consumed = {queue.name for queue in (app.amqp.queues.consume_from or {}).values()}
    return [toolchain for toolchain in TOOLCHAINS if queue_name(settings, toolchain) in consumed]


@signals.worker_process_init.connect
def _start_warm_parents(**_: Any) -> None:
    """Warm parents start with the worker, not at its first stage (issue 14): each pool process
    keeps those of the toolchains it serves up, in a thread of its own (Celery gives this signal
    a few seconds only; ``WarmRunner.keep_warm`` says why the thread lives on). A stage that
    comes first waits for its parent (``WarmRunner.server`` locks)."""
    runner = get_context(settings, app).runner
    toolchains = served_toolchains()
    if isinstance(runner, WarmRunner) and toolchains:
        threading.Thread(
            target=runner.keep_warm, args=(toolchains, stage_limits(settings)), name="warm-parents", daemon=True
        ).start()
