"""One log shape for structlog and the standard library, with trace ids.

structlog events and stdlib records (uvicorn, SQLAlchemy, httpx, the app's
own loggers) pass through the same processors and renderer: JSON on stdout by
default, a readable console format for development. Every line carries the
service name and environment, ``trace_id``/``span_id`` when a span is
current, and goes through the package's redaction. Exceptions are rendered as
structured data without frame locals (structlog's default shows them).
"""

from __future__ import annotations

import copy
import json
import logging
import sys
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, Final

import structlog
from opentelemetry import trace

from otel_setup._redaction import DEFAULT_REDACTOR, Redactor

__all__ = [
    "FastJsonLine",
    "RedactedRecords",
    "RequestLog",
    "add_trace_context",
    "configure_logging",
    "redact_event",
    "redaction_processor",
    "route_server_loggers",
]

EventDict = MutableMapping[str, Any]
Processor = Callable[[Any, str, EventDict], EventDict]

_LEVELS: Final = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_LEVEL_NAMES: Final = {value: name for name, value in _LEVELS.items()}
_KNOWN_METHODS: Final = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT", "TRACE", "QUERY")
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


def redaction_processor(redactor: Redactor) -> Processor:
    """A structlog processor applying ``redactor`` (the runtime table) to every field."""

    def redact_event(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
        """Secrets out of every field, at any depth (keys and values)."""
        for key, value in list(event_dict.items()):
            event_dict[key] = redactor.value(key, value)
        return event_dict

    return redact_event


redact_event: Final = redaction_processor(DEFAULT_REDACTOR)
"""The same with the default table, for chains built without ``configure()``."""


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


class FastJsonLine:
    """Writes one JSON line with exactly the shape the full processor chain renders.

    The request line is written once per request; through ``logging`` and the
    processor chain it costs more than a bare FastAPI request. When the root
    logger holds only the package's handler (the default), the same line is
    assembled directly. Any other handler (an OTLP log exporter, a user's
    handler, a filter on the request logger) switches back to the full path.
    """

    def __init__(
        self, handler: logging.Handler, static_fields: Mapping[str, Any], redactor: Redactor = DEFAULT_REDACTOR
    ) -> None:
        self._handler = handler
        self._redactor = redactor
        static = {key: value for key, value in static_fields.items() if value is not None}
        self._static_json = (", " + json.dumps(static)[1:-1]) if static else ""
        self._routes: dict[str | None, str] = {}
        self._events = {event: json.dumps(event) for event in ("request", "slow request")}
        self._methods = {method: json.dumps(method) for method in (*_KNOWN_METHODS, "_OTHER")}
        self._root = logging.getLogger()
        self._logger = logging.getLogger("otel_setup.request")
        self._second = -1
        self._second_text = ""

    def usable(self) -> bool:
        logger = self._logger
        return (
            len(self._root.handlers) == 1
            and self._root.handlers[0] is self._handler
            and not logger.handlers
            and not logger.filters
            and logger.propagate
        )

    def _timestamp(self) -> str:
        """ISO 8601 UTC with microseconds, as structlog's TimeStamper renders it; the second is cached."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int((now - second) * 1_000_000):06d}Z"

    def write(
        self,
        level: str,
        event: str,
        method: str,
        route: str | None,
        status: int,
        duration_ms: float,
        trace_id: int = 0,
        span_id: int = 0,
    ) -> None:
        """The request line, assembled from pre-encoded pieces (``json.dumps`` only for new routes)."""
        encoded_route = self._routes.get(route)
        if encoded_route is None:
            encoded_route = json.dumps(route)
            if len(self._routes) < 10_000:
                self._routes[route] = encoded_route
        encoded_event = self._events.get(event) or json.dumps(event)
        encoded_method = self._methods.get(method) or json.dumps(method)
        text = (
            f'{{"event": {encoded_event}, "level": "{level}", "logger": "otel_setup.request", '
            f'"http.request.method": {encoded_method}, "http.route": {encoded_route}, '
            f'"http.response.status_code": {status}, "duration_ms": {duration_ms!r}, '
            f'"timestamp": "{self._timestamp()}"{self._static_json}'
        )
        # Nothing was ever bound with structlog.contextvars: skip copying the context.
        context_vars = (
            structlog.contextvars.get_contextvars() if getattr(structlog.contextvars, "_CONTEXT_VARS", True) else None
        )
        if context_vars:
            extra = {key: self._redactor.value(key, value) for key, value in context_vars.items()}
            text += ", " + json.dumps(extra)[1:-1]
        if not trace_id:
            context = trace.get_current_span().get_span_context()
            if context.is_valid:
                trace_id, span_id = context.trace_id, context.span_id
        if trace_id:
            text += f', "trace_id": "{trace_id:032x}", "span_id": "{span_id:016x}"'
        text += "}\n"
        handler = self._handler
        handler.acquire()
        try:
            stream = handler.stream  # type: ignore[attr-defined] # a StreamHandler
            stream.write(text)
            stream.flush()
        finally:
            handler.release()


class RequestLog:
    """The one line per request: method, route template, status, duration, trace id.

    The route is the template (``/items/{item_id}``), never the raw path, so the
    line carries no identifier from the URL and no query string.
    """

    def __init__(self, level: str, slow_ms: int, fast: FastJsonLine | None = None) -> None:
        self._logger = logging.getLogger("otel_setup.request")
        self._level = _LEVELS.get(level, logging.INFO)
        self._enabled = level != "off"
        self._slow_seconds = slow_ms / 1000.0
        self._fast = fast

    def __call__(
        self, method: str, route: str | None, status: int, elapsed: float, trace_id: int = 0, span_id: int = 0
    ) -> None:
        slow = elapsed >= self._slow_seconds
        level = logging.WARNING if slow and self._level < logging.WARNING else self._level
        if not (self._enabled or slow) or not self._logger.isEnabledFor(level):
            return
        duration_ms = round(elapsed * 1000.0, 3)
        event = "slow request" if slow else "request"
        if self._fast is not None and self._fast.usable():
            self._fast.write(_LEVEL_NAMES[level], event, method, route, status, duration_ms, trace_id, span_id)
            return
        fields = {
            "http.request.method": method,
            "http.route": route,
            "http.response.status_code": status,
            "duration_ms": duration_ms,
        }
        self._logger.log(level, event, extra=fields)


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
) -> tuple[Callable[[], None], FastJsonLine | None]:
    """Install the renderer on the root logger; returns the undo and the request line's fast path."""
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
    handler = logging.StreamHandler(sys.stdout)
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
        otel_handler.addFilter(_not_from_exporters)
        setattr(otel_handler, _HANDLER_MARK, True)
        root.addHandler(otel_handler)
        added.append(otel_handler)
    root.setLevel(_LEVELS[level])
    route_server_loggers()
    # httpx logs every request at INFO with its full URL (character names,
    # guild ids); the client spans carry the same facts without them.
    logging.getLogger("httpx").setLevel(logging.WARNING)

    def undo() -> None:
        for item in added:
            root.removeHandler(item)
        root.setLevel(previous_level)
        structlog.reset_defaults()

    fast = FastJsonLine(handler, static_fields, redactor) if log_format == "json" and not processors else None
    return undo, fast


class ExportLogLimiter(logging.Filter):
    """At most ``per_minute`` lines a minute from each export-path logger.

    A collector outage makes every batch fail; one line per batch per signal
    would bury the application's own logs (and cost disk). The count of what
    was lost is in the ``otel.sdk.*`` metrics, not in the log volume.
    """

    PREFIXES: Final = ("opentelemetry.exporter", "opentelemetry.sdk", "urllib3.connectionpool", "grpc")

    def __init__(self, per_minute: int = 3, clock: Callable[[], float] | None = None) -> None:
        super().__init__()
        import time

        self._per_minute = per_minute
        self._clock = clock or time.monotonic
        self._windows: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.PREFIXES):
            return True
        now = self._clock()
        start, count = self._windows.get(record.name, (now, 0))
        if now - start >= 60.0:
            start, count = now, 0
        self._windows[record.name] = (start, count + 1)
        return count < self._per_minute


