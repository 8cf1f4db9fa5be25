"""The example frontend in Debian's Chromium against the example backend, all on loopback.

The page (examples/frontend: React, Vite, ``@sentry/react`` with browser tracing) is served
from its own origin; the backend (examples.gw2_app under uvicorn) exports its spans over OTLP
to the receiver stand-in; Sentry's envelopes go to the loopback ingest stand-in. What the
browser sent is read from the browser's own network events, what the backend did from the
OTLP wire, what Sentry got from its envelopes: each assertion compares two of them.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Request, sync_playwright

from examples.standins.ai_api import DEMO_API_KEY
from examples.standins.gw2_api import DEMO_KEY
from tests.support.browser import StaticSite, ThirdParty, built_frontend, launch_chromium, running
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support.processes import free_port, server
from tests.support.sentry_ingest import SentryIngest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TRACE_HEADERS = ("traceparent", "tracestate", "sentry-trace", "baggage")
TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])$")
SERVER_TIMING = re.compile(r"^app;dur=(\d+(?:\.\d+)?)$")


@dataclass
class Stack:
    receiver: OtlpReceiver
    ingest: SentryIngest
    trusted: StaticSite
    untrusted: StaticSite
    third_party: ThirdParty
    api: str
    """The backend at its shipped sampling (10 % of new traces)."""
    api_sampling_all: str
    """The same backend sampling every trace it starts itself."""


def _backend(port: int, receiver: OtlpReceiver, env: dict[str, str], tmp: Path, name: str, stack: ExitStack) -> str:
    stack.enter_context(
        server(
            [sys.executable, "-m", "uvicorn", "examples.gw2_app.main:app", "--host", "127.0.0.1", "--port", str(port)],
            env={
                **env,
                "OTEL_SERVICE_NAME": name,
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_METRICS_EXPORTER": "none",
                "OTEL_LOGS_EXPORTER": "none",
                "OTEL_BSP_SCHEDULE_DELAY": "100",
            },
            ready_url=f"http://127.0.0.1:{port}/health",
            log_path=tmp / f"{name}.log",
        )
    )
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("browser")
    dist = built_frontend()
    with ExitStack() as exits:
        receiver = exits.enter_context(OtlpReceiver())
        ingest = SentryIngest()
        exits.callback(ingest.stop)
        trusted = exits.enter_context(running(StaticSite(dist)))
        untrusted = exits.enter_context(running(StaticSite(dist)))
        third_party = exits.enter_context(running(ThirdParty()))
        gw2_port, ai_port = free_port(), free_port()
        for module, port in (("gw2_api", gw2_port), ("ai_api", ai_port)):
            exits.enter_context(
                server(
                    [sys.executable, "-m", f"examples.standins.{module}", "--port", str(port)],
                    env={},
                    ready_url=f"http://127.0.0.1:{port}/",
                    log_path=tmp / f"{module}.log",
                )
            )
        env = {
            "DATABASE_URL": os.environ.get(
                "OTEL_SETUP_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
            ),
            "REDIS_URL": os.environ.get("OTEL_SETUP_TEST_REDIS", "redis://127.0.0.1:6379/0"),
            "GW2_API_BASE": f"http://127.0.0.1:{gw2_port}",
            "AI_API_BASE": f"http://127.0.0.1:{ai_port}/v1",
            "AI_API_KEY": DEMO_API_KEY,
            # CORS for both pages; only the first continues its traces into the backend.
            "FRONTEND_ORIGINS": f"{trusted.origin},{untrusted.origin}",
            "OTEL_SETUP_TRUSTED_TRACEPARENT": trusted.origin,
        }
        api = _backend(free_port(), receiver, env, tmp, "gw2-backend", exits)
        api_all = _backend(
            free_port(), receiver, {**env, "OTEL_TRACES_SAMPLER_ARG": "1.0"}, tmp, "gw2-backend-all", exits
        )
        yield Stack(receiver, ingest, trusted, untrusted, third_party, api, api_all)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Visit:
    page: Page
    requests: list[Request]
    """Every request the page made, as the browser's network layer saw it."""
    started_ns: int

    def sent_to(self, url_prefix: str) -> list[Request]:
        return [r for r in self.requests if r.url.startswith(url_prefix) and r.method != "OPTIONS"]


