"""SQLAlchemy client spans and ``db.client.operation.duration``, for every engine.

Listening on the ``Dialect`` class rather than patching ``create_engine``
covers engines created before ``configure()`` (including modules that did
``from sqlalchemy import create_engine`` at import), engines created after it,
and the sync engine inside every ``AsyncEngine``. The contrib instrumentor is
not used: it refuses SQLAlchemy 2.1 and, forced, fails to import there.

Not the ``Engine``'s cursor events: with any engine-level listener, every
connection joins its own event dispatcher to the engine's and walks it at each
step (connect, begin, execute, rollback); on a request doing one query that
costs about as much as the listeners themselves (135,000 instructions per
request, measured). The dialect-level ``do_execute`` events are dispatched
from the dialect, once per execution. Their listener only finds the dialect:
on first sight it wraps that dialect instance's ``do_execute``,
``do_executemany`` and ``do_execute_no_params`` (which SQLAlchemy calls right
after the listeners, so the first statement is measured too), and those
wrappers time the driver call and see its exception, if any.

Per statement string (statements are the application's code, so there are few
of them; the cache is capped anyway) the operation, the table
(``db.collection.name``, from the first ``FROM``/``INTO``/``UPDATE <name>``) and
the text with its literals replaced by ``?`` are computed once. The table goes
on spans and on ``db.client.operation.duration`` (at most ``_MAX_TABLES``
distinct names on the metric, then ``_OTHER``). Statements slower than
``OTEL_SETUP_SLOW_QUERY_MS`` are logged at WARNING on ``otel_setup.db`` (text
without literals, duration, rows where the driver knows them); every statement
is logged at the call-log level (see :mod:`otel_setup._integrations.calllog`)
only when that level is enabled.
"""

from __future__ import annotations

import contextlib
import logging
import re
import weakref
from collections.abc import Callable
from time import perf_counter
from typing import Any, Final, NamedTuple

from opentelemetry.metrics import Histogram, MeterProvider
from opentelemetry.trace import SpanKind, Tracer, TracerProvider

from otel_setup._core.catalog import buckets
from otel_setup._hotpath.keep import TEXT_CAP, BufferingRoot, Built, buffer, capped_text
from otel_setup._hotpath.metrics import histogram as fast_histogram
from otel_setup._hotpath.metrics import values_recorder
from otel_setup._hotpath.sampling import unsampled_children_dropped, unsampled_current_span
from otel_setup._hotpath.spans import record_error
from otel_setup._integrations import calllog
from otel_setup._integrations._semconv import DB_OPERATION_ATTRIBUTES
from otel_setup._security.redaction import redact_text
from otel_setup.version import __version__

__all__ = ["Statement", "instrument_sqlalchemy", "statement_info", "strip_literals", "uninstrument_sqlalchemy"]

_log = logging.getLogger("otel_setup")
_SCOPE_NAME: Final = "otel_setup.sqlalchemy"
_PLANS_ATTR: Final = "_otel_setup_plans"
_DURATION_ATTRIBUTES: Final = DB_OPERATION_ATTRIBUTES
_SYSTEMS: Final = {
    "postgresql": "postgresql",
    "sqlite": "sqlite",
    "mysql": "mysql",
    "mariadb": "mariadb",
    "mssql": "microsoft.sql_server",
    "oracle": "oracle.db",
}

_instrumented: list[_Listeners] = []


def _engine_attributes(engine: Any) -> dict[str, Any]:
    """Per-engine attributes; never the URL (it may carry a password)."""
    url = engine.url
    backend = url.get_backend_name()
    attributes: dict[str, Any] = {"db.system.name": _SYSTEMS.get(backend, backend)}
    if url.database:
        attributes["db.namespace"] = url.database if backend != "sqlite" else url.database.rsplit("/", 1)[-1]
    if url.host:
        attributes["server.address"] = url.host
        if url.port:
            attributes["server.port"] = url.port
    return attributes


