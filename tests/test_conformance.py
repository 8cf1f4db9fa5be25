"""Middleware stacks, background tasks, streams and WebSockets on a real FastAPI stack.

The app (``tests/apps/stacks.py``) is built per test (an app factory) with
CORS, GZip, TrustedHost, ``BaseHTTPMiddleware`` and pure ASGI middlewares
added before and after ``configure()``; requests go through Starlette's
``TestClient``. Each test asserts the span name, ``http.route``, status,
``error.type``, the parentage of the spans made while handling, and the
duration points.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

import otel_setup
from tests.apps.stacks import BACKGROUND_SECONDS, ORIGIN, STREAM_SECONDS, build_app


@pytest.fixture
def stack() -> tuple[Any, Any, Any]:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    holder: dict[str, Any] = {}

    def configure(app: Any) -> None:
        holder["telemetry"] = otel_setup.configure(app, sampling_ratio=1.0, logging=False)

    app = build_app(configure)
    telemetry = holder["telemetry"]
    exporter = InMemorySpanExporter()
    telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return app, telemetry, exporter


def _points(telemetry: Any) -> dict[tuple[str, str, str], tuple[int, float]]:
    """(method, route, status) -> (count, sum of seconds) of the duration histogram."""
    counts: dict[tuple[str, str, str], list[float]] = {}
    for family in telemetry.prometheus_registry.collect():
        if family.name != "http_server_request_duration_seconds":
            continue
        for sample in family.samples:
            labels = sample.labels
            key = (labels["http_request_method"], labels.get("http_route", ""), labels["http_response_status_code"])
            entry = counts.setdefault(key, [0, 0.0])
            if sample.name.endswith("_count"):
                entry[0] += int(sample.value)
            elif sample.name.endswith("_sum"):
                entry[1] += sample.value
    return {key: (int(value[0]), value[1]) for key, value in counts.items()}


def _server(exporter: Any) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if s.kind.name == "SERVER"]


def test_middleware_stack_before_and_after_configure(stack: tuple[Any, Any, Any]) -> None:
    app, telemetry, exporter = stack
    with TestClient(app) as client:
        response = client.get("/api/items/3", headers={"origin": ORIGIN, "accept-encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers["x-before"] == "1" and response.headers["x-after"] == "1"
    (span,) = _server(exporter)
    assert span.name == "GET /api/items/{item_id}"
    assert span.attributes["http.route"] == "/api/items/{item_id}"
    assert span.attributes["http.response.status_code"] == 200
    assert "error.type" not in span.attributes
    # BaseHTTPMiddleware runs the endpoint in another task: the request's span is still current there.
    assert response.headers["x-seen-trace"] == format(span.context.trace_id, "032x")
    assert _points(telemetry)[("GET", "/api/items/{item_id}", "200")][0] == 1


def test_cors_preflight_and_a_rejected_host(stack: tuple[Any, Any, Any]) -> None:
    app, telemetry, exporter = stack
    with TestClient(app) as client:
        preflight = client.options("/api/items/3", headers={"origin": ORIGIN, "access-control-request-method": "GET"})
        rejected = client.get("/api/items/3", headers={"host": "evil.example.com"})
    assert preflight.status_code == 200
    assert rejected.status_code == 400
    spans = _server(exporter)
    assert [s.name for s in spans] == ["OPTIONS", "GET"]  # answered by middleware: no route matched
    assert all("http.route" not in s.attributes for s in spans)
    assert [s.attributes["http.response.status_code"] for s in spans] == [200, 400]
    points = _points(telemetry)
    assert points[("OPTIONS", "", "200")][0] == 1 and points[("GET", "", "400")][0] == 1


def test_background_tasks_run_under_the_request_and_out_of_its_duration(stack: tuple[Any, Any, Any]) -> None:
    app, telemetry, exporter = stack
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/api/items/1").status_code == 200
        assert client.post("/api/jobs").status_code == 200  # the task fails after the response
    spans = exporter.get_finished_spans()
    (item,) = [s for s in spans if s.name == "GET /api/items/{item_id}"]
    (task,) = [s for s in spans if s.name == "refresh cache"]
    assert task.parent.span_id == item.context.span_id
    (job,) = [s for s in spans if s.name == "POST /api/jobs"]
    assert job.attributes["error.type"] == "RuntimeError"
    assert [e.name for e in job.events] == ["exception"]
    assert job.status.status_code.name == "ERROR"
    count, seconds = _points(telemetry)[("GET", "/api/items/{item_id}", "200")]
    # The histogram measures to the last byte of the response; the span covers the task too.
    assert count == 1 and seconds < BACKGROUND_SECONDS
    assert (item.end_time - item.start_time) / 1e9 >= BACKGROUND_SECONDS


def test_streams_download_to_the_last_byte_sse_to_its_first_event(stack: tuple[Any, Any, Any]) -> None:
    app, telemetry, exporter = stack
    with TestClient(app) as client:
        assert client.get("/api/download").content == b"chunk\n" * 3
        events = client.get("/api/events")
    assert events.text.count("data:") == 3
    points = _points(telemetry)
    download_count, download_seconds = points[("GET", "/api/download", "200")]
    sse_count, sse_seconds = points[("GET", "/api/events", "200")]
    assert download_count == 1 and download_seconds >= STREAM_SECONDS * 0.9
    assert sse_count == 1 and sse_seconds < STREAM_SECONDS / 3
    (sse,) = [s for s in _server(exporter) if s.name == "GET /api/events"]
    assert (sse.end_time - sse.start_time) / 1e9 >= STREAM_SECONDS * 0.6, "the span covers the whole stream"


def test_websocket_a_span_per_connection_and_no_http_point(stack: tuple[Any, Any, Any]) -> None:
    app, telemetry, exporter = stack
    with TestClient(app) as client, client.websocket_connect("/api/ws/lions-arch") as websocket:
        websocket.send_text("hello")
        assert websocket.receive_text() == "lions-arch:hello"
    (span,) = _server(exporter)
    assert span.name == "/api/ws/{room}"
    assert span.attributes["http.route"] == "/api/ws/{room}"
    (child,) = [s for s in exporter.get_finished_spans() if s.name == "handle message"]
    assert child.parent.span_id == span.context.span_id
    assert not [key for key in _points(telemetry) if "ws" in key[1]]


def test_an_app_per_test_is_instrumented_each_time() -> None:
    for index in range(3):

        def configure(app: Any) -> None:
            otel_setup.configure(app, sampling_ratio=1.0, logging=False)

        app = build_app(configure)
        with TestClient(app) as client:
            assert client.get(f"/api/items/{index}").status_code == 200
            metrics = client.get("/metrics").text
        lines = [
            line
            for line in metrics.splitlines()
            if line.startswith("http_server_request_duration_seconds_count") and "/api/items/{item_id}" in line
        ]
        assert len(lines) == 1 and lines[0].endswith(f" {index + 1}.0")
