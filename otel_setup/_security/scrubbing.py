"""The last redaction pass: span and log exporters that scrub whatever reaches them.

Our own integrations redact where they set attributes, but spans also come
from instrumentations we do not write (contrib's Redis, a library's
own tracer, a user's ``span.set_attribute``), and the SDK's
``record_exception`` stores the raw message. A ``SpanProcessor.on_end`` sees
an immutable span on the request thread; an exporter wrapper sees the batch on
the export thread, so the request path pays nothing and every span is covered.
Only spans that would change are copied.

Also here: captured HTTP header values, which are always sanitised whatever
allow-list the user configured.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import Link, Status
from opentelemetry.util.types import Attributes

from otel_setup._compat import instrumentation_info, span_containers
from otel_setup._security.redaction import REDACTED, Redactor

__all__ = ["ScrubbingLogExporter", "ScrubbingSpanExporter", "captured_headers", "scrub_metrics", "scrub_span"]


def _bounded(dropped: int, new: Mapping[str, Any]) -> Attributes:
    """New attributes keeping the original's dropped count (it is exported too)."""
    from opentelemetry.attributes import BoundedAttributes

    attributes = BoundedAttributes(maxlen=None, attributes=dict(new), immutable=False, max_value_len=None)
    attributes.dropped = dropped
    return attributes


def _keep_dropped(dropped: int, items: list[Any]) -> Sequence[Any]:
    if dropped:
        bounded: BoundedList[Any] = BoundedList(None)
        bounded.extend(items)
        bounded.dropped = dropped
        return bounded
    return tuple(items)


def scrub_span(span: ReadableSpan, redactor: Redactor) -> ReadableSpan:
    """``span`` itself when clean, else a copy with name, attributes, events, links and status redacted."""
    changed = False
    name = redactor.cached_value("span.name", span.name)
    if not isinstance(name, str):
        name = redactor.text(span.name, "span.name")
    changed |= name != span.name
    raw_attributes, events, links = span_containers(span)
    attributes: Attributes = raw_attributes
    new_attributes = redactor.attributes(raw_attributes)
    if new_attributes is not None:
        attributes = _bounded(span.dropped_attributes, new_attributes)
        changed = True
    new_events: list[Event] = []
    events_changed = False
    for event in events:
        event_name = redactor.text(event.name, "event.name")
        event_attributes = redactor.attributes(event.attributes)
        if event_attributes is None and event_name == event.name:
            new_events.append(event)
            continue
        events_changed = True
        new_events.append(
            Event(
                event_name,
                _bounded(getattr(event.attributes, "dropped", 0), event_attributes)
                if event_attributes is not None
                else event.attributes,
                event.timestamp,
            )
        )
    if events_changed:
        events = _keep_dropped(span.dropped_events, new_events)
        changed = True
    new_links: list[Link] = []
    links_changed = False
    for link in links:
        link_attributes = redactor.attributes(link.attributes)
        if link_attributes is None:
            new_links.append(link)
            continue
        links_changed = True
        new_links.append(Link(link.context, _bounded(getattr(link.attributes, "dropped", 0), link_attributes)))
    if links_changed:
        links = _keep_dropped(span.dropped_links, new_links)
        changed = True
    status = span.status
    if status.description:
        description = redactor.text(status.description, "status.description")
        if description != status.description:
            status = Status(status.status_code, description)
            changed = True
    if not changed:
        return span
    return ReadableSpan(
        name=name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=attributes,
        events=events,
        links=links,
        kind=span.kind,
        instrumentation_info=instrumentation_info(span),
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class ScrubbingSpanExporter(SpanExporter):
    """Redacts every span of a batch, then hands the batch to ``inner``."""

    def __init__(self, inner: SpanExporter, redactor: Redactor) -> None:
        self._inner = inner
        self._redactor = redactor

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        redactor = self._redactor
        return self._inner.export([scrub_span(span, redactor) for span in spans])

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class ScrubbingLogExporter:
    """Same for OTel log records: body and attributes (FastAPI's and the stdlib bridge's included).

    Duck-typed like the SDK's own exporters because the logs SDK is still
    underscored; a record that changes is copied, never edited in place.
    """

    def __init__(self, inner: Any, redactor: Redactor) -> None:
        self._inner = inner
        self._redactor = redactor

    def export(self, batch: Sequence[Any]) -> Any:
        return self._inner.export([self._scrub(item) for item in batch])

    def _scrub(self, item: Any) -> Any:
        record = item.log_record
        redactor = self._redactor
        body = record.body
        new_body: Any = body
        if isinstance(body, str):
            new_body = redactor.text(body, "log.body")
        elif isinstance(body, (Mapping, list, tuple, bytes)):
            new_body = redactor.value("log.body", body)
        new_attributes = redactor.attributes(record.attributes)
        if new_attributes is None and new_body == body:
            return item
        record = copy.copy(record)
        record.body = new_body
        if new_attributes is not None:
            record.attributes = _bounded(getattr(item.log_record.attributes, "dropped", 0), new_attributes)
        return dataclasses.replace(item, log_record=record)

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self._inner.force_flush(timeout_millis))