# structlog's own bookkeeping and what the OTLP record carries in fields of its own
# (severity, scope name, timestamp, trace context, exception attributes).
_NOT_ATTRIBUTES: Final = frozenset(
    {"event", "level", "logger", "timestamp", "trace_id", "span_id", "exc_info", "exception", "stack_info"}
)
_RECORD_FIELDS: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class RedactedRecords(logging.Handler):
    """Turns structlog's event dict into an OTLP record: the event as body, its fields as attributes.

    structlog passes its event dict as the record's message, which the OTLP
    handler would render as one line of text: the fields lose their types, and
    the export-side scrubber can then only recognise secret-looking values, not
    ``password`` or an ``x-api-key`` header by its name. Here the dict is
    redacted key by key first, and each field becomes an attribute (maps and
    lists stay structured). stdlib records pass through unchanged.
    """

    def __init__(self, inner: logging.Handler, redactor: Redactor, resource_keys: frozenset[str] = frozenset()) -> None:
        super().__init__(level=logging.NOTSET)
        self.inner = inner
        self._redactor = redactor
        self._skip = _NOT_ATTRIBUTES | resource_keys  # already on the resource

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.msg
            if isinstance(message, Mapping):
                record = self._structured(record, message)
            self.inner.handle(record)
        except Exception:  # noqa: BLE001 - a log call must never fail because of telemetry
            self.handleError(record)

    def _structured(self, record: logging.LogRecord, message: Mapping[Any, Any]) -> logging.LogRecord:
        fields = self._redactor.value("log.body", message)
        if not isinstance(fields, Mapping):
            fields = {}
        record = copy.copy(record)
        event = fields.get("event")
        record.msg = event if isinstance(event, str) else ""
        record.args = ()
        if record.exc_info is None and fields.get("exc_info") is True:
            # log.error(..., exc_info=True) inside an except block: emit runs synchronously, still inside it.
            exc_info = sys.exc_info()
            record.exc_info = exc_info if exc_info[0] is not None else None
        for name in ("_logger", "_name", "_from_structlog", "_record"):
            record.__dict__.pop(name, None)
        for key, value in fields.items():
            if key in self._skip or not isinstance(key, str):
                continue
            name = f"log.{key}" if key in _RECORD_FIELDS else key
            record.__dict__[name] = self._attribute(key, value)
        return record

    def _attribute(self, key: str, value: Any) -> Any:
        """An OTLP ``AnyValue``: scalars, maps and lists as they are, anything else as text redacted by key."""
        if isinstance(value, (str, bool, int, float, bytes)) or value is None:
            return value
        if isinstance(value, Mapping):
            return {str(k): self._attribute(str(k), v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._attribute(key, item) for item in value]
        return self._redactor.value(key, str(value))

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        self.inner.close()
        super().close()


def _not_from_exporters(record: logging.LogRecord) -> bool:
    """Export failures must not be exported (a failing pipeline would feed itself)."""
    return not record.name.startswith(("opentelemetry", "urllib3", "grpc"))
