"""FastAPI server spans and RED metrics, checked on the OTLP wire and on /metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException

import otel_setup
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.sampling import head_sampled, request_lines


def make_app() -> FastAPI:
    app = FastAPI(title="shop", version="1.4.2")

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    @app.get("/healthcare")
    async def healthcare() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/missing")
    async def missing() -> None:
        raise HTTPException(status_code=404)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom")

    @app.get("/unavailable")
    async def unavailable() -> None:
        raise HTTPException(status_code=503)

    return app


def drive(app: FastAPI, requests: list[tuple[str, str]], headers: dict[str, str] | None = None) -> list[int]:
    async def run() -> list[int]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return [(await client.request(m, p, headers=headers)).status_code for m, p in requests]

    return asyncio.run(run())


@pytest.fixture
def traced(otlp_receiver: OtlpReceiver) -> Iterator[tuple[FastAPI, Any, OtlpReceiver]]:
    app = make_app()
    telemetry = otel_setup.configure(app, otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=1.0)
    yield app, telemetry, otlp_receiver


def server_spans(receiver: OtlpReceiver) -> list[Any]:
    return [s for s in receiver.spans() if s.kind == "SERVER"]


def test_server_spans_arrive_over_otlp_http_with_stable_semconv(traced: tuple[FastAPI, Any, OtlpReceiver]) -> None:
    app, telemetry, receiver = traced
    assert drive(app, [("GET", "/items/42?lang=en&access_token=abc123")]) == [200]
    assert telemetry.force_flush(5.0)
    assert receiver.wait_for(lambda r: len(server_spans(r)) == 1)
    (span,) = server_spans(receiver)
    assert span.name == "GET /items/{item_id}"
    assert span.parent_span_id == ""
    assert span.scope_name == "otel_setup.fastapi"
    assert span.status_code == "UNSET"
    assert span.attributes["http.request.method"] == "GET"
    assert span.attributes["http.route"] == "/items/{item_id}"
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["url.path"] == "/items/42"
    assert span.attributes["url.query"] == "lang=en&access_token=REDACTED"
    assert span.attributes["url.scheme"] == "http"
    assert span.attributes["network.protocol.version"] == "1.1"
    assert "http.host" not in span.attributes and "http.target" not in span.attributes
    resource = span.resource
    assert resource["service.name"] == "shop"
    assert resource["service.version"] == "1.4.2"
    assert resource["service.instance.id"]
    received = receiver.requests("traces")
    assert received and all(r.headers.get("user-agent", "").startswith("OTel-OTLP-Exporter-Python") for r in received)


def test_errors_and_statuses(traced: tuple[FastAPI, Any, OtlpReceiver]) -> None:
    app, telemetry, receiver = traced
    assert drive(app, [("GET", "/boom"), ("GET", "/missing"), ("GET", "/unavailable"), ("GET", "/nowhere/7")]) == [
        500,
        404,
        503,
        404,
    ]
    telemetry.force_flush(5.0)
    assert receiver.wait_for(lambda r: len(server_spans(r)) == 4)
    by_name = {s.name: s for s in server_spans(receiver)}
    boom = by_name["GET /boom"]
    assert boom.status_code == "ERROR"
    # An unhandled exception: semantic conventions name its class (the 500
    # Starlette's error middleware sent is in the status code).
    assert boom.attributes["error.type"] == "RuntimeError"
    assert boom.attributes["http.response.status_code"] == 500
    (event,) = [e for e in boom.events if e["name"] == "exception"]
    assert event["attributes"]["exception.type"] == "RuntimeError"
    assert event["attributes"]["exception.message"] == "kaboom"
    missing = by_name["GET /missing"]
    assert missing.status_code == "UNSET", "4xx is not a server error"
    assert "error.type" not in missing.attributes
    unavailable = by_name["GET /unavailable"]
    assert unavailable.status_code == "ERROR"
    assert unavailable.attributes["error.type"] == "503"
    unmatched = by_name["GET"]
    assert "http.route" not in unmatched.attributes, "an unmatched path never becomes a route"


def test_unknown_method_is_other(traced: tuple[FastAPI, Any, OtlpReceiver]) -> None:
    app, telemetry, receiver = traced
    drive(app, [("FOOBAR", "/items/1")])
    telemetry.force_flush(5.0)
    assert receiver.wait_for(lambda r: len(server_spans(r)) == 1)
    (span,) = server_spans(receiver)
    assert span.name.startswith("HTTP")
    assert span.attributes["http.request.method"] == "_OTHER"
    assert span.attributes["http.request.method_original"] == "FOOBAR"


def test_probe_and_metrics_paths_are_excluded_with_anchored_matching(traced: tuple[FastAPI, Any, OtlpReceiver]) -> None:
    app, telemetry, receiver = traced
    statuses = drive(app, [("GET", "/health"), ("GET", "/ready"), ("GET", "/metrics"), ("GET", "/healthcare")])
    assert statuses == [200, 200, 200, 200]
    telemetry.force_flush(5.0)
    assert receiver.wait_for(lambda r: len(server_spans(r)) >= 1)
    assert [s.name for s in server_spans(receiver)] == ["GET /healthcare"]
    routes = {
        p.attributes.get("http.route") for p in receiver.metric_points() if p.name == "http.server.request.duration"
    }
    assert routes == {"/healthcare"}


def test_exactly_one_instrumentation_runs_on_fastapi_with_native_telemetry(
    traced: tuple[FastAPI, Any, OtlpReceiver],
) -> None:
    """FastAPI 0.142+ would add its own SERVER span and duration series; it is switched off."""
    app, telemetry, receiver = traced
    drive(app, [("GET", "/items/1"), ("GET", "/items/2")])
    telemetry.force_flush(5.0)
    assert receiver.wait_for(lambda r: len(server_spans(r)) >= 2)
    spans = receiver.spans()
    assert len(server_spans(receiver)) == 2
    assert {s.scope_name for s in spans} == {"otel_setup.fastapi"}
    duration_scopes = {p.scope_name for p in receiver.metric_points() if p.name == "http.server.request.duration"}
    assert duration_scopes == {"otel_setup.fastapi"}
    native = getattr(app, "_telemetry", None)
    if native is not None:
        assert native["tracing"] is False and native["metrics"] is False


def test_red_metrics_on_prometheus_endpoint(traced: tuple[FastAPI, Any, OtlpReceiver]) -> None:
    app, _telemetry, _receiver = traced
    drive(app, [("GET", "/items/1")] * 3 + [("GET", "/boom")])
    (text,) = [
        r.text
        for r in [
            asyncio.run(
                _get(app, "/metrics"),
            )
        ]
    ]
    lines = [line for line in text.splitlines() if line.startswith("http_server_request_duration_seconds_count")]
    ok = [line for line in lines if 'http_route="/items/{item_id}"' in line]
    assert len(ok) == 1 and ok[0].endswith(" 3.0")
    assert 'http_request_method="GET"' in ok[0] and 'http_response_status_code="200"' in ok[0]
    assert 'url_scheme="http"' in ok[0]
    boom = [line for line in lines if 'http_route="/boom"' in line]
    assert len(boom) == 1 and 'error_type="RuntimeError"' in boom[0] and boom[0].endswith(" 1.0")
    assert not any("host" in line.split("{", 1)[1] for line in lines), "no Host-derived label"
    assert 'le="0.2"' in text, "the p95 < 200 ms objective needs its own bucket boundary"
    assert "http_server_active_requests" in text
    assert 'service_instance_id="' in text.split("target_info{", 1)[1].split("}", 1)[0]


async def _get(app: FastAPI, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        return await client.get(path)


def test_metrics_are_never_sampled(otlp_receiver: OtlpReceiver, capsys: pytest.CaptureFixture[str]) -> None:
    """10 % head sampling: exactly the roots whose trace id the ratio rule picks are traced, all 1,000 counted."""
    app = make_app()
    telemetry = otel_setup.configure(app, otlp_endpoint=otlp_receiver.endpoint, request_log_buffer_ms=0)
    drive(app, [("GET", f"/items/{i}") for i in range(1000)])
    assert telemetry.force_flush(10.0)
    otlp_receiver.wait_for(lambda r: any(p.name == "http.server.request.duration" for p in r.metric_points()))
    trace_ids = [line["trace_id"] for line in request_lines(capsys.readouterr().out)]
    assert len(set(trace_ids)) == 1000
    expected = {t for t in trace_ids if head_sampled(t)}
    assert expected, "1,000 random ids without one under the 10 % bound"
    assert {s.trace_id for s in server_spans(otlp_receiver)} == expected
    counts = [
        p.count
        for p in otlp_receiver.metric_points()
        if p.name == "http.server.request.duration" and p.attributes.get("http.route") == "/items/{item_id}"
    ]
    assert counts and counts[-1] == 1000


PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_trusted_remote_parent_is_the_parent(otlp_receiver: OtlpReceiver) -> None:
    app = make_app()
    telemetry = otel_setup.configure(
        app, otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=1.0, trusted_traceparent="all"
    )
    drive(app, [("GET", "/items/5")], headers={"traceparent": PARENT})
    telemetry.force_flush(5.0)
    assert otlp_receiver.wait_for(lambda r: len(server_spans(r)) == 1)
    (span,) = server_spans(otlp_receiver)
    assert span.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert span.parent_span_id == "b7ad6b7169203331"


def _trace_state_app() -> tuple[FastAPI, list[str]]:
    """An app whose ``/state`` notes the tracestate of the span current in the handler."""
    from opentelemetry import trace

    app = make_app()
    seen: list[str] = []

    @app.get("/state")
    async def state() -> dict[str, str]:
        seen.append(trace.get_current_span().get_span_context().trace_state.to_header())
        return {}

    return app, seen


def test_trusted_remote_tracestate_is_kept_and_an_untrusted_one_is_not(otlp_receiver: OtlpReceiver) -> None:
    app, seen = _trace_state_app()
    telemetry = otel_setup.configure(
        app, otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=1.0, trusted_traceparent="https://app.example"
    )
    headers = {"traceparent": PARENT, "tracestate": "vendor=abc,other=1", "origin": "https://app.example"}
    drive(app, [("GET", "/state")], headers=headers)
    drive(app, [("GET", "/state")], headers={**headers, "origin": "https://evil.example"})
    telemetry.force_flush(5.0)
    assert otlp_receiver.wait_for(lambda r: len(server_spans(r)) == 2)
    trusted, untrusted = sorted(server_spans(otlp_receiver), key=lambda s: s.start_ns)
    assert (trusted.trace_id, trusted.parent_span_id) == ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    assert trusted.trace_state == "vendor=abc,other=1"
    assert untrusted.trace_state == "" and untrusted.parent_span_id == ""
    assert seen == ["vendor=abc,other=1", ""]


def test_repeated_trace_context_headers_follow_w3c(otlp_receiver: OtlpReceiver) -> None:
    """Several tracestate headers are one list; of several traceparent headers the first is read."""
    app, seen = _trace_state_app()
    telemetry = otel_setup.configure(
        app, otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=1.0, trusted_traceparent="all"
    )
    other = "00-11111111111111111111111111111111-2222222222222222-01"
    headers = [("traceparent", PARENT), ("tracestate", "vendor=abc"), ("traceparent", other), ("tracestate", "o=1")]

    async def run() -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return (await client.get("/state", headers=headers)).status_code

    assert asyncio.run(run()) == 200
    telemetry.force_flush(5.0)
    assert otlp_receiver.wait_for(lambda r: len(server_spans(r)) == 1)
    (span,) = server_spans(otlp_receiver)
    assert (span.trace_id, span.parent_span_id) == ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    assert span.trace_state == "vendor=abc,o=1" and seen == ["vendor=abc,o=1"]


def test_untrusted_remote_parent_becomes_a_link(traced: tuple[FastAPI, Any, OtlpReceiver]) -> None:
    """Public edge (the default): a new trace, linked to the caller's."""
    app, telemetry, receiver = traced
    drive(app, [("GET", "/items/5")], headers={"traceparent": PARENT, "baggage": "user=alice"})
    telemetry.force_flush(5.0)
    assert receiver.wait_for(lambda r: len(server_spans(r)) == 1)
    (span,) = server_spans(receiver)
    assert span.trace_id != "0af7651916cd43dd8448eb211c80319c"
    assert span.parent_span_id == ""
    assert [(link["trace_id"], link["span_id"]) for link in span.links] == [
        ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    ]


