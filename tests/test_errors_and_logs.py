"""Sentry events linked to OTel traces, JSON logs with trace ids, timing headers."""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import logging
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sentry_sdk
import structlog
from fastapi import FastAPI, HTTPException
from hypothesis import given, settings
from hypothesis import strategies as st

import otel_setup
from otel_setup import OtelSetupConfigError
from tests.support.asgi import get_all
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.sentry_ingest import SentryIngest

GW2_KEY = "ABCDEF01-2345-6789-ABCD-EF0123456789ABCDEF01-2345-6789-ABCD-EF0123456789"


@pytest.fixture
def ingest() -> Iterator[SentryIngest]:
    server = SentryIngest()
    yield server
    from otel_setup._core.configure import reset

    reset()
    server.stop()


def make_app() -> FastAPI:
    app = FastAPI(title="errors-app", version="2.0.1")

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        structlog.get_logger("app").info("item served", item=item_id)
        return {"item_id": item_id}

    @app.get("/boom")
    async def boom() -> None:
        gw2_key = GW2_KEY  # a local that must not reach Sentry
        raise RuntimeError(f"upstream refused key {gw2_key}")

    @app.get("/missing")
    async def missing() -> None:
        raise HTTPException(status_code=404)

    @app.get("/unavailable")
    async def unavailable() -> None:
        raise HTTPException(status_code=503)

    @app.get("/slow")
    async def slow() -> str:
        await asyncio.sleep(0.06)
        return "slow"

    return app


def log_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


# --- Sentry -----------------------------------------------------------------