def captured_headers(
    headers: Iterable[tuple[str, str]], allowed: frozenset[str], prefix: str, redactor: Redactor
) -> dict[str, tuple[str, ...]]:
    """``http.request.header.<name>`` attributes for allow-listed names, values always sanitised.

    A header whose name matches the sensitive-key table (``authorization``,
    ``cookie``, ``set-cookie``, ``x-api-key``, ``api-key``, anything with
    ``token``, ``secret``, ``session``, ``password``...) is recorded as
    ``REDACTED`` even when the allow-list names it; other values still go
    through the value patterns.
    """
    captured: dict[str, list[str]] = {}
    for raw_name, value in headers:
        name = raw_name.lower()
        if name not in allowed:
            continue
        clean = REDACTED if redactor.is_sensitive_key(name) else redactor.text(value, f"{prefix}.{name}")
        captured.setdefault(f"{prefix}.{name}", []).append(clean)
    return {key: tuple(values) for key, values in captured.items()}


def scrub_metrics(metrics_data: Any, redactor: Redactor) -> Any:
    """Metric point attributes through the key rule and the value patterns, at collection time.

    A user's counter with ``{"api_key": value}`` must not show the value on
    ``/metrics`` or over OTLP. Points whose attributes become equal after
    redaction are merged (sums added, histograms combined, the last gauge
    kept), so Prometheus never sees one series twice. Runs per collection
    (a scrape or an export interval), never on a request; points that do not
    change are not copied.
    """
    if metrics_data is None:
        return None
    for resource_metrics in metrics_data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            metrics = scope_metrics.metrics
            for index, metric in enumerate(metrics):
                points = metric.data.data_points
                new_points = _scrub_points(points, redactor, add=hasattr(metric.data, "is_monotonic"))
                if new_points is not None:
                    metrics[index] = dataclasses.replace(
                        metric, data=dataclasses.replace(metric.data, data_points=new_points)
                    )
    return metrics_data


def _scrub_points(points: Sequence[Any], redactor: Redactor, *, add: bool) -> list[Any] | None:
    changed = False
    merged: dict[frozenset[tuple[str, Any]], Any] = {}
    order: list[frozenset[tuple[str, Any]]] = []
    for original in points:
        point = original
        attributes = point.attributes or {}
        new = redactor.attributes(attributes)
        if new is not None:
            changed = True
            point = dataclasses.replace(point, attributes=new)
            attributes = new
        key = frozenset(attributes.items())
        existing = merged.get(key)
        if existing is None:
            merged[key] = point
            order.append(key)
        else:
            changed = True
            merged[key] = _merge_points(existing, point, add=add)
    if not changed:
        return None
    return [merged[key] for key in order]


def _merge_points(first: Any, second: Any, *, add: bool) -> Any:
    """Two points of one series (equal after redaction) as one; ``add``: the points are sums."""
    if hasattr(first, "bucket_counts") and hasattr(first, "explicit_bounds"):
        if list(first.explicit_bounds) != list(second.explicit_bounds):
            return first
        return dataclasses.replace(
            first,
            count=first.count + second.count,
            sum=first.sum + second.sum,
            bucket_counts=[a + b for a, b in zip(first.bucket_counts, second.bucket_counts, strict=True)],
            min=min(first.min, second.min),
            max=max(first.max, second.max),
            start_time_unix_nano=min(first.start_time_unix_nano, second.start_time_unix_nano),
        )
    if add and hasattr(first, "value"):
        return dataclasses.replace(first, value=first.value + second.value)
    # Gauges and exponential histograms: the later point stands for the series.
    return second
