"""One log shape for structlog and the standard library, with trace ids.

structlog events and stdlib records (uvicorn, SQLAlchemy, httpx, the app's
own loggers) pass through the same processors and renderer: JSON on stdout by
default, a readable console format for development. Every line carries the
service name and environment, ``trace_id``/``span_id`` when a span is
current, and goes through the package's redaction. Exceptions are rendered as
structured data without frame locals (structlog's default shows them).
"""

from __future__ import annotations

import collections
import contextlib
import copy
import io
import json
import logging
import os
import re
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, Final

import structlog
from opentelemetry import trace

from otel_setup._compat import structlog_context
from otel_setup._security.redaction import DEFAULT_REDACTOR, Redactor

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
_HANDLER_MARK: Final = "_otel_setup_handler"
_SERVER_LOGGERS: Final = ("uvicorn", "uvicorn.error", "gunicorn.error")
_ACCESS_LOGGERS: Final = ("uvicorn.access", "gunicorn.access")


EXCEPTION_SPAN: Final = "_otel_setup_span_context"
"""Set on an exception that left a request: the request's span context, for lines logged after the span ended."""


def failed_request_context(exc_info: Any) -> Any:
    """The span context of the request an exception escaped from (uvicorn logs it after the span ended)."""
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
        exc_info = exc_info[1]
    return getattr(exc_info, EXCEPTION_SPAN, None) if isinstance(exc_info, BaseException) else None


