"""The example service: ``uvicorn examples.gw2_app.main:app``.

Telemetry is one call right after the app is created; everything else is an ordinary FastAPI
service. The database engine, the Redis client and the httpx clients are created when their
modules are imported, before ``configure`` runs, as in most real code bases.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Annotated, Any, Literal

import structlog
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

import otel_setup

from . import cache, db
from .clients import UpstreamError, ai, gw2
from .settings import settings

log = structlog.get_logger(__name__)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    """Create the tables at start; release connections at shutdown."""
    await run_in_threadpool(db.create_tables)
    yield
    await gw2.aclose()
    await ai.aclose()
    await cache.close()
    db.engine.dispose()


app = FastAPI(title="GW2 companion (example)", lifespan=lifespan)
# Redis keys are "gw2:<kind>:<hash>": the prefixes name the caches in the hit/miss counter.
telemetry = otel_setup.configure(
    app, cache_key_prefixes=["gw2:account:", "gw2:characters:", "gw2:character:", "gw2:item:"]
)
telemetry.add_readiness_check("database", db.ping)
telemetry.add_readiness_check("redis", cache.ping)


class TimingAllowOrigin:
    """``Timing-Allow-Origin`` for the frontend's origins, so its Resource Timing entries carry ``serverTiming``.

    CORS exposing ``Server-Timing`` lets scripts read the header; cross-origin resource timing
    additionally needs this header, or the browser hands the page an empty ``serverTiming``.
    """

    def __init__(self, app: Any, origins: tuple[str, ...]) -> None:
        self.app = app
        self.origins = frozenset(origin.encode("latin-1") for origin in origins)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        origin = dict(scope.get("headers") or ()).get(b"origin") if scope["type"] == "http" else None
        if origin is None or origin not in self.origins:
            await self.app(scope, receive, send)
            return

        async def send_with_timing(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (b"timing-allow-origin", origin)]
            await send(message)

        await self.app(scope, receive, send_with_timing)


if settings.frontend_origins:
    # The browser sends Sentry's sentry-trace and baggage beside the W3C traceparent; the
    # package continues a trace from traceparent only, and never takes inbound baggage.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(settings.frontend_origins),
        allow_methods=["GET", "POST"],
        allow_headers=["content-type", "x-gw2-key", "traceparent", "tracestate", "sentry-trace", "baggage"],
    )
    app.add_middleware(TimingAllowOrigin, origins=settings.frontend_origins)


@app.exception_handler(UpstreamError)
async def upstream_error(_: Request, exc: UpstreamError) -> JSONResponse:
    """Upstream trouble is answered with a short, safe message, never the upstream body."""
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


_key_header = APIKeyHeader(
    name="X-GW2-Key", auto_error=False, description="Your Guild Wars 2 API key; forwarded to GW2 only."
)


def _gw2_key(value: Annotated[str | None, Depends(_key_header)]) -> str:
    if not value or not value.strip():
        raise HTTPException(401, "missing X-GW2-Key header")
    return value.strip()


GW2Key = Annotated[str, Depends(_gw2_key)]


def _user_seen(key: str) -> None:
    """Count this account in the active-users gauge, once the GW2 API has accepted its key.

    The id handed over is the hashed one the cache uses, so the key itself never leaves the
    handler; ``seen()`` keeps only a keyed digest of it and exports counts, never ids.
    """
    telemetry.users.seen(cache.key_for("account", key))


@app.get("/api/account")
async def account(key: GW2Key) -> dict[str, Any]:
    """The user's GW2 account, cached per key; each upstream fetch upserts the account row."""
    cache_key = cache.key_for("account", key)
    if (cached := await cache.get_json(cache_key)) is not None:
        _user_seen(key)  # cached only after the upstream accepted the key
        return cached
    data = await gw2.account(key)
    _user_seen(key)
    await cache.set_json(cache_key, data)
    await run_in_threadpool(db.upsert_account, data)
    log.info("account.refreshed", world=data.get("world"))
    return data


@app.get("/api/characters/{name}")
async def character(name: str, key: GW2Key) -> dict[str, Any]:
    cache_key = cache.key_for("character", key, name)
    if (cached := await cache.get_json(cache_key)) is not None:
        _user_seen(key)
        return cached
    data = await gw2.character(key, name)
    _user_seen(key)
    await cache.set_json(cache_key, data)
    return data


