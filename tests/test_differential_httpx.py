"""otel_setup's own httpx client instrumentation must say what contrib's says, in the stable conventions.

The package replaces contrib's httpx instrumentor for speed (no second URL
parse, no header normalisation per call, pre-aggregated duration, no span at
all inside an unsampled request). Dashboards and queries were written against
contrib's stable-semconv output, so the same calls go through both, under a
sampled parent span, and the client spans, the ``traceparent`` each request
carried and the ``http.client.request.duration`` points are compared.

Contrib reads ``OTEL_SEMCONV_STABILITY_OPT_IN`` once per process, so its side
runs in a subprocess (``python -m tests.test_differential_httpx``) and prints
JSON; otel_setup's side runs here. Intentional differences are listed with
their reasons; nothing is skipped silently.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from tests.support.contrib_reference import duration_points, in_memory_providers, run_reference

# (name, client kind, method, path; "{refused}" targets a port nothing listens on)
CALLS: tuple[tuple[str, str, str, str], ...] = (
    ("success", "sync", "GET", "/ok"),
    ("success_async", "async", "GET", "/ok"),
    ("post", "sync", "POST", "/ok"),
    ("query_with_signature", "sync", "GET", "/ok?q=ore&Signature=0123secret"),
    ("credentials_in_url", "async", "GET", "/ok"),
    ("not_found", "sync", "GET", "/missing"),
    ("server_error", "async", "GET", "/fail"),
    ("redirect_not_followed", "sync", "GET", "/moved"),
    ("unknown_method", "sync", "FOOBAR", "/ok"),
    ("refused", "sync", "GET", "{refused}"),
    ("refused_async", "async", "GET", "{refused}"),
)

# Keys one side emits and the other does not (none with contrib 0.66b2).
KNOWN_EXTRA_SPAN_KEYS: dict[str, str] = {}

# Calls whose duration point only otel_setup records, with the reason.
ONLY_OURS_POINTS: dict[str, str] = {
    "refused": (
        "a transport error is a finished request with error.type set (stable HTTP semconv); contrib re-raises "
        "before recording the duration, so failing dependencies vanish from its latency and error-rate panels"
    ),
    "refused_async": "same as refused",
}


class _Handler(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, str]]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        _Handler.seen.append({"path": self.path, "traceparent": self.headers.get("traceparent", "")})
        status = {"/missing": 404, "/fail": 500, "/moved": 302}.get(self.path.partition("?")[0], 200)
        body = b'{"ok": true}'
        self.send_response(status)
        if status == 302:
            self.send_header("location", "/ok")
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_FOOBAR = _answer

    def log_message(self, format: str, *args: Any) -> None:
        return


@contextmanager
def _server() -> Iterator[int]:
    _Handler.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def drive(tracer: Any) -> dict[str, Any]:
    """Every call under one sampled parent span; returns what the server saw per call."""
    import httpx

    results: dict[str, Any] = {}
    with _server() as port:
        refused = _closed_port()

        def url(name: str, path: str) -> str:
            if path == "{refused}":
                return f"http://127.0.0.1:{refused}/ok"
            userinfo = "gw2user:hunter2@" if name == "credentials_in_url" else ""
            return f"http://{userinfo}127.0.0.1:{port}{path}"

        async def call_async(method: str, target: str) -> int:
            async with httpx.AsyncClient() as client:
                return (await client.request(method, target, content=b"{}" if method == "POST" else None)).status_code

        with tracer.start_as_current_span("parent") as parent:
            for name, kind, method, path in CALLS:
                before = len(_Handler.seen)
                try:
                    if kind == "async":
                        status = asyncio.run(call_async(method, url(name, path)))
                    else:
                        with httpx.Client() as client:
                            status = client.request(
                                method, url(name, path), content=b"{}" if method == "POST" else None
                            ).status_code
                except httpx.ConnectError:
                    status = -1
                seen = _Handler.seen[before:]
                results[name] = {"status": status, "traceparent": seen[0]["traceparent"] if seen else None}
            context = parent.get_span_context()
    return {"calls": results, "parent": [f"{context.trace_id:032x}", f"{context.span_id:016x}"]}


def span_record(span: Any) -> dict[str, Any]:
    return {
        "name": span.name,
        "kind": span.kind.name,
        "status": span.status.status_code.name,
        "description": span.status.description,
        "attributes": dict(span.attributes or {}),
        "events": [event.name for event in span.events],
        "ids": [f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}", f"{span.context.trace_flags:02x}"],
        "parent": f"{span.parent.span_id:016x}" if span.parent else None,
    }


def _contrib_main() -> None:
    """Contrib's side, in its own process: stable semconv, in-memory exporters, JSON on stdout."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    exporter, tracer_provider, reader, meter_provider = in_memory_providers()
    HTTPXClientInstrumentor().instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    result = drive(tracer_provider.get_tracer("differential"))
    result["spans"] = [span_record(s) for s in exporter.get_finished_spans()]
    result["points"] = duration_points(reader, "http.client.request.duration")
    print(json.dumps(result))