# One pass over the text; quoted identifiers, comments and placeholders are matched (and kept)
# whole, so a quote, digit or keyword inside them is never mistaken for a literal.
_TOKENS: Final = re.compile(
    r"""
    (?P<string>[eEnNbBxX]?'(?:[^'\\]|''|\\.)*')          # 'text', E'..', N'..', X'..'
    | (?P<dollar>\$(?P<tag>[A-Za-z_]\w*)?\$.*?\$(?P=tag)?\$)   # PostgreSQL $$..$$ / $tag$..$tag$
    | (?P<keep>"(?:[^"]|"")*"|`[^`]*`                       # quoted identifiers ([..] may be an array)
        |--[^\n]*|/\*.*?\*/                                # comments
        |\$\d+|%\(\w+\)s|%s|:\w+                          # placeholders
        |[A-Za-z_][\w$]*)                                  # words, digits and all (t1, col_2)
    | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    """,
    re.VERBOSE | re.DOTALL,
)
_NAME: Final = r'(?:"[^"]+"|`[^`]+`|\[[^\]]+\]|[A-Za-z_][\w$]*)'
_TABLE: Final = re.compile(rf"\b(?:FROM|INTO|UPDATE)\s+({_NAME}(?:\.{_NAME}){{0,2}})", re.IGNORECASE)
_MAX_STATEMENTS: Final = 2000
_MAX_TABLES: Final = 200
OTHER: Final = "_OTHER"


def _literal(match: re.Match[str]) -> str:
    return match.group(0) if match.lastgroup == "keep" else "?"


def strip_literals(statement: str) -> str:
    """``SELECT * FROM t WHERE name = 'x' AND n > 3`` -> ``SELECT * FROM t WHERE name = ? AND n > ?``."""
    return _TOKENS.sub(_literal, statement)


class Statement(NamedTuple):
    """What one statement string says about itself; computed once per string."""

    operation: str
    table: str | None
    """``db.collection.name`` for spans and logs."""
    metric_table: str | None
    """The same for the metric, or ``_OTHER`` once ``_MAX_TABLES`` names were seen."""
    text: str
    """The statement with literals replaced by ``?`` (for the logs)."""


_statements: dict[str, Statement] = {}
_tables: set[str] = set()


def _parse(statement: str) -> Statement:
    head = statement.lstrip().split(None, 1)
    operation = head[0].upper() if head else "SQL"
    text = strip_literals(statement)
    match = _TABLE.search(text)  # on the stripped text: 'from x' inside a string is gone
    table = None
    if match:
        table = ".".join(part.strip('"`[]') for part in re.findall(_NAME, match.group(1)))[:128]
    metric_table = table
    if table is not None and table not in _tables:
        if len(_tables) < _MAX_TABLES:
            _tables.add(table)
        else:
            metric_table = OTHER
    return Statement(operation, table, metric_table, text)


def statement_info(statement: str) -> Statement:
    """A dictionary lookup for a statement seen before; parsed (and kept, up to a cap) otherwise."""
    info = _statements.get(statement)
    if info is None:
        info = _parse(statement)
        if len(_statements) < _MAX_STATEMENTS:
            _statements[statement] = info
    return info


class _Plan(NamedTuple):
    """One statement on one engine: what its telemetry needs, worked out on its first execution."""

    info: Statement
    engine_attributes: dict[str, Any]
    metric_attributes: dict[str, Any]
    values: tuple[Any, ...]
    """``metric_attributes`` in ``_DURATION_ATTRIBUTES`` order, ``error.type`` left out."""
    span_name: str


def _plan(engine: Any, statement: str) -> _Plan:
    """A dictionary lookup on the engine after the first execution of a statement."""
    cached: tuple[dict[str, Any], dict[str, _Plan]] | None = getattr(engine, _PLANS_ATTR, None)
    if cached is None:
        cached = (_engine_attributes(engine), {})
        with contextlib.suppress(AttributeError):  # an engine class with slots: recompute next time
            setattr(engine, _PLANS_ATTR, cached)
    engine_attributes, plans = cached
    plan = plans.get(statement)
    if plan is None:
        info = statement_info(statement)
        metric_attributes = {**engine_attributes, "db.operation.name": info.operation}
        if info.metric_table:
            metric_attributes["db.collection.name"] = info.metric_table
        namespace = engine_attributes.get("db.namespace")
        plan = _Plan(
            info,
            engine_attributes,
            metric_attributes,
            tuple(map(metric_attributes.get, _DURATION_ATTRIBUTES)),
            f"{info.operation} {namespace}" if namespace else info.operation,
        )
        if len(plans) < _MAX_STATEMENTS:
            plans[statement] = plan
    return plan


