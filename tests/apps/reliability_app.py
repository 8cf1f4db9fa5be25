"""The service the reliability tests and the soak benchmark put under fault.

Small on purpose: a route that makes a few spans, one that raises (for
Sentry), and two that need a dependency (``DATABASE_URL``, ``REDIS_URL``),
so an outage of either is visible as 5xx answers while everything else keeps
working. ``?children=N`` adds N spans to a request, so a short burst can
overflow the span queue during a collector outage.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import FastAPI
from opentelemetry import trace
from starlette.concurrency import run_in_threadpool

import otel_setup

app = FastAPI(title="reliability-app")

_engine: Any = None
_redis: Any = None
options: dict[str, Any] = {}
if os.environ.get("DATABASE_URL"):
    from sqlalchemy import create_engine

    # A short connect timeout: a database that is down must fail the request
    # quickly rather than hold a worker.
    _engine = create_engine(os.environ["DATABASE_URL"], connect_args={"connect_timeout": 1}, pool_pre_ping=True)
    options["sqlalchemy"] = otel_setup.SQLAlchemyOptions(engines=[_engine])
if os.environ.get("REDIS_URL"):
    import redis.asyncio as redis

    _redis = redis.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=1.0, socket_connect_timeout=1.0)
    options["redis"] = otel_setup.RedisOptions(clients=[_redis])

telemetry = otel_setup.configure(app, **options)


@app.get("/items/{item_id}")
async def item(item_id: int, children: int = 0) -> dict[str, int]:
    tracer = trace.get_tracer("reliability_app")
    for index in range(min(children, 50)):
        with tracer.start_as_current_span(f"step {index}"):
            pass
    return {"item_id": item_id, "pid": os.getpid()}


@app.get("/boom")
async def boom() -> None:
    raise RuntimeError("deliberate failure")


@app.get("/db")
async def database() -> dict[str, int]:
    from sqlalchemy import text

    def query() -> int:
        with _engine.connect() as connection:
            return int(connection.execute(text("SELECT 1")).scalar_one())

    return {"value": await run_in_threadpool(query)}


@app.get("/cache")
async def cache() -> dict[str, Any]:
    value = await _redis.get("reliability:key")
    return {"value": value}
