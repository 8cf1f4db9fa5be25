"""No secret leaves the process; hostile requests cannot blow up the telemetry.

The canary test plants secrets in every input at once (query string, headers,
JSON body, exception messages and locals, database URL password, Redis key, AI
key, GW2 key as ``?access_token=``), runs requests through a real uvicorn
server backed by PostgreSQL, Redis and the loopback GW2 and AI stand-ins, and
searches everything that left: raw OTLP bodies (spans, metrics, logs), Sentry
envelopes, stdout, ``/metrics`` and ``/ready``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import secrets as random_secrets
import string
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import structlog
from fastapi import FastAPI, Request
from google.protobuf import json_format
from prometheus_client.parser import text_string_to_metric_families

import otel_setup
from examples.standins import ai_api, gw2_api
from otel_setup import OtelSetupConfigError
from otel_setup._core.settings import resolve
from otel_setup._security.redaction import (
    DEFAULT_VALUE_PATTERNS,
    REDACTED,
    SENSITIVE_KEY_PATTERN,
    Redactor,
    is_sensitive_key,
)
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.sentry_ingest import SentryIngest
from tests.test_gw2 import serve


@contextmanager
def serve_with_lifespan(app: Any) -> Iterator[str]:
    """Like ``serve`` but with the lifespan on, as in production (uvicorn's loggers are re-routed then)."""
    import socket
    import threading

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="info", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


README = (Path(__file__).resolve().parents[1] / "docs" / "redaction.md").read_text()


# --- the documented table is the code's table --------------------------------------------------


def _documented() -> str:
    start = README.index("<!-- redaction:start")
    return README[start : README.index("<!-- redaction:end -->")]


def test_default_patterns_match_docs() -> None:
    section = _documented()
    patterns = re.findall(r"^- `(\w+)`: `(.+)`$", section, re.MULTILINE)
    assert tuple(patterns) == DEFAULT_VALUE_PATTERNS
    (key_pattern,) = re.findall(r"```text\n(.+)\n```", section)
    assert key_pattern == SENSITIVE_KEY_PATTERN


# The semantic-conventions query parameters and the names this stack's APIs use: the one key rule
# covers them all, so there is no second list to keep in step.
QUERY_PARAMETERS = (
    "AWSAccessKeyId", "Signature", "sig", "X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token",
    "X-Goog-Signature", "access_token", "token", "id_token", "refresh_token", "api_key", "apikey", "key", "code",
    "client_secret", "secret", "password", "auth", "signature", "session",
    # issue 18: outside the old fixed list
    "auth_token", "access_key", "private_token", "api-key", "x-api-key", "client-secret", "AccessToken",
)  # fmt: skip
KEPT_KEYS = (
    "code.lineno", "code.function.name", "code.file.path", "http.response.status_code", "gen_ai.token.type",
    "cache_key", "idempotency_key", "db.query.text", "url.full", "url.query", "http.route", "lang", "page",
    "gen_ai.request.model", "error.type", "http.request.method",
)  # fmt: skip


def test_one_key_rule_for_every_kind_of_name() -> None:
    for name in QUERY_PARAMETERS:
        assert is_sensitive_key(name), name
        assert is_sensitive_key(name.upper()), name
    for name in KEPT_KEYS:
        assert not is_sensitive_key(name), name
    redactor = Redactor()
    query = "&".join(f"{name}=v{i}secretvalue" for i, name in enumerate(QUERY_PARAMETERS)) + "&lang=en"
    # inbound url.query, an outbound url.full, and the same URL inside free text
    for where in (
        redactor.query(query),
        str(redactor.value("url.full", f"https://api.example/v2/x?{query}")),
        redactor.text(f"GET https://api.example/v2/x?{query} failed"),
    ):
        assert "secretvalue" not in where, where
        assert where.count(REDACTED) == len(QUERY_PARAMETERS) and "lang=en" in where
    # header names and log fields: the same rule
    from otel_setup._security.scrubbing import captured_headers

    headers = [("x-auth-token", "abc123456789"), ("private-token", "def123456789"), ("x-request-id", "r1")]
    captured = captured_headers(headers, frozenset(n for n, _ in headers), "http.request.header", redactor)
    assert captured == {
        "http.request.header.x-auth-token": (REDACTED,),
        "http.request.header.private-token": (REDACTED,),
        "http.request.header.x-request-id": ("r1",),
    }
    assert redactor.value("log", {"auth_token": "abc", "access-key": "def", "count": 3, "user": "bob"}) == {
        "auth_token": REDACTED,
        "access-key": REDACTED,
        "count": 3,
        "user": "bob",
    }


# --- the canary -------------------------------------------------------------------------------


def _token(n: int = 32) -> str:
    return "".join(random.choice(string.ascii_letters + string.digits) for _ in range(n))


def _gw2_key() -> str:
    hexed = (uuid.uuid4().hex + uuid.uuid4().hex).upper()
    sizes, parts, at = (8, 4, 4, 4, 20, 4, 4, 4, 12), [], 0
    for size in sizes:
        parts.append(hexed[at : at + size] if at + size <= len(hexed) else uuid.uuid4().hex.upper()[:size])
        at += size
    return "-".join(parts)


class Canaries:
    """One fresh secret per input; none is ever written into this file's source."""

    def __init__(self) -> None:
        self.gw2_key = _gw2_key()
        self.jwt = f"eyJ{_token(20)}.eyJ{_token(24)}.{_token(30)}"
        self.ai_key = f"sk-proj-{_token(40)}"
        self.cookie = _token(40)
        self.x_api_key = _token(40)
        self.password = _token(24)  # JSON body field "password"
        self.db_password = _token(24)
        self.voucher = _token(24)  # an extra query parameter (OTEL_SETUP_REDACT_QUERY_PARAMETERS)
        self.acme = "acme_" + random_secrets.token_hex(12)  # an extra pattern (OTEL_SETUP_REDACT_PATTERNS)
        self.email = f"{_token(12).lower()}@players.example"  # an extra key (OTEL_SETUP_REDACT_KEYS)
        self.callback_secret = _token(28)  # removed by the redact= callback only
        self.metrics_token = _token(32)
        self.internal_token = _token(32)  # ?token= on an outbound call contrib traces
        # issue 18: the places real services put them
        self.redis_password = _token(26)  # redis://:PASSWORD@host, in a log field and an exception
        self.auth_token = _token(30)  # ?auth_token= inbound and outbound, outside the old fixed list
        self.private_token = _token(30)  # ?private_token= outbound
        self.header_key = _token(34)  # x-api-key in a stdlib header dump
        self.github = "ghp_" + _token(36)
        self.aws = "AKIA" + "".join(random.choice(string.ascii_uppercase + "234567") for _ in range(16))
        self.slack = f"xoxb-{random.randint(10**11, 10**12)}-{random.randint(10**11, 10**12)}-{_token(24)}"
        self.stripe = "sk_live_" + _token(30)
        self.sql_email = f"{_token(20).lower()}@players.example"  # a bound parameter of a failed INSERT
        self.metric_key = _token(32)  # a user counter's {"api_key": value}
        self.long_key = _gw2_key()  # across the 2,048-character attribute limit

    def all(self) -> dict[str, str]:
        return {name: value for name, value in vars(self).items()}


def _assert_clean(where: str, haystack: str, canaries: Canaries) -> None:
    for name, secret in canaries.all().items():
        if secret in haystack:
            at = haystack.index(secret)
            pytest.fail(f"{name} leaked into {where}: ...{haystack[max(0, at - 300) : at + 60]}...")
        for i in range(len(secret) - 11):
            piece = secret[i : i + 12]
            assert piece not in haystack, f"12 characters of {name} leaked into {where}: {piece!r}"


@pytest.fixture
def ingest() -> Iterator[SentryIngest]:
    server = SentryIngest()
    yield server
    from otel_setup._core.configure import reset

    reset()
    server.stop()


def otel_setup_meter() -> Any:
    from opentelemetry import metrics

    return metrics.get_meter_provider().get_meter("canary")


def _canary_app(c: Canaries, gw2_base: str, ai_base: str, engine: Any, cache: Any) -> FastAPI:
    app = FastAPI(title="canary")
    log = structlog.get_logger("canary")
    stdlib = logging.getLogger("canary.stdlib")

    @app.post("/api/profile")
    async def profile(request: Request) -> dict[str, bool]:
        from opentelemetry import trace
        from sqlalchemy import text

        body = await request.json()
        log.info("profile update", body=body, headers=dict(request.headers), email=c.email)
        stdlib.info("profile for %s from %s", request.url, request.headers.get("authorization"))
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        await cache.set(f"gw2:acct:{c.gw2_key}", "cached", ex=60)
        await cache.get(f"gw2:acct:{c.gw2_key}")
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.post(
                f"{ai_base}/v1/chat/completions",
                headers={"Authorization": f"Bearer {c.ai_key}"},
                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]},
            )
            answer.raise_for_status()
            await client.get(f"{ai_base}/v1/models", params={"token": c.internal_token, "voucher": c.voucher})
        span = trace.get_current_span()
        span.set_attribute("app.note", f"promo {c.acme} and {c.jwt}")
        span.set_attribute("app.customer", f"customer {c.callback_secret}")
        span.add_event("voucher used", {"detail": f"https://shop.example/redeem?voucher={c.voucher}"})
        return {"ok": True}

    @app.get("/api/gw2")
    async def gw2(access_token: str) -> dict[str, Any]:
        gw2_key = access_token  # a local: never sent anywhere
        headers = {"Authorization": f"Bearer {gw2_key}"}
        cfg = {"nested": {"token": c.jwt, "password": c.password}}
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.get(f"{gw2_base}/v2/account", params={"access_token": gw2_key, "lang": "en"})
            try:
                answer.raise_for_status()
            except httpx.HTTPStatusError:
                log.exception("gw2 refused", headers=headers, cfg=cfg)
                raise
        return answer.json()  # type: ignore[no-any-return]

    @app.get("/api/leaky")
    async def leaky(request: Request) -> dict[str, bool]:
        from opentelemetry import trace
        from sqlalchemy import text
        from sqlalchemy.exc import IntegrityError

        redis_url = f"redis://:{c.redis_password}@cache.internal:6379/0"
        log.info("cache connected", url=redis_url)
        stdlib.info("headers %s", dict(request.headers))
        stdlib.warning("upstream tokens %s %s %s %s", c.github, c.aws, c.slack, c.stripe)
        otel_setup_meter().create_counter("app.lookups").add(1, {"api_key": c.metric_key, "world": "eu"})
        trace.get_current_span().set_attribute("app.note", "x" * 2020 + c.long_key + "y" * 50)
        async with httpx.AsyncClient(timeout=10) as client:
            await client.get(
                f"{ai_base}/v1/models", params={"auth_token": c.auth_token, "private_token": c.private_token}
            )
        try:
            with engine.begin() as connection:
                connection.execute(text("INSERT INTO canary_accounts VALUES (2, :email)"), {"email": c.sql_email})
        except IntegrityError:
            stdlib.exception("signup failed")
        raise ConnectionError(f"cache down: {redis_url} ({c.github})")

    @app.get("/api/crash")
    async def crash() -> None:
        secret_local = c.db_password  # noqa: F841 - a local Sentry and structlog must not show
        raise RuntimeError(f"login failed for postgresql://app:{c.db_password}@db.internal/app with {c.ai_key}")

    return app


