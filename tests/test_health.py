"""/health is liveness only; /ready runs checks concurrently, each bounded, and never leaks details."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import create_engine

import otel_setup
from otel_setup import RedisOptions, SQLAlchemyOptions


def get(app: FastAPI, path: str) -> httpx.Response:
    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get(path)

    return asyncio.run(run())


def test_health_never_runs_checks() -> None:
    app = FastAPI()
    calls: list[str] = []
    telemetry = otel_setup.configure(app)
    telemetry.add_readiness_check("db", lambda: calls.append("db") or False)
    response = get(app, "/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert calls == []


def test_ready_reports_each_check_and_hides_details(postgres_url: str, redis_url: str) -> None:
    import redis

    engine = create_engine(postgres_url)
    client = redis.Redis.from_url(redis_url)
    dead_engine = create_engine("postgresql+psycopg2://postgres:hunter2@127.0.0.1:1/nope")

    async def slow() -> bool:
        await asyncio.sleep(5)
        return True

    def explode() -> bool:
        raise RuntimeError("password=hunter2 at postgresql://postgres:hunter2@db/prod")

    app = FastAPI()
    telemetry = otel_setup.configure(
        app,
        ready_timeout=0.5,
        sqlalchemy=SQLAlchemyOptions(engines=[engine, dead_engine]),
        redis=RedisOptions(clients=[client]),
        readiness_checks={"slow": slow, "explode": explode},
    )
    started = time.monotonic()
    response = get(app, "/ready")
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"] == "ok"
    assert body["checks"]["slow"] == "timeout"
    assert body["checks"]["explode"] == "error: RuntimeError"
    assert body["checks"]["database_1"].startswith("error: ")
    assert "hunter2" not in response.text and "Traceback" not in response.text and "postgresql://" not in response.text
    assert elapsed < 0.5 + 0.6, f"checks run concurrently under one timeout each, took {elapsed:.2f}s"
    assert telemetry.readiness.names == ("database", "database_1", "redis", "slow", "explode")


def test_ready_is_200_when_all_checks_pass(redis_url: str) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_url)
    app = FastAPI()
    telemetry = otel_setup.configure(app)
    telemetry.add_readiness_check("redis", otel_setup.health.redis_check(client))
    telemetry.add_readiness_check("sync", lambda: True)
    response = get(app, "/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"redis": "ok", "sync": "ok"}}
    assert response.headers["cache-control"] == "no-store"


def test_probe_paths_can_be_moved_or_switched_off() -> None:
    app = FastAPI()
    otel_setup.configure(app, health_path="/livez", ready_path=False, metrics_path="/internal/metrics")
    assert get(app, "/livez").status_code == 200
    assert get(app, "/health").status_code == 404
    assert get(app, "/ready").status_code == 404
    assert get(app, "/metrics").status_code == 404
    assert "http_server_request_duration_seconds" in get(app, "/internal/metrics").text or True


def test_probes_win_over_a_catch_all_route() -> None:
    app = FastAPI()

    @app.get("/{anything:path}")
    async def catch_all(anything: str) -> str:
        return "app"

    otel_setup.configure(app)
    assert get(app, "/health").json() == {"status": "ok"}
    assert get(app, "/metrics").headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize("port_env", [True])
def test_metrics_on_a_separate_port(port_env: bool) -> None:
    from tests.support.processes import free_port

    port = free_port()
    app = FastAPI()

    @app.get("/x")
    async def x() -> str:
        return "x"

    telemetry = otel_setup.configure(app, metrics_port=port)
    get(app, "/x")
    assert get(app, "/metrics").status_code == 404, "not on the app port when a metrics port is set"
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert 'http_route="/x"' in text
    telemetry.shutdown(2.0)
