"""Every setting the package understands, declared once, resolved once.

Each setting is one typed field of :class:`Settings`, declared with
:func:`setting` (its variables, parser, default and meaning); :data:`SETTINGS`,
the generated docs table and the keyword check all derive from those fields.
This module is the only place that reads ``os.environ``, and it does so only
when :func:`resolve` runs (that is, inside ``configure()``), never at import.
Precedence, for every setting: keyword argument > environment variable >
default. A value that cannot be used raises :class:`OtelSetupConfigError`
naming the argument or variable, the value received and what is allowed, so
the service fails at startup rather than running blind.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final, Generic, TypeVar, cast, get_args

from otel_setup._core import parsers as parse
from otel_setup._core.errors import unknown_keyword
from otel_setup._core.options import Sampler
from otel_setup._core.parsers import Parser, mask_url
from otel_setup._integrations.registry import disabled_list_names

__all__ = ["SETTINGS", "Setting", "Settings", "config_error_policy", "mask_url", "resolve", "setting"]

T = TypeVar("T")

SAMPLERS: Final[tuple[str, ...]] = get_args(Sampler)
PROTOCOLS: Final = ("http/protobuf", "grpc")
TRACES_EXPORTERS: Final = ("otlp", "console", "none")
METRICS_EXPORTERS: Final = ("prometheus", "otlp", "console", "none")
LOGS_EXPORTERS: Final = ("otlp", "console", "none")
LOG_FORMATS: Final = ("json", "console")
COMPAT_MODES: Final = ("auto", "public")
TEMPORALITIES: Final = ("cumulative", "delta", "lowmemory")
EXEMPLAR_FILTERS: Final = ("trace_based", "always_on", "always_off")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
ON_CONFIG_ERROR: Final = ("exit", "warn")
ON_CONFIG_ERROR_VARIABLE: Final = "OTEL_SETUP_ON_CONFIG_ERROR"
_DECLARATION: Final = "otel_setup.setting"


@dataclass(frozen=True, slots=True)
class Setting(Generic[T]):
    """One setting: its keyword, the variables it reads, how to parse, the default."""

    name: str
    env: tuple[str, ...]
    parse: Parser[T]
    default: T
    doc: str
    secret: bool = False


def setting(env: tuple[str, ...], parser: Parser[T], default: T, doc: str, *, secret: bool = False) -> T:
    """Declare one field of :class:`Settings`.

    Typed as the parser's result, so mypy holds the field's annotation to what
    the parser returns; the declaration itself rides in the field's metadata,
    from which :data:`SETTINGS` is built. The field has no dataclass default:
    :func:`resolve` always passes every value.
    """
    declaration = {"env": env, "parse": parser, "default": default, "doc": doc, "secret": secret}
    return cast(T, field(metadata={_DECLARATION: declaration}))


@dataclass(frozen=True, slots=True)
class Settings:
    """The resolved values, one typed read-only attribute per setting, and where each came from."""

    sources: Mapping[str, str]
    """``argument``, ``env:<VARIABLE>`` or ``default``, by setting name (for diagnostics)."""

    disabled: bool = setting(
        ("OTEL_SDK_DISABLED",),
        parse.boolean,
        False,
        "Turn all telemetry off; the app keeps serving.",
    )
    service_name: str | None = setting(
        ("OTEL_SERVICE_NAME",),
        parse.optional_string,
        None,
        "`service.name`; falls back to `OTEL_RESOURCE_ATTRIBUTES`, then the FastAPI title.",
    )
    service_version: str | None = setting(
        ("OTEL_SETUP_SERVICE_VERSION",),
        parse.optional_string,
        None,
        "`service.version`; falls back to `OTEL_RESOURCE_ATTRIBUTES`, then the FastAPI version.",
    )
    environment: str | None = setting(
        ("OTEL_SETUP_ENVIRONMENT", "ENVIRONMENT"),
        parse.optional_string,
        None,
        "`deployment.environment.name`; falls back to `OTEL_RESOURCE_ATTRIBUTES`.",
    )
    resource_attributes: dict[str, str] = setting(
        ("OTEL_RESOURCE_ATTRIBUTES",),
        parse.key_values(False),
        {},
        "Extra resource attributes, `key=value,key2=value2`.",
    )
    traces_exporter: str | None = setting(
        ("OTEL_TRACES_EXPORTER",),
        parse.optional_choice(TRACES_EXPORTERS),
        None,
        "`otlp`, `console` or `none`; default `otlp` when an OTLP endpoint is set, else `none`.",
    )
    metrics_exporter: tuple[str, ...] | None = setting(
        ("OTEL_METRICS_EXPORTER",),
        parse.choices(METRICS_EXPORTERS),
        None,
        "Comma list of `prometheus`, `otlp`, `console`, `none`; default `prometheus`, plus `otlp` "
        "when an OTLP endpoint is set.",
    )
    logs_exporter: str | None = setting(
        ("OTEL_LOGS_EXPORTER",),
        parse.optional_choice(LOGS_EXPORTERS),
        None,
        "`otlp`, `console` or `none` (default) for OTel log records.",
    )
    otlp_endpoint: str | None = setting(
        ("OTEL_EXPORTER_OTLP_ENDPOINT",),
        parse.endpoint,
        None,
        "Collector base URL; `/v1/<signal>` is appended for http/protobuf.",
    )
    otlp_traces_endpoint: str | None = setting(
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",),
        parse.endpoint,
        None,
        "Full URL for spans, used as is.",
    )
    otlp_metrics_endpoint: str | None = setting(
        ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",),
        parse.endpoint,
        None,
        "Full URL for metrics, used as is.",
    )
    otlp_logs_endpoint: str | None = setting(
        ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",),
        parse.endpoint,
        None,
        "Full URL for logs, used as is.",
    )
    otlp_protocol: str = setting(
        ("OTEL_EXPORTER_OTLP_PROTOCOL",),
        parse.choice(PROTOCOLS),
        "http/protobuf",
        "`http/protobuf` (default, fork-safe) or `grpc`.",
    )
    otlp_traces_protocol: str | None = setting(
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",),
        parse.optional_choice(PROTOCOLS),
        None,
        "Per-signal protocol override.",
    )
    otlp_metrics_protocol: str | None = setting(
        ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",),
        parse.optional_choice(PROTOCOLS),
        None,
        "Per-signal protocol override.",
    )
    otlp_logs_protocol: str | None = setting(
        ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",),
        parse.optional_choice(PROTOCOLS),
        None,
        "Per-signal protocol override.",
    )
    otlp_headers: dict[str, str] = setting(
        ("OTEL_EXPORTER_OTLP_HEADERS",),
        parse.key_values(True),
        {},
        "Headers for every OTLP request, `key=value,...` (values are never logged).",
        secret=True,
    )
    otlp_timeout: float = setting(
        ("OTEL_EXPORTER_OTLP_TIMEOUT",),
        parse.positive_seconds(60.0),
        5.0,
        "Seconds one export may take, retries included (the SDK's own default is 10).",
    )
    otlp_credential_provider: str | None = setting(
        ("OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER",),
        parse.credential_provider,
        None,
        "The name of an `opentelemetry_otlp_credential_provider` entry point whose `requests.Session` the "
        "HTTP exporters use; unset, the package's own session. Either way a forked worker closes its "
        "inherited keep-alive sockets.",
    )
    otlp_traces_credential_provider: str | None = setting(
        ("OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER",),
        parse.credential_provider,
        None,
        "Per-signal credential provider, when the one for all signals is unset (as the SDK resolves them).",
    )
    otlp_metrics_credential_provider: str | None = setting(
        ("OTEL_PYTHON_EXPORTER_OTLP_HTTP_METRICS_CREDENTIAL_PROVIDER",),
        parse.credential_provider,
        None,
        "Per-signal credential provider.",
    )
    otlp_logs_credential_provider: str | None = setting(
        ("OTEL_PYTHON_EXPORTER_OTLP_HTTP_LOGS_CREDENTIAL_PROVIDER",),
        parse.credential_provider,
        None,
        "Per-signal credential provider.",
    )
    sampler: str = setting(
        ("OTEL_TRACES_SAMPLER",),
        parse.choice(SAMPLERS),
        "parentbased_traceidratio",
        "Head sampler for spans; metrics are never sampled.",
    )
    sampling_ratio: float = setting(
        ("OTEL_TRACES_SAMPLER_ARG",),
        parse.ratio,
        0.1,
        "Ratio for the `traceidratio` samplers; changes the default sampler's ratio on its own.",
    )
    metric_export_interval: int = setting(
        ("OTEL_METRIC_EXPORT_INTERVAL",),
        parse.milliseconds,
        15_000,
        "Milliseconds between OTLP metric pushes.",
    )
    metrics_temporality: str = setting(
        ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",),
        parse.choice(TEMPORALITIES),
        "cumulative",
        "Temporality of OTLP metric points: `cumulative`, `delta` (what Datadog's intake prefers; "
        "up-down counters stay cumulative) or `lowmemory` (delta for synchronous counters and histograms).",
    )
    compat: str = setting(
        ("OTEL_SETUP_COMPAT",),
        parse.choice(COMPAT_MODES),
        "auto",
        "`auto` reads a few libraries' private state where it is faster (each read listed in "
        "docs/compat.md); `public` takes every public-API fallback instead.",
    )
    exemplar_filter: str = setting(
        ("OTEL_METRICS_EXEMPLAR_FILTER",),
        parse.choice(EXEMPLAR_FILTERS),
        "trace_based",
        "Which measurements carry an exemplar: `trace_based` (those of exported traces), `always_on`, `always_off`.",
    )
    attribute_value_length_limit: int = setting(
        ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",),
        parse.positive_int,
        2048,
        "Longest attribute value kept on spans and log records.",
    )
    metrics_path: str | None = setting(
        ("OTEL_SETUP_METRICS_PATH",),
        parse.path,
        "/metrics",
        "Path of the Prometheus endpoint on the app, or `off`.",
    )
    metrics_port: int | None = setting(
        ("OTEL_SETUP_METRICS_PORT",),
        parse.optional_port,
        None,
        "Serve Prometheus text on this port (own listener) instead of on the app.",
    )
    metrics_host: str = setting(
        ("OTEL_SETUP_METRICS_HOST",),
        parse.string,
        "127.0.0.1",
        "Address the separate metrics listener binds to.",
    )
    health_path: str | None = setting(("OTEL_SETUP_HEALTH_PATH",), parse.path, "/health", "Liveness path, or `off`.")
    ready_path: str | None = setting(("OTEL_SETUP_READY_PATH",), parse.path, "/ready", "Readiness path, or `off`.")
    ready_timeout: float = setting(
        ("OTEL_SETUP_READY_TIMEOUT",),
        parse.positive_seconds(30.0),
        1.0,
        "Seconds each readiness check may take.",
    )
    excluded_urls: tuple[re.Pattern[str], ...] = setting(
        ("OTEL_SETUP_EXCLUDED_URLS",),
        parse.patterns,
        (),
        "Extra paths (regular expressions, matched against the whole path) left out of traces and metrics.",
    )
    disabled_instrumentations: frozenset[str] = setting(
        ("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS",),
        parse.names,
        frozenset(),
        f"Comma list of instrumentations to skip: {', '.join(disabled_list_names())}.",
    )
    contrib_instrumentations: bool = setting(
        ("OTEL_SETUP_CONTRIB_INSTRUMENTATIONS",),
        parse.boolean,
        True,
        "Activate the installed contrib instrumentations (requests, aiohttp-client, psycopg, celery, ...) "
        "under `configure()` as `opentelemetry-instrument` does; those otel_setup replaces always stay off.",
    )
    process_metrics: bool = setting(
        ("OTEL_SETUP_PROCESS_METRICS",),
        parse.boolean,
        True,
        "Process and runtime metrics (CPU, memory, threads, open files, GC) from OpenTelemetry's "
        "system-metrics instrumentation, process only.",
    )
    on_config_error: str = setting(
        (ON_CONFIG_ERROR_VARIABLE,),
        parse.choice(ON_CONFIG_ERROR),
        "exit",
        "Under `opentelemetry-instrument`: `exit` stops the process on a bad setting (status 2, the error "
        "on stderr); `warn` logs it and serves without telemetry.",
    )
    shutdown_timeout: float = setting(
        ("OTEL_SETUP_SHUTDOWN_TIMEOUT",),
        parse.positive_seconds(120.0),
        5.0,
        "Seconds `shutdown()` may take, even when the collector hangs.",
    )
    switch_interval_ms: float = setting(
        ("OTEL_SETUP_SWITCH_INTERVAL_MS",),
        parse.switch_interval,
        1.0,
        "CPython's thread switch interval while telemetry is configured. Export threads encode spans "
        "in Python; at the default 5 ms a request thread can wait that long for the interpreter lock, "
        "twice per request. Applied only when the interpreter still has its default; `0` leaves it alone.",
    )
    trusted_traceparent: tuple[str, ...] = setting(
        ("OTEL_SETUP_TRUSTED_TRACEPARENT",),
        parse.trust,
        ("none",),
        "Whose inbound `traceparent` becomes the parent: `none` (public edge: new trace linked "
        "to the caller's), `all`, or a comma list of browser origins and client networks (CIDR). "
        "Inbound `baggage` is never taken over.",
    )
    log_level: str = setting(
        ("OTEL_SETUP_LOG_LEVEL",),
        parse.choice(LOG_LEVELS),
        "info",
        "Level of the root logger the package configures.",
    )
    request_log_level: str = setting(
        ("OTEL_SETUP_REQUEST_LOG_LEVEL",),
        parse.choice((*LOG_LEVELS, "off")),
        "info",
        "Level of the one-line-per-request log, or `off`.",
    )
    request_log_error_level: str = setting(
        ("OTEL_SETUP_REQUEST_LOG_ERROR_LEVEL",),
        parse.choice(LOG_LEVELS),
        "error",
        "Level of the request line of a 5xx response (never below `OTEL_SETUP_REQUEST_LOG_LEVEL`).",
    )
    slow_request_ms: int = setting(
        ("OTEL_SETUP_SLOW_REQUEST_MS",),
        parse.positive_int,
        1000,
        "Requests slower than this many milliseconds are logged at WARNING (and their traces kept, see "
        "`OTEL_SETUP_KEEP`).",
    )
    keep: tuple[str, ...] = setting(
        ("OTEL_SETUP_KEEP",),
        parse.keep,
        parse.KEEP_REASONS,
        "Traces exported whole although head sampling left them out: `errors` (5xx or unhandled exception), "
        "`slow` (over `OTEL_SETUP_SLOW_REQUEST_MS`), both, or `none`. Tagged `otel_setup.kept`.",
    )
    request_log_buffer_ms: int = setting(
        ("OTEL_SETUP_REQUEST_LOG_BUFFER_MS",),
        parse.buffer_ms,
        200,
        "Longest time a JSON request line waits to be written with others in one batch, when stdout "
        "is a pipe or file; warnings, 5xx lines and any other log line write the waiting ones first. "
        "`0` writes each line at once.",
    )
    slow_query_ms: int = setting(
        ("OTEL_SETUP_SLOW_QUERY_MS",),
        parse.positive_int,
        200,
        "SQL statements slower than this many milliseconds are logged at WARNING (`otel_setup.db`, "
        "literals replaced by `?`).",
    )
    call_log_level: str = setting(
        ("OTEL_SETUP_CALL_LOG_LEVEL",),
        parse.choice((*LOG_LEVELS, "off")),
        "debug",
        "Level of the per-call log events (`otel_setup.db`, `otel_setup.genai`, `otel_setup.cache`, "
        "`otel_setup.gw2`), or `off`; below the root level they cost one level check.",
    )
    server_timing: bool = setting(
        ("OTEL_SETUP_SERVER_TIMING",),
        parse.boolean,
        True,
        "Add `Server-Timing: app;dur=<ms>` to responses.",
    )
    response_time_header: bool = setting(
        ("OTEL_SETUP_RESPONSE_TIME_HEADER",),
        parse.boolean,
        True,
        "Add `X-Response-Time: <ms>ms` to responses.",
    )
    sentry_dsn: str | None = setting(
        ("SENTRY_DSN",),
        parse.optional_string,
        None,
        "Enables Sentry for errors; without it nothing of Sentry is imported.",
        secret=True,
    )
    sentry_environment: str | None = setting(
        ("SENTRY_ENVIRONMENT",),
        parse.optional_string,
        None,
        "Sentry `environment`; defaults to the deployment environment.",
    )
    sentry_sample_rate: float = setting(
        ("OTEL_SETUP_SENTRY_SAMPLE_RATE",),
        parse.ratio,
        1.0,
        "Fraction of error events sent to Sentry.",
    )
    log_format: str = setting(
        ("OTEL_SETUP_LOG_FORMAT",),
        parse.choice(LOG_FORMATS),
        "json",
        "Log rendering: `json` or `console`.",
    )
    # --- redaction, header capture, propagation and /metrics access (see docs/redaction.md)
    redact_patterns: tuple[str, ...] = setting(
        ("OTEL_SETUP_REDACT_PATTERNS",),
        parse.regexes,
        (),
        "Extra regular expressions of secrets, replaced wherever they appear in a string (commas inside "
        "`()`, `[]`, `{}` belong to the pattern); added to the defaults.",
    )
    redact_query_parameters: frozenset[str] = setting(
        ("OTEL_SETUP_REDACT_QUERY_PARAMETERS",),
        parse.names,
        frozenset(),
        "Extra query parameter names whose values become `REDACTED` (case-insensitive); added to the defaults.",
    )
    redact_keys: frozenset[str] = setting(
        ("OTEL_SETUP_REDACT_KEYS",),
        parse.names,
        frozenset(),
        "Extra key names (matched anywhere in a key, case-insensitive) whose string values become `REDACTED`.",
    )
    capture_headers: dict[str, frozenset[str]] = setting(
        ("OTEL_SETUP_CAPTURE_HEADERS",),
        parse.header_capture,
        parse.NO_HEADERS,
        "Header names recorded as `http.request.header.<name>` (client responses: `http.response.header.<name>`), "
        "prefix `server:` or `client:` for one side; off by default. Credentials are always `REDACTED`.",
    )
    propagate_to: tuple[str, ...] = setting(
        ("OTEL_SETUP_PROPAGATE_TO",),
        parse.hosts,
        ("internal",),
        "Hosts httpx sends `traceparent`/`baggage` to: `internal` (loopback, private, single-label and "
        "`.internal`/`.local`/`.svc` names), `all`, `none`, or a list of those, hosts, `*.suffix` and CIDRs.",
    )
    metrics_token: str | None = setting(
        ("OTEL_SETUP_METRICS_TOKEN",),
        parse.token,
        None,
        "Bearer token `/metrics` requires (app path and separate port); without it the answer is 401.",
        secret=True,
    )
    # --- GW2, GenAI and cache
    gw2_api_base: str | None = setting(
        ("OTEL_SETUP_GW2_API_BASE", "GW2_API_BASE"),
        parse.endpoint,
        None,
        "Base URL of a GW2 API besides `https://api.guildwars2.com` (a proxy or a stand-in); "
        "its calls get endpoint-template spans and metrics.",
    )
    genai_prices: str | Mapping[str, object] | None = setting(
        ("OTEL_SETUP_GENAI_PRICES",),
        parse.price_source,
        None,
        "JSON file (or, as an argument, a mapping) of model prices merged over the shipped table.",
    )
    cache_key_prefixes: tuple[str, ...] = setting(
        ("OTEL_SETUP_CACHE_KEY_PREFIXES",),
        parse.prefixes,
        (),
        "Comma list of Redis key prefixes naming logical caches (`gw2:account:` -> cache `gw2:account`); "
        "unset: the key's first `:`-separated segment when it looks like a namespace.",
    )

    def signal_endpoint(self, signal: str) -> str | None:
        """The URL one signal is pushed to, or None when nothing is configured."""
        specific = {
            "traces": self.otlp_traces_endpoint,
            "metrics": self.otlp_metrics_endpoint,
            "logs": self.otlp_logs_endpoint,
        }[signal]
        if specific:
            return specific
        base = self.otlp_endpoint
        if not base:
            return None
        if self.signal_protocol(signal) == "grpc":
            return base
        return base.rstrip("/") + f"/v1/{signal}"

    def signal_credential_provider(self, signal: str) -> str | None:
        """The credential provider for one signal's HTTP exporter: the general one first, as the SDK reads them."""
        specific = {
            "traces": self.otlp_traces_credential_provider,
            "metrics": self.otlp_metrics_credential_provider,
            "logs": self.otlp_logs_credential_provider,
        }[signal]
        return self.otlp_credential_provider or specific

    def signal_protocol(self, signal: str) -> str:
        specific = {
            "traces": self.otlp_traces_protocol,
            "metrics": self.otlp_metrics_protocol,
            "logs": self.otlp_logs_protocol,
        }[signal]
        return specific or self.otlp_protocol

    def masked(self) -> dict[str, object]:
        """Values safe to print, by setting name: secrets and URL credentials hidden."""
        shown: dict[str, object] = {}
        for declared in SETTINGS:
            value: object = getattr(self, declared.name)
            if declared.secret and isinstance(value, Mapping):
                shown[declared.name] = {key: "<hidden>" for key in value}
            elif declared.secret and value:
                shown[declared.name] = "<hidden>"
            elif isinstance(value, str) and "@" in value and "://" in value:
                shown[declared.name] = mask_url(value)
            else:
                shown[declared.name] = value
        return shown