@pytest.fixture
def visit(browser: Browser) -> Iterator[Any]:
    contexts = []

    def open_page(site: StaticSite, **config: Any) -> Visit:
        site.config = config
        context = browser.new_context()
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        requests: list[Request] = []

        def record(request: Request) -> None:  # Playwright cannot wrap a bound builtin like list.append
            requests.append(request)

        page.on("request", record)
        started_ns = time.time_ns()
        page.goto(site.origin + "/")
        page.get_by_role("heading", name="GW2 companion").wait_for()
        return Visit(page, requests, started_ns)

    yield open_page
    for context in contexts:
        context.close()


def page_config(stack: Stack, api: str, sample_rate: float) -> dict[str, Any]:
    return {
        "apiBase": api,
        "sentryDsn": stack.ingest.dsn,
        "tracesSampleRate": sample_rate,
        "statusUrl": stack.third_party.origin + "/status.json",
    }


def look_up_account(page: Page, times: int = 1) -> None:
    page.get_by_label("API key").fill(DEMO_KEY)
    counter = page.get_by_test_id("lookups")
    for _ in range(times):
        done = int(counter.get_attribute("data-count") or "0") + 1
        page.get_by_role("button", name="Look up").click()
        page.locator(f'[data-testid="lookups"][data-count="{done}"]').wait_for(state="attached")


def traceparent_of(request: Request) -> tuple[str, str, str]:
    header = request.all_headers().get("traceparent", "")
    match = TRACEPARENT.match(header)
    assert match, f"{request.url} carried traceparent {header!r}"
    trace_id, span_id, flags = match.groups()
    return trace_id, span_id, flags


def server_spans(receiver: OtlpReceiver, route: str, since_ns: int) -> list[ReceivedSpan]:
    return [
        s
        for s in receiver.spans()
        if s.kind == "SERVER" and s.attributes.get("http.route") == route and s.start_ns >= since_ns
    ]


def sentry_items(ingest: SentryIngest, item_type: str) -> list[dict[str, Any]]:
    with ingest._lock:
        envelopes = list(ingest.envelopes)
    return [
        payload
        for envelope in envelopes
        for header, payload in envelope
        if header.get("type") == item_type and isinstance(payload, dict)
    ]


def browser_spans(ingest: SentryIngest) -> list[dict[str, Any]]:
    """Every span the browser streamed to Sentry (``span`` items, span v2 JSON), attributes flattened."""
    spans = []
    for item in sentry_items(ingest, "span"):
        for span in item.get("items", []):
            attributes = {name: value.get("value") for name, value in span.get("attributes", {}).items()}
            spans.append({**span, "attributes": attributes})
    return spans


def fetch_spans(ingest: SentryIngest, url: str) -> list[dict[str, Any]]:
    """The browser's fetch spans (``http.client``) for ``url``, as Sentry received them."""
    return [
        span
        for span in browser_spans(ingest)
        if span["attributes"].get("sentry.op") == "http.client" and span["attributes"].get("url.full") == url
    ]


def assert_no_trace_headers_to(third_party: ThirdParty, visit: Visit, origin: str) -> list[str]:
    """Neither the browser's view nor the third party's shows a trace header; returns its paths."""
    sent = visit.sent_to(third_party.origin)
    assert sent, "the page never called the third party"
    for request in sent:
        leaked = sorted(set(request.all_headers()) & set(TRACE_HEADERS))
        assert not leaked, f"the browser sent {leaked} to {request.url}"
    arrived = [r for r in third_party.recorded() if r.headers.get("origin") == origin]
    assert arrived
    for recorded in arrived:
        assert recorded.method == "GET", f"a preflight asked to send headers: {recorded}"
        assert not set(recorded.headers) & set(TRACE_HEADERS), recorded.headers
    return [r.path for r in arrived]