_EXECUTE_METHODS: Final = ("do_execute", "do_executemany", "do_execute_no_params")


class _Listeners:
    def __init__(self, tracer: Tracer, duration: Histogram, slow_query_ms: int, skip_unsampled: bool) -> None:
        self.tracer = tracer
        self.skip_unsampled = skip_unsampled
        self.record = values_recorder(duration, _DURATION_ATTRIBUTES)
        self.slow_seconds = slow_query_ms / 1000.0
        self.dialects: weakref.WeakSet[Any] = weakref.WeakSet()

    def watch(self, *args: Any) -> None:
        """The dialect-level ``do_execute*`` listener: wraps a dialect's driver calls once; never handles them."""
        context = args[-1]
        dialect = getattr(context, "dialect", None)
        if dialect is None or "do_execute" in vars(dialect):
            return
        try:
            for name in _EXECUTE_METHODS:
                setattr(dialect, name, self._measured(getattr(dialect, name), name == "do_execute_no_params"))
            self.dialects.add(dialect)
        except Exception:  # noqa: BLE001 - a dialect with slots stays unmeasured, its queries unaffected
            _log.debug("otel_setup: sqlalchemy dialect not instrumented", exc_info=True)

    def _measured(self, original: Callable[..., Any], no_parameters: bool) -> Callable[..., Any]:
        start, end = self.start, self.end

        def run(cursor: Any, statement: str, arguments: tuple[Any, ...], context: Any) -> Any:
            state = start(context, statement) if context is not None else None
            if state is None:
                return original(cursor, statement, *arguments)
            try:
                result = original(cursor, statement, *arguments)
            except Exception as error:
                end(state, error, None)
                raise
            except BaseException:  # cancelled: the span ends, no duration point (the query did not finish)
                end(state, None, None, record=False)
                raise
            end(state, None, cursor)
            return result

        if no_parameters:

            def do_execute_no_params(cursor: Any, statement: str, context: Any = None) -> Any:
                return run(cursor, statement, (context,), context)

            return do_execute_no_params

        def do_execute(cursor: Any, statement: str, parameters: Any, context: Any = None) -> Any:
            return run(cursor, statement, (parameters, context), context)

        return do_execute

    def start(self, context: Any, statement: str) -> tuple[Any, float, _Plan, str] | None:
        try:
            connection = context.root_connection
            if "dispatch" not in vars(connection):
                # A connection that did not join the engine's events: SQLAlchemy's own queries on
                # a first connect (dialect initialisation); engine-level instrumentations skip them too.
                return None
            plan = _plan(connection.engine, statement)
            span = unsampled_current_span() if self.skip_unsampled else None
            if span is None:
                span = self.tracer.start_span(plan.span_name, kind=SpanKind.CLIENT)
                if span.is_recording():
                    span.set_attributes(plan.engine_attributes)
                    span.set_attribute("db.operation.name", plan.info.operation)
                    if plan.info.table:
                        span.set_attribute("db.collection.name", plan.info.table)
                    span.set_attribute("db.query.text", redact_text(statement))
            # else: inside an unsampled request the SDK would return a non-recording span;
            # the request's own carries the same trace id for the query's log line.
            return span, perf_counter(), plan, statement
        except Exception:  # noqa: BLE001 - never break a query for telemetry
            _log.debug("otel_setup: sqlalchemy execute start failed", exc_info=True)
            return None

    def end(
        self, state: tuple[Any, float, _Plan, str], error: BaseException | None, cursor: Any, record: bool = True
    ) -> None:
        try:
            span, start, plan, statement = state
            ended = perf_counter()
            elapsed = ended - start
            values = plan.values
            attributes = plan.metric_attributes
            recording = span.is_recording()
            if error is not None:
                error_type = type(error).__qualname__
                values = (*values[:-1], error_type)
                attributes = {**attributes, "error.type": error_type}
                if recording:
                    span.set_attribute("error.type", error_type)
                    record_error(span, error, escaped=False)
            if record:
                self.record(elapsed, values)
            if recording:  # ours: the request's span is never recording here
                span.end()
            elif span.__class__ is BufferingRoot:  # an unsampled request: kept only if it fails or is slow
                if len(statement) > TEXT_CAP:
                    statement = capped_text(statement, redact_text)
                buffer(span, (start, ended, 0, _query_span, (plan, statement, error)))
            if not record:
                return
            if elapsed >= self.slow_seconds:
                if calllog.DB.logger.isEnabledFor(logging.WARNING):
                    _log_query("slow query", logging.WARNING, span, plan.info, attributes, elapsed, cursor)
            elif calllog.DB.enabled():
                _log_query("query", calllog.DB.level, span, plan.info, attributes, elapsed, cursor)
        except Exception:  # noqa: BLE001 - never break a query for telemetry
            _log.debug("otel_setup: sqlalchemy span end failed", exc_info=True)

    def unwrap(self) -> None:
        for dialect in list(self.dialects):
            for name in _EXECUTE_METHODS:
                vars(dialect).pop(name, None)
        self.dialects.clear()


