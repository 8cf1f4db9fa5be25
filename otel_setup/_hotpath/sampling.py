"""Root server spans that cost next to nothing when they are not sampled."""

from __future__ import annotations

import threading
from random import getrandbits
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags, Tracer

from otel_setup._hotpath.context import SPAN_KEY, current_context
from otel_setup._hotpath.keep import BufferingRoot

__all__ = [
    "PresetIdGenerator",
    "RootSpans",
    "in_unsampled_span",
    "unsampled_children_dropped",
    "unsampled_current_span",
    "unsampled_local",
]

_LOW_64_BITS = (1 << 64) - 1
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)


class PresetIdGenerator(RandomIdGenerator):
    """Random ids, except a trace id handed over by :class:`RootSpans` for the next span."""

    def __init__(self) -> None:
        self._next = threading.local()

    def preset(self, trace_id: int, span_id: int = 0) -> None:
        """The ids the next span started on this thread gets (0: a random one)."""
        upcoming = self._next
        upcoming.trace_id = trace_id
        upcoming.span_id = span_id

    def generate_trace_id(self) -> int:
        trace_id: int = getattr(self._next, "trace_id", 0)
        if trace_id:
            self._next.trace_id = 0
            return trace_id
        return super().generate_trace_id()

    def generate_span_id(self) -> int:
        span_id: int = getattr(self._next, "span_id", 0)
        if span_id:
            self._next.span_id = 0
            return span_id
        return super().generate_span_id()


class RootSpans:
    """Root server spans without the SDK's per-span overhead when they are not sampled.

    Nine requests in ten are not sampled. For those, the sampler is asked
    directly and a non-recording span is built from fresh ids, which is what
    the SDK does too, minus its bookkeeping. For a sampled one the SDK starts
    the span with the same trace id (the samplers are deterministic on it), so
    the decision and the ratio are exactly the SDK's.
    """

    def __init__(
        self, sampler: Sampler, ids: PresetIdGenerator, ratio: float | None = None, *, buffering: bool = False
    ) -> None:
        self._sampler = sampler
        self._ids = ids
        # Unsampled roots that collect their calls' records (see otel_setup._hotpath.keep).
        self._unsampled: type[NonRecordingSpan] = BufferingRoot if buffering else NonRecordingSpan
        # For the ratio samplers (the default), a root's decision is the SDK's
        # rule on the trace id's low 64 bits; applying it here skips building
        # a SamplingResult for every request.
        self._bound = TraceIdRatioBased.get_bound_for_rate(ratio) if ratio is not None else None

    def start(self, tracer: Tracer, name: str, links: list[Link] | None) -> trace.Span:
        trace_id = getrandbits(128) or 1
        bound = self._bound
        if bound is not None:
            dropped = (trace_id & _LOW_64_BITS) >= bound
            trace_state = None
        else:
            result = self._sampler.should_sample(None, trace_id, name, SpanKind.SERVER, None, links)
            dropped = result.decision is Decision.DROP
            trace_state = result.trace_state
        if dropped:
            # Positional arguments: keyword parsing costs a third of building the context.
            root = self._unsampled(SpanContext(trace_id, getrandbits(64) or 1, False, _NOT_SAMPLED, trace_state))
            if links and isinstance(root, BufferingRoot):
                root.links = links  # for the trace, should it be kept
            return root
        self._ids.preset(trace_id)
        return tracer.start_span(name, kind=SpanKind.SERVER, links=links)


def unsampled_children_dropped(tracer_provider: Any) -> bool:
    """Whether every span started under an unsampled local parent is dropped by this provider.

    True for the parent-based samplers (the default and every ``parentbased_*``
    setting). Client instrumentations then skip the SDK inside the nine
    requests in ten that are not sampled: what it would return is a
    non-recording span whatever they pass it. The sampler is asked, not
    inspected, so a custom parent-based sampler that keeps such children is
    honoured.
    """
    sampler = getattr(tracer_provider, "sampler", None)
    if not isinstance(sampler, ParentBased):
        return False
    for _ in range(4):
        trace_id = getrandbits(128) or 1
        parent = NonRecordingSpan(SpanContext(trace_id, getrandbits(64) or 1, False, _NOT_SAMPLED))
        decision = sampler.should_sample(trace.set_span_in_context(parent), trace_id, "probe", SpanKind.CLIENT)
        if decision.decision is not Decision.DROP:
            return False
    return True


def unsampled_local(context: SpanContext) -> bool:
    """A valid, local, unsampled span context: a parent whose children a parent-based sampler drops."""
    return context.is_valid and not context.trace_flags.sampled and not context.is_remote


def unsampled_current_span() -> trace.Span | None:
    """The current span when it is an unsampled local one that does not record (a request that was not sampled).

    Not recording matters: a custom sampler's RECORD_ONLY span is unsampled but
    alive, and callers may end the span they get from here. Called by client
    hooks on every call: the span is read from the context directly.
    """
    span: Any = current_context().get(SPAN_KEY)
    return None if span is None or span.is_recording() or not unsampled_local(span.get_span_context()) else span


def in_unsampled_span() -> bool:
    """See :func:`unsampled_current_span`."""
    return unsampled_current_span() is not None