def test_a_trusted_page_continues_its_trace_into_the_backend(stack: Stack, visit: Any) -> None:
    seen = visit(stack.trusted, **page_config(stack, stack.api, sample_rate=1.0))
    look_up_account(seen.page)
    assert seen.page.get_by_test_id("account").inner_text() == "Demo Commander.1234 (world 1001)"
    assert seen.page.get_by_test_id("service-status").inner_text() == "GW2 services: ok"

    (api_call,) = seen.sent_to(stack.api + "/api/account")
    trace_id, span_id, flags = traceparent_of(api_call)
    assert flags == "01"
    assert api_call.all_headers()["sentry-trace"] == f"{trace_id}-{span_id}-1"

    assert stack.receiver.wait_for(lambda r: bool(server_spans(r, "/api/account", seen.started_ns)))
    (backend,) = server_spans(stack.receiver, "/api/account", seen.started_ns)
    assert backend.resource["service.name"] == "gw2-backend"
    assert (backend.trace_id, backend.parent_span_id) == (trace_id, span_id)
    assert backend.links == []

    # The parent is the browser's fetch span as Sentry reported it, in the same trace.
    assert stack.ingest.wait_for(lambda i: bool(fetch_spans(i, stack.api + "/api/account")))
    (fetch,) = [s for s in fetch_spans(stack.ingest, stack.api + "/api/account") if s["trace_id"] == trace_id]
    assert fetch["span_id"] == backend.parent_span_id
    assert fetch["attributes"]["http.request.method"] == "GET"
    assert fetch["attributes"]["http.response.status_code"] == 200
    assert fetch["attributes"]["sentry.segment.name"] == "account lookup"
    # The backend's span started inside the browser's fetch (same clock: one machine). Its end is
    # not ordered against the fetch's: the server ends its span after the last byte is sent, and
    # the browser may already have resolved the fetch by then.
    assert fetch["start_timestamp"] * 1e9 <= backend.start_ns <= fetch["end_timestamp"] * 1e9
    assert backend.start_ns <= backend.end_ns

    # Nothing Sentry received carries the GW2 key the page sent in its request header.
    with stack.ingest._lock:
        bodies = b"".join(stack.ingest.raw_bodies)
    assert DEMO_KEY.encode() not in bodies

    paths = assert_no_trace_headers_to(stack.third_party, seen, stack.trusted.origin)
    assert paths == ["/status.json"]


def test_the_page_reads_server_timing_through_cors(stack: Stack, visit: Any) -> None:
    seen = visit(stack.trusted, **page_config(stack, stack.api, sample_rate=1.0))
    look_up_account(seen.page)
    (api_call,) = seen.sent_to(stack.api + "/api/account")
    response = api_call.response()
    assert response is not None
    headers = response.all_headers()
    assert headers["access-control-allow-origin"] == stack.trusted.origin
    exposed = {name.strip().lower() for name in headers["access-control-expose-headers"].split(",")}
    assert {"server-timing", "x-response-time"} <= exposed
    header_match = SERVER_TIMING.match(headers["server-timing"])
    assert header_match, headers["server-timing"]

    # The page's script read the header (CORS exposed it) and the Resource Timing entry.
    assert seen.page.get_by_test_id("server-timing-header").inner_text() == headers["server-timing"]
    from_resource_timing = seen.page.get_by_test_id("server-timing").inner_text()
    assert from_resource_timing == f"app={float(header_match.group(1)):g}", from_resource_timing
    entries = seen.page.evaluate(
        """url => performance.getEntriesByName(url, "resource")
            .map(e => e.serverTiming.map(t => [t.name, t.duration]))""",
        stack.api + "/api/account",
    )
    assert entries == [[["app", float(header_match.group(1))]]]
    # The status feed sends Server-Timing too, but no Timing-Allow-Origin: Chromium hides it.
    status_entries = seen.page.evaluate(
        """url => performance.getEntriesByName(url, "resource").map(e => e.serverTiming.length)""",
        stack.third_party.origin + "/status.json",
    )
    assert status_entries == [0]
    (status_call,) = seen.sent_to(stack.third_party.origin)
    status_response = status_call.response()
    assert status_response is not None
    assert status_response.all_headers()["server-timing"] == "feed;dur=1.5"


def test_an_untrusted_page_gets_a_new_trace_that_links_to_its_own(stack: Stack, visit: Any) -> None:
    # The backend here samples every trace it starts, so the new trace is always exported.
    seen = visit(stack.untrusted, **page_config(stack, stack.api_sampling_all, sample_rate=1.0))
    look_up_account(seen.page)
    (api_call,) = seen.sent_to(stack.api_sampling_all + "/api/account")
    trace_id, span_id, flags = traceparent_of(api_call)
    assert flags == "01"

    assert stack.receiver.wait_for(lambda r: bool(server_spans(r, "/api/account", seen.started_ns)))
    (backend,) = server_spans(stack.receiver, "/api/account", seen.started_ns)
    assert backend.resource["service.name"] == "gw2-backend-all"
    assert backend.trace_id != trace_id
    assert backend.parent_span_id == ""
    assert [(link["trace_id"], link["span_id"]) for link in backend.links] == [(trace_id, span_id)]
    assert stack.ingest.wait_for(
        lambda i: [s["span_id"] for s in fetch_spans(i, api_call.url) if s["trace_id"] == trace_id] == [span_id]
    )
    assert_no_trace_headers_to(stack.third_party, seen, stack.untrusted.origin)


