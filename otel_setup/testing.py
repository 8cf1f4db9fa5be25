"""Assert on your service's telemetry in its own tests.

Installed as a pytest plugin (entry point ``pytest11``), so the ``otel_capture``
fixture is available in any project that installs ``otel_setup``::

    def test_item_is_traced(otel_capture):
        app = create_app()                        # calls otel_setup.configure(app)
        TestClient(app).get("/items/3")
        assert otel_capture.span_names() == ["SELECT", "GET /items/{item_id}"]
        assert otel_capture.metric("http_server_request_duration_seconds_count",
                                   http_route="/items/{item_id}") == 1
        assert otel_capture.logs[-1]["http.route"] == "/items/{item_id}"

The fixture configures the package *before* the test body runs, with every
span sampled and kept in memory, no exporter reaching the network, and
trace and span ids counting up from 1 so they can be written into expected
values. A ``configure(app)`` call in the code under test then returns the same
handle and instruments ``app`` with it. Apps configured at import time (before
the fixture) keep the providers they were given: build the app inside the test
or in an app factory. The package is reset after the test.

Metrics are read from the same Prometheus registry ``/metrics`` serves, with
the names it shows (``docs/metrics.md``). To assert on OpenTelemetry points
instead, pass a reader of your own to ``configure(metric_readers=[...])``: it
sees every package metric with every point. Log records are the JSON lines the
package prints, parsed.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import redirect_stdout
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from otel_setup._core.telemetry import Telemetry

__all__ = ["CountingIdGenerator", "OtelCapture", "otel_capture", "otel_capture_options"]

_DEFAULTS: Mapping[str, Any] = {
    "disabled": False,
    "sampler": "always_on",
    "traces_exporter": "none",
    "metrics_exporter": "prometheus",
    "logs_exporter": "none",
    "log_format": "json",
}


class CountingIdGenerator:
    """Trace and span ids 1, 2, 3, ... (in hex: ``000...01``), so expected values can be written down."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._trace_id = 0
        self._span_id = 0

    def generate_trace_id(self) -> int:
        with self._lock:
            self._trace_id += 1
            return self._trace_id

    def generate_span_id(self) -> int:
        with self._lock:
            self._span_id += 1
            return self._span_id


class _Lines(io.TextIOBase):
    """The stream the package's log handler writes to: keeps each line, and still prints it.

    Printing keeps pytest's captured-stdout report of a failing test complete.
    """

    def __init__(self, passthrough: Any) -> None:
        self._passthrough = passthrough
        self._pending = ""
        self.lines: list[str] = []
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self._pending += text
            *complete, self._pending = self._pending.split("\n")
            self.lines.extend(complete)
        self._passthrough.write(text)
        return len(text)

    def flush(self) -> None:
        self._passthrough.flush()


class OtelCapture:
    """What the code under test emitted: finished spans, metric samples, log records."""

    def __init__(self, telemetry: Telemetry, exporter: InMemorySpanExporter, lines: _Lines) -> None:
        self.telemetry = telemetry
        """The running handle, as ``configure()`` returns it."""
        self.exporter = exporter
        self._lines = lines

    # --- spans -----------------------------------------------------------

    @property
    def spans(self) -> list[ReadableSpan]:
        """Finished spans, in the order they ended (a child before its parent)."""
        return list(self.exporter.get_finished_spans())

    def span_names(self) -> list[str]:
        return [span.name for span in self.spans]

    def spans_as_dicts(self) -> list[dict[str, Any]]:
        """Plain data for whole-span assertions; ids are the counting ids in hex, times are left out."""
        shown = []
        for span in self.spans:
            context = span.get_span_context()
            shown.append(
                {
                    "name": span.name,
                    "kind": span.kind.name,
                    "trace_id": format(context.trace_id, "032x") if context else None,
                    "span_id": format(context.span_id, "016x") if context else None,
                    "parent_id": format(span.parent.span_id, "016x") if span.parent else None,
                    "status": span.status.status_code.name,
                    "attributes": dict(span.attributes or {}),
                    "events": [event.name for event in span.events],
                }
            )
        return shown

    # --- metrics ---------------------------------------------------------

    def metric_samples(self, name: str) -> list[tuple[dict[str, str], float]]:
        """Every ``(labels, value)`` of one Prometheus sample name, e.g. ``gw2_api_requests_total``."""
        registry = self.telemetry.prometheus_registry
        if registry is None:
            return []
        return [
            (dict(sample.labels), float(sample.value))
            for family in registry.collect()
            for sample in family.samples
            if sample.name == name
        ]

    def metric(self, name: str, **labels: str) -> float:
        """The sum of ``name``'s samples whose labels include ``labels`` (0 when none match).

        Prometheus label names: ``http_route="/items/{item_id}"``; values compare as strings.
        """
        wanted = {key: str(value) for key, value in labels.items()}
        return sum(
            value
            for sample_labels, value in self.metric_samples(name)
            if all(sample_labels.get(key) == text for key, text in wanted.items())
        )

    # --- logs ------------------------------------------------------------

    @property
    def logs(self) -> list[dict[str, Any]]:
        """The JSON log lines printed so far, parsed (lines that are not JSON are skipped)."""
        records = []
        for line in list(self._lines.lines):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def clear(self) -> None:
        """Forget the spans and log lines so far (metrics are cumulative and keep counting)."""
        self.exporter.clear()
        self._lines.lines.clear()


@pytest.fixture
def otel_capture_options() -> dict[str, Any]:
    """Extra ``configure()`` keyword arguments for ``otel_capture``; override it in a conftest."""
    return {}


@pytest.fixture
def otel_capture(otel_capture_options: dict[str, Any]) -> Iterator[OtelCapture]:
    """The package configured for the test, with in-memory telemetry; reset afterwards."""
    import sys

    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from otel_setup import configure
    from otel_setup._core.configure import reset

    reset()
    lines = _Lines(sys.stdout)
    with redirect_stdout(lines):  # the package's log handler binds to sys.stdout now
        telemetry = configure(**{**_DEFAULTS, **otel_capture_options})
    lines.lines.clear()  # the startup line belongs to the fixture, not to the test
    exporter = InMemorySpanExporter()
    provider: Any = telemetry.tracer_provider
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # Tracers already handed out hold this very generator object, so its
    # methods are replaced in place rather than the provider's attribute. Every
    # span is sampled here, so the trace id the package pre-draws for a root
    # span (to decide sampling cheaply) is never needed.
    ids = provider.id_generator
    counting = CountingIdGenerator()
    ids.generate_trace_id = counting.generate_trace_id
    ids.generate_span_id = counting.generate_span_id
    try:
        yield OtelCapture(telemetry, exporter, lines)
    finally:
        reset()
        exporter.clear()
