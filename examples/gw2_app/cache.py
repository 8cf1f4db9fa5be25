"""The Redis cache: JSON values with a TTL, keyed without any secret.

With ``REDIS_URL`` unset the service uses an in-process Redis (``fakeredis``) so the example
runs with no server. Cache failures degrade to a miss: a Redis outage shows up in ``/ready``
and in telemetry, not as failed requests.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, cast

import fakeredis
import redis.asyncio as redis
import structlog

from .settings import settings

log = structlog.get_logger(__name__)


def _connect(url: str | None) -> redis.Redis:
    if url:
        return redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
    return fakeredis.FakeAsyncRedis()


client = _connect(settings.redis_url)


def key_for(kind: str, *secret_parts: str) -> str:
    """``gw2:<kind>:<sha256 prefix>``: keys, character names and the like never reach Redis."""
    digest = hashlib.sha256("\0".join(secret_parts).encode()).hexdigest()[:16]
    return f"gw2:{kind}:{digest}"


async def get_json(key: str) -> dict[str, Any] | None:
    try:
        raw = await client.get(key)
    except redis.RedisError as exc:
        log.warning("cache.read_failed", error=type(exc).__name__)
        return None
    return None if raw is None else cast(dict[str, Any], json.loads(raw))


async def set_json(key: str, value: dict[str, Any], ttl_seconds: int = settings.cache_ttl_seconds) -> None:
    try:
        await client.set(key, json.dumps(value), ex=ttl_seconds)
    except redis.RedisError as exc:
        log.warning("cache.write_failed", error=type(exc).__name__)


async def ping() -> bool:
    """Readiness: True when Redis answers PING (a connection error raises)."""
    return bool(await client.ping())


async def close() -> None:
    """Release connections; the client reconnects on next use (tests start the app again)."""
    await client.aclose()
