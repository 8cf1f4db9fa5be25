"""SQLAlchemy, Redis and httpx: a span and the expected metric each, against real servers."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import pytest
from fastapi import FastAPI

# The usual style: bound before configure() patches or listens to anything.
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import create_async_engine

import otel_setup
from tests.support.otlp_receiver import OtlpReceiver


@pytest.fixture
def conflicts(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail the test if any instrumentor reports a version conflict (it then records nothing)."""
    caplog.set_level(logging.DEBUG)
    yield
    bad = [r.getMessage() for r in caplog.records if "falls outside" in r.getMessage() or "conflict" in r.getMessage()]
    assert not bad, f"instrumentation version conflict: {bad}"


def configure(receiver: OtlpReceiver, **options: Any) -> Any:
    return otel_setup.configure(otlp_endpoint=receiver.endpoint, sampling_ratio=1.0, **options)


def points(receiver: OtlpReceiver, name: str) -> list[Any]:
    return [p for p in receiver.metric_points() if p.name == name]


def test_sqlalchemy_sqlite_engine_created_before_configure(otlp_receiver: OtlpReceiver, conflicts: None) -> None:
    engine = create_engine("sqlite://")
    telemetry = configure(otlp_receiver)
    assert telemetry.instrumentations["sqlalchemy"] == "active"
    with engine.connect() as connection:
        connection.execute(text("CREATE TABLE t (x INTEGER)"))
        connection.execute(text("SELECT x FROM t WHERE x = :x"), {"x": 7})
    telemetry.force_flush(5.0)
    assert otlp_receiver.wait_for(lambda r: len([s for s in r.spans() if s.kind == "CLIENT"]) >= 2)
    select = next(s for s in otlp_receiver.spans() if s.attributes.get("db.operation.name") == "SELECT")
    assert select.name == "SELECT"
    assert select.attributes["db.system.name"] == "sqlite"
    assert select.attributes["db.query.text"] == "SELECT x FROM t WHERE x = ?"
    assert 7 not in select.attributes.values() and "7" not in str(select.attributes), "bound parameters stay out"
    (point,) = [
        p
        for p in points(otlp_receiver, "db.client.operation.duration")
        if p.attributes["db.operation.name"] == "SELECT"
    ]
    assert point.count == 1 and point.unit == "s"
    assert point.attributes["db.system.name"] == "sqlite"


def test_sqlalchemy_leaves_engine_events_off_and_skips_first_connect_queries(
    otlp_receiver: OtlpReceiver, postgres_url: str
) -> None:
    """Measured at the dialect: connections never join engine-level event dispatch, which costs per connection.

    PostgreSQL's dialect runs its own queries on the first connect (version,
    schema, settings) with the engine's events off; they stay unmeasured, as
    with engine-level instrumentation.
    """
    from sqlalchemy.engine import Engine

    telemetry = configure(otlp_receiver)
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            assert not Engine._has_events and not engine._has_events
        with engine.connect() as connection:
            connection.execute(text("SELECT 2"))
    finally:
        engine.dispose()
        telemetry.force_flush(5.0)
    assert otlp_receiver.wait_for(lambda r: len([s for s in r.spans() if s.kind == "CLIENT"]) >= 2)
    queries = [s.attributes["db.query.text"] for s in otlp_receiver.spans() if s.kind == "CLIENT"]
    assert queries == ["SELECT 1", "SELECT 2"], queries
    (point,) = points(otlp_receiver, "db.client.operation.duration")
    assert point.count == 2 and point.attributes["db.system.name"] == "postgresql"


