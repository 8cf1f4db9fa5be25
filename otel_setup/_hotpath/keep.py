"""Whole traces for failing and slow requests that head sampling left out.

Nine requests in ten are not sampled, and their SERVER span is a
non-recording one (see :mod:`otel_setup._hotpath.sampling`). With keeping on (the
default, ``OTEL_SETUP_KEEP=errors,slow``) that span is a :class:`BufferingRoot`:
the package's own client hooks (SQLAlchemy, Redis, httpx, GW2, GenAI) append
one lightweight record per call to it (timings, the span id already sent
downstream, and what is needed to build the attributes later), nothing more.
When the request ends in a 5xx or an unhandled exception, or took longer
than ``OTEL_SETUP_SLOW_REQUEST_MS``, :class:`Keeper` turns the root and its
records into real SDK spans: same trace id, same root span id (the one in
the request line, the exemplar and ``Server-Timing``), the propagated span
ids of outbound calls, the measured timings, and ``otel_setup.kept`` naming
why (``error``, ``slow``; head-sampled roots carry ``head``). They go through
the normal span processor, exporter and scrubbing. Any other request drops
its records.

The buffer is bounded twice: :data:`MAX_SPANS_PER_TRACE` records per request
and :data:`MAX_BUFFERED_SPANS` records across every request in flight (a
burst of slow requests cannot grow it); statement texts over
:data:`TEXT_CAP` characters are redacted and cut when buffered. Records
refused for either reason are counted by ``otel_setup.trace.buffer.dropped``.

What was propagated downstream cannot change afterwards: outbound
``traceparent`` headers follow the head decision (not sampled), so a kept
trace shows the outbound CLIENT span with the span id the downstream
service received, and that service's own spans only when it sampled (or
kept) on its own. Spans of third-party instrumentations inside an unsampled
request are the SDK's non-recording spans and are not buffered; the
package's Redis hook records the commands contrib's instrumentation skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from random import getrandbits
from time import perf_counter, time_ns
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, SamplingResult
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, Tracer
from opentelemetry.util.types import Attributes

from otel_setup._hotpath.context import SPAN_KEY, current_context
from otel_setup._hotpath.metrics import FastCounter, SdkCounter
from otel_setup._hotpath.spans import record_error

__all__ = [
    "HELD",
    "KEPT",
    "MAX_BUFFERED_SPANS",
    "MAX_SPANS_PER_TRACE",
    "BufferedSpan",
    "BufferingRoot",
    "Keeper",
    "KeepingParentBased",
    "KeepingTracer",
    "buffer",
    "buffering_root",
    "release",
]

_log = logging.getLogger("otel_setup")

KEPT: Final = "otel_setup.kept"
"""Span attribute: why the trace was exported (``head``, ``error``, ``slow``)."""
MAX_SPANS_PER_TRACE: Final = 128
MAX_BUFFERED_SPANS: Final = 1024
TEXT_CAP: Final = 4096

# One entry per buffered record, across every request in flight: ``append``
# and ``del [-n:]`` are single C calls (atomic under the interpreter lock), as
# for the active-request series; its length is the number of records held.
HELD: list[None] = []
_DROPPED: list[FastCounter | SdkCounter] = []
"""The drop counter of the configured providers (at most one)."""

Built = tuple[str, str, SpanKind, dict[str, Any], "str | None", "BaseException | None"]
"""(instrumentation scope, name, kind, attributes, error.type or None, exception to record or None)."""
Builder = Callable[..., Built]
Record = tuple[float, float, int, Builder, tuple[Any, ...]]
"""(start, end as ``perf_counter`` values, span id already propagated or 0, build, its arguments)."""


class BufferingRoot(NonRecordingSpan):
    """The non-recording SERVER span of a request not head-sampled, holding its calls' records."""

    records: list[Record] | None = None
    links: Sequence[Link] | None = None
    parent: Context | None = None
    """The trusted remote parent's context, when the trace came from upstream unsampled."""


