"""Contrib's side of the differential tests: in-memory providers, a subprocess, JSON back.

Contrib reads ``OTEL_SEMCONV_STABILITY_OPT_IN`` once per process, so each
differential test module runs itself as ``python -m <module>`` with the
variable set; that side prints one JSON line, which :func:`run_reference` reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from tests.support.processes import ROOT

__all__ = ["duration_points", "in_memory_providers", "run_reference"]


def run_reference(module: str) -> dict[str, Any]:
    """Run ``python -m module`` with stable HTTP semconv and no other OTEL_ variable; its last JSON line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["OTEL_SEMCONV_STABILITY_OPT_IN"] = "http"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", module], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    output: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return output


def in_memory_providers() -> tuple[Any, Any, Any, Any]:
    """``(span exporter, tracer provider, metric reader, meter provider)``, all in memory."""
    assert os.environ.get("OTEL_SEMCONV_STABILITY_OPT_IN") == "http"
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    return exporter, tracer_provider, reader, MeterProvider(metric_readers=[reader])


def _data_points(reader: Any, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    return [
        point
        for resource_metrics in (data.resource_metrics if data else ())
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


def sum_points(reader: Any, name: str) -> list[dict[str, Any]]:
    """Attributes and value of each point of the sum ``name``."""
    return [{"attributes": dict(p.attributes), "value": p.value} for p in _data_points(reader, name)]


def duration_points(reader: Any, name: str) -> list[dict[str, Any]]:
    """Attributes and count of each point of the histogram ``name``."""
    return [{"attributes": dict(p.attributes), "count": p.count} for p in _data_points(reader, name)]
