"""Process and runtime metrics: CPU, memory, threads, open files, garbage collection.

They come from OpenTelemetry's own system-metrics instrumentation, limited to
the process (no host-wide series: one node exporter per host does that
better), so they travel like every other metric: on ``/metrics`` for a single
process and over OTLP, per ``service.instance.id``, when N workers push to a
collector. prometheus_client's process collector would show only on
``/metrics``, i.e. one worker of N.

The callbacks run at collection time only, never on the request path.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Final

__all__ = ["PROCESS_METRICS", "instrument_process_metrics"]

# instrument name -> the attribute values it reports (None: one series)
PROCESS_METRICS: Final[dict[str, list[str] | None]] = {
    "process.cpu.time": ["user", "system"],
    "process.memory.usage": None,
    "process.memory.virtual": None,
    "process.thread.count": None,
    "process.open_file_descriptor.count": None,
    "cpython.gc.collections": None,
    "cpython.gc.collected_objects": None,
    "cpython.gc.uncollectable_objects": None,
}


_fork_hook = False


def _rebuild_in_child() -> None:
    """The instrumentor is a singleton reading the process it was built in: rebuilt, it reads the worker."""
    from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor

    SystemMetricsInstrumentor(config=dict(PROCESS_METRICS))


def instrument_process_metrics(meter_provider: Any) -> Callable[[], None]:
    """Register the process's instruments with ``meter_provider``; returns the undo."""
    from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor

    instrumentor = SystemMetricsInstrumentor(config=dict(PROCESS_METRICS))
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    instrumentor.instrument(meter_provider=meter_provider)

    global _fork_hook
    if not _fork_hook:
        os.register_at_fork(after_in_child=_rebuild_in_child)
        _fork_hook = True

    def undo() -> None:
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()

    return undo
