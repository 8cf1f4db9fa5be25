"""The oldest supported releases: FastAPI without native telemetry, SQLAlchemy 2.0."""

from __future__ import annotations

import pytest

from tests.support.compat import run_with, site_with

pytestmark = pytest.mark.slow

_SCENARIO = r"""
import asyncio, json, logging
logging.basicConfig(level=logging.DEBUG)
import fastapi, sqlalchemy, httpx
from fastapi import FastAPI
from sqlalchemy import create_engine, text
import otel_setup
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import os
engine = create_engine(os.environ.get("COMPAT_DATABASE_URL", "sqlite://"))
app = FastAPI(title="compat")

@app.get("/items/{item_id}")
async def item(item_id: int):
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    return {"id": item_id}

telemetry = otel_setup.configure(app, sampling_ratio=1.0)
exporter = InMemorySpanExporter()
telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))

async def main():
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/items/3")).status_code == 200
        return (await client.get("/metrics")).text

metrics = asyncio.run(main())
spans = exporter.get_finished_spans()
print(json.dumps({
    "fastapi": fastapi.__version__,
    "sqlalchemy": sqlalchemy.__version__,
    "native": hasattr(app, "_telemetry"),
    "spans": [[s.name, s.kind.name, s.parent.span_id if s.parent else None, s.context.span_id] for s in spans],
    "route_series": sum(1 for l in metrics.splitlines() if l.startswith("http_server_request_duration_seconds_count")),
    "db_series": sum(1 for l in metrics.splitlines() if l.startswith("db_client_operation_duration_seconds_count")),
    "instrumentations": {name: str(status) for name, status in telemetry.instrumentations.items()},
}))
"""


def _check(result: dict[str, object]) -> None:
    spans = result["spans"]
    assert isinstance(spans, list)
    server = [s for s in spans if s[1] == "SERVER"]
    client = [s for s in spans if s[1] == "CLIENT"]
    assert [s[0] for s in server] == ["GET /items/{item_id}"], spans
    assert [s[0] for s in client] in (["SELECT"], ["SELECT test"]), spans
    assert client[0][2] == server[0][3], "the query is a child of the request"
    assert result["route_series"] == 1
    assert result["db_series"] == 1
    instrumentations = result["instrumentations"]
    assert isinstance(instrumentations, dict)
    for name in ("fastapi", "sqlalchemy", "redis", "httpx"):
        assert instrumentations[name] == "active", instrumentations


def test_fastapi_before_native_telemetry() -> None:
    site = site_with(["fastapi==0.141.0", "starlette==0.47.3"])
    result = run_with(site, _SCENARIO)
    assert result["fastapi"] == "0.141.0"
    assert result["native"] is False
    _check(result)


def test_sqlalchemy_2_0() -> None:
    site = site_with(["sqlalchemy==2.0.44"])
    result = run_with(site, _SCENARIO)
    assert str(result["sqlalchemy"]).startswith("2.0.")
    _check(result)


def test_sqlalchemy_2_0_on_postgresql(postgres_url: str) -> None:
    site = site_with(["sqlalchemy==2.0.44"])
    result = run_with(site, _SCENARIO, env={"COMPAT_DATABASE_URL": postgres_url})
    assert str(result["sqlalchemy"]).startswith("2.0.")
    _check(result)
    assert result["spans"][0][0] == "SELECT test" or any(s[0] == "SELECT test" for s in result["spans"])


def test_newest_releases_in_the_main_environment() -> None:
    site = site_with(["six==1.16.0"])  # an empty shadow: the venv's own newest releases
    result = run_with(site, _SCENARIO)
    assert str(result["sqlalchemy"]).startswith("2.1.")
    assert result["native"] is True
    _check(result)
