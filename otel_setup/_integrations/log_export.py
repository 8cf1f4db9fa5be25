"""Log records on their way to OTLP: structured, redacted, and never about the export itself."""

from __future__ import annotations

import copy
import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any, Final

from opentelemetry import trace

from otel_setup._integrations.log_processors import failed_request_context
from otel_setup._security.redaction import Redactor

__all__ = ["ExportLogLimiter", "RedactedRecords", "not_from_exporters"]


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


def not_from_exporters(record: logging.LogRecord) -> bool:
    """Export failures must not be exported (a failing pipeline would feed itself)."""
    return not record.name.startswith(("opentelemetry", "urllib3", "grpc"))
