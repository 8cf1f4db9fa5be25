"""No secret leaves the process, part two: the places real services put them.

Each test plants fresh random secrets where real code puts them (a password-only
Redis URL, bound parameters of a failed INSERT, a header dump in a log line, a
token of a well-known format in an exception, a key across a length limit, a
user counter's attributes, a hostile ``tracestate``) and searches what left the
process for the secret and for any 12-character piece of it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets as random_secrets
import string
import sys
import traceback
import uuid
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI, Request
from google.protobuf import json_format

import otel_setup
from otel_setup._security.redaction import REDACTED, Redactor
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.sentry_ingest import SentryIngest

PIECE = 12


def _token(n: int = 32, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(random_secrets.choice(alphabet) for _ in range(n))


def gw2_key() -> str:
    hexed = (uuid.uuid4().hex + uuid.uuid4().hex + uuid.uuid4().hex).upper()
    parts, at = [], 0
    for size in (8, 4, 4, 4, 20, 4, 4, 4, 12):
        parts.append(hexed[at : at + size])
        at += size
    return "-".join(parts)


def assert_no_piece(where: str, haystack: str, secret: str, size: int = PIECE) -> None:
    assert secret not in haystack, f"the secret leaked into {where}"
    for i in range(len(secret) - size + 1):
        piece = secret[i : i + size]
        assert piece not in haystack, f"{size} characters of the secret leaked into {where}: {piece!r}"


def otlp_text(receiver: OtlpReceiver) -> str:
    text = ""
    for signal in ("traces", "metrics", "logs"):
        for message in receiver.export_requests(signal):
            text += message.SerializeToString().decode("utf-8", "replace") + json_format.MessageToJson(message)
    return text


@pytest.fixture
def ingest() -> Iterator[SentryIngest]:
    server = SentryIngest()
    yield server
    from otel_setup._core.configure import reset

    reset()
    server.stop()


# --- 1. URL userinfo of every shape -----------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "redis://:{s}@cache.internal:6379/0",
        "rediss://:{s}@cache.internal:6380/1",
        "https://:{s}@api.example/v1",
        "https://{s}@github.com/org/repo.git",
        "postgresql://app:{s}@db.internal:5432/app",
        "amqp://guest:{s}@broker/vhost",
        "mongodb+srv://app:p@ss{s}@cluster0.example/db",
    ],
)
def test_url_userinfo_is_replaced_for_every_shape(url: str) -> None:
    secret = _token(24)
    planted = url.format(s=secret)
    redactor = Redactor()
    for where, out in (
        ("attribute", str(redactor.value("app.cache_url", planted))),
        ("text", redactor.text(f"connect to {planted} failed: timeout")),
        ("repr", redactor.text(f"Redis<ConnectionPool<Connection<{planted!r}>>>")),
    ):
        assert_no_piece(where, out, secret)
        assert "REDACTED:REDACTED@" in out, out


# --- 4. sensitive pairs in free text --------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "headers {{'host': 'api', 'x-api-key': '{s}', 'accept': '*/*'}}",
        'body {{"password": "{s}", "name": "bob"}}',
        "login attempt password={s} user=bob",
        "auth_token: {s} (expired)",
        "Settings(client_secret='{s}', region='eu')",
        'config private_token="{s}"',
        "Authorization: Basic {s}",
        "x-auth-token:\t{s}",
    ],
)
def test_sensitive_pairs_in_free_text_lose_their_value(template: str) -> None:
    secret = _token(30)
    out = Redactor().text(template.format(s=secret))
    assert_no_piece("text", out, secret)
    assert REDACTED in out
    if "user=bob" in template:
        assert "user=bob" in out, "a benign pair is kept"


# --- 5. well-known token formats --------------------------------------------------------------


def _token_formats() -> dict[str, str]:
    upper = string.ascii_uppercase + "234567"
    return {
        "aws": "AKIA" + _token(16, upper),
        "github_pat": "ghp_" + _token(36),
        "github_fine_grained": "github_pat_" + _token(82, string.ascii_letters + string.digits + "_"),
        "gitlab": "glpat-" + _token(20),
        "slack_bot": f"xoxb-{_token(12, string.digits)}-{_token(12, string.digits)}-{_token(24)}",
        "slack_webhook": f"https://hooks.slack.com/services/T{_token(10)}/B{_token(10)}/{_token(24)}",
        "google": "AIza" + _token(35),
        "stripe": "sk_live_" + _token(32),
        "stripe_restricted": "rk_live_" + _token(32),
        "npm": "npm_" + _token(36),
        "sendgrid": f"SG.{_token(22)}.{_token(43)}",
        "huggingface": "hf_" + _token(34, string.ascii_letters),
        "anthropic": "sk-ant-api03-" + _token(40),
        "pem": "-----BEGIN RSA PRIVATE KEY-----\n"
        + "\n".join(_token(64, string.ascii_letters + string.digits + "+/") for _ in range(4))
        + "\n-----END RSA PRIVATE KEY-----",
        "basic": "Basic " + __import__("base64").b64encode(f"app:{_token(20)}".encode()).decode(),
    }


def test_well_known_token_formats_are_caught_in_messages_and_logs() -> None:
    redactor = Redactor()
    for name, secret in _token_formats().items():
        for text in (
            f"upstream refused {secret} (401)",
            f"RuntimeError('{secret}')",
            f"config dump: {{'value': {secret!r}}}",
        ):
            out = redactor.text(text)
            body = secret.split("\n")[1] if name == "pem" else secret
            assert_no_piece(name, out, body)
            assert REDACTED in out, (name, out)
    ordinary = "GET /v2/items/19721 answered 200 in 12.5 ms: basic information, glossary, ghost"
    assert redactor.text(ordinary) == ordinary


# --- 6. redact first, then cut ----------------------------------------------------------------


def test_a_key_across_the_attribute_limit_leaves_no_piece(otlp_receiver: OtlpReceiver) -> None:
    key = gw2_key()
    telemetry = otel_setup.configure(
        otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=1.0, metrics_exporter="none", logs_exporter="otlp"
    )
    value = "x" * 2020 + key + "y" * 100  # the key runs across character 2,048
    tracer = telemetry.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        span.set_attribute("app.note", value)
        span.add_event("note", {"detail": value})
        logging.getLogger("app").warning("noted", extra={"note": value})
    telemetry.force_flush(5.0)
    assert otlp_receiver.wait_for(lambda r: bool(r.spans() and r.log_records()))
    (exported,) = otlp_receiver.spans()
    assert len(exported.attributes["app.note"]) == 2048
    assert exported.attributes["app.note"][2020:2028] == REDACTED
    assert len(exported.events[0]["attributes"]["detail"]) == 2048
    (record,) = [r for r in otlp_receiver.log_records() if r.body == "noted"]
    assert len(record.attributes["note"]) == 2048
    assert_no_piece("OTLP", otlp_text(otlp_receiver), key)


def test_a_key_beyond_the_sdk_limit_leaves_no_piece() -> None:
    """The SDK keeps 8x the limit; a key across *its* cut must not leave its first part either."""
    redactor = Redactor(max_length=2048)
    key = gw2_key()
    sdk_cut = ("y" * (redactor.sdk_length - 30) + key)[: redactor.sdk_length]
    out = str(redactor.value("app.note", sdk_cut, cut=True))
    assert len(out) == 2048
    assert_no_piece("attribute", out, key)
    tail_cut = "z" * 100 + key[:40]  # cut by the SDK far beyond the limit: the tail goes
    assert_no_piece("attribute", str(redactor.value("k", tail_cut.rjust(redactor.sdk_length, "w"), cut=True)), key)


def test_record_error_trims_the_stack_trace_after_redacting() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from otel_setup._hotpath.spans import record_error

    key = gw2_key()
    # The 2,000-character trim of the trace's tail lands inside the key.
    error = RuntimeError(key + "z" * 1950)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span("failing") as span:
        try:
            raise error
        except RuntimeError as raised:
            record_error(span, raised)
    stacktrace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    assert stacktrace.index(key) < len(stacktrace) - 2000 < stacktrace.index(key) + len(key), "the trim cuts the key"
    (event,) = exporter.get_finished_spans()[0].events
    assert event.attributes is not None
    assert_no_piece("exception.stacktrace", str(event.attributes["exception.stacktrace"]), key)
    assert_no_piece("exception.message", str(event.attributes["exception.message"]), key)


# --- 3. metric attribute keys -----------------------------------------------------------------


def test_user_counter_attributes_go_through_the_key_rule(otlp_receiver: OtlpReceiver) -> None:
    from prometheus_client import generate_latest

    first, second = _token(32), _token(32)
    telemetry = otel_setup.configure(
        otlp_endpoint=otlp_receiver.endpoint, metrics_exporter="prometheus,otlp", metric_export_interval=60_000
    )
    counter = telemetry.meter_provider.get_meter("app").create_counter("app.lookups")
    counter.add(1, {"api_key": first, "world": "eu"})
    counter.add(2, {"api_key": second, "world": "eu"})
    counter.add(5, {"world": "na", "note": f"redis://:{first}@cache:6379/0"})
    assert telemetry.prometheus_registry is not None
    text = generate_latest(telemetry.prometheus_registry).decode()
    telemetry.force_flush(5.0)
    assert otlp_receiver.wait_for(lambda r: any(p.name == "app.lookups" for p in r.metric_points()))
    for where, haystack in (("/metrics", text), ("OTLP", otlp_text(otlp_receiver))):
        assert_no_piece(where, haystack, first)
        assert_no_piece(where, haystack, second)
    samples = [line for line in text.splitlines() if line.startswith("app_lookups_total{")]
    assert any('api_key="REDACTED"' in line and 'world="eu"' in line and line.endswith(" 3.0") for line in samples)
    points = {
        (p.attributes.get("api_key"), p.attributes["world"]): p.value
        for p in otlp_receiver.metric_points()
        if p.name == "app.lookups"
    }
    assert points[(REDACTED, "eu")] == 3, "the two series merged into one"


# --- 2. bound parameters of a real IntegrityError ---------------------------------------------


@pytest.mark.slow
def test_bound_parameters_never_leave(
    otlp_receiver: OtlpReceiver,
    ingest: SentryIngest,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from sqlalchemy import create_engine, text

    secret = f"{_token(20).lower()}@players.example"
    engine = create_engine(postgres_url)
    table = f"i18_accounts_{uuid.uuid4().hex[:8]}"
    with engine.begin() as connection:
        connection.execute(text(f"CREATE TABLE {table} (id integer PRIMARY KEY, email text UNIQUE)"))
        connection.execute(text(f"INSERT INTO {table} VALUES (1, :email)"), {"email": secret})
    monkeypatch.setenv("SENTRY_DSN", ingest.dsn)
    app = FastAPI()
    log = logging.getLogger("app.accounts")

    @app.post("/accounts")
    async def create() -> None:
        from sqlalchemy.exc import IntegrityError

        try:
            with engine.begin() as connection:
                connection.execute(text(f"INSERT INTO {table} VALUES (:id, :email)"), {"id": 2, "email": secret})
        except IntegrityError:
            log.exception("account insert failed")
            raise

    try:
        telemetry = otel_setup.configure(
            app,
            otlp_endpoint=otlp_receiver.endpoint,
            sampling_ratio=1.0,
            logs_exporter="otlp",
            metrics_exporter="none",
        )

        async def run() -> int:
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                return (await client.post("/accounts")).status_code

        assert asyncio.run(run()) == 500
        telemetry.force_flush(5.0)
        assert ingest.wait_for(lambda i: len(i.events()) >= 1)
        assert otlp_receiver.wait_for(
            lambda r: any(e["name"] == "exception" for s in r.spans() for e in s.events) and bool(r.log_records())
        )
    finally:
        with engine.begin() as connection:
            connection.execute(text(f"DROP TABLE {table}"))
        engine.dispose()
    out, err = capfd.readouterr()
    sentry = b"".join(ingest.raw_bodies).decode("utf-8", "replace")
    for where, haystack in (("OTLP", otlp_text(otlp_receiver)), ("Sentry", sentry), ("stdout", out), ("stderr", err)):
        assert_no_piece(where, haystack, secret)
    messages = [
        str(e["attributes"]["exception.message"])
        for s in otlp_receiver.spans()
        for e in s.events
        if e["name"] == "exception"
    ]
    assert any(
        "UniqueViolation" in m
        and "DETAIL:  Key (email)=(REDACTED)" in m
        and "[parameters: REDACTED]" in m
        and "[SQL: INSERT" in m
        for m in messages
    ), messages
    assert "UniqueViolation" in sentry and "IntegrityError" in out


# --- 7. Sentry: one isolation scope per request, no argv, breadcrumbs redacted ----------------


@pytest.mark.slow
def test_sentry_events_carry_only_their_own_request(ingest: SentryIngest, monkeypatch: pytest.MonkeyPatch) -> None:
    import sentry_sdk

    argv_secret, header_secret = _token(24), _token(28)
    user_a, user_b = f"user-a-{_token(10)}", f"user-b-{_token(10)}"
    monkeypatch.setattr(sys, "argv", ["uvicorn", "app:app", "--ssl-keyfile-password", argv_secret])
    monkeypatch.setenv("SENTRY_DSN", ingest.dsn)
    app = FastAPI()
    log = logging.getLogger("app.requests")

    @app.get("/quiet/{user}")
    async def quiet(user: str) -> dict[str, bool]:
        sentry_sdk.set_user({"id": user})
        sentry_sdk.set_tag("guild", f"guild-of-{user}")
        log.info("handled quietly for %s", user)
        return {"ok": True}

    @app.get("/fail/{user}")
    async def fail(user: str, request: Request) -> None:
        sentry_sdk.set_user({"id": user})
        log.info("headers %s", dict(request.headers))
        raise RuntimeError(f"failed for {user}")

    otel_setup.configure(app, sampling_ratio=1.0, metrics_exporter="none")

    async def run() -> None:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            for _ in range(3):
                assert (await client.get(f"/quiet/{user_a}")).status_code == 200
            answer = await client.get(f"/fail/{user_b}", headers={"x-api-key": header_secret})
            assert answer.status_code == 500

    asyncio.run(run())
    assert ingest.wait_for(lambda i: len(i.events()) >= 1)
    (event,) = ingest.events()
    raw = b"".join(ingest.raw_bodies).decode("utf-8", "replace")
    assert user_a not in raw, "request A's user, tag or breadcrumb reached request B's event"
    assert event["user"]["id"] == user_b
    crumbs = [c.get("message", "") for c in event["breadcrumbs"]["values"]]
    assert any(c.startswith("headers {") and "'x-api-key': 'REDACTED'" in c for c in crumbs), crumbs
    assert_no_piece("Sentry", raw, header_secret)
    assert_no_piece("Sentry", raw, argv_secret)
    assert "sys.argv" not in event.get("extra", {})


# --- 8. hostile trace context -----------------------------------------------------------------


def test_hostile_trace_context_warnings_are_short_and_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    otel_setup.configure(app, sampling_ratio=1.0, metrics_exporter="none", trusted_traceparent="all")
    hostile = "a" * 200 + "=" + _token(3000)

    async def run() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            for i in range(20):
                headers = {
                    "traceparent": f"00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333{i % 10}-01",
                    "tracestate": f"{hostile},x{i}={'b' * 300}",
                }
                assert (await client.get("/ping", headers=headers)).status_code == 200
                bad_parent = {"traceparent": "00-" + _token(400) + "-01"}
                assert (await client.get("/ping", headers=bad_parent)).status_code == 200

    with caplog.at_level(logging.WARNING, logger="opentelemetry"):
        asyncio.run(run())
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("opentelemetry.trace")]
    assert lines, "the SDK still warns about the bad header"
    assert len(lines) <= 6, f"{len(lines)} warnings for 40 bad requests"
    assert all(len(line) <= 400 for line in lines), max(map(len, lines))
    assert all(hostile[200:260] not in line for line in lines)


def test_trace_context_filter_bounds_and_counts() -> None:
    from otel_setup._security.propagation import HostileTraceContextFilter

    now = [0.0]
    limiter = HostileTraceContextFilter(per_minute=2, clock=lambda: now[0])
    record = logging.LogRecord("opentelemetry.trace.span", logging.WARNING, "", 0, "Invalid (%s)", ("q" * 4000,), None)
    assert limiter.filter(record) and len(record.getMessage()) < 120
    assert limiter.filter(logging.LogRecord("opentelemetry.trace.span", 30, "", 0, "x", (), None))
    assert not limiter.filter(logging.LogRecord("opentelemetry.trace.span", 30, "", 0, "x", (), None))
    now[0] = 61.0
    assert limiter.filter(logging.LogRecord("opentelemetry.trace.span", 30, "", 0, "x", (), None))
    assert limiter.suppressed == 1
