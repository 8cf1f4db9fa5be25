"""GW2 calls: endpoint-template spans and metrics against the loopback GW2 stand-in.

The stand-in runs on a 127.0.0.1 uvicorn port (httpx's ASGI transport bypasses the
transports the instrumentation wraps), and the service side is a plain ``httpx.AsyncClient``
sending the key as ``Authorization: Bearer``, as the example service does.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import uvicorn
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import otel_setup
from examples.standins import gw2_api
from examples.standins.gw2_api import DEMO_GUILD_ID, DEMO_KEY, LIMITED_KEY
from otel_setup._integrations.gw2 import endpoint_template, error_reason
from tests.support.otlp_receiver import OtlpReceiver

UNKNOWN_KEY = "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFFFFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF"
SECRETS = (DEMO_KEY, LIMITED_KEY, UNKNOWN_KEY, "Aurora", "Lightbringer", "Grimtooth", "Flaky", DEMO_GUILD_ID)


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve an ASGI app on a fresh 127.0.0.1 port in a thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "stand-in did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(5)
        sock.close()


def points(receiver: OtlpReceiver, name: str) -> list[Any]:
    return [p for p in receiver.metric_points() if p.name == name]


def assert_no_identifiers(receiver: OtlpReceiver) -> None:
    """No key, character name or guild id in any span name, span attribute or metric label.

    The in-process stand-in is a FastAPI app and traces itself (scope ``fastapi``): those
    are the upstream's own server spans, not the service's telemetry.
    """
    spans = [s for s in receiver.spans() if s.scope_name != "fastapi"]
    seen = repr([(s.name, s.attributes, [e["attributes"] for e in s.events]) for s in spans])
    seen += repr([p.attributes for p in receiver.metric_points() if p.scope_name != "fastapi"])
    for secret in SECRETS:
        assert secret not in seen, f"{secret!r} leaked into telemetry"


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/v2/account", "/v2/account"),
        ("/v2/account/bank", "/v2/account/bank"),
        ("/v2/characters", "/v2/characters"),
        ("/v2/characters/Aurora%20Lightbringer", "/v2/characters/{name}"),
        ("/v2/characters/grimtooth", "/v2/characters/{name}"),  # a lowercase name is still a name
        ("/v2/characters/Aurora%2FLightbringer/equipment", "/v2/characters/{name}/equipment"),
        (f"/v2/guild/{DEMO_GUILD_ID}/log", "/v2/guild/{id}/log"),
        ("/v2/guild/search", "/v2/guild/search"),
        ("/v2/items/19721", "/v2/items/{id}"),
        ("/v2/items", "/v2/items"),
        ("/v2/commerce/prices/19721", "/v2/commerce/prices/{id}"),
        ("/v2/wvw/matches/1-1", "/v2/wvw/matches/{id}"),
        ("/v2/not-an-endpoint/x", "/v2/_OTHER"),
        ("/v1/build.json", "_OTHER"),
        ("/", "_OTHER"),
        ("/v2/account/a/b/c/d/e/f", "/v2/account/a/b/c/d/..."),
    ],
)
def test_endpoint_templates(path: str, template: str) -> None:
    assert endpoint_template(path) == template


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"text": "invalid key"}', "invalid_key"),
        (b'{"text": "Invalid key"}', "invalid_key"),
        (b'{"text": "endpoint requires authentication"}', "requires_authentication"),
        (b'{"text": "requires scope characters"}', "requires_scope"),
        (b'{"text": "access restricted to guild leaders"}', "guild_leader_required"),
        (b'{"text": "membership required"}', "membership_required"),
        (b"<html>not json</html>", "other"),
        (b'{"text": 42}', "other"),
    ],
)
def test_403_reasons(body: bytes, reason: str) -> None:
    assert error_reason(403, body) == reason
    assert error_reason(429, body) is None


async def _get(client: httpx.AsyncClient, path: str, key: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return (await client.get(path, headers=headers)).status_code


def test_gw2_calls_get_template_spans_metrics_and_status_counts(otlp_receiver: OtlpReceiver) -> None:
    standin = gw2_api.create_app(burst=9, refill_per_second=0.001)
    with serve(standin) as base:
        telemetry = otel_setup.configure(otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=1.0, gw2_api_base=base)
        assert telemetry.instrumentations["gw2"] == "active"

        async def calls() -> list[int]:
            async with httpx.AsyncClient(base_url=base) as client:
                return [
                    await _get(client, "/v2/account", DEMO_KEY),
                    await _get(client, f"/v2/characters/{quote('Aurora Lightbringer')}", DEMO_KEY),
                    await _get(client, "/v2/characters/Grimtooth", DEMO_KEY),
                    await _get(client, "/v2/characters/Flaky", DEMO_KEY),
                    await _get(client, f"/v2/guild/{DEMO_GUILD_ID}/log", DEMO_KEY),
                    await _get(client, "/v2/account", UNKNOWN_KEY),
                    await _get(client, "/v2/characters/Grimtooth", LIMITED_KEY),
                    await _get(client, "/v2/account"),
                    await _get(client, "/v2/items?ids=19721"),
                    await _get(client, "/v2/account", DEMO_KEY),  # the 10th call: the bucket of 9 is empty
                ]

        statuses = asyncio.run(calls())
        assert statuses == [200, 200, 200, 503, 200, 403, 403, 403, 200, 429]
        telemetry.force_flush(5.0)
        assert otlp_receiver.wait_for(lambda r: len(r.spans()) >= 10 and len(points(r, "gw2.api.requests")) >= 8)

    spans = [s for s in otlp_receiver.spans() if s.kind == "CLIENT"]
    assert len(spans) == 10, "one span per call: contrib is suppressed for GW2"
    assert [s.name for s in spans] == [
        "GET /v2/account",
        "GET /v2/characters/{name}",
        "GET /v2/characters/{name}",
        "GET /v2/characters/{name}",
        "GET /v2/guild/{id}/log",
        "GET /v2/account",
        "GET /v2/characters/{name}",
        "GET /v2/account",
        "GET /v2/items",
        "GET /v2/account",
    ]
    first = spans[0]
    port = int(base.rsplit(":", 1)[1])
    assert first.attributes == {
        "http.request.method": "GET",
        "server.address": "127.0.0.1",
        "server.port": port,
        "url.template": "/v2/account",
        "url.scheme": "http",
        "url.full": f"{base}/v2/account",
        "http.response.status_code": 200,
        "network.protocol.version": "1.1",
    }
    assert spans[1].attributes["url.full"] == f"{base}/v2/characters/{{name}}"
    assert spans[8].attributes["url.full"] == f"{base}/v2/items?ids=19721"
    flaky = spans[3]
    assert flaky.status_code == "ERROR" and flaky.attributes["error.type"] == "503"
    assert spans[5].attributes["gw2.error.reason"] == "invalid_key"
    assert spans[6].attributes["gw2.error.reason"] == "requires_scope"
    assert spans[7].attributes["gw2.error.reason"] == "requires_authentication"
    assert spans[9].attributes["http.response.status_code"] == 429

    counts = {
        (
            p.attributes["url.template"],
            p.attributes.get("http.response.status_code"),
            p.attributes.get("gw2.error.reason"),
        ): p.value
        for p in points(otlp_receiver, "gw2.api.requests")
    }
    assert counts == {
        ("/v2/account", 200, None): 1,
        ("/v2/characters/{name}", 200, None): 2,
        ("/v2/characters/{name}", 503, None): 1,
        ("/v2/guild/{id}/log", 200, None): 1,
        ("/v2/account", 403, "invalid_key"): 1,
        ("/v2/characters/{name}", 403, "requires_scope"): 1,
        ("/v2/account", 403, "requires_authentication"): 1,
        ("/v2/items", 200, None): 1,
        ("/v2/account", 429, None): 1,
    }
    rate_limited = next(
        p for p in points(otlp_receiver, "gw2.api.requests") if p.attributes.get("http.response.status_code") == 429
    )
    assert rate_limited.attributes == {
        "url.template": "/v2/account",
        "http.request.method": "GET",
        "http.response.status_code": 429,
        "error.type": "429",
    }

    durations = {
        (p.attributes.get("url.template"), p.attributes["http.response.status_code"]): p.count
        for p in points(otlp_receiver, "http.client.request.duration")
    }
    assert durations == {
        ("/v2/account", 200): 1,
        ("/v2/characters/{name}", 200): 2,
        ("/v2/characters/{name}", 503): 1,
        ("/v2/guild/{id}/log", 200): 1,
        ("/v2/account", 403): 2,
        ("/v2/characters/{name}", 403): 1,
        ("/v2/items", 200): 1,
        ("/v2/account", 429): 1,
    }
    assert_no_identifiers(otlp_receiver)


def test_gw2_timeout_is_counted_without_a_status(otlp_receiver: OtlpReceiver) -> None:
    standin = gw2_api.create_app(slow_seconds=2.0)
    with serve(standin) as base:
        telemetry = otel_setup.configure(otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=1.0, gw2_api_base=base)
        with httpx.Client(base_url=base, timeout=0.2) as client, pytest.raises(httpx.ReadTimeout):
            client.get("/v2/characters/Slow", headers={"Authorization": f"Bearer {DEMO_KEY}"})
        telemetry.force_flush(5.0)
        assert otlp_receiver.wait_for(lambda r: bool(points(r, "gw2.api.requests")))
    (span,) = [s for s in otlp_receiver.spans() if s.kind == "CLIENT"]
    assert span.name == "GET /v2/characters/{name}"
    assert span.status_code == "ERROR"
    assert span.attributes["error.type"] == "ReadTimeout"
    (point,) = points(otlp_receiver, "gw2.api.requests")
    assert point.value == 1
    assert point.attributes == {
        "url.template": "/v2/characters/{name}",
        "http.request.method": "GET",
        "error.type": "ReadTimeout",
    }
    assert_no_identifiers(otlp_receiver)


def test_other_hosts_keep_contrib_spans_and_prometheus_has_one_duration_family(otlp_receiver: OtlpReceiver) -> None:
    """GW2 points and contrib's points share one instrument, so /metrics stays valid text."""
    gw2 = gw2_api.create_app()
    other = gw2_api.create_app()  # same app, but not the configured GW2 base: contrib handles it
    with serve(gw2) as gw2_base, serve(other) as other_base:
        telemetry = otel_setup.configure(
            otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=1.0, gw2_api_base=gw2_base
        )
        with httpx.Client() as client:
            assert client.get(f"{gw2_base}/v2/items/19721").status_code == 200
            assert client.get(f"{other_base}/v2/items/19721").status_code == 200
        telemetry.force_flush(5.0)
        assert otlp_receiver.wait_for(lambda r: len([s for s in r.spans() if s.kind == "CLIENT"]) == 2)
        # force_flush() queues a batch in the Prometheus reader that the next scrape also
        # renders (every family twice); the scrape after it is what Prometheus normally sees.
        generate_latest(telemetry.prometheus_registry)
        text = generate_latest(telemetry.prometheus_registry).decode()
    names = sorted(s.name for s in otlp_receiver.spans() if s.kind == "CLIENT")
    assert names == ["GET", "GET /v2/items/{id}"]
    print("RAW", repr(text))
    families = [f for f in text_string_to_metric_families(text) if f.name == "http_client_request_duration_seconds"]
    assert len(families) == 1
    counts = {
        (s.labels["server_port"], s.labels.get("url_template", "")): s.value
        for s in families[0].samples
        if s.name.endswith("_count")
    }
    assert counts == {
        (gw2_base.rsplit(":", 1)[1], "/v2/items/{id}"): 1.0,
        (other_base.rsplit(":", 1)[1], ""): 1.0,
    }
    requests = [f for f in text_string_to_metric_families(text) if f.name == "gw2_api_requests"]
    assert len(requests) == 1 and requests[0].type == "counter"
    assert [s.name for s in requests[0].samples if s.name.endswith("_total")] == ["gw2_api_requests_total"]