@pytest.fixture(scope="module")
def contrib() -> dict[str, Any]:
    return run_reference("tests.test_differential_httpx")


SCOPE_LABELS = frozenset({"otel_scope_name", "otel_scope_version", "otel_scope_schema_url"})


def _points_from_prometheus(registry: Any) -> list[dict[str, Any]]:
    names = (
        "http.request.method",
        "http.response.status_code",
        "error.type",
        "network.protocol.version",
        "server.address",
        "server.port",
    )
    by_label = {name.replace(".", "_"): name for name in names}
    points = []
    for family in registry.collect():
        if family.name != "http_client_request_duration_seconds":
            continue
        for sample in family.samples:
            if sample.name == "http_client_request_duration_seconds_count":
                unknown = set(sample.labels) - set(by_label) - SCOPE_LABELS
                assert not unknown, unknown
                attributes = {by_label[k]: v for k, v in sample.labels.items() if k in by_label and v != ""}
                points.append({"attributes": attributes, "count": int(sample.value)})
    return points


@pytest.fixture(scope="module")
def ours() -> dict[str, Any]:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import otel_setup
    from otel_setup._core.configure import reset

    telemetry = otel_setup.configure(sampling_ratio=1.0)
    exporter = InMemorySpanExporter()
    telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))  # type: ignore[attr-defined]
    try:
        result = drive(telemetry.tracer_provider.get_tracer("differential"))
        result["spans"] = [span_record(s) for s in exporter.get_finished_spans()]
        result["points"] = _points_from_prometheus(telemetry.prometheus_registry)
    finally:
        telemetry.shutdown()
        reset()
    return result


def _client_spans(output: dict[str, Any]) -> list[dict[str, Any]]:
    spans = [s for s in output["spans"] if s["kind"] == "CLIENT"]
    assert len(spans) == len(CALLS), [s["name"] for s in spans]
    return spans  # finished in call order: each call ends before the next starts


def _comparable(attributes: dict[str, Any], output: dict[str, Any]) -> dict[str, Any]:
    """Ports of the loopback servers differ between the two runs: compare them as placeholders."""
    ports = {str(p) for p in _ports(output)}
    return {k: ("<port>" if str(v) in ports else v) for k, v in attributes.items() if k != "url.full"} | {
        "url.full": _url_placeholder(str(attributes.get("url.full", "")), output)
    }


def _ports(output: dict[str, Any]) -> set[int]:
    found = set()
    for span in output["spans"]:
        for key in ("server.port", "network.peer.port"):
            if key in span["attributes"]:
                found.add(int(span["attributes"][key]))
    return found


def _url_placeholder(url: str, output: dict[str, Any]) -> str:
    for port in _ports(output):
        url = url.replace(f":{port}/", ":<port>/")
    return url


def test_the_same_calls_succeed_and_fail(contrib: dict[str, Any], ours: dict[str, Any]) -> None:
    assert {k: v["status"] for k, v in ours["calls"].items()} == {k: v["status"] for k, v in contrib["calls"].items()}
    assert ours["calls"]["not_found"]["status"] == 404
    assert ours["calls"]["refused"]["status"] == -1


