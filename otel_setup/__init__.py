"""Vendor-neutral OpenTelemetry for FastAPI services, in one call or none.

``configure(app)`` gives traces (10 % head sampling), RED metrics on every
request (Prometheus ``/metrics`` and OTLP), ``/health`` and ``/ready``, and
instrumentation of SQLAlchemy, Redis and httpx. ``opentelemetry-instrument``
gives the same with no code change.
"""

from __future__ import annotations

from otel_setup._core.configure import configure
from otel_setup._core.errors import OtelSetupConfigError
from otel_setup._core.options import (
    CacheLookup,
    CallListener,
    CallRecord,
    ConfigureOptions,
    FastAPIOptions,
    GenAICall,
    GW2Call,
    HttpxOptions,
    RedisOptions,
    SQLAlchemyOptions,
    add_call_listener,
)
from otel_setup._core.telemetry import Telemetry
from otel_setup._hotpath.users import ActiveUsers
from otel_setup.health import ReadinessCheck
from otel_setup.version import __version__

__all__ = [
    "ActiveUsers",
    "CacheLookup",
    "CallListener",
    "CallRecord",
    "ConfigureOptions",
    "FastAPIOptions",
    "GW2Call",
    "GenAICall",
    "HttpxOptions",
    "OtelSetupConfigError",
    "ReadinessCheck",
    "RedisOptions",
    "SQLAlchemyOptions",
    "Telemetry",
    "__version__",
    "add_call_listener",
    "configure",
]
