"""The loopback stand-ins answer like the real GW2 and OpenAI APIs.

Other tests and the demo rely on these shapes (error bodies, rate limits, token usage), so
they are pinned here. Everything runs in-process through ``httpx.ASGITransport``; no socket is opened.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from examples.standins import ai_api, gw2_api
from examples.standins.ai_api import DEMO_API_KEY, go_duration
from examples.standins.gw2_api import DEMO_KEY, LIMITED_KEY

WELL_FORMED_UNKNOWN_KEY = "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFFFFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF"


class FakeClock:
    """A clock that only moves when told to, so bucket refills are exact."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Client:
    """A synchronous in-process client; ``address`` is the caller's IP as the app sees it."""

    def __init__(self, app: FastAPI, headers: dict[str, str] | None = None, address: str = "127.0.0.1") -> None:
        self.app, self.headers, self.address = app, headers or {}, address

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, client=(self.address, 40000))
            async with httpx.AsyncClient(
                transport=transport, base_url="http://standin", headers=self.headers
            ) as client:
                return await client.request(method, path, **kwargs)

        return asyncio.run(send())

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def gw2() -> Client:
    return Client(gw2_api.create_app(slow_seconds=0.01))


@pytest.fixture
def ai() -> Client:
    return Client(ai_api.create_app(), headers=bearer(DEMO_API_KEY))


# --- GW2 ---------------------------------------------------------------------------------


def test_gw2_demo_keys_have_the_documented_shape() -> None:
    for key in (DEMO_KEY, LIMITED_KEY, WELL_FORMED_UNKNOWN_KEY):
        assert len(key) == 72
        assert gw2_api.KEY_PATTERN.match(key)


def test_gw2_without_a_key_requires_authentication(gw2: Client) -> None:
    response = gw2.get("/v2/account")
    assert response.status_code == 403
    assert response.json() == {"text": "endpoint requires authentication"}


@pytest.mark.parametrize("key", ["not-a-key", DEMO_KEY.lower(), WELL_FORMED_UNKNOWN_KEY])
def test_gw2_malformed_or_unknown_key_is_an_invalid_key(gw2: Client, key: str) -> None:
    response = gw2.get("/v2/account", headers=bearer(key))
    assert response.status_code == 403
    assert response.json() == {"text": "invalid key"}


def test_gw2_accepts_the_key_as_bearer_or_access_token(gw2: Client) -> None:
    by_header = gw2.get("/v2/account", headers=bearer(DEMO_KEY))
    by_query = gw2.get("/v2/account", params={"access_token": DEMO_KEY})
    assert by_header.status_code == by_query.status_code == 200
    assert by_header.json() == by_query.json()
    assert by_header.json()["name"] == "Demo Commander.1234"


def test_gw2_tokeninfo_and_scopes(gw2: Client) -> None:
    info = gw2.get("/v2/tokeninfo", headers=bearer(LIMITED_KEY)).json()
    assert info == {"id": LIMITED_KEY[:36], "name": "demo account only", "permissions": ["account"], "type": "APIKey"}
    response = gw2.get("/v2/characters", headers=bearer(LIMITED_KEY))
    assert response.status_code == 403
    assert response.json() == {"text": "requires scope characters"}


def test_gw2_characters(gw2: Client) -> None:
    names = gw2.get("/v2/characters", headers=bearer(DEMO_KEY)).json()
    assert "Aurora Lightbringer" in names
    one = gw2.get("/v2/characters/Aurora Lightbringer", headers=bearer(DEMO_KEY))
    assert one.status_code == 200
    assert one.json()["profession"] == "Guardian"
    missing = gw2.get("/v2/characters/Nobody", headers=bearer(DEMO_KEY))
    assert missing.status_code == 404
    assert missing.json() == {"text": "no such id"}


def test_gw2_injected_failures(gw2: Client) -> None:
    assert gw2.get("/v2/characters/Flaky", headers=bearer(DEMO_KEY)).status_code == 503
    assert gw2.get("/v2/characters/Slow", headers=bearer(DEMO_KEY)).status_code == 200