@app.get("/api/items/{item_id}")
async def item(item_id: int) -> dict[str, Any]:
    """Cache, then database, then the public GW2 catalogue (stored for next time)."""
    cache_key = f"gw2:item:{item_id}"
    if (cached := await cache.get_json(cache_key)) is not None:
        return cached
    data = await run_in_threadpool(db.get_item, item_id)
    if data is None:
        data = await gw2.item(item_id)
        if data is None:
            raise HTTPException(404, "no such item")
        await run_in_threadpool(db.save_item, data)
    await cache.set_json(cache_key, data, ttl_seconds=3600)
    return data


class BuildAdviceRequest(BaseModel):
    profession: str = Field(min_length=3, max_length=32, examples=["Guardian"])
    game_mode: Literal["pve", "fractals", "raids", "wvw", "pvp"] = "pve"
    question: str | None = Field(default=None, max_length=500)


class BuildAdvice(BaseModel):
    advice: str
    model: str
    finish_reason: str | None
    input_tokens: int
    output_tokens: int


@app.post("/api/ai/build-advice")
async def build_advice(request: BuildAdviceRequest) -> BuildAdvice:
    """Ask the AI API for a build suggestion; prompts are never logged."""
    prompt = f"Suggest a {request.game_mode} build for a {request.profession}."
    if request.question:
        prompt += f" {request.question}"
    body = await ai.chat(
        [
            {"role": "system", "content": "You are a concise Guild Wars 2 build advisor."},
            {"role": "user", "content": prompt},
        ]
    )
    choice = body["choices"][0]
    usage = body.get("usage", {})
    log.info("build_advice.answered", model=body.get("model"), output_tokens=usage.get("completion_tokens", 0))
    return BuildAdvice(
        advice=choice["message"]["content"],
        model=body.get("model", settings.ai_model),
        finish_reason=choice.get("finish_reason"),
        input_tokens=usage.get("prompt_tokens", 0),
        output_tokens=usage.get("completion_tokens", 0),
    )


async def _cached(cache_key: str, fetch: Callable[[], Awaitable[Any]]) -> Any:
    """Read-through cache; ``cache_key`` comes from :func:`cache.key_for` (hashed, no secrets)."""
    if (cached := await cache.get_json(cache_key)) is not None:
        # The single-resource routes (/api/account, /api/characters/{name}) share these keys
        # and store the object itself, not wrapped.
        return cached["value"] if set(cached) == {"value"} else cached
    value = await fetch()
    await cache.set_json(cache_key, {"value": value})
    return value


@app.get("/api/accounts/me/build-advice")
async def account_build_advice(key: GW2Key) -> BuildAdvice:
    """Everything at once: GW2 account and characters (cached), a database snapshot, AI advice.

    The prompt carries professions and levels only, never account or character names.
    """
    data = await _cached(cache.key_for("account", key), lambda: gw2.account(key))
    _user_seen(key)
    names = await _cached(cache.key_for("characters", key), lambda: gw2.characters(key))
    await run_in_threadpool(db.upsert_account, data)
    summary = []
    for name in names[:3]:
        try:
            character_data = await _cached(cache.key_for("character", key, name), partial(gw2.character, key, name))
        except UpstreamError:
            continue  # one unavailable character does not spoil the advice
        summary.append(f"level {character_data.get('level')} {character_data.get('profession')}")
    prompt = "My characters: " + ", ".join(summary) + ". Which one should I gear first for fractals, and how?"
    body = await ai.chat(
        [
            {"role": "system", "content": "You are a concise Guild Wars 2 build advisor."},
            {"role": "user", "content": prompt},
        ]
    )
    choice = body["choices"][0]
    usage = body.get("usage", {})
    log.info("build_advice.answered", model=body.get("model"), output_tokens=usage.get("completion_tokens", 0))
    return BuildAdvice(
        advice=choice["message"]["content"],
        model=body.get("model", settings.ai_model),
        finish_reason=choice.get("finish_reason"),
        input_tokens=usage.get("prompt_tokens", 0),
        output_tokens=usage.get("completion_tokens", 0),
    )


@app.get("/api/slow")
async def slow(seconds: Annotated[float, Query(ge=0, le=10)] = 1.5) -> dict[str, float]:
    """A deliberately slow route, to see latency in dashboards and alerts."""
    await asyncio.sleep(seconds)
    return {"slept_seconds": seconds}


@app.get("/api/boom")
async def boom() -> None:
    """A deliberately failing route: an unhandled exception becomes a 500 and an error event."""
    raise RuntimeError("boom: deliberate failure for the error-tracking demo")


@app.get("/healthcare")
async def healthcare() -> dict[str, str]:
    """An ordinary route whose path starts like ``/health``; it must be traced and measured."""
    return {"topic": "healthcare", "tip": "Druids and Tempests keep the squad alive."}
