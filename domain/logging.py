"""structlog: dotted event names with key=value fields; JSON in production.

The API and the Celery workers call ``configure_logging`` (the workers from Celery's
``setup_logging`` signal, see ``worker/main.py``). Records of the standard library's
loggers (Celery's own, botocore, alembic) go through the same processors and renderer, so
with ``MODELPORT_LOG_JSON`` every line a process writes is one JSON object, and values
bound with ``structlog.contextvars`` (``request_id``, ``job_id``) appear on all of them.
"""

from __future__ import annotations

import logging
import sys

import structlog

# Marks the root handler this module installed, so a second call replaces it (tests build
# many apps in one process) instead of printing every line twice.
_HANDLER_NAME = "modelport"


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stdout`` is at the time of the record, as structlog's
    ``PrintLogger`` does, so a replaced stdout (test capture) never gets a closed stream."""

    @property  # type: ignore[override]
    def stream(self):  # type: ignore[no-untyped-def]
        return sys.stdout

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def configure_logging(*, json: bool = False, level: int = logging.INFO, library_level: int = logging.WARNING) -> None:
    """Configure structlog and the standard library's root logger for this process.

    ``level`` filters ModelPort's own events (structlog); ``library_level`` is the root
    logger's level for other libraries' records. Both render to stdout, as JSON objects
    when ``json`` is true, else as ``key=value`` text.
    """
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso"),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=True,
    )
    handler = _StdoutHandler()
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(library_level)