def _query_span(plan: _Plan, statement: str, error: BaseException | None) -> Built:
    """The attributes a sampled query's span gets, for a buffered one that is kept."""
    attributes = {**plan.engine_attributes, "db.operation.name": plan.info.operation}
    if plan.info.table:
        attributes["db.collection.name"] = plan.info.table
    attributes["db.query.text"] = redact_text(statement)
    error_type = None
    if error is not None:
        error_type = attributes["error.type"] = type(error).__qualname__
    return _SCOPE_NAME, plan.span_name, SpanKind.CLIENT, attributes, error_type, error


def _log_query(
    event: str, level: int, span: Any, info: Statement, attributes: dict[str, Any], elapsed: float, cursor: Any
) -> None:
    """One query as a log event: literal-free text, duration, rows where the driver counts them."""
    fields: dict[str, Any] = {
        "db.system.name": attributes["db.system.name"],
        "db.operation.name": info.operation,
        "db.query.text": info.text,
        "duration_ms": round(elapsed * 1000.0, 3),
    }
    if info.table:
        fields["db.collection.name"] = info.table
    if "db.namespace" in attributes:
        fields["db.namespace"] = attributes["db.namespace"]
    if "error.type" in attributes:
        fields["error.type"] = attributes["error.type"]
    rows = getattr(cursor, "rowcount", -1) if cursor is not None else -1
    if isinstance(rows, int) and rows >= 0:
        fields["rows"] = rows
    fields.update(calllog.span_ids(span))
    calllog.DB.write(event, fields, level)


def instrument_sqlalchemy(
    *, tracer_provider: TracerProvider, meter_provider: MeterProvider, slow_query_ms: int = 200
) -> bool:
    """Listen on every engine; returns False when SQLAlchemy is absent or already listened to."""
    if _instrumented:
        return False
    try:
        from sqlalchemy import event
        from sqlalchemy.engine.interfaces import Dialect
    except ImportError:
        return False
    tracer = tracer_provider.get_tracer(_SCOPE_NAME, __version__)
    duration = fast_histogram(
        meter_provider,
        (_SCOPE_NAME, __version__),
        "db.client.operation.duration",
        "s",
        "Duration of database client operations.",
        buckets("db.client.operation.duration"),
        _DURATION_ATTRIBUTES,
    )
    listeners = _Listeners(tracer, duration, slow_query_ms, unsampled_children_dropped(tracer_provider))
    for name in _EXECUTE_METHODS:
        event.listen(Dialect, name, listeners.watch)
    _instrumented.append(listeners)
    return True


def uninstrument_sqlalchemy() -> None:
    if not _instrumented:
        return
    from sqlalchemy import event
    from sqlalchemy.engine.interfaces import Dialect

    for listeners in _instrumented:
        for name in _EXECUTE_METHODS:
            event.remove(Dialect, name, listeners.watch)
        listeners.unwrap()
    _instrumented.clear()