def test_a_frontend_error_reaches_sentry_with_the_backend_requests_trace_id(stack: Stack, visit: Any) -> None:
    seen = visit(stack.trusted, **page_config(stack, stack.api, sample_rate=1.0))
    seen.page.get_by_label("API key").fill(DEMO_KEY)
    seen.page.get_by_label("Character name").fill("Flaky")  # the GW2 stand-in answers 503 for it
    seen.page.get_by_role("button", name="Show character").click()
    error_text = seen.page.get_by_test_id("character-error").inner_text()
    assert error_text == "/api/characters/Flaky answered 502: GW2 API error (503)"

    (api_call,) = seen.sent_to(stack.api + "/api/characters/Flaky")
    trace_id, _, _ = traceparent_of(api_call)
    assert stack.receiver.wait_for(lambda r: bool(server_spans(r, "/api/characters/{name}", seen.started_ns)))
    (backend,) = server_spans(stack.receiver, "/api/characters/{name}", seen.started_ns)
    assert backend.attributes["http.response.status_code"] == 502

    def frontend_errors(ingest: SentryIngest) -> list[dict[str, Any]]:
        return [
            e
            for e in sentry_items(ingest, "event")
            if any(v.get("type") == "ApiError" for v in e.get("exception", {}).get("values", []))
        ]

    assert stack.ingest.wait_for(lambda i: bool(frontend_errors(i)))
    (event,) = [e for e in frontend_errors(stack.ingest) if e["contexts"]["trace"]["trace_id"] == trace_id]
    assert event["contexts"]["trace"]["trace_id"] == backend.trace_id
    (exception,) = event["exception"]["values"]
    assert exception["value"] == error_text
    assert event["platform"] == "javascript"
    assert event["request"]["url"] == stack.trusted.origin + "/"


def test_the_backend_follows_the_browsers_sampling_decision(stack: Stack, visit: Any) -> None:
    lookups = 100
    seen = visit(stack.trusted, **page_config(stack, stack.api, sample_rate=0.1))
    look_up_account(seen.page, times=lookups)

    calls = seen.sent_to(stack.api + "/api/account")
    assert len(calls) == lookups
    parents = [traceparent_of(call) for call in calls]
    assert len({trace_id for trace_id, _, _ in parents}) == lookups, "each lookup starts its own trace"
    sampled = {trace_id: span_id for trace_id, span_id, flags in parents if flags == "01"}
    unsampled = {trace_id for trace_id, _, flags in parents if flags == "00"}
    # The browser decided about 10 %: P(none of 100) = 0.9**100 < 3e-5, P(more than 30) < 1e-8.
    assert 1 <= len(sampled) <= 30, len(sampled)
    for call in calls:
        trace_id, span_id, flags = traceparent_of(call)
        assert call.all_headers()["sentry-trace"] == f"{trace_id}-{span_id}-{int(flags == '01')}"

    def exported(receiver: OtlpReceiver) -> dict[str, str]:
        return {s.trace_id: s.parent_span_id for s in server_spans(receiver, "/api/account", seen.started_ns)}

    assert stack.receiver.wait_for(lambda r: len(exported(r)) >= len(sampled))
    time.sleep(1.0)  # several export intervals: anything else the backend sampled has arrived
    # Exactly the browser's sampled traces, each under its fetch span; the backend's own 10 %
    # on the other traces would have exported about nine of them.
    assert exported(stack.receiver) == sampled
    assert not unsampled & set(exported(stack.receiver))

    # Sentry got a transaction for exactly the same traces.
    assert stack.ingest.wait_for(
        lambda i: {s["trace_id"] for s in fetch_spans(i, stack.api + "/api/account")} >= set(sampled)
    )
    reported = {s["trace_id"] for s in fetch_spans(stack.ingest, stack.api + "/api/account")}
    assert not reported & unsampled

    assert_no_trace_headers_to(stack.third_party, seen, stack.trusted.origin)
