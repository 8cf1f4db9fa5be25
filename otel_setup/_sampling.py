"""Root server spans that cost next to nothing when they are not sampled."""

from __future__ import annotations

import threading
from random import getrandbits

from opentelemetry import trace
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision, Sampler
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags, Tracer

__all__ = ["PresetIdGenerator", "RootSpans"]


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

    def __init__(self, sampler: Sampler, ids: PresetIdGenerator) -> None:
        self._sampler = sampler
        self._ids = ids

    def start(self, tracer: Tracer, name: str, links: list[Link] | None) -> trace.Span:
        trace_id = getrandbits(128) or 1
        result = self._sampler.should_sample(None, trace_id, name, SpanKind.SERVER, None, links)
        if result.decision is Decision.DROP:
            context = SpanContext(
                trace_id, getrandbits(64) or 1, is_remote=False, trace_flags=TraceFlags(0), trace_state=result.trace_state
            )
            return NonRecordingSpan(context)
        self._ids.preset(trace_id)
        return tracer.start_span(name, kind=SpanKind.SERVER, links=links)
