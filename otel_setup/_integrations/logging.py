"""One log shape for structlog and the standard library, with trace ids.

structlog events and stdlib records (uvicorn, SQLAlchemy, httpx, the app's
own loggers) pass through the same processors and renderer: JSON on stdout by
default, a readable console format for development. Every line carries the
service name and environment, ``trace_id``/``span_id`` when a span is
current, and goes through the package's redaction. Exceptions are rendered as
structured data without frame locals (structlog's default shows them).

This module installs the pieces: the processors (``log_processors``), the
request line and its fast path (``log_lines``) and the OTLP side
(``log_export``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any, Final

import structlog

from otel_setup._integrations.log_export import ExportLogLimiter, RedactedRecords, not_from_exporters
from otel_setup._integrations.log_lines import FastJsonLine, StdoutHandler
from otel_setup._integrations.log_processors import LEVELS, redaction_processor, shared_processors
from otel_setup._security.redaction import DEFAULT_REDACTOR, Redactor

__all__ = ["configure_logging", "route_server_loggers"]

_HANDLER_MARK: Final = "_otel_setup_handler"
_SERVER_LOGGERS: Final = ("uvicorn", "uvicorn.error", "gunicorn.error")
_ACCESS_LOGGERS: Final = ("uvicorn.access", "gunicorn.access")


def route_server_loggers() -> None:
    """Send uvicorn's and gunicorn's loggers through the root handler.

    Servers install their own handlers when they start; this runs again at the
    application's startup so their lines take the same shape. Their access log
    prints the raw request line, query string included: the request log
    replaces it, so it is turned off.
    """
    for name in _SERVER_LOGGERS:
        server_logger = logging.getLogger(name)
        server_logger.handlers = []
        server_logger.propagate = True
    for name in _ACCESS_LOGGERS:
        access_logger = logging.getLogger(name)
        access_logger.handlers = []
        access_logger.propagate = False
        access_logger.disabled = True


def configure_logging(
    *,
    log_format: str,
    level: str,
    static_fields: Mapping[str, Any],
    logger_provider: Any | None,
    processors: tuple[Any, ...] = (),
    redactor: Redactor = DEFAULT_REDACTOR,
    request_log_buffer_ms: int = 0,
) -> tuple[Callable[[], None], FastJsonLine | None, Callable[[], None]]:
    """Install the renderer on the root logger.

    Returns the full undo (for test suites), the request line's fast path, and
    what shutdown does: detach the OTLP handler, keep stdout.
    """
    shared = [*shared_processors(static_fields), *processors]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    )
    exception_renderer: list[Any] = (
        [structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(show_locals=False))]
        if log_format == "json"
        else []
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *exception_renderer,
            redaction_processor(redactor),
            renderer,
        ],
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    previous_level = root.level
    for existing in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(existing)
    handler = StdoutHandler(sys.stdout)
    handler.setFormatter(formatter)
    handler.addFilter(ExportLogLimiter())
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    added: list[logging.Handler] = [handler]
    if logger_provider is not None:
        # The SDK's own LoggingHandler is deprecated in favour of this one.
        from opentelemetry.instrumentation.logging.handler import LoggingHandler

        otel_handler = RedactedRecords(
            # code.* attributes, as the SDK's handler always added them
            LoggingHandler(level=logging.NOTSET, logger_provider=logger_provider, log_code_attributes=True),
            redactor,
            frozenset(static_fields),
        )
        otel_handler.addFilter(not_from_exporters)
        setattr(otel_handler, _HANDLER_MARK, True)
        root.addHandler(otel_handler)
        added.append(otel_handler)
    root.setLevel(LEVELS[level])
    route_server_loggers()
    # httpx logs every request at INFO with its full URL (character names,
    # guild ids); the client spans carry the same facts without them.
    logging.getLogger("httpx").setLevel(logging.WARNING)

    def undo() -> None:
        for item in added:
            root.removeHandler(item)
        root.setLevel(previous_level)
        structlog.reset_defaults()

    def detach_export() -> None:
        # Only the OTLP handler goes with its provider: stdout keeps every line
        # to the end of the process (uvicorn's last lines come after the lifespan).
        for item in added[1:]:
            root.removeHandler(item)
        if fast is not None:
            fast.write_waiting()

    fast = (
        FastJsonLine(handler, static_fields, redactor, request_log_buffer_ms)
        if log_format == "json" and not processors
        else None
    )
    if fast is not None:
        added_fast = fast

        def undo_all() -> None:
            added_fast.close()
            undo()

        return undo_all, fast, detach_export
    return undo, fast, detach_export