def test_without_dsn_sentry_is_not_even_imported() -> None:
    code = (
        "import sys, otel_setup; from fastapi import FastAPI; t = otel_setup.configure(FastAPI());"
        "print(t.instrumentations['sentry']); print('sentry_sdk' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[-2:] == ["off:", "SENTRY_DSN"] or out[-1] == "False"
    assert out[-1] == "False"


def test_malformed_dsn_is_a_config_error_that_hides_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTRY_DSN", "https://supersecretkey@")
    with pytest.raises(OtelSetupConfigError) as caught:
        otel_setup.configure()
    assert caught.value.name == "SENTRY_DSN"
    assert "supersecretkey" not in str(caught.value)
    assert otel_setup._core.configure.active() is None


def test_request_error_event_carries_the_otel_ids_and_no_secrets(
    ingest: SentryIngest, otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTRY_DSN", ingest.dsn)
    monkeypatch.setenv("ENVIRONMENT", "staging")
    app = make_app()
    telemetry = otel_setup.configure(app, otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=1.0)
    assert telemetry.instrumentations["sentry"] == "active"
    statuses = [r.status_code for r in get_all(app, ["/boom", "/missing", "/items/1", "/unavailable"])]
    assert statuses == [500, 404, 200, 503]
    telemetry.force_flush(5.0)
    assert otlp_receiver.wait_for(lambda r: len([s for s in r.spans() if s.kind == "SERVER"]) == 4)
    assert ingest.wait_for(lambda i: len(i.events()) >= 2)
    sentry_sdk.flush(timeout=5.0)  # the transport's queue is empty: whatever was captured has been sent
    events = ingest.events()
    assert len(events) == 2, "404 is not an error; 500 and 503 are"
    boom_span = next(s for s in otlp_receiver.spans() if s.name == "GET /boom")
    exception_event = next(e for e in events if "exception" in e)
    trace_context = exception_event["contexts"]["trace"]
    assert trace_context["trace_id"] == boom_span.trace_id
    assert trace_context["span_id"] == boom_span.span_id
    assert exception_event["environment"] == "staging"
    assert exception_event["release"] == "errors-app@2.0.1"
    assert exception_event["tags"]["http.route"] == "/boom"
    assert exception_event["transaction"] == "GET /boom"
    (value,) = exception_event["exception"]["values"]
    assert value["type"] == "RuntimeError"
    assert "REDACTED" in value["value"]
    for frame in value["stacktrace"]["frames"]:
        assert "vars" not in frame, "frame locals are never sent"
    raw = b"".join(ingest.raw_bodies)
    assert GW2_KEY.encode() not in raw and GW2_KEY[:16].encode() not in raw
    message_event = next(e for e in events if "exception" not in e)
    unavailable_span = next(s for s in otlp_receiver.spans() if s.name == "GET /unavailable")
    assert message_event["contexts"]["trace"]["trace_id"] == unavailable_span.trace_id
    assert "503" in json.dumps(message_event["logentry"] if "logentry" in message_event else message_event["message"])
    assert boom_span.status_code == "ERROR"
    assert any(e["name"] == "exception" for e in boom_span.events), "the OTel span records the error too"


def test_background_error_links_to_the_active_span(ingest: SentryIngest, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTRY_DSN", ingest.dsn)
    telemetry = otel_setup.configure(sampling_ratio=1.0)
    tracer = telemetry.tracer_provider.get_tracer("jobs")
    ids: dict[str, str] = {}

    def job() -> None:
        with tracer.start_as_current_span("nightly sync") as span:
            ids["trace_id"] = format(span.get_span_context().trace_id, "032x")
            ids["span_id"] = format(span.get_span_context().span_id, "016x")
            try:
                raise ValueError("sync failed")
            except ValueError:
                logging.getLogger("jobs").exception("background job failed")

    worker = threading.Thread(target=job)
    worker.start()
    worker.join()
    assert ingest.wait_for(lambda i: len(i.events()) >= 1)
    event = ingest.events()[0]
    assert event["contexts"]["trace"]["trace_id"] == ids["trace_id"]
    assert event["contexts"]["trace"]["span_id"] == ids["span_id"]


def test_propagation_stays_w3c_and_nothing_sentry_goes_to_third_parties(
    ingest: SentryIngest, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry import propagate

    monkeypatch.setenv("SENTRY_DSN", ingest.dsn)
    telemetry = otel_setup.configure(sampling_ratio=1.0)
    seen: list[httpx.Request] = []
    client = httpx.Client(transport=httpx.MockTransport(lambda request: seen.append(request) or httpx.Response(200)))
    with telemetry.tracer_provider.get_tracer("t").start_as_current_span("outbound"):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        client.get("https://api.guildwars2.com/v2/build")
    assert "traceparent" in carrier and "sentry-trace" not in carrier
    assert "sentry-trace" not in seen[0].headers and "baggage" not in seen[0].headers
    import sentry_sdk

    assert sentry_sdk.get_client().options["traces_sample_rate"] is None
    integrations = set(sentry_sdk.get_client().integrations)
    assert not integrations & {"fastapi", "starlette", "httpx", "redis", "sqlalchemy", "openai"}


def test_rate_limited_or_hung_sentry_costs_a_request_little(
    ingest: SentryIngest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENTRY_DSN", ingest.dsn)
    app = make_app()
    telemetry = otel_setup.configure(app)
    ingest.mode = "ratelimit"
    get_all(app, ["/boom"])
    assert ingest.wait_for(lambda i: len(i.envelopes) == 1)
    started = time.perf_counter()
    get_all(app, ["/boom"] * 20)
    per_request = (time.perf_counter() - started) / 20
    sentry_sdk.flush(timeout=5.0)
    assert len(ingest.envelopes) == 1, "no envelope is sent while Sentry says to back off"
    assert per_request < 0.01, f"{per_request * 1000:.1f} ms per failing request"
    ingest.mode = "hang"
    started = time.monotonic()
    telemetry.shutdown(timeout=3.0)
    assert time.monotonic() - started < 3.0 + 1.0


# --- logs -------------------------------------------------------------------


def test_json_logs_share_one_shape_and_carry_the_trace_ids(
    otlp_receiver: OtlpReceiver, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "prod")
    app = make_app()
    telemetry = otel_setup.configure(app, otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=1.0)
    get_all(app, ["/items/7?access_token=abc"])
    logging.getLogger("app.stdlib").warning("stdlib says %s", "hello")
    try:
        secret_local = GW2_KEY  # noqa: F841 - must not show up as a local
        raise KeyError("missing thing")
    except KeyError:
        structlog.get_logger("app").exception("it failed")
    telemetry.force_flush(5.0)
    assert otlp_receiver.wait_for(lambda r: any(s.kind == "SERVER" for s in r.spans()))
    span = next(s for s in otlp_receiver.spans() if s.kind == "SERVER")
    lines = log_lines(capsys.readouterr().out)
    request = next(line for line in lines if line["event"] == "request")
    assert request["level"] == "info"
    assert request["logger"] == "otel_setup.request"
    assert request["http.request.method"] == "GET"
    assert request["http.route"] == "/items/{item_id}"
    assert request["http.response.status_code"] == 200
    assert isinstance(request["duration_ms"], float)
    assert request["trace_id"] == span.trace_id and request["span_id"] == span.span_id
    assert request["service.name"] == "errors-app" and request["environment"] == "prod"
    assert request["timestamp"].endswith("Z") and "T" in request["timestamp"]
    served = next(line for line in lines if line["event"] == "item served")
    assert served["trace_id"] == span.trace_id and served["item"] == 7
    stdlib = next(line for line in lines if line["event"] == "stdlib says hello")
    core = {"timestamp", "level", "event", "logger", "service.name", "environment"}
    assert core <= set(stdlib) and core <= set(request) and core <= set(served)
    assert stdlib["level"] == "warning" and stdlib["logger"] == "app.stdlib"
    failed = next(line for line in lines if line["event"] == "it failed")
    assert failed["level"] == "error"
    exception = failed["exception"]
    assert isinstance(exception, list) and exception[0]["exc_type"] == "KeyError"
    assert all(not frame.get("locals") for frame in exception[0]["frames"])
    everything = json.dumps(lines)
    assert GW2_KEY not in everything and "access_token=abc" not in everything


_SAME_LINE_BOTH_WAYS = """
import asyncio, logging, sys
import httpx, structlog
from fastapi import FastAPI
import otel_setup

app = FastAPI()

@app.get("/gilde/{name}")
async def guild(name: str) -> dict[str, str]:
    return {"name": name}

otel_setup.configure(app, service_name="line-app", sampling_ratio=float(sys.argv[1]))

async def main() -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        print("printed before the first request")
        await client.get("/gilde/Ärger")
        structlog.contextvars.bind_contextvars(tenant="t-1", password="hunter2")
        await client.get("/gilde/Ärger?x=1")
        logging.getLogger().addHandler(logging.NullHandler())  # any second handler: the full chain
        await client.get("/gilde/Ärger?x=2")

asyncio.run(main())
"""


@pytest.mark.parametrize("ratio", ["0.0", "1.0"])
def test_request_line_is_the_same_written_directly_or_through_the_processor_chain(ratio: str) -> None:
    """stdout is a pipe, as in a container: the direct path writes to its file descriptor."""
    out = subprocess.run(
        [sys.executable, "-c", _SAME_LINE_BOTH_WAYS, ratio], capture_output=True, text=True, check=True
    ).stdout
    raw = out.splitlines()
    assert json.loads(raw[0])["event"] == "otel_setup configured", "configure() announces the wiring first"
    assert raw[1] == "printed before the first request", "a print() made earlier stays ahead of the request line"
    plain, with_context, full_chain = [line for line in log_lines(out) if line.get("logger") == "otel_setup.request"]
    varying = {"timestamp", "duration_ms", "trace_id", "span_id"}
    assert list(with_context) == list(full_chain), "same keys in the same order"
    assert {k: v for k, v in with_context.items() if k not in varying} == {
        k: v for k, v in full_chain.items() if k not in varying
    }
    assert with_context["http.route"] == "/gilde/{name}" and with_context["tenant"] == "t-1"
    assert with_context["password"] == full_chain["password"] != "hunter2"
    assert set(plain) == set(with_context) - {"tenant", "password"}
    for line in (plain, with_context, full_chain):
        assert len(line["trace_id"]) == 32 and len(line["span_id"]) == 16
        assert line["timestamp"].endswith("Z") and len(line["timestamp"]) == len("2026-11-27T03:27:54.047465Z")
        assert isinstance(line["duration_ms"], float)
    assert all(line.isascii() for line in raw)


_BATCHED_LINES = """
import asyncio, os, sys, time
import httpx
from fastapi import FastAPI, HTTPException
import otel_setup

app = FastAPI()

@app.get("/ok")
async def ok() -> str:
    return "ok"

@app.get("/down")
async def down() -> None:
    raise HTTPException(status_code=503)

@app.get("/child")
async def in_child() -> str:
    return "child"

otel_setup.configure(app, service_name="batch-app", request_log_buffer_ms=int(sys.argv[1]))

async def main() -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        await client.get("/ok")
        os.write(1, b"mark-a\\n")
        await client.get("/down")
        os.write(1, b"mark-b\\n")
        await client.get("/ok")
        time.sleep(1.4)
        os.write(1, b"mark-c\\n")
        await client.get("/ok")

async def child() -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        await client.get("/down")
        await client.get("/child")
    time.sleep(1.4)
    os.write(1, b"mark-child\\n")

asyncio.run(main())
if sys.argv[2] == "fork":
    if os.fork() == 0:
        asyncio.run(child())
        os._exit(0)
    os.wait()
"""


def _sequence(buffer_ms: str, fork: str = "") -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", _BATCHED_LINES, buffer_ms, fork], capture_output=True, text=True, check=True
    ).stdout
    sequence = []
    for raw in out.splitlines():
        if raw.startswith("mark-"):
            sequence.append(raw)
        elif raw.startswith("{") and json.loads(raw).get("logger") == "otel_setup.request":
            line = json.loads(raw)
            sequence.append("child" if line["http.route"] == "/child" else str(line["http.response.status_code"]))
    return sequence


def test_request_lines_on_a_pipe_are_batched_but_never_late_or_lost() -> None:
    """Waiting lines go out before a 5xx line, within the buffer time, and at exit.

    One second of buffer: the flusher's first tick comes well after the first marks, so the order
    asserted here does not depend on where a tick falls.
    """
    assert _sequence("1000") == ["mark-a", "200", "503", "mark-b", "200", "mark-c", "200"]
    assert _sequence("0") == ["200", "mark-a", "503", "mark-b", "200", "mark-c", "200"]


def test_a_forked_worker_flushes_its_own_request_lines() -> None:
    """gunicorn --preload: the child needs its own flusher, and never repeats the parent's waiting lines."""
    sequence = _sequence("1000", "fork")
    assert sequence[:6] == ["mark-a", "200", "503", "mark-b", "200", "mark-c"]
    # The parent's last line (its flusher) and the child's two (503 at once, /child by the child's flusher).
    assert sorted(sequence[6:-1]) == ["200", "503", "child"], sequence
    assert sequence[-1] == "mark-child", sequence


def test_slow_requests_are_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    app = make_app()
    otel_setup.configure(app, slow_request_ms=50)
    get_all(app, ["/items/1", "/slow"])
    lines = [line for line in log_lines(capsys.readouterr().out) if line.get("logger") == "otel_setup.request"]
    by_route = {line["http.route"]: line for line in lines}
    assert by_route["/items/{item_id}"]["level"] == "info" and by_route["/items/{item_id}"]["event"] == "request"
    slow = by_route["/slow"]
    assert slow["level"] == "warning" and slow["event"] == "slow request"
    assert slow["duration_ms"] >= 50


def test_request_log_can_be_switched_off_but_slow_requests_still_warn(capsys: pytest.CaptureFixture[str]) -> None:
    app = make_app()
    otel_setup.configure(app, request_log_level="off", slow_request_ms=50)
    get_all(app, ["/items/1", "/slow"])
    lines = [line for line in log_lines(capsys.readouterr().out) if line.get("logger") == "otel_setup.request"]
    assert [line["http.route"] for line in lines] == ["/slow"]


def test_5xx_request_lines_are_errors_and_configurable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from otel_setup._core.configure import reset

    app = make_app()
    otel_setup.configure(app)
    get_all(app, ["/items/1", "/boom", "/unavailable", "/missing"])
    lines = [line for line in log_lines(capsys.readouterr().out) if line.get("logger") == "otel_setup.request"]
    levels = {line["http.route"]: line["level"] for line in lines}
    assert levels == {"/items/{item_id}": "info", "/boom": "error", "/unavailable": "error", "/missing": "info"}
    reset()
    monkeypatch.setenv("OTEL_SETUP_REQUEST_LOG_ERROR_LEVEL", "warning")
    app = make_app()
    otel_setup.configure(app)
    get_all(app, ["/boom"])
    (line,) = [line for line in log_lines(capsys.readouterr().out) if line.get("logger") == "otel_setup.request"]
    assert line["level"] == "warning"


def test_server_records_lose_color_message_ansi_and_trailing_newlines(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    server_logger = logging.getLogger("uvicorn.error")
    level, disabled = server_logger.level, server_logger.disabled
    # uvicorn's --log-level as a server in another test left it: info, as uvicorn's default.
    server_logger.setLevel(logging.INFO)
    server_logger.disabled = False
    try:
        _server_records(capsys)
    finally:
        server_logger.setLevel(level)
        server_logger.disabled = disabled


def _server_records(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    otel_setup.configure()
    logging.getLogger("uvicorn.error").info(
        "Started server process [%d]\n", 42, extra={"color_message": "Started server process [\x1b[36m%d\x1b[0m]"}
    )
    logging.getLogger("uvicorn.error").info("Uvicorn running on \x1b[1mhttp://127.0.0.1:8000\x1b[0m")
    raw = capsys.readouterr().out
    assert "\x1b" not in raw and "\\u001b" not in raw
    lines = [line for line in log_lines(raw) if line.get("logger") == "uvicorn.error"]
    assert [line["event"] for line in lines] == [
        "Started server process [42]",
        "Uvicorn running on http://127.0.0.1:8000",
    ]
    assert all("color_message" not in line for line in lines)


def test_console_format(capsys: pytest.CaptureFixture[str]) -> None:
    app = make_app()
    otel_setup.configure(app, log_format="console")
    get_all(app, ["/items/3"])
    out = capsys.readouterr().out
    assert "request" in out and "/items/{item_id}" in out and not out.lstrip().startswith("{")


# --- headers ----------------------------------------------------------------


def test_timing_headers_match_the_recorded_duration() -> None:
    app = make_app()
    telemetry = otel_setup.configure(app)
    (response,) = get_all(app, ["/slow"])
    server_timing = response.headers["server-timing"]
    assert server_timing.startswith("app;dur=")
    duration_ms = float(server_timing.split("=", 1)[1])
    assert response.headers["x-response-time"] == f"{duration_ms}ms"
    assert 60.0 <= duration_ms < 1000.0
    from prometheus_client import generate_latest

    exposition = generate_latest(telemetry.prometheus_registry).decode()
    (line,) = [
        line
        for line in exposition.splitlines()
        if line.startswith("http_server_request_duration_seconds_sum") and 'http_route="/slow"' in line
    ]
    total = float(line.rsplit(" ", 1)[1])
    assert total is not None
    # The header is taken at the first byte and rounded to 0.1 ms; the metric at the end.
    assert duration_ms / 1000.0 - 0.0001 <= total < duration_ms / 1000.0 + 0.05


def test_timing_headers_exposed_to_cors_and_switchable() -> None:
    from fastapi.middleware.cors import CORSMiddleware

    app = make_app()
    app.add_middleware(CORSMiddleware, allow_origins=["https://app.example"])
    otel_setup.configure(app, response_time_header=False)
    (response,) = get_all(app, ["/items/1"], headers={"Origin": "https://app.example"})
    assert "x-response-time" not in response.headers
    assert "server-timing" in response.headers
    exposed = response.headers["access-control-expose-headers"]
    assert "Server-Timing" in exposed and "X-Response-Time" not in exposed


def test_otlp_log_records_carry_the_event_as_body_and_its_fields_as_typed_attributes(
    otlp_receiver: OtlpReceiver,
) -> None:
    """structlog's event dict becomes body + attributes, redacted by key; stdlib records keep their message."""
    telemetry = otel_setup.configure(
        otlp_endpoint=otlp_receiver.endpoint, logs_exporter="otlp", sampling_ratio=1.0, metrics_exporter="none"
    )
    log = structlog.get_logger("shop")
    with telemetry.tracer_provider.get_tracer("test").start_as_current_span("checkout") as span:
        log.info(
            "order placed", order_id=1234, customer={"email": "a@b.example", "password": "hunter2hunter2"}, tags=["x"]
        )
        logging.getLogger("stock").warning("stock low for %s", "ore", extra={"sku": 19721})
        try:
            raise ZeroDivisionError("division by zero")
        except ZeroDivisionError:
            log.exception("payment failed", api_key="sk-0123456789abcdef0123")
            log.error("retry failed", exc_info=True)

        class Unprintable:
            def __str__(self) -> str:
                raise RuntimeError("no text for you")

        # Objects become text redacted by key; one that cannot be rendered must not break the log call.
        log.info("object value", session_token=uuid.UUID(int=0x5EC2E7))
        log.info("unprintable value", when=Unprintable())
        log.info("after the unprintable one")
    telemetry.force_flush(5.0)
    assert otlp_receiver.wait_for(lambda r: len(r.log_records()) >= 6, timeout=5)
    records = {r.body: r for r in otlp_receiver.log_records()}
    trace_id = f"{span.get_span_context().trace_id:032x}"

    placed = records["order placed"]
    assert (placed.severity_text, placed.scope_name, placed.trace_id) == ("INFO", "shop", trace_id)
    assert placed.attributes["order_id"] == 1234
    assert placed.attributes["customer"] == {"email": "a@b.example", "password": "REDACTED"}
    assert list(placed.attributes["tags"]) == ["x"]
    # structlog's bookkeeping and what the record or the resource already says stay out.
    assert not {"event", "level", "logger", "timestamp", "trace_id", "_logger", "_name"} & set(placed.attributes)

    stock = records["stock low for ore"]
    assert (stock.severity_text, stock.attributes["sku"], stock.trace_id) == ("WARN", 19721, trace_id)

    failed = records["payment failed"]
    assert failed.severity_text == "ERROR" and failed.attributes["api_key"] == "REDACTED"
    assert failed.attributes["exception.type"] == "ZeroDivisionError"
    assert "sk-0123456789abcdef0123" not in str(failed.attributes)
    assert records["retry failed"].attributes["exception.type"] == "ZeroDivisionError"
    assert records["object value"].attributes["session_token"] == "REDACTED"
    assert "after the unprintable one" in records  # the unprintable record is dropped, the log call did not raise


@settings(max_examples=3000, deadline=None)
@given(
    elapsed=st.one_of(
        st.floats(min_value=0.0, max_value=10_000.0, allow_nan=False),
        st.integers(min_value=0, max_value=10**9).map(lambda microseconds: microseconds / 1e6),
    ),
    clock=st.integers(min_value=0, max_value=4_000_000_000 * 10**9),
    ids=st.tuples(st.integers(min_value=0, max_value=2**128 - 1), st.integers(min_value=1, max_value=2**64 - 1)),
)
def test_direct_request_line_renders_duration_timestamp_and_ids_as_the_processor_chain_does(
    elapsed: float, clock: int, ids: tuple[int, int]
) -> None:
    """The direct path formats numbers its own (cheaper) way; the text must be what structlog writes."""
    from otel_setup._integrations.log_lines import FastJsonLine, StdoutHandler

    stream = io.StringIO()
    line = FastJsonLine(StdoutHandler(stream), {"service.name": "100% svc"})
    trace_id, span_id = ids
    (raw,) = line._render([("info", "request", "GET", "/r", 200, None, elapsed, clock, trace_id, span_id)])
    rendered = raw.decode("ascii")
    parsed = json.loads(rendered)
    assert rendered.endswith("}\n") and parsed["service.name"] == "100% svc"
    text = rendered.split('"duration_ms": ', 1)[1].split(",", 1)[0]
    assert text == repr(round(elapsed * 1000.0, 3))
    second, nanoseconds = divmod(clock, 1_000_000_000)
    stamp = datetime.datetime.fromtimestamp(second, datetime.UTC).replace(microsecond=nanoseconds // 1000)
    # Always six digits of microseconds; structlog's isoformat() drops them when they are all zero.
    assert parsed["timestamp"] == stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if trace_id:
        assert (parsed["trace_id"], parsed["span_id"]) == (f"{trace_id:032x}", f"{span_id:016x}")
    else:
        assert "trace_id" not in parsed and "span_id" not in parsed
