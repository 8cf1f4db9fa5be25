"""Vendor-neutral OpenTelemetry for FastAPI services, in one call or none.

``configure(app)`` gives traces (10 % head sampling), RED metrics on every
request (Prometheus ``/metrics`` and OTLP), ``/health`` and ``/ready``, and
instrumentation of SQLAlchemy, Redis and httpx, and spans by endpoint
for known HTTP APIs (GW2, OpenAI-compatible, your own: ``KnownHttpApi``). ``opentelemetry-instrument``
gives the same with no code change.
"""

from __future__ import annotations

from otel_setup._core.configure import configure
from otel_setup._core.errors import OtelSetupConfigError
from otel_setup._core.integration import IntegrationStatus
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
from otel_setup._integrations.known_api import (
    ApiCall,
    ApiHandler,
    BodySink,
    EndpointApi,
    EndpointCall,
    KnownHttpApi,
    client_duration_histogram,
    observe_body,
)
from otel_setup.health import ReadinessCheck
from otel_setup.version import __version__

__all__ = [
    "ActiveUsers",
    "ApiCall",
    "ApiHandler",
    "BodySink",
    "CacheLookup",
    "CallListener",
    "CallRecord",
    "ConfigureOptions",
    "EndpointApi",
    "EndpointCall",
    "FastAPIOptions",
    "GW2Call",
    "GenAICall",
    "HttpxOptions",
    "IntegrationStatus",
    "KnownHttpApi",
    "OtelSetupConfigError",
    "ReadinessCheck",
    "RedisOptions",
    "SQLAlchemyOptions",
    "Telemetry",
    "__version__",
    "add_call_listener",
    "client_duration_histogram",
    "configure",
    "observe_body",
]