def test_frontend_origin_continues_its_trace(otlp_receiver: OtlpReceiver) -> None:
    app = make_app()
    telemetry = otel_setup.configure(
        app,
        otlp_endpoint=otlp_receiver.endpoint,
        sampling_ratio=1.0,
        trusted_traceparent="https://app.example,10.0.0.0/8",
    )
    drive(app, [("GET", "/items/1")], headers={"traceparent": PARENT, "origin": "https://app.example"})
    drive(app, [("GET", "/items/2")], headers={"traceparent": PARENT, "origin": "https://evil.example"})
    telemetry.force_flush(5.0)
    assert otlp_receiver.wait_for(lambda r: len(server_spans(r)) == 2)
    by_path = {s.attributes["url.path"]: s for s in server_spans(otlp_receiver)}
    assert by_path["/items/1"].parent_span_id == "b7ad6b7169203331"
    assert by_path["/items/2"].parent_span_id == "" and by_path["/items/2"].links


def test_sampled_flag_from_untrusted_callers_cannot_force_sampling(
    otlp_receiver: OtlpReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    app = make_app()
    telemetry = otel_setup.configure(app, otlp_endpoint=otlp_receiver.endpoint, request_log_buffer_ms=0)
    # Fixed caller ids, every one flagged sampled; a quarter of them under the 10 % bound themselves.
    forced = [f"{i + 1:016x}{1 if i % 4 == 0 else 0xFFFFFFFFFFFFFF00 + i % 200:016x}" for i in range(400)]

    async def run() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            for index, trace_id in enumerate(forced):
                await client.get(f"/items/{index}", headers={"traceparent": f"00-{trace_id}-{index + 1:016x}-01"})

    asyncio.run(run())
    assert telemetry.force_flush(10.0)
    lines = request_lines(capsys.readouterr().out)
    assert len(lines) == 400 and not {line["trace_id"] for line in lines} & set(forced), "a new trace per request"
    expected = {line["trace_id"] for line in lines if head_sampled(line["trace_id"])}
    spans = server_spans(otlp_receiver)
    assert {s.trace_id for s in spans} == expected, "the package's own draw decides, not the caller's flag"
    assert all(s.parent_span_id == "" for s in spans)


def test_configure_twice_changes_nothing(traced: tuple[FastAPI, Any, OtlpReceiver]) -> None:
    app, telemetry, receiver = traced
    again = otel_setup.configure(app, sampling_ratio=0.0)
    assert again is telemetry
    routes = [getattr(r, "path", None) for r in app.router.routes]
    assert not {"/metrics", "/health", "/ready"} & set(routes), "probes are served by the middleware, not routes"
    assert drive(app, [("GET", "/health"), ("GET", "/metrics")]) == [200, 200]
    drive(app, [("GET", "/items/1")])
    telemetry.force_flush(5.0)
    assert receiver.wait_for(lambda r: len(server_spans(r)) >= 1)
    assert len(server_spans(receiver)) == 1, "one middleware, one span"


def test_sdk_disabled_serves_without_telemetry(monkeypatch: pytest.MonkeyPatch, otlp_receiver: OtlpReceiver) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.endpoint)
    app = make_app()
    telemetry = otel_setup.configure(app)
    assert not telemetry.enabled
    assert drive(app, [("GET", "/items/1"), ("GET", "/health"), ("GET", "/metrics")]) == [200, 200, 404]
    assert telemetry.shutdown(1.0)
    assert otlp_receiver.spans() == [] and otlp_receiver.metric_points() == []
    from opentelemetry import trace

    assert not trace.get_tracer_provider().get_tracer("x").start_span("y").is_recording()