@pytest.mark.slow
def test_canary_no_secret_leaves_the_process(
    otlp_receiver: OtlpReceiver,
    ingest: SentryIngest,
    postgres_url: str,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    import redis.asyncio as aioredis
    from sqlalchemy import create_engine

    c = Canaries()
    monkeypatch.setenv("SENTRY_DSN", ingest.dsn)
    monkeypatch.setenv("OTEL_LOGS_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_SETUP_REDACT_PATTERNS", r"acme_[0-9a-f]{24}")
    monkeypatch.setenv("OTEL_SETUP_REDACT_QUERY_PARAMETERS", "voucher")
    monkeypatch.setenv("OTEL_SETUP_REDACT_KEYS", "email")
    monkeypatch.setenv("OTEL_SETUP_METRICS_TOKEN", c.metrics_token)
    monkeypatch.setenv("OTEL_SETUP_CAPTURE_HEADERS", "authorization,cookie,x-api-key,api-key,user-agent,content-type")
    # Contrib's own capture variables, wide open: they must open nothing up.
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST", ".*")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_RESPONSE", ".*")

    def redact(key: str, value: str) -> str:
        return value.replace(c.callback_secret, "[REDACTED:customer]")

    db_url = postgres_url.replace("postgres@", f"postgres:{c.db_password}@")
    assert c.db_password in db_url
    engine = create_engine(db_url)
    from sqlalchemy import text

    with engine.begin() as connection:
        connection.execute(text("DROP TABLE IF EXISTS canary_accounts"))
        connection.execute(text("CREATE TABLE canary_accounts (id integer PRIMARY KEY, email text UNIQUE)"))
        connection.execute(text("INSERT INTO canary_accounts VALUES (1, :email)"), {"email": c.sql_email})
    cache = aioredis.Redis.from_url(redis_url)
    gw2_standin = gw2_api.create_app()
    ai_standin = ai_api.create_app()
    with serve(gw2_standin) as gw2_base, serve(ai_standin) as ai_base:
        monkeypatch.setenv("GW2_API_BASE", gw2_base)
        app = _canary_app(c, gw2_base, ai_base, engine, cache)
        telemetry = otel_setup.configure(
            app, otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=1.0, metric_export_interval=500, redact=redact
        )
        telemetry.add_readiness_check("database", otel_setup.health.sqlalchemy_check(engine))
        with serve_with_lifespan(app) as base:
            # No keep-alive: uvicorn closes a connection whose request raised.
            with httpx.Client(base_url=base, timeout=20, limits=httpx.Limits(max_keepalive_connections=0)) as client:
                headers = {
                    "Authorization": f"Bearer {c.jwt}",
                    "Cookie": f"session={c.cookie}",
                    "X-Api-Key": c.x_api_key,
                    "User-Agent": f"canary/1.0 ({c.x_api_key[:8]})",
                }
                body = {"password": c.password, "note": f"my key is {c.gw2_key}", "nested": {"token": c.jwt}}
                answer = client.post(
                    "/api/profile", params={"access_token": c.gw2_key, "q": "hello"}, headers=headers, json=body
                )
                assert answer.status_code == 200, answer.text
                answer = client.get("/api/gw2", params={"access_token": c.gw2_key}, headers=headers)
                assert answer.status_code == 500
                assert client.get("/api/crash", headers=headers).status_code == 500
                leaky = client.get(
                    "/api/leaky", params={"auth_token": c.auth_token}, headers={"X-Api-Key": c.header_key}
                )
                assert leaky.status_code == 500
                denied = client.get("/metrics")
                assert denied.status_code == 401
                metrics_text = client.get("/metrics", headers={"Authorization": f"Bearer {c.metrics_token}"}).text
                assert "http_server_request_duration_seconds" in metrics_text
                ready_text = client.get("/ready").text
            time.sleep(0.3)
            telemetry.force_flush(10.0)
        with engine.begin() as connection:
            connection.execute(text("DROP TABLE canary_accounts"))
        engine.dispose()
    assert ingest.wait_for(lambda i: len(i.events()) >= 3)
    assert otlp_receiver.wait_for(lambda r: len(r.log_records()) > 0 and len(r.spans()) > 0)
    telemetry.shutdown(5.0)
    out, err = capfd.readouterr()

    otlp = ""
    for signal in ("traces", "metrics", "logs"):
        for message in otlp_receiver.export_requests(signal):
            otlp += message.SerializeToString().decode("utf-8", "replace")
            otlp += json_format.MessageToJson(message)
    sentry = b"".join(ingest.raw_bodies).decode("utf-8", "replace")
    for where, haystack in (
        ("OTLP", otlp),
        ("Sentry", sentry),
        ("stdout", out),
        ("stderr", err),
        ("/metrics", metrics_text),
        ("/ready", ready_text),
    ):
        _assert_clean(where, haystack, c)

    # Every redaction left a visible marker where the secret was.
    spans = otlp_receiver.spans()
    server = {s.name: s for s in spans if s.kind == "SERVER" and s.scope_name == "otel_setup.fastapi"}
    profile = server["POST /api/profile"]
    assert profile.attributes["url.query"] == "access_token=REDACTED&q=hello"
    assert profile.attributes["http.request.header.authorization"] == ["REDACTED"]
    assert profile.attributes["http.request.header.cookie"] == ["REDACTED"]
    assert profile.attributes["http.request.header.x-api-key"] == ["REDACTED"]
    assert profile.attributes["http.request.header.content-type"] == ["application/json"]
    assert "REDACTED" in profile.attributes["app.note"]
    assert profile.attributes["app.customer"] == "customer [REDACTED:customer]"
    assert "voucher=REDACTED" in profile.events[0]["attributes"]["detail"]
    assert server["GET /api/leaky"].attributes["url.query"] == "auth_token=REDACTED"
    assert any("private_token=REDACTED" in str(s.attributes.get("url.full", "")) for s in spans if s.kind == "CLIENT")
    assert 'api_key="REDACTED"' in metrics_text
    assert "'x-api-key': 'REDACTED'" in out
    gw2_span = server["GET /api/gw2"]
    (exception,) = [e for e in gw2_span.events if e["name"] == "exception"]
    assert "access_token=REDACTED" in exception["attributes"]["exception.message"]
    client_spans = [s for s in spans if s.kind == "CLIENT"]
    assert any("token=REDACTED" in str(s.attributes.get("url.full", "")) for s in client_spans)
    assert any("voucher=REDACTED" in str(s.attributes.get("url.full", "")) for s in client_spans)
    assert any(s.attributes.get("http.request.header.authorization") == ["REDACTED"] for s in client_spans), (
        "contrib's wide-open capture is sanitised"
    )
    assert "REDACTED" in otlp and "REDACTED" in sentry and "REDACTED" in out
    assert any("REDACTED" in str(r.body) or "REDACTED" in str(r.attributes) for r in otlp_receiver.log_records())
    assert '"email": "REDACTED"' in out
    events = ingest.events()
    crash = next(e for e in events if "exception" in e and "login failed" in str(e["exception"]))
    assert "REDACTED:REDACTED@" in crash["exception"]["values"][-1]["value"]
    for value in crash["exception"]["values"]:
        for frame in value.get("stacktrace", {}).get("frames", []):
            assert "vars" not in frame