def test_span_names_kinds_status_and_events(contrib: dict[str, Any], ours: dict[str, Any]) -> None:
    for (name, *_), theirs, mine in zip(CALLS, _client_spans(contrib), _client_spans(ours), strict=True):
        for key in ("name", "kind", "status", "description", "events"):
            assert mine[key] == theirs[key], (name, key, mine[key], theirs[key])


def test_span_attributes(contrib: dict[str, Any], ours: dict[str, Any]) -> None:
    for (name, *_), theirs, mine in zip(CALLS, _client_spans(contrib), _client_spans(ours), strict=True):
        expected = _comparable(theirs["attributes"], contrib)
        actual = _comparable(mine["attributes"], ours)
        extra = set(actual) ^ set(expected)
        assert extra <= set(KNOWN_EXTRA_SPAN_KEYS), (name, extra)
        assert {k: actual[k] for k in expected if k in actual} == expected, name
    credentials = _client_spans(ours)[[c[0] for c in CALLS].index("credentials_in_url")]
    assert "hunter2" not in json.dumps(credentials)
    signed = _client_spans(ours)[[c[0] for c in CALLS].index("query_with_signature")]
    assert "0123secret" not in signed["attributes"]["url.full"]


def test_parents_and_propagated_context(contrib: dict[str, Any], ours: dict[str, Any]) -> None:
    """Each client span is a child of the caller's span, and the request carried the client span's id."""
    for output in (contrib, ours):
        trace_id, parent_id = output["parent"]
        for (name, *_), span in zip(CALLS, _client_spans(output), strict=True):
            assert span["ids"][0] == trace_id and span["parent"] == parent_id, name
            sent = output["calls"][name]["traceparent"]
            if sent is not None:
                assert sent == f"00-{trace_id}-{span['ids'][1]}-{span['ids'][2]}", (name, sent)
                assert int(span["ids"][2], 16) & 1, "sampled"
    assert ours["calls"]["success"]["traceparent"], "otel_setup must propagate to an allowed (loopback) host"


def _point_counts(output: dict[str, Any], skip: set[str]) -> dict[tuple[tuple[str, str], ...], int]:
    ports = {str(p) for p in _ports(output)}
    counts: dict[tuple[tuple[str, str], ...], int] = {}
    for point in output["points"]:
        attributes = {k: ("<port>" if str(v) in ports else str(v)) for k, v in point["attributes"].items()}
        if attributes.get("error.type") in skip:
            continue
        key = tuple(sorted(attributes.items()))
        counts[key] = counts.get(key, 0) + point["count"]
    return counts


def test_duration_points(contrib: dict[str, Any], ours: dict[str, Any]) -> None:
    assert _point_counts(ours, {"ConnectError"}) == _point_counts(contrib, set())
    refused = [p for p in ours["points"] if p["attributes"].get("error.type") == "ConnectError"]
    assert sum(p["count"] for p in refused) == len(ONLY_OURS_POINTS)
    assert all(p["attributes"]["http.request.method"] == "GET" for p in refused)


def test_no_span_inside_an_unsampled_request_but_context_still_flows() -> None:
    """The SDK would build a non-recording child; otel_setup builds only its context, with a fresh span id."""
    import httpx
    from opentelemetry import trace
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    import otel_setup
    from otel_setup._core.configure import reset

    telemetry = otel_setup.configure(sampling_ratio=0.1)
    exporter = InMemorySpanExporter()
    telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))  # type: ignore[attr-defined]
    try:
        request_span = NonRecordingSpan(SpanContext(0xABC, 0xDEF, False, TraceFlags(0)))
        with _server() as port, trace.use_span(request_span), httpx.Client() as client:
            assert client.get(f"http://127.0.0.1:{port}/ok").status_code == 200
            sent = _Handler.seen[-1]["traceparent"]
        version, trace_id, span_id, flags = sent.split("-")
        assert (version, int(trace_id, 16), int(flags, 16) & 1) == ("00", 0xABC, 0)
        assert int(span_id, 16) not in (0, 0xDEF)
        assert exporter.get_finished_spans() == ()
        points = _points_from_prometheus(telemetry.prometheus_registry)
        assert [p["attributes"]["http.response.status_code"] for p in points] == ["200"]
    finally:
        telemetry.shutdown()
        reset()


