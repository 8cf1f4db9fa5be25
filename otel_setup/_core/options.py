"""Public option types for ``configure()``.

Each integration keyword takes three states, as in logfire: ``None`` (the
default: on, unless listed in ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``),
``False`` (off), or an options object (on, customised).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.metrics.view import View

from otel_setup.health import ReadinessCheck

__all__ = [
    "ConfigureOptions",
    "FastAPIOptions",
    "HttpxOptions",
    "LoggingOptions",
    "RedisOptions",
    "SQLAlchemyOptions",
]


@dataclass(frozen=True)
class FastAPIOptions:
    """Server spans and RED metrics for the app passed to ``configure()``."""

    excluded_urls: Sequence[str] = ()
    """Regular expressions matched against the whole path, on top of the health, ready and metrics paths."""
    shutdown_on_lifespan: bool = False
    """Shut telemetry down (not only flush it) when the app's lifespan ends.

    Off by default: the end of a lifespan flushes, and the providers shut down
    when the process exits (normal exit and SIGTERM), so a later lifespan or a
    second app in the same process (module-scoped test clients) is still traced.
    """


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


@dataclass(frozen=True)
class LoggingOptions:
    """JSON (or console) logs for structlog and the standard library, with trace ids."""

    processors: Sequence[Any] = ()
    """Extra structlog processors, run after the package's and before redaction and rendering."""


Sampler = Literal[
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
]
"""The samplers ``OTEL_TRACES_SAMPLER`` and ``sampler=`` accept (the settings' choice list is this)."""


class ConfigureOptions(TypedDict, total=False):
    """Keyword arguments of ``configure()``; each overrides its environment variable.

    One key per setting (tests/test_settings.py holds each to its field of
    ``Settings``), plus the integration options, readiness checks and ``redact``.
    """

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
    otlp_credential_provider: str
    otlp_traces_credential_provider: str
    otlp_metrics_credential_provider: str
    otlp_logs_credential_provider: str
    sampler: Sampler
    sampling_ratio: float
    metric_export_interval: int
    metrics_temporality: Literal["cumulative", "delta", "lowmemory"]
    exemplar_filter: Literal["trace_based", "always_on", "always_off"]
    compat: Literal["auto", "public"]
    metric_readers: Sequence[MetricReader]
    views: Sequence[View]
    attribute_value_length_limit: int
    metrics_path: str | Literal[False]
    metrics_port: int
    metrics_host: str
    health_path: str | Literal[False]
    ready_path: str | Literal[False]
    ready_timeout: float
    excluded_urls: Sequence[str]
    disabled_instrumentations: Sequence[str] | str
    contrib_instrumentations: bool
    process_metrics: bool
    on_config_error: Literal["exit", "warn"]
    shutdown_timeout: float
    switch_interval_ms: float
    log_format: Literal["json", "console"]
    log_level: Literal["debug", "info", "warning", "error"]
    request_log_level: Literal["debug", "info", "warning", "error", "off"]
    request_log_error_level: Literal["debug", "info", "warning", "error"]
    call_log_level: Literal["debug", "info", "warning", "error", "off"]
    slow_request_ms: int
    keep: Sequence[str] | str
    request_log_buffer_ms: int
    slow_query_ms: int
    server_timing: bool
    response_time_header: bool
    trusted_traceparent: Sequence[str] | str
    sentry_dsn: str
    sentry_environment: str
    sentry_sample_rate: float
    gw2_api_base: str
    genai_prices: str | Mapping[str, Any]
    cache_key_prefixes: Sequence[str] | str
    redact_patterns: Sequence[str] | str
    redact_query_parameters: Sequence[str] | str
    redact_keys: Sequence[str] | str
    redact: Callable[[str, str], str]
    capture_headers: Sequence[str] | str
    propagate_to: Sequence[str] | str
    metrics_token: str
    fastapi: FastAPIOptions | Literal[False] | None
    sqlalchemy: SQLAlchemyOptions | Literal[False] | None
    redis: RedisOptions | Literal[False] | None
    httpx: HttpxOptions | Literal[False] | None
    logging: LoggingOptions | Literal[False] | None
    readiness_checks: Mapping[str, ReadinessCheck]
    known_apis: Sequence[Any]
    """Your own upstreams as :class:`~otel_setup.KnownHttpApi` objects (see docs/integrations.md)."""


# --- Call records: what the GW2, GenAI and cache integrations saw, for listeners --------------
#
# Metrics carry bounded labels only; a structured log line wants the per-call facts (tokens,
# cost, latency, a hashed cache key). Listeners receive one frozen record per call, after the
# telemetry for it is recorded, on the thread that made the call. Records never hold a key,
# a prompt, a completion, a character name or a guild id.


@dataclass(frozen=True)
class GW2Call:
    """One request to the GW2 API."""

    endpoint: str
    """The endpoint template, e.g. ``/v2/characters/{name}``."""
    method: str
    status_code: int | None
    """None when no response arrived (timeout, connection error)."""
    error_type: str | None
    """Status code as text for 4xx/5xx, or the exception class; None on success."""
    error_reason: str | None
    """For 403s: ``invalid_key``, ``requires_scope``, ... (see docs/metrics.md)."""
    duration_s: float


@dataclass(frozen=True)
class GenAICall:
    """One HTTP call to an OpenAI-compatible API (a retried call is several records)."""

    provider: str
    operation: str
    request_model: str | None
    response_model: str | None
    input_tokens: int | None
    output_tokens: int | None
    cached_input_tokens: int | None
    cost_usd: float | None
    """None when the model is not in the price table or usage was not reported."""
    price_model: str
    """The price-table entry used, or ``unknown``."""
    status_code: int | None
    error_type: str | None
    streamed: bool
    usage_reported: bool
    duration_s: float


@dataclass(frozen=True)
class CacheLookup:
    """One Redis read counted as cache hits and misses."""

    cache: str
    """Logical cache name (a key prefix), never the key."""
    command: str
    hits: int
    misses: int
    key_hash: str
    """First 16 hex characters of the SHA-256 of the (first) key, for correlation."""


CallRecord = GW2Call | GenAICall | CacheLookup
CallListener = Callable[[CallRecord], None]

_call_listeners: list[CallListener] = []


def add_call_listener(listener: CallListener) -> Callable[[], None]:
    """Receive a record for every GW2, GenAI and cache call; returns a function that unsubscribes."""
    _call_listeners.append(listener)

    def remove() -> None:
        if listener in _call_listeners:
            _call_listeners.remove(listener)

    return remove


def emit_call(record: CallRecord) -> None:
    """Hand ``record`` to every listener; a failing listener never fails the call."""
    for listener in tuple(_call_listeners):
        try:
            listener(record)
        except Exception:
            import logging

            logging.getLogger("otel_setup").debug("otel_setup: call listener failed", exc_info=True)