def test_configure_inside_lifespan(otlp_receiver: OtlpReceiver) -> None:
    from contextlib import asynccontextmanager

    from starlette.testclient import TestClient

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        telemetry = otel_setup.configure(app, otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=1.0)
        yield
        telemetry.shutdown()

    app = FastAPI(lifespan=lifespan)

    @app.get("/ping")
    async def ping() -> str:
        return "pong"

    with TestClient(app) as client:
        assert client.get("/ping").status_code == 200
        assert client.get("/health").status_code == 200
    assert otlp_receiver.wait_for(lambda r: len(server_spans(r)) == 1)
    assert server_spans(otlp_receiver)[0].name == "GET /ping"


def test_request_span_is_made_current_as_the_context_api_would_and_other_runtimes_keep_the_api(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext

    from otel_setup._hotpath.context import SpanActivation, current_context, runtime_variable

    span = NonRecordingSpan(SpanContext(0x1F, 0x2F, is_remote=False))
    api_attach, api_detach = otel_context.attach, otel_context.detach
    outer = otel_context.attach(otel_context.set_value("tenant", "t-1"))
    try:
        direct = SpanActivation()
        assert direct.var is not None, "the default runtime context takes the direct path"
        expected = dict(trace.set_span_in_context(span))
        token = direct.attach(span)
        assert trace.get_current_span() is span
        assert dict(otel_context.get_current()) == expected, "the outer context's values are kept"
        assert current_context() is otel_context.get_current()
        direct.detach(token)
        assert otel_context.get_value("tenant") == "t-1" and not trace.get_current_span().is_recording()
        parent = trace.set_span_in_context(NonRecordingSpan(SpanContext(0x3F, 0x4F, is_remote=True)))
        token = direct.attach(span, parent)
        assert dict(otel_context.get_current()) == dict(trace.set_span_in_context(span, parent))
        direct.detach(token)

        attached: list[object] = []

        class Wrapped:
            def __init__(self, inner: object) -> None:
                self.inner = inner

        def custom_attach(context: Any) -> Any:
            attached.append(context)
            return Wrapped(api_attach(context))

        monkeypatch.setattr(otel_context, "attach", custom_attach)
        monkeypatch.setattr(otel_context, "detach", lambda token: api_detach(token.inner))
        fallback = SpanActivation(runtime_variable())
        assert fallback.var is None, "a runtime whose tokens are not ContextVar tokens"
        token = fallback.attach(span)
        assert trace.get_current_span() is span and attached[-1] is otel_context.get_current()
        fallback.detach(token)
        assert trace.get_current_span() is not span
    finally:
        api_detach(outer)


def test_active_requests_count_what_is_in_flight_and_return_to_zero_after_errors(otlp_receiver: OtlpReceiver) -> None:
    app = make_app()
    release = asyncio.Event()
    entered: list[int] = []

    @app.get("/slow/{n}")
    async def slow(n: int) -> dict[str, int]:
        entered.append(n)
        await release.wait()
        return {"n": n}

    otel_setup.configure(app, otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=0.0)

    def active(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith("http_server_active_requests{")]

    async def run() -> tuple[list[str], list[str], list[int]]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            held = [asyncio.create_task(client.get(f"/slow/{n}")) for n in range(3)]
            while len(entered) < 3:
                await asyncio.sleep(0.001)
            during = active((await client.get("/metrics")).text)
            release.set()
            statuses = [(await task).status_code for task in held]
            statuses += [(await client.get(path)).status_code for path in ("/boom", "/missing", "/items/1")]
            after = active((await client.get("/metrics")).text)
            return during, after, statuses

    during, after, statuses = asyncio.run(run())
    assert statuses == [200, 200, 200, 500, 404, 200]
    assert len(during) == 1 and 'http_request_method="GET"' in during[0] and 'url_scheme="http"' in during[0]
    assert during[0].endswith(" 3.0"), "three requests held in the handler, /metrics itself not counted"
    assert len(after) == 1 and after[0].endswith(" 0.0"), "every request, failed ones included, left the count"


def test_in_flight_series_past_the_cardinality_limit_share_the_overflow_series() -> None:
    from otel_setup._hotpath.metrics import CARDINALITY_LIMIT, InFlight

    in_flight = InFlight("http.server.active_requests", "{request}", "", ("http.request.method", "url.scheme"))
    for index in range(CARDINALITY_LIMIT):
        in_flight.series_for(("GET", f"s{index}"))
    first, second = in_flight.series_for(("GET", "late-1")), in_flight.series_for(("GET", "late-2"))
    assert first is second
    first.append(None)
    second.append(None)
    in_flight.series_for(("GET", "s0")).append(None)
    metric = in_flight.collect(1)
    assert metric is not None
    values = {tuple(sorted(p.attributes.items())): p.value for p in metric.data.data_points}
    assert values[(("otel.metric.overflow", True),)] == 2
    assert values[(("http.request.method", "GET"), ("url.scheme", "s0"))] == 1
    assert len(values) == CARDINALITY_LIMIT + 1


def test_histogram_series_past_the_cardinality_limit_share_the_overflow_series() -> None:
    from otel_setup._hotpath.metrics import CARDINALITY_LIMIT, FastHistogram

    histogram = FastHistogram("http.server.request.duration", "s", "", (0.1, 1.0), ("http.route",))
    for index in range(CARDINALITY_LIMIT):
        histogram.record(0.05, (f"/r{index}",))
    histogram.record(0.5, ("/late-1",))
    histogram.record(2.0, ("/late-2",))
    histogram.record(0.05, ("/r0",))
    metric = histogram.collect(1)
    assert metric is not None
    points = {tuple(sorted(p.attributes.items())): p for p in metric.data.data_points}
    overflow = points[(("otel.metric.overflow", True),)]
    assert (overflow.count, list(overflow.bucket_counts), overflow.min, overflow.max) == (2, [0, 1, 1], 0.5, 2.0)
    assert points[(("http.route", "/r0"),)].count == 2
    assert len(points) == CARDINALITY_LIMIT + 1