@pytest.mark.parametrize(
    ("trace_state", "with_baggage", "refused"),
    [("", False, False), ("vendor=abc,other=1", False, False), ("", True, False), ("", False, True)],
)
def test_unsampled_child_headers_equal_the_propagators(
    monkeypatch: pytest.MonkeyPatch, trace_state: str, with_baggage: bool, refused: bool
) -> None:
    """The headers written directly for a dropped child are the global propagator's, byte for byte."""
    from opentelemetry import baggage, propagate, trace
    from opentelemetry import context as otel_context
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

    import otel_setup
    from otel_setup import _compat
    from otel_setup._core.configure import reset
    from otel_setup._hotpath.context import holds_only_a_span
    from otel_setup._integrations import httpx as ours
    from otel_setup._security.propagation import refuse_propagation

    monkeypatch.setattr(ours, "getrandbits", lambda bits: 0x1234ABCD)
    telemetry = otel_setup.configure(sampling_ratio=0.1)
    try:
        client = ours._client
        # The direct traceparent path, except under OTEL_SETUP_COMPAT=public (the composite's members
        # are private): then every call takes propagate.inject, and the headers must still agree.
        assert client is not None and client._w3c_only() is not _compat.public_api_only()
        parent = SpanContext(0xABC, 0xDEF, False, TraceFlags(0), TraceState.from_header([trace_state]))
        child = SpanContext(0xABC, 0x1234ABCD, False, TraceFlags(0), parent.trace_state)
        # Inside a request: the request's (unsampled) span is current.
        context = trace.set_span_in_context(NonRecordingSpan(parent), otel_context.get_current())
        if with_baggage:
            context = baggage.set_baggage("tenant", "guild-7", context)
        token = otel_context.attach(context)
        try:
            with refuse_propagation() if refused else nullcontext():
                current = otel_context.get_current()
                plain = holds_only_a_span(current)
                assert plain is not (with_baggage or refused), "the one-lookup path only for a span-only context"
                direct: dict[str, str] = {}
                client._inject_unsampled(direct, parent, current, plain)
                expected: dict[str, str] = {}
                propagate.inject(expected, context=trace.set_span_in_context(NonRecordingSpan(child)))
        finally:
            otel_context.detach(token)
        assert direct == expected
        assert bool(direct) is not refused
        if not refused:
            assert direct["traceparent"] == "00-00000000000000000000000000000abc-000000001234abcd-00"
            assert ("baggage" in direct) is with_baggage
            assert direct.get("tracestate", "") == trace_state
    finally:
        telemetry.shutdown()
        reset()


def test_other_propagators_keep_the_propagator_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """A propagator other than W3C's (B3, Datadog) still decides what an unsampled child sends."""
    from opentelemetry import context as otel_context
    from opentelemetry import propagate
    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.trace import SpanContext, TraceFlags, get_current_span

    import otel_setup
    from otel_setup._core.configure import reset
    from otel_setup._integrations import httpx as ours

    class VendorPropagator(TextMapPropagator):
        def extract(self, carrier: Any, context: Any = None, getter: Any = None) -> Any:
            return context

        def inject(self, carrier: Any, context: Any = None, setter: Any = None) -> None:
            span_context = get_current_span(context).get_span_context()
            carrier["x-vendor-trace"] = f"{span_context.trace_id}:{span_context.span_id}"

        @property
        def fields(self) -> set[str]:
            return {"x-vendor-trace"}

    previous = propagate.get_global_textmap()
    propagate.set_global_textmap(VendorPropagator())
    monkeypatch.setattr(ours, "getrandbits", lambda bits: 77)
    telemetry = otel_setup.configure(sampling_ratio=0.1)
    try:
        client = ours._client
        assert client is not None and not client._w3c_only()
        headers: dict[str, str] = {}
        client._inject_unsampled(headers, SpanContext(5, 6, False, TraceFlags(0)), otel_context.get_current(), True)
        assert headers == {"x-vendor-trace": "5:77"}
    finally:
        telemetry.shutdown()
        reset()
        propagate.set_global_textmap(previous)


if __name__ == "__main__":
    _contrib_main()
