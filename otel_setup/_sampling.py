"""Root server spans that cost next to nothing when they are not sampled."""

from __future__ import annotations

import threading
from random import getrandbits

from opentelemetry import trace
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision, Sampler, TraceIdRatioBased
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags, Tracer

__all__ = ["PresetIdGenerator", "RootSpans"]

_LOW_64_BITS = (1 << 64) - 1
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)


class PresetIdGenerator(RandomIdGenerator):
    """Random ids, except a trace id handed over by :class:`RootSpans` for the next span."""

    def __init__(self) -> None:
        self._next = threading.local()

    def preset(self, trace_id: int) -> None:
        self._next.trace_id = trace_id

    def generate_trace_id(self) -> int:
        trace_id: int = getattr(self._next, "trace_id", 0)
        if trace_id:
            self._next.trace_id = 0
            return trace_id
        return super().generate_trace_id()


class RootSpans:
    """Root server spans without the SDK's per-span overhead when they are not sampled.

    Nine requests in ten are not sampled. For those, the sampler is asked
    directly and a non-recording span is built from fresh ids, which is what
    the SDK does too, minus its bookkeeping. For a sampled one the SDK starts
    the span with the same trace id (the samplers are deterministic on it), so
    the decision and the ratio are exactly the SDK's.
    """

    def __init__(self, sampler: Sampler, ids: PresetIdGenerator, ratio: float | None = None) -> None:
        self._sampler = sampler
        self._ids = ids
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
            context = SpanContext(
                trace_id, getrandbits(64) or 1, is_remote=False, trace_flags=_NOT_SAMPLED, trace_state=trace_state
            )
            return NonRecordingSpan(context)
        self._ids.preset(trace_id)
        return tracer.start_span(name, kind=SpanKind.SERVER, links=links)