def test_gw2_guild_log_is_for_leaders(gw2: Client) -> None:
    path = f"/v2/guild/{gw2_api.DEMO_GUILD_ID}/log"
    log = gw2.get(path, headers=bearer(DEMO_KEY), params={"since": 1001}).json()
    assert [entry["id"] for entry in log] == [1003, 1002]
    assert gw2.get(path, headers=bearer(LIMITED_KEY)).json() == {"text": "requires scope guilds"}


def test_gw2_items_bulk_semantics(gw2: Client) -> None:
    full = gw2.get("/v2/items", params={"ids": "19721,19976"})
    assert full.status_code == 200
    assert [item["id"] for item in full.json()] == [19721, 19976]
    partial = gw2.get("/v2/items", params={"ids": "19721,1"})
    assert partial.status_code == 206
    none = gw2.get("/v2/items", params={"ids": "1,2"})
    assert none.status_code == 404
    assert none.json() == {"text": "all ids provided are invalid"}


def test_gw2_token_bucket_answers_429_after_the_burst_then_refills() -> None:
    clock = FakeClock()
    app = gw2_api.create_app(burst=3, refill_per_second=5.0, clock=clock)
    client = Client(app)
    statuses = [client.get("/v2/items").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = client.get("/v2/account", headers=bearer(DEMO_KEY))
    assert limited.status_code == 429
    assert limited.json() == {"text": "too many requests"}
    clock.now += 0.2  # one token at 5 per second
    assert client.get("/v2/items").status_code == 200
    assert client.get("/v2/items").status_code == 429


def test_gw2_buckets_are_per_client_address() -> None:
    app = gw2_api.create_app(burst=1, refill_per_second=0.0, clock=FakeClock())
    first, second = Client(app, address="10.0.0.1"), Client(app, address="10.0.0.2")
    assert [first.get("/v2/items").status_code for _ in range(2)] == [200, 429]
    assert second.get("/v2/items").status_code == 200


def test_gw2_default_bucket_matches_upstream() -> None:
    clock = FakeClock()
    bucket = gw2_api.TokenBucket(300, 5.0, clock)
    assert sum(bucket.take() for _ in range(400)) == 300
    clock.now += 10
    assert sum(bucket.take() for _ in range(400)) == 50


# --- OpenAI-compatible ---------------------------------------------------------------------


def chat(model: str = "gpt-4o-mini", **extra: object) -> dict[str, object]:
    """A one-message Chat Completions request: "Hello, world!" is 4 tokens."""
    return {"model": model, "messages": [{"role": "user", "content": "Hello, world!"}], **extra}


def test_ai_requires_a_bearer_key() -> None:
    client = Client(ai_api.create_app())
    missing = client.post("/v1/chat/completions", json=chat())
    assert missing.status_code == 401
    assert missing.json()["error"]["type"] == "invalid_request_error"
    bad = client.post("/v1/chat/completions", json=chat(), headers=bearer("nope"))
    assert bad.status_code == 401
    assert bad.json()["error"]["code"] == "invalid_api_key"
    assert "nope" not in bad.text


def test_ai_only_listed_keys_when_given() -> None:
    app = ai_api.create_app(api_keys={DEMO_API_KEY})
    client = Client(app)
    other = bearer("sk-proj-someone-else-0123456789")
    denied = client.post("/v1/chat/completions", json=chat(), headers=other)
    assert denied.status_code == 401
    ok = client.post("/v1/chat/completions", json=chat(), headers=bearer(DEMO_API_KEY))
    assert ok.status_code == 200


def test_ai_chat_usage_is_deterministic(ai: Client) -> None:
    first = ai.post("/v1/chat/completions", json=chat())
    second = ai.post("/v1/chat/completions", json=chat())
    assert first.status_code == 200
    body = first.json()
    # "Hello, world!" is 4 tokens; +3 for the message, +3 to prime the reply.
    assert body["usage"]["prompt_tokens"] == 10
    content = body["choices"][0]["message"]["content"]
    assert body["usage"]["completion_tokens"] == ai_api.count_tokens(content)
    assert body["usage"]["total_tokens"] == 10 + body["usage"]["completion_tokens"]
    assert body["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert second.json()["usage"] == body["usage"]
    assert second.json()["choices"] == body["choices"]


def test_ai_long_system_prompt_counts_as_cached_prefix(ai: Client) -> None:
    messages = [{"role": "system", "content": "word " * 1100}, {"role": "user", "content": "Hello, world!"}]
    usage = ai.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": messages}).json()["usage"]
    assert usage["prompt_tokens"] == 3 + (3 + 1100) + (3 + 4)
    assert usage["prompt_tokens_details"]["cached_tokens"] == 1024


def test_ai_max_tokens_truncates_with_finish_reason_length(ai: Client) -> None:
    body = ai.post("/v1/chat/completions", json=chat(max_tokens=3)).json()
    assert body["usage"]["completion_tokens"] == 3
    assert body["choices"][0]["finish_reason"] == "length"


def test_ai_rate_limit_headers(ai: Client) -> None:
    response = ai.post("/v1/chat/completions", json=chat())
    headers = response.headers
    assert headers["x-ratelimit-limit-requests"] == "500"
    assert headers["x-ratelimit-remaining-requests"] == "499"
    assert headers["x-ratelimit-reset-requests"].endswith(("ms", "s"))
    assert int(headers["x-ratelimit-remaining-tokens"]) < int(headers["x-ratelimit-limit-tokens"])


@pytest.mark.parametrize(("mode", "limit"), [("missing", None), ("negative", "-1"), ("garbage", "lots")])
def test_ai_rate_limit_header_modes(mode: ai_api.HeaderMode, limit: str | None) -> None:
    client = Client(ai_api.create_app(rate_limit_headers=mode), headers=bearer(DEMO_API_KEY))
    response = client.post("/v1/chat/completions", json=chat())
    assert response.status_code == 200
    assert response.headers.get("x-ratelimit-limit-requests") == limit


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (360, "6m0s"),
        (0.012, "12ms"),
        (1, "1s"),
        (20, "20s"),
        (1.5, "1.5s"),
        (3723.5, "1h2m3.5s"),
    ],
)
def test_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_ai_insufficient_quota(ai: Client) -> None:
    response = ai.post("/v1/chat/completions", json=chat(model="quota-exceeded"))
    assert response.status_code == 429
    error = response.json()["error"]
    assert error["type"] == error["code"] == "insufficient_quota"
    assert error["message"].startswith("You exceeded your current quota")
    assert set(error) == {"message", "type", "param", "code"}
    assert "retry-after-ms" not in response.headers