def buffering_root() -> BufferingRoot | None:
    """The current span when it is a :class:`BufferingRoot`; a client hook's one extra check."""
    span = current_context().get(SPAN_KEY)
    return span if span.__class__ is BufferingRoot else None


def _count_drop(reason: str) -> None:
    for counter in _DROPPED:
        counter.add(1, (reason,))


def buffer(root: BufferingRoot, record: Record) -> None:
    """Append ``record`` to ``root``'s, unless a cap says no (then the drop is counted)."""
    records = root.records
    if records is None:
        records = root.records = []
    if len(records) >= MAX_SPANS_PER_TRACE:
        _count_drop("trace_full")
        return
    if len(HELD) >= MAX_BUFFERED_SPANS:
        _count_drop("buffer_full")
        return
    records.append(record)
    HELD.append(None)


def release(root: BufferingRoot) -> list[Record]:
    """Take ``root``'s records out of the shared budget; returns them."""
    records = root.records
    if not records:
        return []
    root.records = None
    held = len(records)
    del HELD[-held:]
    return records


def held() -> int:
    """Records buffered right now, across every request in flight."""
    return len(HELD)


def capped_text(text: str, redact: Callable[[str], str]) -> str:
    """A statement to buffer: itself, or redacted then cut when very long (memory is bounded)."""
    return text if len(text) <= TEXT_CAP else redact(text)[:TEXT_CAP]


class KeepingParentBased(ParentBased):
    """The parent-based sampler, plus: a span started with ``otel_setup.kept`` is sampled.

    Only :class:`Keeper` starts spans with that attribute, for requests already
    decided; every other span gets the parent-based decision unchanged.
    """

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        if attributes and KEPT in attributes:
            parent = trace.get_current_span(parent_context).get_span_context()
            return SamplingResult(
                Decision.RECORD_AND_SAMPLE, attributes, parent.trace_state if parent.is_valid else None
            )
        return super().should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)


