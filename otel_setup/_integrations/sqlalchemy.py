"""SQLAlchemy client spans and ``db.client.operation.duration``, for every engine.

Listening on the ``Engine`` class rather than patching ``create_engine``
covers engines created before ``configure()`` (including modules that did
``from sqlalchemy import create_engine`` at import), engines created after it,
and the sync engine inside every ``AsyncEngine``. The contrib instrumentor is
not used: it refuses SQLAlchemy 2.1 and, forced, fails to import there.
"""

from __future__ import annotations

import contextlib
import logging
from time import perf_counter
from typing import Any, Final

from opentelemetry.metrics import Histogram, MeterProvider
from opentelemetry.trace import SpanKind, Tracer, TracerProvider

from otel_setup._redaction import redact_text
from otel_setup._spans import record_error
from otel_setup.version import __version__

__all__ = ["instrument_sqlalchemy", "uninstrument_sqlalchemy"]

_log = logging.getLogger("otel_setup")
_SCOPE_NAME: Final = "otel_setup.sqlalchemy"
_STATE_ATTR: Final = "_otel_setup_op"
_SYSTEMS: Final = {
    "postgresql": "postgresql",
    "sqlite": "sqlite",
    "mysql": "mysql",
    "mariadb": "mariadb",
    "mssql": "microsoft.sql_server",
    "oracle": "oracle.db",
}
_DB_BUCKETS: Final = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)

_listeners: list[tuple[str, Any]] = []


def _engine_attributes(engine: Any) -> dict[str, Any]:
    """Per-engine attributes, computed once; never the URL (it may carry a password)."""
    cached: dict[str, Any] | None = getattr(engine, "_otel_setup_attrs", None)
    if cached is not None:
        return cached
    url = engine.url
    backend = url.get_backend_name()
    attributes: dict[str, Any] = {"db.system.name": _SYSTEMS.get(backend, backend)}
    if url.database:
        attributes["db.namespace"] = url.database if backend != "sqlite" else url.database.rsplit("/", 1)[-1]
    if url.host:
        attributes["server.address"] = url.host
        if url.port:
            attributes["server.port"] = url.port
    with contextlib.suppress(AttributeError):  # an engine class with slots: recompute next time
        engine._otel_setup_attrs = attributes
    return attributes


def _operation(statement: str) -> str:
    head = statement.lstrip().split(None, 1)
    return head[0].upper() if head else "SQL"


class _Listeners:
    def __init__(self, tracer: Tracer, duration: Histogram) -> None:
        self.tracer = tracer
        self.duration = duration

    def before(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        try:
            engine_attributes = _engine_attributes(conn.engine)
            operation = _operation(statement)
            namespace = engine_attributes.get("db.namespace")
            span = self.tracer.start_span(f"{operation} {namespace}" if namespace else operation, kind=SpanKind.CLIENT)
            if span.is_recording():
                span.set_attributes(engine_attributes)
                span.set_attribute("db.operation.name", operation)
                span.set_attribute("db.query.text", redact_text(statement))
            if context is not None:
                setattr(context, _STATE_ATTR, (span, perf_counter(), operation, engine_attributes))
        except Exception:  # noqa: BLE001 - never break a query for telemetry
            _log.debug("otel_setup: sqlalchemy before_cursor_execute failed", exc_info=True)

    def after(self, conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        self._end(context, None)

    def error(self, exception_context: Any) -> None:
        self._end(exception_context.execution_context, exception_context.original_exception)

    def _end(self, context: Any, error: BaseException | None) -> None:
        state = getattr(context, _STATE_ATTR, None) if context is not None else None
        if state is None:
            return
        try:
            setattr(context, _STATE_ATTR, None)
            span, start, operation, engine_attributes = state
            attributes = dict(engine_attributes)
            attributes["db.operation.name"] = operation
            if error is not None:
                attributes["error.type"] = type(error).__qualname__
                if span.is_recording():
                    span.set_attribute("error.type", type(error).__qualname__)
                    record_error(span, error, escaped=False)
            self.duration.record(perf_counter() - start, attributes)
            span.end()
        except Exception:  # noqa: BLE001 - never break a query for telemetry
            _log.debug("otel_setup: sqlalchemy span end failed", exc_info=True)


def instrument_sqlalchemy(*, tracer_provider: TracerProvider, meter_provider: MeterProvider) -> bool:
    """Listen on every engine; returns False when SQLAlchemy is absent or already listened to."""
    if _listeners:
        return False
    try:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine
    except ImportError:
        return False
    tracer = tracer_provider.get_tracer(_SCOPE_NAME, __version__)
    duration = meter_provider.get_meter(_SCOPE_NAME, __version__).create_histogram(
        "db.client.operation.duration",
        unit="s",
        description="Duration of database client operations.",
        explicit_bucket_boundaries_advisory=list(_DB_BUCKETS),
    )
    listeners = _Listeners(tracer, duration)
    for name, fn in (
        ("before_cursor_execute", listeners.before),
        ("after_cursor_execute", listeners.after),
        ("handle_error", listeners.error),
    ):
        event.listen(Engine, name, fn)
        _listeners.append((name, fn))
    return True


def uninstrument_sqlalchemy() -> None:
    if not _listeners:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    for name, fn in _listeners:
        event.remove(Engine, name, fn)
    _listeners.clear()