def add_trace_context(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """``trace_id`` and ``span_id`` (W3C hex) of the current span, or of the failed request a record is about."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        record = event_dict.get("_record")
        exc_info = event_dict.get("exc_info") or (record.exc_info if record is not None else None)
        if not exc_info:
            return event_dict
        context = failed_request_context(exc_info)
        if context is None:
            return event_dict
    event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
    event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict


_ANSI: Final = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _plain_server_fields(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """Server records (uvicorn's): no ``color_message`` (ANSI escapes), no trailing newline in the event."""
    event_dict.pop("color_message", None)
    event = event_dict.get("event")
    if isinstance(event, str) and (event.endswith(("\n", " ")) or "\x1b" in event):
        if event_dict.get("message") == event:  # the rendered copy another handler left on the record
            del event_dict["message"]
        event_dict["event"] = _ANSI.sub("", event).rstrip()
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
        _plain_server_fields,
        _level_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        _static_fields(static),
        add_trace_context,
    ]


class StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg] # generic only in the stubs
    """The package's root handler: before any record it writes the request lines still waiting."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.waiting: Callable[[], None] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self._write_waiting()
        super().emit(record)

    def flush(self) -> None:
        # logging.shutdown() flushes every handler at exit: the last batch goes out there.
        self._write_waiting()
        super().flush()

    def _write_waiting(self) -> None:
        waiting = self.waiting
        if waiting is not None:
            waiting()


_Waiting = tuple[str, str, str, str | None, int, str | None, float, int, int, int]
"""A request line not yet written: level, event, method, route, status, bound context
variables (rendered), duration in seconds, clock reading and ids."""


class FastJsonLine:
    """Writes one JSON line with exactly the shape the full processor chain renders.

    The request line is written once per request; through ``logging`` and the
    processor chain it costs more than a bare FastAPI request. When the root
    logger holds only the package's handler (the default), the same line is
    assembled directly. Any other handler (an OTLP log exporter, a user's
    handler, a filter on the request logger) switches back to the full path.

    Everything up to the duration depends only on level, event, method, route
    and status, so it is rendered once per combination. When stdout is a pipe
    or a file (a container), the request keeps only a tuple; lines are rendered
    and written together, up to ``_BATCH`` at a time or after ``buffer_ms``:
    rendered in one loop and written in one system call, a line costs a fraction
    of what it costs between two requests' worth of other code. Warnings, 5xx
    lines and any record the handler writes first write what is waiting, so the
    order of lines is kept. The line is pure ASCII (``json.dumps`` escapes the
    rest) and written under the handler's lock.
    """

    def __init__(
        self,
        handler: StdoutHandler,
        static_fields: Mapping[str, Any],
        redactor: Redactor = DEFAULT_REDACTOR,
        buffer_ms: int = 0,
    ) -> None:
        self._handler = handler
        self._redactor = redactor
        static = {key: value for key, value in static_fields.items() if value is not None}
        # json.dumps escapes everything outside ASCII: every part of the line is ASCII bytes.
        self._static_json = ((", " + json.dumps(static)[1:-1]) if static else "").encode("ascii")
        self._prefixes: dict[tuple[str, str, str, str | None, int], bytes] = {}
        self._root = logging.getLogger()
        self._logger = logging.getLogger("otel_setup.request")
        self._second = -1
        self._second_text = b""
        self._stream = handler.stream
        self._descriptor = _descriptor(handler.stream)
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._interval = buffer_ms / 1000.0
        self._batching = self._descriptor is not None and buffer_ms > 0 and not handler.stream.isatty()
        self._stop = threading.Event()
        if self._batching:
            handler.waiting = self.write_waiting
            self._start_flusher()
            os.register_at_fork(after_in_child=_after_fork_in_child(self))

    def _prefix(self, key: tuple[str, str, str, str | None, int]) -> bytes:
        level, event, method, route, status = key
        prefix = (
            f'{{"event": {json.dumps(event)}, "level": {json.dumps(level)}, "logger": "otel_setup.request", '
            f'"http.request.method": {json.dumps(method)}, "http.route": {json.dumps(route)}, '
            f'"http.response.status_code": {status}, "duration_ms": '
        ).encode("ascii")
        if len(self._prefixes) < 10_000:  # templates, methods and statuses: bounded unless routes are not
            self._prefixes[key] = prefix
        return prefix

    def write(
        self,
        level: str,
        event: str,
        method: str,
        route: str | None,
        status: int,
        elapsed: float,
        trace_id: int = 0,
        span_id: int = 0,
    ) -> bool:
        """Queue or write the line; False (nothing done) when another handler or a filter needs the full chain."""
        handlers = self._root.handlers
        logger = self._logger
        if (
            len(handlers) != 1
            or handlers[0] is not self._handler
            or logger.handlers
            or logger.filters
            or not logger.propagate
        ):
            return False
        if not trace_id:
            context = trace.get_current_span().get_span_context()
            if context.is_valid:
                trace_id, span_id = context.trace_id, context.span_id
        context_vars = structlog_context()
        bound = None
        if context_vars:
            bound = json.dumps({key: self._redactor.value(key, value) for key, value in context_vars.items()})[1:-1]
        waiting = self._waiting
        waiting.append((level, event, method, route, status, bound, elapsed, time.time_ns(), trace_id, span_id))
        if not self._batching or len(waiting) >= _BATCH or status >= 500 or level in ("warning", "error"):
            self.write_waiting()
        return True

    def write_waiting(self) -> None:
        """Render and write the waiting lines; safe from any thread, a no-op when none wait."""
        waiting = self._waiting
        if not waiting:
            return
        handler = self._handler
        with handler.lock:  # type: ignore[union-attr] # a handler always has its lock after __init__
            # Appends from other threads land at the right end; ``popleft`` is atomic.
            pop = waiting.popleft
            lines = [pop() for _ in range(len(waiting))]
            rendered = self._render(lines)
            if self._descriptor is not None and handler.stream is self._stream:
                # Whatever print() left in the stream's buffer goes first.
                self._stream.flush()
                _write_lines(self._descriptor, rendered)
            else:
                stream = handler.stream
                for line in rendered:
                    stream.write(line.decode("ascii"))
                stream.flush()

    def _render(self, lines: list[_Waiting]) -> list[bytes]:
        """ISO 8601 UTC timestamps with microseconds, as structlog's TimeStamper renders them.

        Lines stay separate, written with one ``writev``: no batch-sized buffer
        is allocated and copied. Each is one ``%`` on bytes: printf formatting
        of the ids and the duration costs half what f-strings do, and bytes
        need no encoding afterwards.
        """
        static = self._static_json.replace(b"%", b"%%")
        prefixes = self._prefixes
        without_ids = b'%s%s, "timestamp": "%s.%06dZ"' + static
        with_ids = without_ids + b', "trace_id": "%032x", "span_id": "%016x"}\n'
        without_ids += b"}\n"
        rendered = []
        for level, event, method, route, status, bound, elapsed, clock, trace_id, span_id in lines:
            key = (level, event, method, route, status)
            prefix = prefixes.get(key) or self._prefix(key)
            if bound:
                # Where merge_contextvars puts them in the full chain: right after the event.
                head = len('{"event": ') + len(json.dumps(event))
                prefix = prefix[:head] + b", " + bound.encode("ascii") + prefix[head:]
            second, nanoseconds = divmod(clock, 1_000_000_000)
            if second != self._second:
                self._second = second
                self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode("ascii")
            # repr(round(ms, 3)), as the full chain renders it, for a third of the cost.
            duration = (b"%.3f" % (elapsed * 1000.0)).rstrip(b"0")
            if duration[-1] == 46:  # "."
                duration += b"0"
            if trace_id:
                line = with_ids % (prefix, duration, self._second_text, nanoseconds // 1000, trace_id, span_id)
            else:
                line = without_ids % (prefix, duration, self._second_text, nanoseconds // 1000)
            rendered.append(line)
        return rendered

    def _start_flusher(self) -> None:
        thread = threading.Thread(target=self._flush_periodically, name="otel_setup.request_log", daemon=True)
        thread.start()

    def _flush_periodically(self) -> None:
        while not self._stop.wait(self._interval):
            # stdout gone (EPIPE): there is nothing to report it on; later lines may still go out.
            with contextlib.suppress(Exception):
                self.write_waiting()

    def forked(self) -> None:
        """In a forked child: the parent writes the lines that were waiting; this process needs its own flusher."""
        self._waiting.clear()
        if not self._stop.is_set():  # registered only when batching
            # The parent's flusher may have held the event's lock when the process forked.
            self._stop = threading.Event()
            self._start_flusher()

    def close(self) -> None:
        self._stop.set()
        if self._handler.waiting == self.write_waiting:
            self._handler.waiting = None
        self.write_waiting()


_BATCH: Final = 64


def _after_fork_in_child(line: FastJsonLine) -> Callable[[], None]:
    reference = weakref.ref(line)

    def after_fork() -> None:
        alive = reference()
        if alive is not None:
            alive.forked()

    return after_fork


def _descriptor(stream: Any) -> int | None:
    """The file descriptor behind a plain text stream (stdout in a container), else None.

    Capturing or wrapping streams (pytest's, a user's) keep going through
    their own ``write``, one line at a time.
    """
    if type(stream) is not io.TextIOWrapper:
        return None
    try:
        descriptor: int = stream.fileno()
    except (OSError, ValueError):
        return None
    return descriptor


def _write_lines(descriptor: int, lines: list[bytes]) -> None:
    """One ``writev`` per ``_IOV_MAX`` lines; a short write finishes with plain writes."""
    for start in range(0, len(lines), _IOV_MAX):
        chunk = lines[start : start + _IOV_MAX]
        written = os.writev(descriptor, chunk)
        if written < sum(map(len, chunk)):
            rest = b"".join(chunk)[written:]
            while rest:
                rest = rest[os.write(descriptor, rest) :]


_IOV_MAX: Final = 512


class RequestLog:
    """The one line per request: method, route template, status, duration, trace id.

    The route is the template (``/items/{item_id}``), never the raw path, so the
    line carries no identifier from the URL and no query string.
    """

    def __init__(
        self, level: str, slow_ms: int, fast: FastJsonLine | None = None, *, error_level: str = "error"
    ) -> None:
        self._logger = logging.getLogger("otel_setup.request")
        self._level = _LEVELS.get(level, logging.INFO)
        self._enabled = level != "off"
        self._slow_seconds = slow_ms / 1000.0
        self._fast = fast
        # 5xx lines: at least the request level, so they are never quieter than a success.
        self._error_level = max(_LEVELS.get(error_level, logging.ERROR), self._level)

    def __call__(
        self, method: str, route: str | None, status: int, elapsed: float, trace_id: int = 0, span_id: int = 0
    ) -> None:
        slow = elapsed >= self._slow_seconds
        level = logging.WARNING if slow and self._level < logging.WARNING else self._level
        if status >= 500:
            level = max(level, self._error_level)
        if not (self._enabled or slow) or not self._logger.isEnabledFor(level):
            return
        event = "slow request" if slow else "request"
        fast = self._fast
        if fast is not None and fast.write(
            _LEVEL_NAMES[level], event, method, route, status, elapsed, trace_id, span_id
        ):
            return
        fields = {
            "http.request.method": method,
            "http.route": route,
            "http.response.status_code": status,
            "duration_ms": round(elapsed * 1000.0, 3),
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
    request_log_buffer_ms: int = 0,
) -> tuple[Callable[[], None], FastJsonLine | None, Callable[[], None]]:
    """Install the renderer on the root logger.

    Returns the full undo (for test suites), the request line's fast path, and
    what shutdown does: detach the OTLP handler, keep stdout.
    """
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
            context = failed_request_context(record.exc_info) if record.exc_info else None
            if context is not None and not trace.get_current_span().get_span_context().is_valid:
                # Logged after the failed request's span ended: the record joins that trace.
                from opentelemetry import context as otel_context

                token = otel_context.attach(trace.set_span_in_context(trace.NonRecordingSpan(context)))
                try:
                    self.inner.handle(record)
                finally:
                    otel_context.detach(token)
                return
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
