"""httpx: contrib's client spans, ``http.client.request.duration`` and W3C propagation.

Contrib patches the transports, so sync and async clients are covered whether
they were created before or after ``configure()``.
"""

from __future__ import annotations

import logging

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

__all__ = ["instrument_httpx", "uninstrument_httpx"]

_log = logging.getLogger("otel_setup")


def instrument_httpx(*, tracer_provider: TracerProvider, meter_provider: MeterProvider) -> bool:
    try:
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    except ImportError:
        _log.info("otel_setup: httpx instrumentation skipped (opentelemetry-instrumentation-httpx missing)")
        return False
    instrumentor = HTTPXClientInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        return False
    instrumentor.instrument(
        tracer_provider=tracer_provider, meter_provider=meter_provider, raise_exception_on_conflict=True
    )
    return True


def uninstrument_httpx() -> None:
    try:
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    except ImportError:
        return
    HTTPXClientInstrumentor().uninstrument()
