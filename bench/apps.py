"""The benchmarked apps: one FastAPI app per mode, instrumented the way that mode prescribes.

Every mode builds its telemetry exactly once per process (OpenTelemetry's
global providers can be set only once), which is why each mode runs in a
fresh worker process. ``MODES`` is the single table the driver, the uvicorn
runner and the regression test read.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI

# Loopback services the "realistic" route talks to; overridable for other machines.
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
STANDIN_URL = os.environ.get("BENCH_STANDIN_URL", "http://127.0.0.1:18081/v2/items/19721")
REDIS_KEY = "bench:item:19721"
REALISTIC_PATH = "/items/19721"  # the row prepare_services() writes
SAMPLING = 0.1  # opentelemetry-instrument users typically set 10%; otel_setup's default


@dataclass(frozen=True)
class Mode:
    """How one benchmarked setup is built, and what it instruments."""

    name: str
    label: str
    setup: Callable[[FastAPI], None]
    app_kwargs: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    """Set before the worker imports anything (contrib reads its semconv switch once)."""
    needs_sink: bool = False


def _nothing(app: FastAPI) -> None:
    """The baseline: no SDK provider is set, so FastAPI's own telemetry stays dormant."""


def _instrumentator(app: FastAPI) -> None:
    from prometheus_fastapi_instrumentator import Instrumentator

    Instrumentator().instrument(app).expose(app, include_in_schema=False)


def _stock_providers() -> tuple[Any, Any]:
    """What ``opentelemetry-instrument`` builds with 10% parent-based sampling and a Prometheus reader.

    No span exporter is attached, exactly like otel_setup's defaults without
    an OTLP endpoint, so both sides pay for creating spans and neither for
    exporting them (the OTLP mode measures export separately).
    """
    from opentelemetry import metrics, trace
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    tracer_provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(SAMPLING)))
    meter_provider = MeterProvider(metric_readers=[PrometheusMetricReader()])
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    return tracer_provider, meter_provider


def _stock_libraries() -> None:
    """The client instrumentors ``opentelemetry-instrument`` would load.

    Contrib's SQLAlchemy instrumentor refuses SQLAlchemy 2.1, so the stock
    setup leaves database calls untraced; it is not forced here.
    """
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    HTTPXClientInstrumentor().instrument()
    RedisInstrumentor().instrument()


def _stock(app: FastAPI) -> None:
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    tracer_provider, meter_provider = _stock_providers()
    FastAPIInstrumentor.instrument_app(app, tracer_provider=tracer_provider, meter_provider=meter_provider)
    _stock_libraries()


def _stock_tuned(app: FastAPI) -> None:
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    tracer_provider, meter_provider = _stock_providers()
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=tracer_provider, meter_provider=meter_provider, exclude_spans=["receive", "send"]
    )
    _stock_libraries()


def _native(app: FastAPI) -> None:
    """FastAPI switches its telemetry on by itself once global SDK providers exist."""
    _stock_providers()


def _otel_setup(**options: Any) -> Callable[[FastAPI], None]:
    def setup(app: FastAPI) -> None:
        import otel_setup

        options.update({key: value() for key, value in options.items() if callable(value)})
        if os.environ.get("BENCH_OTLP_ENDPOINT"):
            options.setdefault("otlp_endpoint", os.environ["BENCH_OTLP_ENDPOINT"])
        otel_setup.configure(app, **options)

    return setup


def _views() -> list[Any]:
    from opentelemetry.sdk.metrics.view import View

    return [View(instrument_name="http.server.request.duration", attribute_keys={"http.route", "http.request.method"})]


_LEAN_NATIVE = {"telemetry": {"operation_spans": False, "logs": False}}
_STABLE = {"OTEL_SEMCONV_STABILITY_OPT_IN": "http"}

MODES: dict[str, Mode] = {
    mode.name: mode
    for mode in (
        Mode("bare", "bare FastAPI", _nothing),
        Mode("instrumentator", "prometheus-fastapi-instrumentator (metrics only)", _instrumentator),
        Mode("stock", "stock OTel: contrib FastAPIInstrumentor, 10%, Prometheus reader", _stock),
        Mode("stock_tuned", "stock OTel tuned: no send/receive spans, stable semconv", _stock_tuned, env=_STABLE),
        Mode("native", "FastAPI native telemetry, defaults, same providers", _native),
        Mode("native_lean", "FastAPI native, operation spans and logs off", _native, app_kwargs=_LEAN_NATIVE),
        Mode("otel_setup", "otel_setup defaults (10%, Prometheus reader)", _otel_setup()),
        Mode(
            "otel_setup_nolog",
            "otel_setup defaults, request log off (diagnostic)",
            _otel_setup(request_log_level="off"),
        ),
        Mode("otel_setup_100", "otel_setup, 100% sampling", _otel_setup(sampling_ratio=1.0)),
        Mode(
            "otel_setup_prod",
            "otel_setup production: defaults (10%, errors and slow kept), OTLP to a loopback receiver",
            _otel_setup(),
            needs_sink=True,
        ),
        Mode(
            "otel_setup_delta",
            "otel_setup production, OTLP metrics as DELTA",
            _otel_setup(),
            env={"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE": "delta"},
            needs_sink=True,
        ),
        Mode(
            "otel_setup_views",
            "otel_setup production with a user View (metrics recorded through the SDK's instruments)",
            _otel_setup(views=_views),
            needs_sink=True,
        ),
        Mode(
            "otel_setup_otlp",
            "otel_setup, 100% sampling, OTLP to a loopback sink",
            _otel_setup(sampling_ratio=1.0),
            needs_sink=True,
        ),
    )
}


def build_trivial(mode: Mode) -> FastAPI:
    """The trivial route: no I/O, so the instrumentation's own cost dominates."""
    app = FastAPI(**mode.app_kwargs)

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, Any]:
        return {"item_id": item_id, "name": "Mithril Ore"}

    mode.setup(app)
    return app


def build_realistic(mode: Mode) -> FastAPI:
    """One database query, one Redis GET and one outbound httpx call per request.

    Clients are created in the lifespan, after the mode's setup ran, which is
    how an application creates them after ``configure()``.
    """
    import httpx
    import redis.asyncio as aioredis
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    resources: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        resources["engine"] = create_async_engine(POSTGRES_URL, pool_size=32, max_overflow=0)
        resources["redis"] = aioredis.Redis.from_url(REDIS_URL)
        resources["http"] = httpx.AsyncClient(timeout=5.0, limits=httpx.Limits(max_keepalive_connections=64))
        yield
        await resources["http"].aclose()
        await resources["redis"].aclose()
        await resources["engine"].dispose()

    app = FastAPI(lifespan=lifespan, **mode.app_kwargs)
    query = text("SELECT name, count FROM bench_items WHERE id = :id")

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, Any]:
        async with resources["engine"].connect() as connection:
            row = (await connection.execute(query, {"id": item_id})).one()
        cached = await resources["redis"].get(REDIS_KEY)
        price = (await resources["http"].get(STANDIN_URL)).json()
        return {
            "item_id": item_id,
            "name": row.name,
            "count": row.count,
            "cached": cached is not None,
            "ref": price["id"],
        }

    mode.setup(app)
    return app


def create_app() -> FastAPI:
    """uvicorn ``--factory`` entry point; the mode comes from ``BENCH_MODE``."""
    return build_realistic(MODES[os.environ["BENCH_MODE"]])
