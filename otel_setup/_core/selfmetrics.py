"""The pipeline watching itself: exported and failed items, queue drops, queue size.

Alert rules need to see a pipeline that loses data. The SDK counts processor
drops only when ``OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED`` is set in the
environment, and its OTLP exporters count nothing; here the processors get
their metrics switched on (``otel_setup._compat.enable_processor_metrics``) and
every exporter is wrapped by a counter
using the semantic-conventions names (``otel.sdk.exporter.*.exported`` with
``error.type`` on failure). All of these run on the export thread, never on
the request path.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Final

from opentelemetry.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otel_setup.version import __version__

__all__ = ["CountingMetricExporter", "CountingSpanExporter", "ExportCounters"]

_log = logging.getLogger("otel_setup")
_SCOPE: Final = "otel_setup.pipeline"


class ExportCounters:
    """Counters created once the meter provider exists (exporters are built before it)."""

    def __init__(self) -> None:
        self.spans: Counter | None = None
        self.points: Counter | None = None
        self.logs: Counter | None = None
        self._lock = threading.Lock()
        self._failed_exports = 0

    @property
    def failed_exports(self) -> int:
        """Export calls (any signal) that failed so far.

        The SDK's ``force_flush`` answers True even when the export it ran was
        refused; a flush compares this number before and after to tell the
        caller the truth.
        """
        return self._failed_exports

    def record_outcome(self, ok: bool) -> None:
        if not ok:
            with self._lock:
                self._failed_exports += 1

    def bind(self, meter_provider: MeterProvider) -> None:
        meter = meter_provider.get_meter(_SCOPE, __version__)
        self.spans = meter.create_counter(
            "otel.sdk.exporter.span.exported", unit="{span}", description="Spans the exporter sent or failed to send."
        )
        self.points = meter.create_counter(
            "otel.sdk.exporter.metric_data_point.exported",
            unit="{data_point}",
            description="Metric data points the exporter sent or failed to send.",
        )
        self.logs = meter.create_counter(
            "otel.sdk.exporter.log.exported",
            unit="{log_record}",
            description="Log records the exporter sent or failed to send.",
        )


def _attributes(component: str, ok: bool, error: str = "export_failed") -> dict[str, str]:
    attributes = {"otel.component.type": component}
    if not ok:
        attributes["error.type"] = error
    return attributes


class CountingSpanExporter(SpanExporter):
    def __init__(self, inner: SpanExporter, counters: ExportCounters, component: str) -> None:
        self._inner = inner
        self._counters = counters
        self._component = component

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._inner.export(spans)
        except Exception:
            self._counters.record_outcome(False)
            self._count(len(spans), ok=False, error="exception")
            raise
        ok = result is SpanExportResult.SUCCESS
        self._counters.record_outcome(ok)
        self._count(len(spans), ok=ok)
        return result

    def _count(self, amount: int, *, ok: bool, error: str = "export_failed") -> None:
        counter = self._counters.spans
        if counter is not None and amount:
            counter.add(amount, _attributes(self._component, ok, error))

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class CountingMetricExporter(MetricExporter):
    """Counts the points ``inner`` exported; the reader reads the preferences given here, ``inner``'s own."""

    def __init__(
        self,
        inner: MetricExporter,
        counters: ExportCounters,
        component: str,
        preferred_temporality: dict[type, AggregationTemporality] | None = None,
    ) -> None:
        super().__init__(preferred_temporality=preferred_temporality)
        self._inner = inner
        self._counters = counters
        self._component = component

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        points = _count_points(metrics_data)
        try:
            result = self._inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        except Exception:
            self._counters.record_outcome(False)
            self._count(points, ok=False)
            raise
        ok = result is MetricExportResult.SUCCESS
        self._counters.record_outcome(ok)
        self._count(points, ok=ok)
        return result

    def _count(self, amount: int, *, ok: bool) -> None:
        counter = self._counters.points
        if counter is not None and amount:
            counter.add(amount, _attributes(self._component, ok))

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._inner.shutdown(timeout_millis=timeout_millis, **kwargs)


class CountingLogExporter:
    """Same for log records; duck-typed because the logs SDK is still underscored."""

    def __init__(self, inner: Any, counters: ExportCounters, component: str) -> None:
        self._inner = inner
        self._counters = counters
        self._component = component

    def export(self, batch: Sequence[Any]) -> Any:
        try:
            result = self._inner.export(batch)
        except Exception:
            self._counters.record_outcome(False)
            raise
        ok = getattr(result, "name", "") == "SUCCESS"
        self._counters.record_outcome(ok)
        counter = self._counters.logs
        if counter is not None and batch:
            counter.add(len(batch), _attributes(self._component, ok))
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self._inner.force_flush(timeout_millis))


def _count_points(metrics_data: MetricsData) -> int:
    total = 0
    for resource_metrics in metrics_data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                total += len(getattr(metric.data, "data_points", ()))
    return total


def observable_callback(read: Callable[[], int], attributes: dict[str, str]) -> Callable[[Any], list[Any]]:
    from opentelemetry.metrics import Observation

    def callback(options: Any) -> list[Any]:
        return [Observation(read(), attributes)]

    return callback