SETTINGS: Final[tuple[Setting[Any], ...]] = tuple(
    Setting(name=spec.name, **spec.metadata[_DECLARATION]) for spec in fields(Settings) if _DECLARATION in spec.metadata
)
"""Every setting, in declaration order (the order of the docs table)."""

_BY_NAME: Final = {declared.name: declared for declared in SETTINGS}


def resolve(options: Mapping[str, object], environ: Mapping[str, str] | None = None) -> Settings:
    """Apply keyword argument > environment variable > default to every setting."""
    env = os.environ if environ is None else environ
    unknown = sorted(set(options) - set(_BY_NAME))
    if unknown:
        raise unknown_keyword(unknown[0], options[unknown[0]], _BY_NAME)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for declared in SETTINGS:
        if declared.name in options and options[declared.name] is not None:
            values[declared.name] = declared.parse(options[declared.name], declared.name)
            sources[declared.name] = "argument"
            continue
        for variable in declared.env:
            raw = env.get(variable)
            if raw is not None and raw.strip() != "":
                values[declared.name] = declared.parse(raw, variable)
                sources[declared.name] = f"env:{variable}"
                break
        else:
            values[declared.name] = declared.default
            sources[declared.name] = "default"
    return Settings(sources=sources, **values)


def config_error_policy(environ: Mapping[str, str] | None = None) -> str:
    """What the zero-code path does with a bad setting, read on its own.

    The whole table cannot be resolved when one of its values is bad, so this
    one variable is read apart from it; a bad value of it is itself an error.
    """
    env = os.environ if environ is None else environ
    raw = env.get(ON_CONFIG_ERROR_VARIABLE, "").strip()
    return parse.choice(ON_CONFIG_ERROR)(raw, ON_CONFIG_ERROR_VARIABLE) if raw else "exit"


def markdown_table() -> str:
    """docs/configuration.md's settings table, generated so it cannot drift from SETTINGS."""

    def shown(value: object) -> str:
        if value is None or (isinstance(value, (frozenset, tuple, dict)) and not value):
            return "—"
        if isinstance(value, dict) and not any(value.values()):
            return "—"
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, tuple) and all(isinstance(item, str) for item in value):
            return f"`{','.join(value)}`"  # as the variable is written
        return f"`{value}`"

    rows = ["| Variable | Keyword | Default | Meaning |", "|---|---|---|---|"]
    for declared in SETTINGS:
        variables = " / ".join(f"`{variable}`" for variable in declared.env)
        rows.append(f"| {variables} | `{declared.name}` | {shown(declared.default)} | {declared.doc} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
