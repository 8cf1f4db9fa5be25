"""Cache hit/miss counting from Redis replies, against a real Redis on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest

import otel_setup
from otel_setup._integrations.cache import cache_name, lookup_counts
from tests.support.otlp_receiver import OtlpReceiver

SECRET = "C9B1A2E4-account-secret"


def lookups(receiver: OtlpReceiver) -> dict[tuple[str, str, str], float]:
    return {
        (p.attributes["cache.name"], p.attributes["db.operation.name"], p.attributes["cache.result"]): p.value
        for p in receiver.metric_points()
        if p.name == "otel_setup.cache.lookups"
    }


@pytest.mark.parametrize(
    ("key", "prefixes", "name"),
    [
        ("gw2:account:ab12", ("gw2:account:", "gw2:"), "gw2:account"),
        ("gw2:item:19721", ("gw2:account:", "gw2:"), "gw2"),
        ("session:abc", ("gw2:account:",), "_OTHER"),
        ("gw2:account:ab12", (), "gw2"),
        ("user-profile:42", (), "user-profile"),
        ("C9B1A2E4:x", (), "_OTHER"),  # uppercase or digit-heavy heads look like identifiers
        ("12345678:x", (), "_OTHER"),
        ("no-separator", (), "_OTHER"),
    ],
)
def test_cache_names_are_prefixes_never_keys(key: str, prefixes: tuple[str, ...], name: str) -> None:
    assert cache_name(key, prefixes) == name


def test_reply_shapes() -> None:
    assert lookup_counts("GET", None) == (0, 1)
    assert lookup_counts("GET", b"x") == (1, 0)
    assert lookup_counts("GET", b"") == (1, 0), "an empty string is a cached value"
    assert lookup_counts("MGET", [b"a", None, b"c"]) == (2, 1)
    assert lookup_counts("HMGET", [None, None]) == (0, 2)
    assert lookup_counts("HGETALL", {}) == (0, 1)
    assert lookup_counts("SET", True) is None


def test_redis_reads_are_counted_by_cache_and_result(otlp_receiver: OtlpReceiver, redis_url: str) -> None:
    import redis
    import redis.asyncio

    client = redis.Redis.from_url(redis_url)
    telemetry = otel_setup.configure(otlp_endpoint=otlp_receiver.endpoint, cache_key_prefixes="gw2:account:,gw2:item:")
    records: list[Any] = []
    remove = otel_setup.add_call_listener(records.append)
    account = f"gw2:account:{SECRET}"
    item = "gw2:item:19721"
    try:
        client.delete(account, item, "gw2:hash")
        assert client.get(account) is None  # miss
        client.set(account, "{}", ex=60)
        assert client.get(account) == b"{}"  # hit
        assert client.mget(account, item) == [b"{}", None]  # one hit, one miss, two caches
        assert client.hget("gw2:hash", "field") is None  # miss, cache _OTHER
        with client.pipeline() as pipe:  # pipelines are not counted
            pipe.get(account)
            pipe.execute()

        async def run_async() -> None:
            async_client = redis.asyncio.Redis.from_url(redis_url)
            assert await async_client.get(item) is None  # miss
            await async_client.aclose()

        asyncio.run(run_async())
    finally:
        remove()
        client.delete(account, item)
        client.close()
    telemetry.force_flush(5.0)
    assert otlp_receiver.wait_for(lambda r: ("gw2:item", "GET", "miss") in lookups(r))
    assert lookups(otlp_receiver) == {
        ("gw2:account", "GET", "miss"): 1,
        ("gw2:account", "GET", "hit"): 1,
        ("gw2:account", "MGET", "hit"): 1,
        ("gw2:item", "MGET", "miss"): 1,
        ("_OTHER", "HGET", "miss"): 1,
        ("gw2:item", "GET", "miss"): 1,
    }
    everything = repr([p.attributes for p in otlp_receiver.metric_points()])
    assert SECRET not in everything and "19721" not in everything
    first = records[0]
    assert (first.cache, first.command, first.hits, first.misses) == ("gw2:account", "GET", 0, 1)
    assert first.key_hash == hashlib.sha256(account.encode()).hexdigest()[:16]
    assert SECRET not in repr(records)