def test_ai_quota_switch_applies_to_every_model() -> None:
    client = Client(ai_api.create_app(quota_exceeded=True), headers=bearer(DEMO_API_KEY))
    response = client.post("/v1/chat/completions", json=chat())
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "insufficient_quota"


def test_ai_request_budget_answers_rate_limit_exceeded() -> None:
    clock = FakeClock()
    app = ai_api.create_app(request_limit=2, period_seconds=60, clock=clock)
    client = Client(app, headers=bearer(DEMO_API_KEY))
    statuses = [client.post("/v1/chat/completions", json=chat()).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    limited = client.post("/v1/chat/completions", json=chat())
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert limited.headers["retry-after-ms"] == "30000"  # one request per 30 s
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"
    clock.now += 30
    assert client.post("/v1/chat/completions", json=chat()).status_code == 200


def test_ai_forced_rate_limit_and_server_error(ai: Client) -> None:
    limited = ai.post("/v1/chat/completions", json=chat(model="rate-limited"))
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(limited.headers["retry-after-ms"]) > 0
    broken = ai.post("/v1/chat/completions", json=chat(model="broken"))
    assert broken.status_code == 500
    assert broken.json()["error"]["type"] == "server_error"


def test_ai_invalid_request_uses_the_openai_error_shape(ai: Client) -> None:
    response = ai.post("/v1/chat/completions", json={"model": "gpt-4o-mini"})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.json()["error"]["param"] == "messages"


def test_ai_responses_api_usage_shape(ai: Client) -> None:
    body = ai.post("/v1/responses", json={"model": "gpt-4o-mini", "input": "Hello, world!"}).json()
    usage = body["usage"]
    assert usage["input_tokens"] == 10
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["input_tokens_details"] == {"cached_tokens": 0}
    assert body["status"] == "completed"
    assert body["output"][0]["content"][0]["type"] == "output_text"