# --- hostile input ----------------------------------------------------------------------------


def _flood_app() -> FastAPI:
    app = FastAPI(title="flood")

    @app.get("/items/{item_id}")
    async def get_item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    @app.post("/items")
    async def create_item() -> dict[str, bool]:
        return {"created": True}

    return app


def test_cardinality_flood_adds_no_series(monkeypatch: pytest.MonkeyPatch) -> None:
    """5,000 hostile requests: the series are exactly the (method, route, status) combinations sent."""
    rng = random.Random(1234)
    app = _flood_app()
    telemetry = otel_setup.configure(app, sampling_ratio=0.0, request_log_level="off")
    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "FOOBAR", "XYZZY", "get"]
    plan: list[tuple[str, str]] = []
    expected: set[tuple[str, str, str]] = set()
    known = {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "QUERY"}
    for _ in range(5000):
        method = rng.choice(methods)
        kind = rng.random()
        label = method if method in known else "_OTHER"
        if kind < 0.3:
            path = f"/items/{rng.randint(1, 10**9)}"
            if method == "GET":  # FastAPI routes do not answer HEAD
                expected.add((label, "/items/{item_id}", "200"))
            else:
                expected.add((label, "/items/{item_id}", "405"))
        elif kind < 0.45:
            path = "/items"
            expected.add((label, "/items", "200" if method == "POST" else "405"))
        else:
            path = "/" + "/".join(_random_segment(rng) for _ in range(rng.randint(1, 4)))
            expected.add((label, "", "404"))
        plan.append((method, path))

    async def run() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            for method, path in plan:
                host = f"{_random_segment(rng)}.{_random_segment(rng)}.example"
                agent = "Mozilla/5.0 " + "".join(rng.choice(string.ascii_letters) for _ in range(1024))
                await client.request(method, path, headers={"host": host, "user-agent": agent})

    asyncio.run(run())
    from prometheus_client import generate_latest

    text = generate_latest(telemetry.prometheus_registry).decode()
    assert len(text) < 200_000
    seen: set[tuple[str, str, str]] = set()
    allowed_labels = {
        "http_request_method",
        "http_route",
        "http_response_status_code",
        "url_scheme",
        "network_protocol_version",
        "error_type",
        "otel_scope_name",
        "otel_scope_version",
        "otel_scope_schema_url",
    }
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert "otel_metric_overflow" not in sample.labels
            if family.name.startswith("http_server"):
                assert set(sample.labels) <= allowed_labels | {"le"}, sample.labels
            if sample.name == "http_server_request_duration_seconds_count":
                labels = sample.labels
                seen.add(
                    (labels["http_request_method"], labels.get("http_route", ""), labels["http_response_status_code"])
                )
    assert seen == expected
    assert "example" not in text and "Mozilla" not in text


