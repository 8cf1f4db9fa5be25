"""One log shape for structlog and the standard library, with trace ids.

structlog events and stdlib records (uvicorn, SQLAlchemy, httpx, the app's
own loggers) pass through the same processors and renderer: JSON on stdout by
default, a readable console format for development. Every line carries the
service name and environment, ``trace_id``/``span_id`` when a span is
current, and goes through the package's redaction. Exceptions are rendered as
structured data without frame locals (structlog's default shows them).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, Final

import structlog
from opentelemetry import trace

from otel_setup._redaction import redact_value

__all__ = ["RequestLog", "add_trace_context", "configure_logging", "redact_event", "route_server_loggers"]

EventDict = MutableMapping[str, Any]
Processor = Callable[[Any, str, EventDict], EventDict]

_LEVELS: Final = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_HANDLER_MARK: Final = "_otel_setup_handler"
_SERVER_LOGGERS: Final = ("uvicorn", "uvicorn.error", "gunicorn.error")
_ACCESS_LOGGERS: Final = ("uvicorn.access", "gunicorn.access")


def add_trace_context(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """``trace_id`` and ``span_id`` (W3C hex) of the current span, when there is one."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
        event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict


def redact_event(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """Secrets out of every field, at any depth (keys and values)."""
    for key, value in list(event_dict.items()):
        event_dict[key] = redact_value(key, value)
    return event_dict


def _static_fields(fields: Mapping[str, Any]) -> Processor:
    def add_static_fields(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
        for key, value in fields.items():
            event_dict.setdefault(key, value)
        return event_dict

    return add_static_fields


def _level_name(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    level = event_dict.get("level")
    if isinstance(level, str):
        event_dict["level"] = level.lower()
    # stdlib records carry their rendered message twice (``event`` and ``message``).
    if event_dict.get("message") == event_dict.get("event"):
        event_dict.pop("message", None)
    return event_dict


def _processors(static: Mapping[str, Any]) -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        _level_name,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        _level_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        _static_fields(static),
        add_trace_context,
    ]


class RequestLog:
    """The one line per request: method, route template, status, duration, trace id.

    The route is the template (``/items/{item_id}``), never the raw path, so the
    line carries no identifier from the URL and no query string.
    """

    def __init__(self, level: str, slow_ms: int) -> None:
        self._logger = logging.getLogger("otel_setup.request")
        self._level = _LEVELS.get(level, logging.INFO)
        self._enabled = level != "off"
        self._slow_seconds = slow_ms / 1000.0

    def __call__(self, method: str, route: str | None, status: int, elapsed: float) -> None:
        slow = elapsed >= self._slow_seconds
        level = logging.WARNING if slow and self._level < logging.WARNING else self._level
        if not (self._enabled or slow) or not self._logger.isEnabledFor(level):
            return
        self._logger.log(
            level,
            "slow request" if slow else "request",
            extra={
                "http.request.method": method,
                "http.route": route,
                "http.response.status_code": status,
                "duration_ms": round(elapsed * 1000.0, 3),
            },
        )


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
) -> Callable[[], None]:
    """Install the renderer on the root logger; returns the undo."""
    shared = [*_processors(static_fields), *processors]
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
            redact_event,
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
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    added: list[logging.Handler] = [handler]
    if logger_provider is not None:
        from opentelemetry.sdk._logs import LoggingHandler

        otel_handler = LoggingHandler(level=logging.NOTSET, logger_provider=logger_provider)
        otel_handler.addFilter(_not_from_exporters)
        setattr(otel_handler, _HANDLER_MARK, True)
        root.addHandler(otel_handler)
        added.append(otel_handler)
    root.setLevel(_LEVELS[level])
    route_server_loggers()

    def undo() -> None:
        for item in added:
            root.removeHandler(item)
        root.setLevel(previous_level)
        structlog.reset_defaults()

    return undo


def _not_from_exporters(record: logging.LogRecord) -> bool:
    """Export failures must not be exported (a failing pipeline would feed itself)."""
    return not record.name.startswith(("opentelemetry", "urllib3", "grpc"))