def test_sqlalchemy_postgres_sync_and_async(otlp_receiver: OtlpReceiver, postgres_url: str, conflicts: None) -> None:
    telemetry = configure(otlp_receiver)
    engine = create_engine(postgres_url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT 41 + 1")).scalar() == 42
    async_url = postgres_url.replace("+psycopg2", "+asyncpg")

    async def run_async() -> None:
        async_engine = create_async_engine(async_url)
        async with async_engine.connect() as connection:
            await connection.execute(text("SELECT 2"))
        await async_engine.dispose()

    asyncio.run(run_async())
    engine.dispose()
    telemetry.force_flush(5.0)
    assert otlp_receiver.wait_for(
        lambda r: len([s for s in r.spans() if s.attributes.get("db.query.text") in ("SELECT 41 + 1", "SELECT 2")]) == 2
    )
    spans = {
        s.attributes["db.query.text"]: s
        for s in otlp_receiver.spans()
        if s.kind == "CLIENT" and "db.query.text" in s.attributes
    }
    for statement in ("SELECT 41 + 1", "SELECT 2"):
        span = spans[statement]
        assert span.name == "SELECT test"
        assert span.attributes["db.system.name"] == "postgresql"
        assert span.attributes["db.namespace"] == "test"
        assert span.attributes["server.address"] == "127.0.0.1"
        assert span.attributes["server.port"] == 5432
    postgres_points = [
        p
        for p in points(otlp_receiver, "db.client.operation.duration")
        if p.attributes["db.system.name"] == "postgresql"
    ]
    assert sum(p.count or 0 for p in postgres_points) >= 2


def test_sqlalchemy_async_sqlite_inside_a_request_is_a_child_of_the_server_span(
    otlp_receiver: OtlpReceiver, conflicts: None
) -> None:
    engine = create_async_engine("sqlite+aiosqlite://")
    app = FastAPI()

    @app.get("/count")
    async def count() -> int:
        async with engine.connect() as connection:
            return int((await connection.execute(text("SELECT 3"))).scalar_one())

    telemetry = configure(otlp_receiver)
    telemetry.instrument_app(app)

    async def call() -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return (await client.get("/count")).status_code

    assert asyncio.run(call()) == 200
    telemetry.force_flush(5.0)
    assert otlp_receiver.wait_for(
        lambda r: any(s.kind == "SERVER" for s in r.spans()) and any(s.kind == "CLIENT" for s in r.spans())
    )
    server = next(s for s in otlp_receiver.spans() if s.kind == "SERVER")
    client = next(s for s in otlp_receiver.spans() if s.attributes.get("db.query.text") == "SELECT 3")
    assert client.trace_id == server.trace_id
    assert client.parent_span_id == server.span_id


def test_sqlalchemy_error_is_recorded(otlp_receiver: OtlpReceiver) -> None:
    telemetry = configure(otlp_receiver)
    engine = create_engine("sqlite://")
    with pytest.raises(Exception, match="no such table"), engine.connect() as connection:
        connection.execute(text("SELECT * FROM nowhere"))
    telemetry.force_flush(5.0)
    assert otlp_receiver.wait_for(lambda r: any(s.status_code == "ERROR" for s in r.spans()))
    span = next(s for s in otlp_receiver.spans() if s.status_code == "ERROR")
    assert span.attributes["error.type"] == "OperationalError"
    errors = [p for p in points(otlp_receiver, "db.client.operation.duration") if p.attributes.get("error.type")]
    assert errors and errors[0].count == 1


def test_redis_sync_and_asyncio_without_arguments(otlp_receiver: OtlpReceiver, redis_url: str, conflicts: None) -> None:
    import redis
    import redis.asyncio

    client = redis.Redis.from_url(redis_url)  # created before configure()
    telemetry = configure(otlp_receiver)
    assert telemetry.instrumentations["redis"] == "active"
    client.set("otel-setup-test:secret-key", "secret-value")
    assert client.get("otel-setup-test:secret-key") == b"secret-value"

    async def run_async() -> None:
        async_client = redis.asyncio.Redis.from_url(redis_url)
        await async_client.incr("otel-setup-test:counter")
        await async_client.aclose()

    asyncio.run(run_async())
    client.delete("otel-setup-test:secret-key", "otel-setup-test:counter")
    telemetry.force_flush(5.0)
    assert otlp_receiver.wait_for(lambda r: len([s for s in r.spans() if s.kind == "CLIENT"]) >= 4)
    names = [s.name for s in otlp_receiver.spans() if s.kind == "CLIENT"]
    assert {"SET", "GET", "INCRBY", "DEL"} <= set(names)
    everything = repr([(s.name, s.attributes) for s in otlp_receiver.spans()])
    assert "secret-key" not in everything and "secret-value" not in everything
    ops = {
        p.attributes.get("db.operation.name"): p
        for p in points(otlp_receiver, "db.client.operation.duration")
        if p.attributes.get("db.system.name") == "redis"
    }
    assert {"SET", "GET", "INCRBY", "DEL"} <= set(ops)
    assert ops["GET"].count == 1
    assert ops["GET"].attributes["server.address"] == "127.0.0.1"


class _Echo(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        _Echo.seen.append({k.lower(): v for k, v in self.headers.items()})
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def echo_server() -> Iterator[str]:
    _Echo.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_httpx_sync_and_async_inject_traceparent(
    otlp_receiver: OtlpReceiver, echo_server: str, conflicts: None
) -> None:
    sync_client = httpx.Client()  # created before configure()
    telemetry = configure(otlp_receiver)
    assert telemetry.instrumentations["httpx"] == "active"
    tracer = telemetry.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("parent") as parent:
        assert sync_client.get(f"{echo_server}/v2/items?ids=1").status_code == 200

        async def run_async() -> None:
            async with httpx.AsyncClient() as client:
                assert (await client.get(f"{echo_server}/v2/account")).status_code == 200

        asyncio.run(run_async())
    trace_id = format(parent.get_span_context().trace_id, "032x")
    assert len(_Echo.seen) == 2
    assert all(headers["traceparent"].split("-")[1] == trace_id for headers in _Echo.seen)
    telemetry.force_flush(5.0)
    assert otlp_receiver.wait_for(lambda r: len([s for s in r.spans() if s.kind == "CLIENT"]) == 2)
    clients = [s for s in otlp_receiver.spans() if s.kind == "CLIENT"]
    assert {s.name for s in clients} == {"GET"}
    assert all(s.trace_id == trace_id for s in clients)
    assert {s.span_id for s in clients} == {h["traceparent"].split("-")[2] for h in _Echo.seen}
    assert all(s.attributes["http.response.status_code"] == 200 for s in clients)
    assert all(s.attributes["http.request.method"] == "GET" for s in clients)
    duration = points(otlp_receiver, "http.client.request.duration")
    assert duration and sum(p.count or 0 for p in duration) == 2
    sync_client.close()


def test_unsampled_request_builds_no_client_spans_but_counts_every_call(
    otlp_receiver: OtlpReceiver, redis_url: str
) -> None:
    """Nine requests in ten: no client span is built (the SDK would drop it), every metric point still is."""
    import redis
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    engine = create_engine("sqlite://")
    client = redis.Redis.from_url(redis_url)
    telemetry = otel_setup.configure(otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=0.1)
    unsampled = NonRecordingSpan(SpanContext(0x1234, 0x5678, False, TraceFlags(0)))
    sampled = telemetry.tracer_provider.get_tracer("test")
    with trace.use_span(unsampled):
        for _ in range(5):
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            client.get("unsampled:key")
    # The same calls under a sampled parent still make their spans (parent-based sampling).
    with sampled.start_as_current_span(
        "sampled parent",
        context=trace.set_span_in_context(
            NonRecordingSpan(SpanContext(0x9999, 0x1111, False, TraceFlags(TraceFlags.SAMPLED)))
        ),
    ):
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        client.get("sampled:key")
    telemetry.force_flush(5.0)
    assert otlp_receiver.wait_for(lambda r: any(s.name == "sampled parent" for s in r.spans()))
    client_spans = [s for s in otlp_receiver.spans() if s.kind == "CLIENT"]
    assert sorted(s.name for s in client_spans) == ["GET", "SELECT"], [s.name for s in client_spans]
    assert all(s.trace_id == f"{0x9999:032x}" for s in client_spans)
    durations = {
        p.attributes["db.system.name"]: p.count
        for p in points(otlp_receiver, "db.client.operation.duration")
        if p.attributes.get("db.operation.name") in ("SELECT", "GET")
    }
    assert durations == {"sqlite": 6, "redis": 6}
    client.close()
