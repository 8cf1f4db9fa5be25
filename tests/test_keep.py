"""Failing and slow requests keep their whole trace at 10 % head sampling; metrics link to traces.

Real OTLP export to the receiver in tests/support, real PostgreSQL and Redis,
real httpx calls to a loopback server. Trace ids are read from the JSON
request lines, as the person on call would.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import pytest
import redis.asyncio
import sqlalchemy
from fastapi import FastAPI
from fastapi.responses import JSONResponse

import otel_setup
from otel_setup import OtelSetupConfigError
from otel_setup._hotpath import keep as _keep
from tests.support.asgi import get_all
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support.sampling import head_sampled, request_lines


class _Downstream(BaseHTTPRequestHandler):
    """A loopback service recording the traceparent it was sent."""

    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:  # name fixed by BaseHTTPRequestHandler
        _Downstream.seen.append(self.headers.get("traceparent", ""))
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # signature fixed by the base class
        return


@pytest.fixture
def downstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Downstream)
    _Downstream.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def make_app(postgres_url: str, redis_url: str, downstream: str) -> FastAPI:
    app = FastAPI(title="keep-app")
    engine = sqlalchemy.create_engine(postgres_url, pool_size=4)
    cache = redis.asyncio.Redis.from_url(redis_url)
    state: dict[str, Any] = {}

    def query(sql: str = "SELECT 1") -> None:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(sql)).all()

    @app.get("/fine/{n}")
    def fine(n: int) -> dict[str, int]:
        query()
        return {"n": n}

    @app.get("/fail/{n}")
    def fail(n: int) -> None:
        query()
        raise RuntimeError(f"request {n} failed after its query")

    @app.get("/unavailable/{n}")
    def unavailable(n: int) -> JSONResponse:
        query()
        return JSONResponse({"n": n}, status_code=503)

    @app.get("/slow/{n}")
    def slow(n: int) -> dict[str, int]:
        query("SELECT pg_sleep(0.12)")
        return {"n": n}

    @app.get("/calls/{n}")
    async def calls(n: int) -> None:
        await cache.set("keep:test", "1")
        await cache.get("keep:test")
        client = state.get("client")
        if client is None:
            client = state["client"] = httpx.AsyncClient()
        await client.get(f"{downstream}/items/{n}")
        await asyncio.to_thread(query)
        raise ValueError("calls failed")

    @app.get("/burst")
    async def burst() -> dict[str, bool]:
        for _ in range(_keep.MAX_SPANS_PER_TRACE + 20):
            await cache.get("keep:burst")
        state["done"] = state.get("done", 0) + 1
        await state["release"].wait()
        await asyncio.sleep(0.12)  # slow, whether it waited or not
        return {"ok": True}

    app.state.shared = state
    return app


def _by_trace(spans: list[ReceivedSpan]) -> dict[str, list[ReceivedSpan]]:
    traces: dict[str, list[ReceivedSpan]] = {}
    for span in spans:
        traces.setdefault(span.trace_id, []).append(span)
    return traces


def _server(spans: list[ReceivedSpan]) -> ReceivedSpan:
    (server,) = [s for s in spans if s.kind == "SERVER"]
    return server


def test_every_failing_and_slow_request_is_exported_with_its_sql_child_and_fine_ones_stay_at_ten_percent(
    otlp_receiver: OtlpReceiver,
    capsys: pytest.CaptureFixture[str],
    postgres_url: str,
    redis_url: str,
    downstream: str,
) -> None:
    app = make_app(postgres_url, redis_url, downstream)
    telemetry = otel_setup.configure(
        app, otlp_endpoint=otlp_receiver.endpoint, request_log_buffer_ms=0, slow_request_ms=100
    )
    paths = (
        [f"/fail/{n}" for n in range(25)]
        + [f"/unavailable/{n}" for n in range(10)]
        + [f"/slow/{n}" for n in range(15)]
        + [f"/fine/{n}" for n in range(300)]
    )
    responses = get_all(app, paths)
    assert [r.status_code for r in responses[:35]] == [500] * 25 + [503] * 10
    telemetry.force_flush(10.0)
    ordered = request_lines(capsys.readouterr().out)
    assert [line["http.route"].split("/")[1] for line in ordered] == [path.split("/")[1] for path in paths]
    kept_lines = ordered[:50]
    fine_lines = ordered[50:]
    expected_fine = {line["trace_id"] for line in fine_lines if head_sampled(line["trace_id"])}
    wanted = {line["trace_id"] for line in kept_lines} | expected_fine
    assert otlp_receiver.wait_for(
        lambda r: wanted <= {s.trace_id for s in r.spans() if s.kind == "SERVER"}, timeout=20.0
    ), "every failing, unavailable and slow request is exported"
    traces = _by_trace([s for s in otlp_receiver.spans() if s.scope_name.startswith("otel_setup.")])
    for line in kept_lines:
        spans = traces[line["trace_id"]]
        server = _server(spans)
        assert server.span_id == line["span_id"], "the root keeps the span id the request line gave"
        assert server.parent_span_id == ""
        assert server.attributes["http.route"] == line["http.route"]
        assert server.attributes["http.response.status_code"] == line["http.response.status_code"]
        head = head_sampled(line["trace_id"])
        expected_reason = "head" if head else ("slow" if line["http.route"] == "/slow/{n}" else "error")
        assert server.attributes["otel_setup.kept"] == expected_reason
        (sql,) = [s for s in spans if s.kind == "CLIENT" and s.scope_name == "otel_setup.sqlalchemy"]
        assert sql.parent_span_id == server.span_id
        assert sql.attributes["db.system.name"] == "postgresql"
        assert sql.attributes["db.query.text"] in ("SELECT 1", "SELECT pg_sleep(0.12)")
        assert server.start_ns <= sql.start_ns <= sql.end_ns <= server.end_ns
        assert (server.end_ns - server.start_ns) / 1e6 >= line["duration_ms"] * 0.99
        if line["http.route"] == "/fail/{n}":
            assert server.status_code == "ERROR" and server.attributes["error.type"] == "RuntimeError"
            (event,) = [e for e in server.events if e["name"] == "exception"]
            assert event["attributes"]["exception.type"] == "RuntimeError"
        if line["http.route"] == "/unavailable/{n}":
            assert server.status_code == "ERROR" and server.attributes["error.type"] == "503"
        if line["http.route"] == "/slow/{n}":
            assert line["duration_ms"] >= 100
            assert sql.end_ns - sql.start_ns >= 110_000_000, "the query's measured time is the span's"
    exported_fine = {line["trace_id"] for line in fine_lines} & set(traces)
    assert exported_fine == expected_fine, "fine requests follow head sampling exactly"
    assert 10 <= len(expected_fine) <= 55, "about 10 % of 300"
    for trace_id in expected_fine:
        assert _server(traces[trace_id]).attributes["otel_setup.kept"] == "head"
    assert _keep.held() == 0, "nothing stays buffered after the requests ended"


def test_a_kept_trace_has_its_redis_httpx_and_sql_children_with_the_propagated_span_id(
    otlp_receiver: OtlpReceiver,
    capsys: pytest.CaptureFixture[str],
    postgres_url: str,
    redis_url: str,
    downstream: str,
) -> None:
    app = make_app(postgres_url, redis_url, downstream)
    telemetry = otel_setup.configure(app, otlp_endpoint=otlp_receiver.endpoint, request_log_buffer_ms=0)
    responses = get_all(app, [f"/calls/{n}" for n in range(12)])
    assert {r.status_code for r in responses} == {500}
    telemetry.force_flush(10.0)
    lines = request_lines(capsys.readouterr().out)
    unsampled = [line for line in lines if not head_sampled(line["trace_id"])]
    assert unsampled, "at 10 % most of the twelve were not head-sampled"
    wanted = {line["trace_id"] for line in lines}
    assert otlp_receiver.wait_for(lambda r: wanted <= {s.trace_id for s in r.spans() if s.kind == "SERVER"})
    traces = _by_trace([s for s in otlp_receiver.spans() if s.scope_name.startswith("otel_setup.")])
    sent = {header.split("-")[1]: header for header in _Downstream.seen}
    for line in unsampled:
        spans = traces[line["trace_id"]]
        server = _server(spans)
        assert server.attributes["otel_setup.kept"] == "error"
        children = {s.scope_name: s for s in spans if s.kind == "CLIENT"}
        redis_spans = [s for s in spans if s.scope_name == "otel_setup.redis"]
        assert [s.name for s in redis_spans] == ["SET", "GET"]
        assert all(
            s.attributes["db.system.name"] == "redis" and s.parent_span_id == server.span_id for s in redis_spans
        )
        call = children["otel_setup.httpx"]
        assert call.name == "GET" and call.attributes["http.response.status_code"] == 200
        assert call.attributes["url.full"].startswith(downstream)
        # Downstream follows the head decision: it was told "not sampled", by the span id now exported.
        assert sent[line["trace_id"]] == f"00-{line['trace_id']}-{call.span_id}-00"
        assert children["otel_setup.sqlalchemy"].parent_span_id == server.span_id
        assert all(s.attributes["otel_setup.kept"] == "error" for s in spans)


def test_keep_none_exports_head_sampled_traces_only(
    otlp_receiver: OtlpReceiver, capsys: pytest.CaptureFixture[str], postgres_url: str, redis_url: str
) -> None:
    app = make_app(postgres_url, redis_url, "http://127.0.0.1:9")
    telemetry = otel_setup.configure(app, otlp_endpoint=otlp_receiver.endpoint, request_log_buffer_ms=0, keep="none")
    get_all(app, [f"/fail/{n}" for n in range(30)])
    telemetry.force_flush(10.0)
    lines = request_lines(capsys.readouterr().out)
    expected = {line["trace_id"] for line in lines if head_sampled(line["trace_id"])}
    # force_flush returned after every export answered: what arrived is all there is.
    assert otlp_receiver.wait_for(lambda r: expected <= {s.trace_id for s in r.spans()})
    exported = {s.trace_id for s in otlp_receiver.spans() if s.kind == "SERVER"}
    assert exported & {line["trace_id"] for line in lines} == expected
    assert all("otel_setup.kept" not in s.attributes for s in otlp_receiver.spans())


def test_a_burst_of_slow_requests_cannot_grow_the_buffer_and_drops_are_counted(
    otlp_receiver: OtlpReceiver, postgres_url: str, redis_url: str
) -> None:
    app = make_app(postgres_url, redis_url, "http://127.0.0.1:9")
    telemetry = otel_setup.configure(
        app, otlp_endpoint=otlp_receiver.endpoint, request_log_buffer_ms=0, slow_request_ms=100, sampling_ratio=0.0
    )
    concurrent = 12  # 12 x 128 records would be 1536, over the shared cap
    peaks: list[int] = []

    async def run() -> list[int]:
        shared = app.state.shared
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            # One request alone first: it fills its own trace (128) and drops the rest of its commands.
            shared["release"] = asyncio.Event()
            shared["release"].set()
            assert (await client.get("/burst")).status_code == 200
            assert _keep.held() == 0
            shared["release"] = asyncio.Event()
            tasks = [asyncio.create_task(client.get("/burst")) for _ in range(concurrent)]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and shared.get("done", 0) < concurrent + 1:
                await asyncio.sleep(0.02)
                peaks.append(_keep.held())
            peaks.append(_keep.held())
            shared["release"].set()
            return [r.status_code for r in await asyncio.gather(*tasks)]

    assert asyncio.run(run()) == [200] * concurrent
    assert max(peaks) == peaks[-1] == _keep.MAX_BUFFERED_SPANS, "the shared cap is reached and never passed"
    assert _keep.held() == 0
    telemetry.force_flush(10.0)
    exported = _keep.MAX_SPANS_PER_TRACE + 1 + _keep.MAX_BUFFERED_SPANS + concurrent
    assert otlp_receiver.wait_for(lambda r: len([s for s in r.spans() if s.kind == "SERVER"]) == concurrent + 1)
    assert otlp_receiver.wait_for(lambda r: len(r.spans()) == exported), len(otlp_receiver.spans())
    traces = _by_trace(otlp_receiver.spans())
    children = [len([s for s in spans if s.kind == "CLIENT"]) for spans in traces.values()]
    assert max(children) <= _keep.MAX_SPANS_PER_TRACE
    for spans in traces.values():
        assert all(s.attributes["otel_setup.kept"] == "slow" for s in spans)
    assert otlp_receiver.wait_for(
        lambda r: (
            {p.attributes.get("reason") for p in r.metric_points() if p.name == "otel_setup.trace.buffer.dropped"}
            == {"trace_full", "buffer_full"}
        ),
        timeout=20.0,
    )
    dropped = {
        p.attributes["reason"]: p.value
        for p in otlp_receiver.metric_points()
        if p.name == "otel_setup.trace.buffer.dropped"
    }
    assert dropped == {
        "trace_full": 20,
        "buffer_full": concurrent * (_keep.MAX_SPANS_PER_TRACE + 20) - _keep.MAX_BUFFERED_SPANS,
    }


def test_openmetrics_exemplars_and_otlp_exemplars_point_at_exported_traces(
    otlp_receiver: OtlpReceiver, capsys: pytest.CaptureFixture[str], postgres_url: str, redis_url: str
) -> None:
    app = make_app(postgres_url, redis_url, "http://127.0.0.1:9")
    telemetry = otel_setup.configure(app, otlp_endpoint=otlp_receiver.endpoint, request_log_buffer_ms=0)
    get_all(app, [f"/fail/{n}" for n in range(5)] + [f"/fine/{n}" for n in range(60)])

    async def scrape(accept: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.get("/metrics", headers={"Accept": accept})

    openmetrics = asyncio.run(scrape("application/openmetrics-text; version=1.0.0,text/plain;version=0.0.4;q=0.5"))
    plain = asyncio.run(scrape("text/plain"))
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.rstrip().endswith("# EOF")
    assert "trace_id" not in plain.text and plain.headers["content-type"].startswith("text/plain")
    exemplars = re.findall(
        r'^http_server_request_duration_seconds_bucket\{(.*)\} \d+(?:\.\d+)? # \{span_id="([0-9a-f]{16})",'
        r'trace_id="([0-9a-f]{32})"\} ([0-9.e-]+)',
        openmetrics.text,
        re.MULTILINE,
    )
    assert exemplars, [line for line in openmetrics.text.splitlines() if "request_duration_seconds_bucket" in line][:3]
    telemetry.force_flush(10.0)
    lines = request_lines(capsys.readouterr().out)
    failing = {line["trace_id"] for line in lines if line["http.response.status_code"] == 500}
    trace_ids = {trace_id for _, _, trace_id, _ in exemplars}
    assert otlp_receiver.wait_for(lambda r: trace_ids <= {s.trace_id for s in r.spans()})
    spans = {(s.trace_id, s.span_id): s for s in otlp_receiver.spans() if s.kind == "SERVER"}
    for labels, span_id, trace_id, value in exemplars:
        span = spans[(trace_id, span_id)]
        assert f'http_route="{span.attributes["http.route"]}"' in labels
        assert abs((span.end_ns - span.start_ns) / 1e9 - float(value)) < 0.05
    error_exemplars = [e for e in exemplars if 'http_response_status_code="500"' in e[0]]
    assert error_exemplars and {e[2] for e in error_exemplars} <= failing, "kept errors have exemplars too"
    assert otlp_receiver.wait_for(
        lambda r: any(p.exemplars for p in r.metric_points() if p.name == "http.server.request.duration"), timeout=20.0
    )
    otlp_exemplars = [
        e for p in otlp_receiver.metric_points() if p.name == "http.server.request.duration" for e in p.exemplars
    ]
    exported = {s.trace_id for s in otlp_receiver.spans()}
    assert otlp_exemplars and all(e["trace_id"] in exported for e in otlp_exemplars)


def test_keep_setting_is_validated_and_documented() -> None:
    from otel_setup._core.settings import resolve

    assert resolve({}, {}).keep == ("errors", "slow")
    assert resolve({}, {"OTEL_SETUP_KEEP": "slow"}).keep == ("slow",)
    assert resolve({}, {"OTEL_SETUP_KEEP": "none"}).keep == ()
    assert resolve({"keep": ["errors"]}, {}).keep == ("errors",)
    with pytest.raises(OtelSetupConfigError) as error:
        resolve({}, {"OTEL_SETUP_KEEP": "errors,fast"})
    assert "OTEL_SETUP_KEEP" in str(error.value) and "errors, slow, or none" in str(error.value)


def test_the_gateway_tail_sampler_agrees_with_the_app() -> None:
    """Errors, the slow threshold and the app's own keep decisions survive the gateway's tail sampling."""
    from pathlib import Path

    import yaml

    from otel_setup._core.settings import SETTINGS

    gateway = yaml.safe_load((Path(__file__).parents[1] / "collector" / "gateway.yaml").read_text(encoding="utf-8"))
    policies = {p["name"]: p for p in gateway["processors"]["tail_sampling"]["policies"]}
    slow_default = next(s.default for s in SETTINGS if s.name == "slow_request_ms")
    assert policies["keep-slow"]["latency"]["threshold_ms"] == slow_default
    assert policies["keep-errors"]["status_code"]["status_codes"] == ["ERROR"]
    kept = policies["keep-what-the-app-kept"]
    assert kept["type"] == "string_attribute"
    assert kept["string_attribute"] == {"key": "otel_setup.kept", "values": ["error", "slow"]}


def test_buffered_memory_is_bounded_whatever_the_burst() -> None:
    """Long statements from thousands of requests in flight: held memory stays under the caps' product."""
    import tracemalloc

    from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

    from otel_setup._security.redaction import redact_text

    def build(text: str) -> _keep.Built:
        return "test", "SELECT", SpanKind.CLIENT, {"db.query.text": text}, None, None

    roots = [_keep.BufferingRoot(SpanContext(n + 1, n + 1, False, TraceFlags(0))) for n in range(2000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n, root in enumerate(roots):
            for call in range(3):
                text = f"SELECT '{n}-{call}-" + "x" * 20_000 + "'"  # 6,000 calls, 120 MB of statements
                _keep.buffer(root, (0.0, 1.0, 0, build, (_keep.capped_text(text, redact_text),)))
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert _keep.held() == _keep.MAX_BUFFERED_SPANS
    assert sum(len(root.records or ()) for root in roots) == _keep.MAX_BUFFERED_SPANS
    assert grown < _keep.MAX_BUFFERED_SPANS * (_keep.TEXT_CAP + 1024), grown
    for root in roots:
        _keep.release(root)
    assert _keep.held() == 0