def test_gw2_can_be_disabled(otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "gw2")
    telemetry = otel_setup.configure(otlp_endpoint=otlp_receiver.endpoint)
    assert telemetry.instrumentations["gw2"] == "off: listed in OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"
    assert telemetry.instrumentations["genai"] == "active"


def test_a_failing_unsampled_request_keeps_its_gw2_call(otlp_receiver: OtlpReceiver) -> None:
    """A GW2 call inside a request head sampling dropped is exported when the request fails."""
    from fastapi import FastAPI

    standin = gw2_api.create_app()
    with serve(standin) as base:
        app = FastAPI()

        @app.get("/sync")
        async def sync() -> None:
            async with httpx.AsyncClient(base_url=base) as client:
                await client.get("/v2/account", headers={"Authorization": f"Bearer {DEMO_KEY}"})
            raise RuntimeError("sync failed")

        telemetry = otel_setup.configure(
            app, otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=0.0, gw2_api_base=base
        )

        async def run() -> int:
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                return (await client.get("/sync")).status_code

        assert asyncio.run(run()) == 500
        telemetry.force_flush(5.0)
        assert otlp_receiver.wait_for(lambda r: any(s.kind == "SERVER" for s in r.spans()))
    (server,) = [s for s in otlp_receiver.spans() if s.kind == "SERVER"]
    (call,) = [s for s in otlp_receiver.spans() if s.scope_name == "otel_setup.gw2"]
    assert server.attributes["otel_setup.kept"] == call.attributes["otel_setup.kept"] == "error"
    assert call.name == "GET /v2/account" and call.trace_id == server.trace_id
    assert call.parent_span_id == server.span_id
    assert call.attributes["url.template"] == "/v2/account"
    assert call.attributes["http.response.status_code"] == 200
    assert server.start_ns <= call.start_ns <= call.end_ns <= server.end_ns
    assert_no_identifiers(otlp_receiver)
