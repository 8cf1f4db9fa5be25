"""The request line: one JSON line per request, and its fast path around the processor chain.

The line has exactly the shape the full chain renders; when stdout holds only
the package's handler it is assembled (and, on a pipe, batched) directly.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Final

from opentelemetry import trace

from otel_setup._compat import structlog_context
from otel_setup._integrations.log_processors import LEVEL_NAMES, LEVELS
from otel_setup._security.redaction import DEFAULT_REDACTOR, Redactor

__all__ = ["FastJsonLine", "RequestLog", "StdoutHandler"]


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
        self._level = LEVELS.get(level, logging.INFO)
        self._enabled = level != "off"
        self._slow_seconds = slow_ms / 1000.0
        self._fast = fast
        # 5xx lines: at least the request level, so they are never quieter than a success.
        self._error_level = max(LEVELS.get(error_level, logging.ERROR), self._level)

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
            LEVEL_NAMES[level], event, method, route, status, elapsed, trace_id, span_id
        ):
            return
        fields = {
            "http.request.method": method,
            "http.route": route,
            "http.response.status_code": status,
            "duration_ms": round(elapsed * 1000.0, 3),
        }
        self._logger.log(level, event, extra=fields)