def _random_segment(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(rng.randint(3, 12)))


def test_attribute_values_are_capped_on_a_one_megabyte_user_agent(otlp_receiver: OtlpReceiver) -> None:
    app = _flood_app()
    telemetry = otel_setup.configure(app, otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=1.0)
    agent = "A" * (1024 * 1024)

    async def run() -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return (await client.get("/items/1", headers={"user-agent": agent})).status_code

    assert asyncio.run(run()) == 200
    telemetry.force_flush(5.0)
    assert otlp_receiver.wait_for(lambda r: any(s.kind == "SERVER" for s in r.spans()))
    (span,) = [s for s in otlp_receiver.spans() if s.kind == "SERVER"]
    assert len(span.attributes["user_agent.original"]) == 2048
    for value in span.attributes.values():
        assert len(str(value)) <= 2048
    assert all(request.body_size < 4 * 1024 * 1024 for request in otlp_receiver.requests("traces"))


# --- outbound propagation ---------------------------------------------------------------------


class _Seen:
    headers: ClassVar[list[dict[str, str]]] = []


def _recording_app() -> FastAPI:
    app = FastAPI()

    @app.api_route("/{path:path}", methods=["GET", "POST"])
    async def anything(request: Request, path: str) -> dict[str, Any]:
        _Seen.headers.append({k.lower(): v for k, v in request.headers.items()})
        return {"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}], "usage": {}}

    return app


def test_trace_context_goes_only_to_allowed_hosts_and_inbound_baggage_never(
    otlp_receiver: OtlpReceiver,
) -> None:
    """Trusted caller with baggage; outbound calls to an internal host, a third party and the AI API."""
    from otel_setup._security.propagation import HostPolicy, is_internal_host

    assert not any(is_internal_host(h) for h in ("api.guildwars2.com", "api.openai.com", "8.8.8.8"))
    assert all(is_internal_host(h) for h in ("127.0.0.1", "localhost", "users", "users.prod.svc", "10.1.2.3"))
    assert HostPolicy(["*.corp.example"]).allows("a.corp.example")
    assert not HostPolicy(["*.corp.example"]).allows("api.guildwars2.com")
    assert not HostPolicy(["none"]).allows("127.0.0.1")

    _Seen.headers = []
    app = FastAPI()
    with serve(_recording_app()) as upstream:
        port = upstream.rsplit(":", 1)[1]
        third_party = f"http://localhost:{port}"  # the same server, by a name the policy below does not allow

        @app.get("/fan-out")
        async def fan_out() -> dict[str, bool]:
            async with httpx.AsyncClient() as client:
                await client.get(f"{upstream}/internal")
                await client.get(f"{third_party}/third-party")
                await client.post(f"{upstream}/v1/chat/completions", json={"model": "m", "messages": []})
            with httpx.Client() as sync_client:
                sync_client.get(f"{third_party}/third-party-sync")
            return {"ok": True}

        otel_setup.configure(
            app,
            otlp_endpoint=otlp_receiver.endpoint,
            trusted_traceparent="all",
            propagate_to="127.0.0.1",
            sampling_ratio=1.0,
        )
        inbound = {
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "baggage": "user.email=someone%40example.com,secret=hunter2",
        }
        with serve(app) as base:
            # urllib, not httpx: the test's own call must not get trace context injected.
            import urllib.request

            with urllib.request.urlopen(urllib.request.Request(f"{base}/fan-out", headers=inbound)) as answer:
                assert answer.status == 200
    assert len(_Seen.headers) == 4
    internal, third, ai, third_sync = _Seen.headers
    assert internal["traceparent"].split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
    assert "traceparent" not in third and "traceparent" not in third_sync
    assert "traceparent" not in ai, "the AI API never gets trace context"
    for headers in _Seen.headers:
        assert "baggage" not in headers and "sentry-trace" not in headers


def test_trace_context_never_follows_a_redirect_or_a_second_instrumentation_to_a_refused_host() -> None:
    """httpx copies the previous hop's headers into a redirect; contrib's instrumentor may run too."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from threading import Thread

    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from otel_setup._core.configure import reset

    seen: list[tuple[str, str | None]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append((f"{self.headers['host'].split(':')[0]}{self.path}", self.headers.get("traceparent")))
            self.send_response(302 if self.path == "/hop" else 200)
            if self.path == "/hop":
                self.send_header("location", f"http://localhost:{port}/landed")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port = server.server_address[1]
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        telemetry = otel_setup.configure(propagate_to="127.0.0.1", sampling_ratio=1.0, metrics_exporter="none")
        exporter = InMemorySpanExporter()
        telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))  # type: ignore[attr-defined]
        contrib = HTTPXClientInstrumentor()
        contrib.instrument(tracer_provider=telemetry.tracer_provider)  # by habit: must change nothing
        tracer = telemetry.tracer_provider.get_tracer("test")
        with tracer.start_as_current_span("request"), httpx.Client(follow_redirects=True) as client:
            assert client.get(f"http://127.0.0.1:{port}/hop").status_code == 200
        assert seen[0][0] == "127.0.0.1/hop" and seen[0][1]
        assert seen[1] == ("localhost/landed", None), "the redirect carried the first hop's traceparent"
        assert [s.name for s in exporter.get_finished_spans() if s.kind.name == "CLIENT"] == ["GET", "GET"]
        contrib.uninstrument()  # by habit too: the package's client spans stay
        with tracer.start_as_current_span("request"), httpx.Client() as client:
            client.get(f"http://127.0.0.1:{port}/again")
        assert seen[-1][0] == "127.0.0.1/again" and seen[-1][1]
        client_spans = [s for s in exporter.get_finished_spans() if s.kind.name == "CLIENT"]
        assert len(client_spans) == 3 and client_spans[-1].instrumentation_scope.name.startswith("otel_setup")
        reset()
        assert not contrib.is_instrumented_by_opentelemetry

        # Contrib instrumented before configure(): the package leaves httpx to it, the policy still holds.
        seen.clear()
        contrib.instrument()
        try:
            telemetry = otel_setup.configure(propagate_to="127.0.0.1", sampling_ratio=1.0, metrics_exporter="none")
            assert not telemetry.instrumentations["httpx"].active
            tracer = telemetry.tracer_provider.get_tracer("test")
            with tracer.start_as_current_span("request"), httpx.Client() as client:
                client.get(f"http://127.0.0.1:{port}/allowed")
                client.get(f"http://localhost:{port}/refused")
            assert seen[0][0] == "127.0.0.1/allowed" and seen[0][1]
            assert seen[1] == ("localhost/refused", None)
        finally:
            reset()
            contrib.uninstrument()
    finally:
        server.shutdown()
        server.server_close()


# --- /metrics behind a token ------------------------------------------------------------------


def test_metrics_token_on_the_app_and_on_the_separate_port() -> None:
    import socket

    token = "t0k3n-" + _token(24)
    app = _flood_app()
    otel_setup.configure(app, metrics_token=token)

    async def get(headers: dict[str, str]) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.get("/metrics", headers=headers)

    assert asyncio.run(get({})).status_code == 401
    assert asyncio.run(get({"Authorization": "Bearer wrong"})).status_code == 401
    assert asyncio.run(get({"Authorization": f"Basic {token}"})).status_code == 401
    assert asyncio.run(get({"Authorization": f"Bearer {token}"})).status_code == 200
    from otel_setup._core.configure import reset

    reset()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    otel_setup.configure(_flood_app(), metrics_token=token, metrics_port=port)
    url = f"http://127.0.0.1:{port}/metrics"
    denied = httpx.get(url)
    assert denied.status_code == 401 and denied.headers["www-authenticate"].startswith("Bearer")
    assert token not in denied.text
    assert httpx.get(url, headers={"Authorization": f"Bearer {token}"}).status_code == 200


# --- settings ---------------------------------------------------------------------------------


def test_security_settings_parse_and_fail_clearly() -> None:
    settings = resolve({}, {"OTEL_SETUP_REDACT_PATTERNS": r"acme_[0-9a-f]{24,32},(x|y){2,3}z"})
    assert settings.redact_patterns == (r"acme_[0-9a-f]{24,32}", r"(x|y){2,3}z")
    with pytest.raises(OtelSetupConfigError, match="OTEL_SETUP_REDACT_PATTERNS"):
        resolve({}, {"OTEL_SETUP_REDACT_PATTERNS": "a*"})  # matches the empty string
    with pytest.raises(OtelSetupConfigError, match="OTEL_SETUP_REDACT_PATTERNS"):
        resolve({}, {"OTEL_SETUP_REDACT_PATTERNS": "(unclosed"})
    with pytest.raises(OtelSetupConfigError, match="OTEL_SETUP_CAPTURE_HEADERS"):
        resolve({}, {"OTEL_SETUP_CAPTURE_HEADERS": ".*"})
    with pytest.raises(OtelSetupConfigError, match="OTEL_SETUP_PROPAGATE_TO"):
        resolve({}, {"OTEL_SETUP_PROPAGATE_TO": "https://x/y"})
    with pytest.raises(OtelSetupConfigError) as short:
        resolve({}, {"OTEL_SETUP_METRICS_TOKEN": "short-secret"})
    assert "short-secret" not in str(short.value)
    assert resolve({}, {}).propagate_to == ("internal",)
    assert resolve({}, {}).capture_headers == {"server": frozenset(), "client": frozenset()}
    with pytest.raises(OtelSetupConfigError, match="redact"):
        otel_setup.configure(redact="not callable")  # type: ignore[typeddict-item]


def test_a_failing_redact_callback_fails_closed() -> None:
    from otel_setup._security.redaction import Redactor

    def broken(key: str, value: str) -> str:
        raise ValueError("bug")

    redactor = Redactor(callback=broken)
    assert redactor.text("nothing secret here") == REDACTED
    assert redactor.value("count", 3) == 3