class BufferedSpan(trace.Span):
    """A recording stand-in for a client span of an unsampled request (GW2, GenAI calls).

    Collects what the instrumentation sets and, at :meth:`end`, becomes one
    record of its request; costs a few dictionary writes on calls that take
    milliseconds.
    """

    def __init__(self, root: BufferingRoot, scope: str, name: str, kind: SpanKind, attributes: Attributes) -> None:
        self._root = root
        self._scope = scope
        self._name = name
        self._kind = kind
        self._attributes: dict[str, Any] = dict(attributes or {})
        self._events: list[tuple[str, dict[str, Any], int]] = []
        self._status: Status | None = None
        self._start = perf_counter()
        self._ended = False
        parent = root.get_span_context()

        self._context = SpanContext(
            parent.trace_id, getrandbits(64) or 1, False, parent.trace_flags, parent.trace_state
        )

    def get_span_context(self) -> SpanContext:
        return self._context

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        self._attributes.update(attributes)

    def set_attribute(self, key: str, value: Any) -> None:
        self._attributes[key] = value

    def add_event(self, name: str, attributes: Attributes = None, timestamp: int | None = None) -> None:
        self._events.append((name, dict(attributes or {}), timestamp or time_ns()))

    def update_name(self, name: str) -> None:
        self._name = name

    def is_recording(self) -> bool:
        return not self._ended

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        self._status = status if isinstance(status, Status) else Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        self._events.append(
            (
                "exception",
                {
                    "exception.type": type(exception).__qualname__,
                    "exception.message": str(exception),
                    "exception.escaped": escaped,
                    **(attributes or {}),
                },
                timestamp or time_ns(),
            )
        )

    def end(self, end_time: int | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        buffer(self._root, (self._start, perf_counter(), self._context.span_id, _from_buffered, (self,)))

    def finish(self, span: trace.Span) -> None:
        """Replay events and status onto the materialised span."""
        for name, attributes, timestamp in self._events:
            span.add_event(name, attributes, timestamp)
        if self._status is not None:
            span.set_status(self._status)


def _from_buffered(span: BufferedSpan) -> Built:
    return span._scope, span._name, span._kind, span._attributes, None, None


class KeepingTracer(Tracer):
    """A tracer that hands out :class:`BufferedSpan` inside requests that buffer, the SDK's spans otherwise.

    For the known-API handlers (GW2, GenAI), whose calls take milliseconds.
    """

    def __init__(self, tracer: Tracer, scope: str) -> None:
        self._tracer = tracer
        self._scope = scope

    def start_span(  # type: ignore[override] # the options are passed on as they came
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Attributes = None,
        **options: Any,
    ) -> trace.Span:
        if context is None:
            root = buffering_root()
            if root is not None:
                return BufferedSpan(root, self._scope, name, kind, attributes)
        return self._tracer.start_span(name, context, kind, attributes, **options)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        return self._tracer.start_as_current_span(*args, **kwargs)


class Keeper:
    """Decides at a request's end whether its buffered trace is exported, and exports it."""

    def __init__(
        self,
        tracer_provider: Any,
        ids: Any,
        *,
        errors: bool,
        slow_seconds: float | None,
        dropped: FastCounter | SdkCounter | None,
    ) -> None:
        from otel_setup.version import __version__

        self._provider = tracer_provider
        self._version = __version__
        self._tracers: dict[str, Tracer] = {}
        self._tracer = self._scoped("otel_setup.fastapi")
        self._ids = ids
        self.errors = errors
        self.slow_seconds = slow_seconds if slow_seconds is not None else float("inf")
        _DROPPED.clear()
        if dropped is not None:
            _DROPPED.append(dropped)

    def _scoped(self, scope: str) -> Tracer:
        tracer = self._tracers.get(scope)
        if tracer is None:
            tracer = self._tracers[scope] = self._provider.get_tracer(scope, self._version)
        return tracer

    def reason(self, failed: bool, elapsed: float) -> str | None:
        if failed and self.errors:
            return "error"
        if elapsed >= self.slow_seconds:
            return "slow"
        return None

    def keep(
        self,
        root: BufferingRoot,
        reason: str,
        name: str,
        attributes: dict[str, Any],
        start: float,
        error: BaseException | None,
        error_type: str | None,
    ) -> None:
        """Export ``root`` and its records as SDK spans; the span objects end with their measured times."""
        records = release(root)
        now_ns = time_ns()
        now = perf_counter()

        def wall(moment: float) -> int:
            return now_ns - int((now - moment) * 1e9)

        context = root.get_span_context()
        tracer = self._tracer
        ids = self._ids
        attributes[KEPT] = reason
        ids.preset(context.trace_id, context.span_id)
        span = tracer.start_span(
            name,
            context=root.parent if root.parent is not None else Context(),
            kind=SpanKind.SERVER,
            attributes=attributes,
            links=root.links,
            start_time=wall(start),
        )
        try:
            if error is not None:
                record_error(span, error)
            if error_type is not None:
                span.set_status(Status(StatusCode.ERROR))
            parent = trace.set_span_in_context(NonRecordingSpan(span.get_span_context()), Context())
            for child_start, child_end, span_id, build, args in records:
                try:
                    self._child(parent, reason, wall(child_start), wall(child_end), span_id, build(*args), args)
                except Exception:  # noqa: BLE001 - one bad record must not lose the rest of the trace
                    _log.debug("otel_setup: a buffered span could not be exported", exc_info=True)
        finally:
            span.end(end_time=now_ns)

    def _child(
        self,
        parent: Context,
        reason: str,
        start_ns: int,
        end_ns: int,
        span_id: int,
        built: Built,
        args: tuple[Any, ...],
    ) -> None:
        scope, name, kind, attributes, error_type, error = built
        attributes = {**attributes, KEPT: reason}
        if span_id:
            self._ids.preset(0, span_id)
        span = self._scoped(scope).start_span(
            name, context=parent, kind=kind, attributes=attributes, start_time=start_ns
        )
        if error is not None:
            record_error(span, error, escaped=False)
        if error_type is not None:
            span.set_status(Status(StatusCode.ERROR))
        if args and isinstance(args[0], BufferedSpan):
            args[0].finish(span)
        span.end(end_time=end_ns)
