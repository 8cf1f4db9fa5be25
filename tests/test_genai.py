"""GenAI calls over raw httpx: spans, token and cost metrics, quota and rate-limit telemetry.

Against the loopback OpenAI-compatible stand-in on a 127.0.0.1 port, plus a small
streaming server (the stand-in does not stream) for the Server-Sent Events shapes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

import otel_setup
from examples.standins import ai_api
from examples.standins.ai_api import DEMO_API_KEY
from otel_setup import OtelSetupConfigError
from otel_setup._core.prices import load_price_table
from otel_setup._integrations.genai_body import parse_duration, parse_rate_limits
from tests.support.otlp_receiver import OtlpReceiver
from tests.test_gw2 import serve

PROMPT = "Suggest a fractals build for a Guardian named Aurora Lightbringer."
HEADERS = {"Authorization": f"Bearer {DEMO_API_KEY}"}


def points(receiver: OtlpReceiver, name: str) -> list[Any]:
    return [p for p in receiver.metric_points() if p.name == name]


def client_spans(receiver: OtlpReceiver) -> list[Any]:
    return [s for s in receiver.spans() if s.kind == "CLIENT"]


def chat(base: str, model: str = "gpt-4o-mini", **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], **extra}
    with httpx.Client(base_url=base, headers=HEADERS) as client:
        return client.post("/v1/chat/completions", json=body)


def assert_no_content(receiver: OtlpReceiver, completion: str | None = None) -> None:
    spans = [s for s in receiver.spans() if s.scope_name != "fastapi"]
    seen = repr([(s.name, s.attributes, s.events) for s in spans]) + repr(
        [p.attributes for p in receiver.metric_points()]
    )
    assert "Aurora" not in seen and "Guardian" not in seen, "the prompt leaked"
    assert DEMO_API_KEY not in seen
    if completion:
        assert completion[:30] not in seen, "the completion leaked"


# --- pure functions ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6m0s", 360.0),
        ("12ms", 0.012),
        ("1s", 1.0),
        ("0s", 0.0),
        ("1h2m3.5s", 3723.5),
        ("250us", 0.00025),
        ("20", 20.0),
        ("-1", None),
        ("lots", None),
        ("", None),
        (None, None),
        ("5x", None),
        ("m5", None),
        ("nan", None),
    ],
)
def test_parse_duration(text: str | None, seconds: float | None) -> None:
    parsed = parse_duration(text)
    assert parsed == pytest.approx(seconds) if seconds is not None else parsed is None


def test_parse_rate_limits_is_tolerant() -> None:
    assert parse_rate_limits(
        {
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": "499",
            "x-ratelimit-reset-requests": "120ms",
            "x-ratelimit-limit-tokens": "200000",
            "x-ratelimit-remaining-tokens": "0",
            "x-ratelimit-reset-tokens": "6m0s",
        }
    ) == {
        ("limit", "requests"): 500.0,
        ("remaining", "requests"): 499.0,
        ("reset", "requests"): 0.12,
        ("limit", "tokens"): 200000.0,
        ("remaining", "tokens"): 0.0,
        ("reset", "tokens"): 360.0,
    }
    assert parse_rate_limits({}) == {}
    assert parse_rate_limits({"x-ratelimit-limit-requests": "-1", "x-ratelimit-reset-tokens": "soon"}) == {}


def test_price_table_matches_versions_not_variants(tmp_path: Path) -> None:
    table = load_price_table()
    assert table.match("gpt-4o-mini") == "gpt-4o-mini"
    assert table.match("gpt-4o-mini-2024-07-18") == "gpt-4o-mini"
    assert table.match("gpt-3.5-turbo-0125") == "gpt-3.5-turbo"
    assert table.match("gpt-4o-audio-preview") is None, "a variant is not guessed"
    assert table.match("llama-3.1-70b") is None
    assert table.cost("gpt-4o-mini", 1_000_000, 0, 1_000_000) == pytest.approx((0.15, 0.6))
    assert table.cost("gpt-4o-mini", 2_000, 1_000, 0) == pytest.approx((1_000 * 0.15e-6 + 1_000 * 0.075e-6, 0.0))

    own = tmp_path / "prices.json"
    own.write_text(
        json.dumps(
            {
                "version": "ours-1",
                "models": {
                    "llama-3.1-70b": {"input": 0.0, "output": 0.0},
                    "gpt-4o-mini": {"input": 1.0, "output": 2.0},
                },
            }
        )
    )
    merged = load_price_table(str(own))
    assert merged.version.endswith("+ours-1")
    assert merged.match("llama-3.1-70b") == "llama-3.1-70b"
    assert merged.cost("gpt-4o-mini", 1_000_000, 500_000, 0)[0] == pytest.approx(1.0), "cached defaults to input"
    assert merged.match("gpt-4o") == "gpt-4o", "shipped entries stay"


def test_bad_price_override_fails_at_startup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "prices.json"
    bad.write_text('{"models": {"x": {"input": "cheap"}}}')
    monkeypatch.setenv("OTEL_SETUP_GENAI_PRICES", str(bad))
    with pytest.raises(OtelSetupConfigError, match="OTEL_SETUP_GENAI_PRICES"):
        otel_setup.configure()
    monkeypatch.setenv("OTEL_SETUP_GENAI_PRICES", str(tmp_path / "missing.json"))
    with pytest.raises(OtelSetupConfigError, match="OTEL_SETUP_GENAI_PRICES"):
        otel_setup.configure()


# --- against the stand-in ---------------------------------------------------------------


def test_chat_completion_span_tokens_cost_and_rate_limits(otlp_receiver: OtlpReceiver) -> None:
    with serve(ai_api.create_app()) as base:
        telemetry = otel_setup.configure(otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=1.0)
        assert telemetry.instrumentations["genai"] == "active"
        response = chat(base, max_tokens=300, temperature=0.2)
        assert response.status_code == 200
        body = response.json()
        telemetry.force_flush(5.0)
        assert otlp_receiver.wait_for(lambda r: bool(client_spans(r)) and bool(points(r, "otel_setup.genai.cost.usd")))
    usage = body["usage"]
    port = int(base.rsplit(":", 1)[1])
    (span,) = client_spans(otlp_receiver)
    assert span.name == "chat gpt-4o-mini"
    assert span.attributes == {
        "http.request.method": "POST",
        "server.address": "127.0.0.1",
        "server.port": port,
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.request.max_tokens": 300,
        "gen_ai.request.temperature": 0.2,
        "http.response.status_code": 200,
        "gen_ai.response.model": "gpt-4o-mini",
        "gen_ai.response.id": body["id"],
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.usage.input_tokens": usage["prompt_tokens"],
        "gen_ai.usage.output_tokens": usage["completion_tokens"],
        "gen_ai.usage.cache_read.input_tokens": 0,
        "otel_setup.genai.usage_reported": True,
        "otel_setup.genai.price_model": "gpt-4o-mini",
        "otel_setup.genai.cost.usd": pytest.approx(
            usage["prompt_tokens"] * 0.15e-6 + usage["completion_tokens"] * 0.6e-6
        ),
        "otel_setup.genai.price_table": load_price_table().version,
    }
    labels = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini",
        "server.address": "127.0.0.1",
        "server.port": port,
    }
    (duration,) = points(otlp_receiver, "gen_ai.client.operation.duration")
    assert duration.attributes == labels and duration.count == 1 and duration.unit == "s"
    tokens = {p.attributes["gen_ai.token.type"]: p for p in points(otlp_receiver, "gen_ai.client.token.usage")}
    assert tokens["input"].sum == usage["prompt_tokens"] and tokens["input"].count == 1
    assert tokens["output"].sum == usage["completion_tokens"]
    assert tokens["input"].attributes == {**labels, "gen_ai.token.type": "input"}
    cost = {p.attributes["gen_ai.token.type"]: p for p in points(otlp_receiver, "otel_setup.genai.cost.usd")}
    assert cost["input"].value == pytest.approx(usage["prompt_tokens"] * 0.15e-6)
    assert cost["output"].value == pytest.approx(usage["completion_tokens"] * 0.6e-6)
    assert cost["input"].attributes == {
        "gen_ai.provider.name": "openai",
        "otel_setup.genai.price_model": "gpt-4o-mini",
        "gen_ai.token.type": "input",
    }
    (requests,) = points(otlp_receiver, "otel_setup.genai.requests")
    assert requests.value == 1
    assert requests.attributes == {
        "gen_ai.provider.name": "openai",
        "gen_ai.operation.name": "chat",
        "otel_setup.genai.price_model": "gpt-4o-mini",
        "otel_setup.genai.outcome": "ok",
        "otel_setup.genai.usage": "reported",
    }
    gauges = {
        (p.name.rsplit(".", 1)[1], p.attributes["otel_setup.genai.ratelimit.kind"]): p.value
        for p in otlp_receiver.metric_points()
        if p.name.startswith("otel_setup.genai.ratelimit.")
    }
    assert gauges[("limit", "requests")] == 500
    assert gauges[("remaining", "requests")] == 499
    assert gauges[("limit", "tokens")] == 200_000
    assert 0 < gauges[("reset", "requests")] < 1  # "120ms": one request refills in 0.12 s
    (http_duration,) = points(otlp_receiver, "http.client.request.duration")
    assert (
        http_duration.attributes["http.response.status_code"] == 200 and "url.template" not in http_duration.attributes
    )
    assert_no_content(otlp_receiver, body["choices"][0]["message"]["content"])


def test_responses_api_usage_shape(otlp_receiver: OtlpReceiver) -> None:
    with serve(ai_api.create_app()) as base:
        telemetry = otel_setup.configure(otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=1.0)
        with httpx.Client(base_url=base, headers=HEADERS) as client:
            response = client.post(
                "/v1/responses",
                json={"model": "gpt-4.1-mini-2025-04-14", "input": PROMPT, "max_output_tokens": 5},
            )
        assert response.status_code == 200
        body = response.json()
        telemetry.force_flush(5.0)
        assert otlp_receiver.wait_for(lambda r: bool(client_spans(r)) and bool(points(r, "gen_ai.client.token.usage")))
    (span,) = client_spans(otlp_receiver)
    assert span.name == "chat gpt-4.1-mini-2025-04-14"
    assert span.attributes["gen_ai.usage.input_tokens"] == body["usage"]["input_tokens"]
    assert span.attributes["gen_ai.usage.output_tokens"] == body["usage"]["output_tokens"] == 5
    assert span.attributes["gen_ai.response.finish_reasons"] == ["length"]
    assert span.attributes["gen_ai.request.max_tokens"] == 5
    assert span.attributes["otel_setup.genai.price_model"] == "gpt-4.1-mini"
    tokens = {p.attributes["gen_ai.token.type"]: p.sum for p in points(otlp_receiver, "gen_ai.client.token.usage")}
    assert tokens == {"input": body["usage"]["input_tokens"], "output": 5}
    (duration,) = points(otlp_receiver, "gen_ai.client.operation.duration")
    assert duration.attributes["gen_ai.request.model"] == "gpt-4.1-mini"  # labels: the price-table entry


@pytest.mark.parametrize(
    ("model", "status", "error_type", "outcome"),
    [
        ("quota-exceeded", 429, "insufficient_quota", "insufficient_quota"),
        ("rate-limited", 429, "rate_limit_exceeded", "rate_limited"),
        ("broken", 500, "500", "server_error"),
    ],
)
def test_errors_are_counted_by_outcome(
    otlp_receiver: OtlpReceiver, model: str, status: int, error_type: str, outcome: str
) -> None:
    with serve(ai_api.create_app()) as base:
        telemetry = otel_setup.configure(otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=1.0)
        response = chat(base, model=model)
        assert response.status_code == status
        assert response.json()["error"]["message"], "the caller still reads the body"
        telemetry.force_flush(5.0)
        assert otlp_receiver.wait_for(lambda r: bool(points(r, "otel_setup.genai.requests")))
    (span,) = client_spans(otlp_receiver)
    assert span.name == f"chat {model}"
    assert span.status_code == "ERROR"
    assert span.attributes["error.type"] == error_type
    assert "gen_ai.usage.input_tokens" not in span.attributes
    (requests,) = points(otlp_receiver, "otel_setup.genai.requests")
    assert requests.value == 1
    assert requests.attributes == {
        "gen_ai.provider.name": "openai",
        "gen_ai.operation.name": "chat",
        "otel_setup.genai.price_model": "unknown",
        "otel_setup.genai.outcome": outcome,
    }
    (duration,) = points(otlp_receiver, "gen_ai.client.operation.duration")
    assert duration.attributes["error.type"] == error_type
    assert duration.attributes["gen_ai.request.model"] == "unknown"
    assert not points(otlp_receiver, "gen_ai.client.token.usage")
    assert not points(otlp_receiver, "otel_setup.genai.cost.usd")


@pytest.mark.parametrize("mode", ["missing", "garbage", "negative"])
def test_unusable_rate_limit_headers_leave_gauges_unset(otlp_receiver: OtlpReceiver, mode: str) -> None:
    with serve(ai_api.create_app(rate_limit_headers=mode)) as base:
        telemetry = otel_setup.configure(otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=1.0)
        assert chat(base).status_code == 200
        telemetry.force_flush(5.0)
        assert otlp_receiver.wait_for(lambda r: bool(points(r, "otel_setup.genai.requests")))
    reported = {p.name for p in otlp_receiver.metric_points() if p.name.startswith("otel_setup.genai.ratelimit.")}
    if mode == "negative":
        assert reported == {"otel_setup.genai.ratelimit.reset"}  # "0s" is a real value; "-1" is not
    else:
        assert reported == set()
    (span,) = client_spans(otlp_receiver)
    assert span.attributes["otel_setup.genai.usage_reported"] is True


def test_unknown_model_is_counted_as_unknown_and_costs_nothing(otlp_receiver: OtlpReceiver) -> None:
    with serve(ai_api.create_app()) as base:
        telemetry = otel_setup.configure(otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=1.0)
        assert chat(base, model="llama-3.1-8b-instruct").status_code == 200
        telemetry.force_flush(5.0)
        assert otlp_receiver.wait_for(lambda r: bool(points(r, "gen_ai.client.token.usage")))
    (span,) = client_spans(otlp_receiver)
    assert span.attributes["gen_ai.request.model"] == "llama-3.1-8b-instruct"
    assert span.attributes["otel_setup.genai.price_model"] == "unknown"
    assert "otel_setup.genai.cost.usd" not in span.attributes
    assert not points(otlp_receiver, "otel_setup.genai.cost.usd")
    (requests,) = points(otlp_receiver, "otel_setup.genai.requests")
    assert requests.attributes["otel_setup.genai.price_model"] == "unknown"
    assert {p.attributes["gen_ai.request.model"] for p in points(otlp_receiver, "gen_ai.client.token.usage")} == {
        "unknown"
    }


def test_price_override_prices_a_self_hosted_model(otlp_receiver: OtlpReceiver) -> None:
    prices = {"version": "local-1", "models": {"llama-3.1-8b-instruct": {"input": 1.0, "output": 2.0}}}
    with serve(ai_api.create_app()) as base:
        telemetry = otel_setup.configure(otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=1.0, genai_prices=prices)
        usage = chat(base, model="llama-3.1-8b-instruct").json()["usage"]
        telemetry.force_flush(5.0)
        assert otlp_receiver.wait_for(lambda r: bool(points(r, "otel_setup.genai.cost.usd")))
    cost = {p.attributes["gen_ai.token.type"]: p.value for p in points(otlp_receiver, "otel_setup.genai.cost.usd")}
    assert cost == {
        "input": pytest.approx(usage["prompt_tokens"] * 1e-6),
        "output": pytest.approx(usage["completion_tokens"] * 2e-6),
    }


# --- streaming, malformed bodies, timeouts (a small server of our own) --------------------


def _sse(*events: Any) -> bytes:
    return b"".join(b"data: " + (e if isinstance(e, bytes) else json.dumps(e).encode()) + b"\n\n" for e in events)


def _chunk(finish: str | None = None, usage: dict[str, Any] | None = None, text: str = "") -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": "chatcmpl-stream",
        "object": "chat.completion.chunk",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [] if usage else [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
    }
    if usage is not None:
        chunk["usage"] = usage
    return chunk


def streaming_app() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def completions(request: Request) -> Response:
        body = await request.json()
        if body["model"] == "malformed":
            return Response(b'{"id": "x", "usage": {"prompt_tok', media_type="application/json")
        if body["model"] == "slow":
            await asyncio.sleep(2)
        include_usage = bool(body.get("stream_options", {}).get("include_usage"))
        events: list[Any] = [_chunk(text="Berserker "), _chunk(text="stats."), _chunk(finish="stop")]
        if include_usage:
            events.append(_chunk(usage={"prompt_tokens": 21, "completion_tokens": 3, "total_tokens": 24}))
        events.append(b"[DONE]")

        async def stream() -> AsyncIterator[bytes]:
            for event in events:
                yield _sse(event)

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.post("/v1/responses")
    async def responses() -> Response:
        events = [
            {
                "type": "response.created",
                "response": {"object": "response", "id": "resp_1", "model": "gpt-4.1", "status": "in_progress"},
            },
            {"type": "response.output_text.delta", "delta": "Swap to Diviner."},
            {
                "type": "response.completed",
                "response": {
                    "object": "response",
                    "id": "resp_1",
                    "model": "gpt-4.1",
                    "status": "completed",
                    "usage": {"input_tokens": 40, "output_tokens": 4, "input_tokens_details": {"cached_tokens": 0}},
                },
            },
        ]
        return Response(b"".join(b"event: x\n" + _sse(e) for e in events), media_type="text/event-stream")

    return app


@pytest.mark.parametrize("include_usage", [True, False])
def test_streamed_chat_takes_usage_from_the_final_chunk(otlp_receiver: OtlpReceiver, include_usage: bool) -> None:
    with serve(streaming_app()) as base:
        telemetry = otel_setup.configure(otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=1.0)
        payload: dict[str, Any] = {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": PROMPT}],
            "stream": True,
        }
        if include_usage:
            payload["stream_options"] = {"include_usage": True}

        async def read() -> str:
            async with (
                httpx.AsyncClient(base_url=base, headers=HEADERS) as client,
                client.stream("POST", "/v1/chat/completions", json=payload) as response,
            ):
                return "".join([line async for line in response.aiter_lines()])

        text = asyncio.run(read())
        assert "Berserker" in text and "[DONE]" in text, "the caller reads the stream unchanged"
        telemetry.force_flush(5.0)
        assert otlp_receiver.wait_for(lambda r: bool(points(r, "otel_setup.genai.requests")))
    (span,) = client_spans(otlp_receiver)
    assert span.name == "chat gpt-4o-mini"
    assert span.attributes["otel_setup.genai.streamed"] is True
    assert span.attributes["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert span.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    (requests,) = points(otlp_receiver, "otel_setup.genai.requests")
    if include_usage:
        assert span.attributes["gen_ai.usage.input_tokens"] == 21
        assert span.attributes["gen_ai.usage.output_tokens"] == 3
        assert span.attributes["otel_setup.genai.usage_reported"] is True
        assert requests.attributes["otel_setup.genai.usage"] == "reported"
        tokens = {p.attributes["gen_ai.token.type"]: p.sum for p in points(otlp_receiver, "gen_ai.client.token.usage")}
        assert tokens == {"input": 21, "output": 3}
        (cost,) = [
            p
            for p in points(otlp_receiver, "otel_setup.genai.cost.usd")
            if p.attributes["gen_ai.token.type"] == "output"
        ]
        assert cost.value == pytest.approx(3 * 0.6e-6)
    else:
        assert "gen_ai.usage.input_tokens" not in span.attributes
        assert span.attributes["otel_setup.genai.usage_reported"] is False
        assert requests.attributes["otel_setup.genai.usage"] == "missing"
        assert not points(otlp_receiver, "gen_ai.client.token.usage")
    assert_no_content(otlp_receiver, "Berserker stats.")


def test_streamed_responses_api(otlp_receiver: OtlpReceiver) -> None:
    with serve(streaming_app()) as base:
        telemetry = otel_setup.configure(otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=1.0)
        with httpx.Client(base_url=base, headers=HEADERS) as client:
            assert (
                client.post("/v1/responses", json={"model": "gpt-4.1", "input": PROMPT, "stream": True}).status_code
                == 200
            )
        telemetry.force_flush(5.0)
        assert otlp_receiver.wait_for(lambda r: bool(points(r, "gen_ai.client.token.usage")))
    (span,) = client_spans(otlp_receiver)
    assert span.attributes["gen_ai.usage.input_tokens"] == 40
    assert span.attributes["gen_ai.usage.output_tokens"] == 4
    assert span.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert_no_content(otlp_receiver, "Swap to Diviner.")


def test_malformed_json_and_timeouts_never_break_the_call(otlp_receiver: OtlpReceiver) -> None:
    with serve(streaming_app()) as base:
        telemetry = otel_setup.configure(otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=1.0)
        malformed = chat(base, model="malformed")
        assert malformed.status_code == 200 and malformed.content.startswith(b'{"id": "x"')
        with httpx.Client(base_url=base, headers=HEADERS, timeout=0.2) as client, pytest.raises(httpx.ReadTimeout):
            client.post("/v1/chat/completions", json={"model": "slow", "messages": []})
        telemetry.force_flush(5.0)
        assert otlp_receiver.wait_for(lambda r: sum(p.value for p in points(r, "otel_setup.genai.requests")) == 2)
    spans = {s.name: s for s in client_spans(otlp_receiver)}
    assert spans["chat malformed"].attributes["otel_setup.genai.usage_reported"] is False
    assert spans["chat malformed"].status_code != "ERROR"
    assert spans["chat slow"].attributes["error.type"] == "ReadTimeout"
    outcomes = {
        p.attributes["otel_setup.genai.outcome"]: p.value for p in points(otlp_receiver, "otel_setup.genai.requests")
    }
    assert outcomes == {"ok": 1, "transport_error": 1}


def test_call_listener_gets_tokens_and_cost_but_no_content(otlp_receiver: OtlpReceiver) -> None:
    from otel_setup import GenAICall, add_call_listener

    records: list[Any] = []
    remove = add_call_listener(records.append)
    try:
        with serve(ai_api.create_app()) as base:
            otel_setup.configure(otlp_endpoint=otlp_receiver.endpoint)
            usage = chat(base).json()["usage"]
    finally:
        remove()
    (record,) = records
    assert isinstance(record, GenAICall)
    assert (record.input_tokens, record.output_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert record.cost_usd == pytest.approx(usage["prompt_tokens"] * 0.15e-6 + usage["completion_tokens"] * 0.6e-6)
    assert record.price_model == "gpt-4o-mini" and record.status_code == 200 and record.usage_reported
    assert "Aurora" not in repr(record)


def test_a_slow_unsampled_request_keeps_its_chat_call(otlp_receiver: OtlpReceiver) -> None:
    """A GenAI call inside a request head sampling dropped is exported, usage included, when the request is slow."""
    import asyncio

    from fastapi import FastAPI

    with serve(ai_api.create_app()) as base:
        app = FastAPI()

        @app.get("/advice")
        async def advice() -> dict[str, int]:
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PROMPT}]}
            async with httpx.AsyncClient(base_url=base, headers=HEADERS) as client:
                response = await client.post("/v1/chat/completions", json=body)
            await asyncio.sleep(0.15)
            return {"tokens": response.json()["usage"]["total_tokens"]}

        telemetry = otel_setup.configure(
            app, otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=0.0, slow_request_ms=100
        )

        async def run() -> int:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                return (await client.get("/advice")).status_code

        assert asyncio.run(run()) == 200
        telemetry.force_flush(5.0)
        assert otlp_receiver.wait_for(lambda r: any(s.kind == "SERVER" for s in r.spans()))
    (server,) = [s for s in otlp_receiver.spans() if s.kind == "SERVER"]
    (call,) = [s for s in otlp_receiver.spans() if s.scope_name == "otel_setup.genai"]
    assert server.attributes["otel_setup.kept"] == call.attributes["otel_setup.kept"] == "slow"
    assert call.name == "chat gpt-4o-mini" and call.parent_span_id == server.span_id
    assert call.attributes["gen_ai.usage.input_tokens"] > 0
    assert call.attributes["gen_ai.response.model"] == "gpt-4o-mini"
    assert_no_content(otlp_receiver)
