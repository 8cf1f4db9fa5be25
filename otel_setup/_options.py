"""Public option types for ``configure()``.

Each integration keyword takes three states, as in logfire: ``None`` (the
default: on, unless listed in ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``),
``False`` (off), or an options object (on, customised).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, Union

from otel_setup.health import ReadinessCheck

__all__ = [
    "ConfigureOptions",
    "FastAPIOptions",
    "HttpxOptions",
    "RedisOptions",
    "SQLAlchemyOptions",
]


@dataclass(frozen=True)
class FastAPIOptions:
    """Server spans and RED metrics for the app passed to ``configure()``."""

    excluded_urls: Sequence[str] = ()
    """Regular expressions matched against the whole path, on top of the health, ready and metrics paths."""
    shutdown_on_lifespan: bool = True
    """Flush and shut telemetry down when the app's lifespan ends (uvicorn skips atexit on SIGTERM)."""


@dataclass(frozen=True)
class SQLAlchemyOptions:
    """Every engine is instrumented; engines listed here also get a ``/ready`` check."""

    engines: Sequence[Any] = ()


@dataclass(frozen=True)
class RedisOptions:
    """Every client is instrumented; clients listed here also get a ``/ready`` check."""

    clients: Sequence[Any] = ()


@dataclass(frozen=True)
class HttpxOptions:
    """Sync and async clients, with W3C ``traceparent`` injected."""


class ConfigureOptions(TypedDict, total=False):
    """Keyword arguments of ``configure()``; each overrides its environment variable."""

    disabled: bool
    service_name: str
    service_version: str
    environment: str
    resource_attributes: Mapping[str, str]
    traces_exporter: Literal["otlp", "console", "none"]
    metrics_exporter: Sequence[str] | str
    logs_exporter: Literal["otlp", "console", "none"]
    otlp_endpoint: str
    otlp_traces_endpoint: str
    otlp_metrics_endpoint: str
    otlp_logs_endpoint: str
    otlp_protocol: Literal["http/protobuf", "grpc"]
    otlp_traces_protocol: Literal["http/protobuf", "grpc"]
    otlp_metrics_protocol: Literal["http/protobuf", "grpc"]
    otlp_logs_protocol: Literal["http/protobuf", "grpc"]
    otlp_headers: Mapping[str, str]
    otlp_timeout: float
    sampler: str
    sampling_ratio: float
    metric_export_interval: int
    attribute_value_length_limit: int
    metrics_path: str | Literal[False]
    metrics_port: int
    metrics_host: str
    health_path: str | Literal[False]
    ready_path: str | Literal[False]
    ready_timeout: float
    excluded_urls: Sequence[str]
    disabled_instrumentations: Sequence[str] | str
    shutdown_timeout: float
    log_format: Literal["json", "console"]
    fastapi: Union[FastAPIOptions, Literal[False], None]
    sqlalchemy: Union[SQLAlchemyOptions, Literal[False], None]
    redis: Union[RedisOptions, Literal[False], None]
    httpx: Union[HttpxOptions, Literal[False], None]
    readiness_checks: Mapping[str, ReadinessCheck]
