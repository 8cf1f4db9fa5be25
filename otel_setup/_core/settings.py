"""Every setting the package understands, declared once, resolved once.

This module is the only place that reads ``os.environ``, and it does so only
when :func:`resolve` runs (that is, inside ``configure()``), never at import.
Precedence, for every setting: keyword argument > environment variable >
default. A value that cannot be used raises :class:`OtelSetupConfigError`
naming the argument or variable, the value received and what is allowed, so
the service fails at startup rather than running blind.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar
from urllib.parse import unquote, urlsplit

from otel_setup._core.errors import OtelSetupConfigError
from otel_setup._integrations.registry import disabled_list_names

__all__ = ["SETTINGS", "Setting", "Settings", "config_error_policy", "resolve"]

T = TypeVar("T")

SAMPLERS: Final = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)
PROTOCOLS: Final = ("http/protobuf", "grpc")
TRACES_EXPORTERS: Final = ("otlp", "console", "none")
METRICS_EXPORTERS: Final = ("prometheus", "otlp", "console", "none")
LOGS_EXPORTERS: Final = ("otlp", "console", "none")
LOG_FORMATS: Final = ("json", "console")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
ON_CONFIG_ERROR: Final = ("exit", "warn")
ON_CONFIG_ERROR_VARIABLE: Final = "OTEL_SETUP_ON_CONFIG_ERROR"
_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off", ""})


# --- coercion: each takes the raw value (a string from the environment, or
# whatever a keyword argument received) and the name to blame in the error.


def _text(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise OtelSetupConfigError(name, value, "a string")
    return value.strip()


def _optional_text(value: object, name: str) -> str | None:
    if value is None:
        return None
    text = _text(value, name)
    return text or None


def _boolean(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise OtelSetupConfigError(name, value, "true or false")


def _ratio(value: object, name: str) -> float:
    allowed = "a number between 0 and 1"
    try:
        number = float(value) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else math.nan
    except ValueError:
        raise OtelSetupConfigError(name, value, allowed) from None
    if not 0.0 <= number <= 1.0:  # also rejects NaN
        raise OtelSetupConfigError(name, value, allowed)
    return number


def _positive_seconds(limit: float) -> Callable[[object, str], float]:
    def coerce(value: object, name: str) -> float:
        allowed = f"a number of seconds greater than 0 and at most {limit:g}"
        try:
            number = float(value) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else math.nan
        except ValueError:
            raise OtelSetupConfigError(name, value, allowed) from None
        if not 0.0 < number <= limit:
            raise OtelSetupConfigError(name, value, allowed)
        return number

    return coerce


def _whole_number(low: int, high: int, allowed: str) -> Callable[[object, str], int]:
    def coerce(value: object, name: str) -> int:
        try:
            number = int(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else low - 1
        except ValueError:
            raise OtelSetupConfigError(name, value, allowed) from None
        if not low <= number <= high:
            raise OtelSetupConfigError(name, value, allowed)
        return number

    return coerce


_milliseconds: Final = _whole_number(100, 3_600_000, "a whole number of milliseconds between 100 and 3600000")
_buffer_ms: Final = _whole_number(
    0, 10_000, "a whole number of milliseconds between 0 (every line written at once) and 10000"
)
_positive_int: Final = _whole_number(1, sys.maxsize, "a whole number greater than 0")


def _switch_interval(value: object, name: str) -> float:
    allowed = "milliseconds between 0.1 and 5 (CPython's default is 5), or 0 to leave the interpreter's setting alone"
    try:
        number = float(value) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else -1.0
    except ValueError:
        raise OtelSetupConfigError(name, value, allowed) from None
    if number != 0 and not 0.1 <= number <= 5:
        raise OtelSetupConfigError(name, value, allowed)
    return number


_port: Final = _whole_number(1, 65535, "a TCP port between 1 and 65535")


def _optional_port(value: object, name: str) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return _port(value, name)


def _choice(choices: Sequence[str]) -> Callable[[object, str], str]:
    def coerce(value: object, name: str) -> str:
        text = _text(value, name).lower()
        if text not in choices:
            raise OtelSetupConfigError(name, value, "one of " + ", ".join(choices))
        return text

    return coerce


def _optional_choice(choices: Sequence[str]) -> Callable[[object, str], str | None]:
    strict = _choice(choices)

    def coerce(value: object, name: str) -> str | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return strict(value, name)

    return coerce


def _choices(choices: Sequence[str]) -> Callable[[object, str], tuple[str, ...] | None]:
    def coerce(value: object, name: str) -> tuple[str, ...] | None:
        if value is None:
            return None
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise OtelSetupConfigError(name, value, "a comma-separated list of " + ", ".join(choices))
        picked: list[str] = []
        for item in items:
            text = str(item).strip().lower()
            if not text:
                continue
            if text not in choices:
                raise OtelSetupConfigError(name, value, "a comma-separated list of " + ", ".join(choices))
            if text not in picked:
                picked.append(text)
        return tuple(picked) if picked else None

    return coerce


KEEP_REASONS: Final = ("errors", "slow")


def _keep(value: object, name: str) -> tuple[str, ...]:
    """``errors``, ``slow``, both (comma list), or ``none``: which unsampled traces are kept whole."""
    allowed = "a comma list of errors, slow, or none"
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise OtelSetupConfigError(name, value, allowed)
    picked = [str(item).strip().lower() for item in items if str(item).strip()]
    if not picked or picked == ["none"]:
        return ()
    if any(item not in KEEP_REASONS for item in picked):
        raise OtelSetupConfigError(name, value, allowed)
    return tuple(reason for reason in KEEP_REASONS if reason in picked)


def _names(value: object, name: str) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset(part.strip().lower() for part in value.split(",") if part.strip())
    if isinstance(value, (list, tuple, set, frozenset)):
        return frozenset(str(part).strip().lower() for part in value)
    raise OtelSetupConfigError(name, value, "a comma-separated list of names")


def mask_url(url: str) -> str:
    """Hide userinfo so an error message never prints a credential."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return parts._replace(netloc=f"REDACTED@{host}{port}").geturl()


def _endpoint(value: object, name: str) -> str | None:
    if value is None:
        return None
    text = _text(value, name)
    if not text:
        return None
    allowed = "an http:// or https:// URL with a host, such as http://127.0.0.1:4318"
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise OtelSetupConfigError(name, mask_url(text) if "@" in text else text, allowed) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OtelSetupConfigError(name, mask_url(text), allowed)
    return text


def _key_values(secret: bool) -> Callable[[object, str], dict[str, str]]:
    def coerce(value: object, name: str) -> dict[str, str]:
        if value is None:
            return {}
        if isinstance(value, Mapping):
            return {str(k): str(v) for k, v in value.items()}
        text = _text(value, name)
        result: dict[str, str] = {}
        for pair in text.split(","):
            if not pair.strip():
                continue
            key, sep, item = pair.partition("=")
            if not sep or not key.strip():
                shown = "<hidden>" if secret else value
                raise OtelSetupConfigError(name, shown, "comma-separated key=value pairs")
            result[unquote(key.strip())] = unquote(item.strip())
        return result

    return coerce


def _patterns(value: object, name: str) -> tuple[re.Pattern[str], ...]:
    if value is None:
        return ()
    items = [p for p in value.split(",")] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise OtelSetupConfigError(name, value, "a comma-separated list of path regular expressions")
    compiled: list[re.Pattern[str]] = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        try:
            compiled.append(re.compile(text))
        except re.error:
            raise OtelSetupConfigError(
                name, value, "valid regular expressions matched against the whole path"
            ) from None
    return tuple(compiled)


def _path(value: object, name: str) -> str | None:
    """A URL path to serve on, or None (also from ``False``/``""``) for off."""
    if value is None or value is False:
        return None
    text = _text(value, name)
    if not text or text.lower() in ("off", "false", "none"):
        return None
    if not text.startswith("/") or any(c in text for c in "?#{} "):
        raise OtelSetupConfigError(name, value, "a path starting with '/', or 'off'")
    return text.rstrip("/") or "/"


# --- GW2, GenAI and cache settings (see _integrations/gw2.py, genai.py, cache.py)


def _price_source(value: object, name: str) -> str | Mapping[str, Any] | None:
    """A price-table override: a JSON file path, or a mapping; checked now, at startup."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        source: str | Mapping[str, Any] = value
    else:
        text = _text(value, name)
        if not text:
            return None
        source = text
    from otel_setup._integrations.genai_prices import load_price_table

    load_price_table(source, name)  # raises OtelSetupConfigError naming ``name``
    return source


def _prefixes(value: object, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(item, str) for item in items):
        raise OtelSetupConfigError(name, value, "a comma-separated list of Redis key prefixes, such as gw2:account:")
    return tuple(sorted({item.strip() for item in items if item.strip()}, key=len, reverse=True))


def _trust(value: object, name: str) -> tuple[str, ...]:
    """``all``, ``none``, or origins (``https://app.example``) and networks (``10.0.0.0/8``)."""
    import ipaddress

    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise OtelSetupConfigError(name, value, "all, none, or a comma list of origins and CIDR networks")
    picked = tuple(str(item).strip() for item in items if str(item).strip())
    allowed = "all, none, or a comma list of origins (https://app.example) and CIDR networks (10.0.0.0/8)"
    if not picked:
        return ("none",)
    if len(picked) == 1 and picked[0].lower() in ("all", "none"):
        return (picked[0].lower(),)
    for item in picked:
        if item.startswith(("http://", "https://")):
            parts = urlsplit(item)
            if not parts.hostname or parts.path not in ("", "/"):
                raise OtelSetupConfigError(name, value, allowed)
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise OtelSetupConfigError(name, value, allowed) from None
    return picked


# --- redaction, header capture, propagation and /metrics access


def _split_patterns(text: str) -> list[str]:
    """Comma-separated regular expressions; commas inside (), [] or {} belong to the pattern."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
            continue
        if char == "\\":
            escaped = True
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _regexes(value: object, name: str) -> tuple[str, ...]:
    """Extra secret patterns: each must compile and must not match the empty string."""
    if value is None:
        return ()
    items = _split_patterns(value) if isinstance(value, str) else value
    allowed = "comma-separated regular expressions that cannot match an empty string"
    if not isinstance(items, (list, tuple)):
        raise OtelSetupConfigError(name, value, allowed)
    picked: list[str] = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        try:
            compiled = re.compile(text)
        except re.error:
            raise OtelSetupConfigError(name, value, allowed) from None
        if compiled.fullmatch("") is not None:
            raise OtelSetupConfigError(name, value, allowed)
        picked.append(text)
    return tuple(picked)


_NO_HEADERS: Final[dict[str, frozenset[str]]] = {"server": frozenset(), "client": frozenset()}
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")


def _header_capture(value: object, name: str) -> dict[str, frozenset[str]]:
    """``x-request-id,server:user-agent,client:x-ratelimit-remaining`` -> names per side."""
    captured: dict[str, set[str]] = {"server": set(), "client": set()}
    if value is None:
        return {side: frozenset(names) for side, names in captured.items()}
    items = value.split(",") if isinstance(value, str) else value
    allowed = "a comma list of header names (no wildcards), each optionally prefixed by server: or client:"
    if not isinstance(items, (list, tuple, set, frozenset)):
        raise OtelSetupConfigError(name, value, allowed)
    for item in items:
        text = str(item).strip().lower()
        if not text:
            continue
        side, sep, header = text.partition(":")
        sides = (side,) if sep else ("server", "client")
        header = header if sep else text
        header = header.strip()
        if (sep and side not in captured) or not _HEADER_NAME.fullmatch(header) or header in ("*", ".*"):
            raise OtelSetupConfigError(name, value, allowed)
        for chosen in sides:
            captured[chosen].add(header)
    return {side: frozenset(names) for side, names in captured.items()}


def _hosts(value: object, name: str) -> tuple[str, ...]:
    """``internal``, ``all``, ``none``, host names, ``*.suffix`` wildcards and CIDR networks."""
    import ipaddress

    items = value.split(",") if isinstance(value, str) else value
    allowed = "internal, all, none, or a comma list of those, host names, *.suffix wildcards and CIDR networks"
    if not isinstance(items, (list, tuple)):
        raise OtelSetupConfigError(name, value, allowed)
    picked = tuple(str(item).strip().lower() for item in items if str(item).strip())
    if not picked:
        return ("none",)
    for item in picked:
        if item in ("internal", "all", "none"):
            continue
        host = item[2:] if item.startswith("*.") else item.lstrip(".")
        try:
            ipaddress.ip_network(host, strict=False)
            continue
        except ValueError:
            pass
        if not re.fullmatch(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*\.?", host):
            raise OtelSetupConfigError(name, value, allowed)
    return picked


def _token(value: object, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise OtelSetupConfigError(name, "<hidden>", "a string")
    text = value.strip()
    if not text:
        return None
    if len(text) < 16 or any(c.isspace() for c in text):
        raise OtelSetupConfigError(name, "<hidden>", "a token of at least 16 characters without spaces")
    return text


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One setting: its keyword, the variables it reads, how to parse, the default."""

    name: str
    env: tuple[str, ...]
    coerce: Callable[[object, str], T]
    default: T
    doc: str
    secret: bool = False


SETTINGS: Final[tuple[Setting[Any], ...]] = (
    Setting("disabled", ("OTEL_SDK_DISABLED",), _boolean, False, "Turn all telemetry off; the app keeps serving."),
    Setting(
        "service_name",
        ("OTEL_SERVICE_NAME",),
        _optional_text,
        None,
        "`service.name`; falls back to `OTEL_RESOURCE_ATTRIBUTES`, then the FastAPI title.",
    ),
    Setting(
        "service_version",
        ("OTEL_SETUP_SERVICE_VERSION",),
        _optional_text,
        None,
        "`service.version`; falls back to `OTEL_RESOURCE_ATTRIBUTES`, then the FastAPI version.",
    ),
    Setting(
        "environment",
        ("OTEL_SETUP_ENVIRONMENT", "ENVIRONMENT"),
        _optional_text,
        None,
        "`deployment.environment.name`; falls back to `OTEL_RESOURCE_ATTRIBUTES`.",
    ),
    Setting(
        "resource_attributes",
        ("OTEL_RESOURCE_ATTRIBUTES",),
        _key_values(False),
        {},
        "Extra resource attributes, `key=value,key2=value2`.",
    ),
    Setting(
        "traces_exporter",
        ("OTEL_TRACES_EXPORTER",),
        _optional_choice(TRACES_EXPORTERS),
        None,
        "`otlp`, `console` or `none`; default `otlp` when an OTLP endpoint is set, else `none`.",
    ),
    Setting(
        "metrics_exporter",
        ("OTEL_METRICS_EXPORTER",),
        _choices(METRICS_EXPORTERS),
        None,
        "Comma list of `prometheus`, `otlp`, `console`, `none`; default `prometheus`, plus `otlp` "
        "when an OTLP endpoint is set.",
    ),
    Setting(
        "logs_exporter",
        ("OTEL_LOGS_EXPORTER",),
        _optional_choice(LOGS_EXPORTERS),
        None,
        "`otlp`, `console` or `none` (default) for OTel log records.",
    ),
    Setting(
        "otlp_endpoint",
        ("OTEL_EXPORTER_OTLP_ENDPOINT",),
        _endpoint,
        None,
        "Collector base URL; `/v1/<signal>` is appended for http/protobuf.",
    ),
    Setting(
        "otlp_traces_endpoint",
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",),
        _endpoint,
        None,
        "Full URL for spans, used as is.",
    ),
    Setting(
        "otlp_metrics_endpoint",
        ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",),
        _endpoint,
        None,
        "Full URL for metrics, used as is.",
    ),
    Setting(
        "otlp_logs_endpoint", ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",), _endpoint, None, "Full URL for logs, used as is."
    ),
    Setting(
        "otlp_protocol",
        ("OTEL_EXPORTER_OTLP_PROTOCOL",),
        _choice(PROTOCOLS),
        "http/protobuf",
        "`http/protobuf` (default, fork-safe) or `grpc`.",
    ),
    Setting(
        "otlp_traces_protocol",
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",),
        _optional_choice(PROTOCOLS),
        None,
        "Per-signal protocol override.",
    ),
    Setting(
        "otlp_metrics_protocol",
        ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",),
        _optional_choice(PROTOCOLS),
        None,
        "Per-signal protocol override.",
    ),
    Setting(
        "otlp_logs_protocol",
        ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",),
        _optional_choice(PROTOCOLS),
        None,
        "Per-signal protocol override.",
    ),
    Setting(
        "otlp_headers",
        ("OTEL_EXPORTER_OTLP_HEADERS",),
        _key_values(True),
        {},
        "Headers for every OTLP request, `key=value,...` (values are never logged).",
        secret=True,
    ),
    Setting(
        "otlp_timeout",
        ("OTEL_EXPORTER_OTLP_TIMEOUT",),
        _positive_seconds(60.0),
        5.0,
        "Seconds one export may take, retries included (the SDK's own default is 10).",
    ),
    Setting(
        "sampler",
        ("OTEL_TRACES_SAMPLER",),
        _choice(SAMPLERS),
        "parentbased_traceidratio",
        "Head sampler for spans; metrics are never sampled.",
    ),
    Setting(
        "sampling_ratio",
        ("OTEL_TRACES_SAMPLER_ARG",),
        _ratio,
        0.1,
        "Ratio for the `traceidratio` samplers; changes the default sampler's ratio on its own.",
    ),
    Setting(
        "metric_export_interval",
        ("OTEL_METRIC_EXPORT_INTERVAL",),
        _milliseconds,
        15_000,
        "Milliseconds between OTLP metric pushes.",
    ),
    Setting(
        "attribute_value_length_limit",
        ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",),
        _positive_int,
        2048,
        "Longest attribute value kept on spans and log records.",
    ),
    Setting(
        "metrics_path",
        ("OTEL_SETUP_METRICS_PATH",),
        _path,
        "/metrics",
        "Path of the Prometheus endpoint on the app, or `off`.",
    ),
    Setting(
        "metrics_port",
        ("OTEL_SETUP_METRICS_PORT",),
        _optional_port,
        None,
        "Serve Prometheus text on this port (own listener) instead of on the app.",
    ),
    Setting(
        "metrics_host",
        ("OTEL_SETUP_METRICS_HOST",),
        _text,
        "127.0.0.1",
        "Address the separate metrics listener binds to.",
    ),
    Setting("health_path", ("OTEL_SETUP_HEALTH_PATH",), _path, "/health", "Liveness path, or `off`."),
    Setting("ready_path", ("OTEL_SETUP_READY_PATH",), _path, "/ready", "Readiness path, or `off`."),
    Setting(
        "ready_timeout",
        ("OTEL_SETUP_READY_TIMEOUT",),
        _positive_seconds(30.0),
        1.0,
        "Seconds each readiness check may take.",
    ),
    Setting(
        "excluded_urls",
        ("OTEL_SETUP_EXCLUDED_URLS",),
        _patterns,
        (),
        "Extra paths (regular expressions, matched against the whole path) left out of traces and metrics.",
    ),
    Setting(
        "disabled_instrumentations",
        ("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS",),
        _names,
        frozenset(),
        f"Comma list of instrumentations to skip: {', '.join(disabled_list_names())}.",
    ),
    Setting(
        "contrib_instrumentations",
        ("OTEL_SETUP_CONTRIB_INSTRUMENTATIONS",),
        _boolean,
        True,
        "Activate the installed contrib instrumentations (requests, aiohttp-client, psycopg, celery, ...) "
        "under `configure()` as `opentelemetry-instrument` does; those otel_setup replaces always stay off.",
    ),
    Setting(
        "process_metrics",
        ("OTEL_SETUP_PROCESS_METRICS",),
        _boolean,
        True,
        "Process and runtime metrics (CPU, memory, threads, open files, GC) from OpenTelemetry's "
        "system-metrics instrumentation, process only.",
    ),
    Setting(
        "on_config_error",
        (ON_CONFIG_ERROR_VARIABLE,),
        _choice(ON_CONFIG_ERROR),
        "exit",
        "Under `opentelemetry-instrument`: `exit` stops the process on a bad setting (status 2, the error "
        "on stderr); `warn` logs it and serves without telemetry.",
    ),
    Setting(
        "shutdown_timeout",
        ("OTEL_SETUP_SHUTDOWN_TIMEOUT",),
        _positive_seconds(120.0),
        5.0,
        "Seconds `shutdown()` may take, even when the collector hangs.",
    ),
    Setting(
        "switch_interval_ms",
        ("OTEL_SETUP_SWITCH_INTERVAL_MS",),
        _switch_interval,
        1.0,
        "CPython's thread switch interval while telemetry is configured. Export threads encode spans "
        "in Python; at the default 5 ms a request thread can wait that long for the interpreter lock, "
        "twice per request. Applied only when the interpreter still has its default; `0` leaves it alone.",
    ),
    Setting(
        "trusted_traceparent",
        ("OTEL_SETUP_TRUSTED_TRACEPARENT",),
        _trust,
        ("none",),
        "Whose inbound `traceparent` becomes the parent: `none` (public edge: new trace linked "
        "to the caller's), `all`, or a comma list of browser origins and client networks (CIDR). "
        "Inbound `baggage` is never taken over.",
    ),
    Setting(
        "log_level",
        ("OTEL_SETUP_LOG_LEVEL",),
        _choice(LOG_LEVELS),
        "info",
        "Level of the root logger the package configures.",
    ),
    Setting(
        "request_log_level",
        ("OTEL_SETUP_REQUEST_LOG_LEVEL",),
        _choice((*LOG_LEVELS, "off")),
        "info",
        "Level of the one-line-per-request log, or `off`.",
    ),
    Setting(
        "request_log_error_level",
        ("OTEL_SETUP_REQUEST_LOG_ERROR_LEVEL",),
        _choice(LOG_LEVELS),
        "error",
        "Level of the request line of a 5xx response (never below `OTEL_SETUP_REQUEST_LOG_LEVEL`).",
    ),
    Setting(
        "slow_request_ms",
        ("OTEL_SETUP_SLOW_REQUEST_MS",),
        _positive_int,
        1000,
        "Requests slower than this many milliseconds are logged at WARNING (and their traces kept, see "
        "`OTEL_SETUP_KEEP`).",
    ),
    Setting(
        "keep",
        ("OTEL_SETUP_KEEP",),
        _keep,
        KEEP_REASONS,
        "Traces exported whole although head sampling left them out: `errors` (5xx or unhandled exception), "
        "`slow` (over `OTEL_SETUP_SLOW_REQUEST_MS`), both, or `none`. Tagged `otel_setup.kept`.",
    ),
    Setting(
        "request_log_buffer_ms",
        ("OTEL_SETUP_REQUEST_LOG_BUFFER_MS",),
        _buffer_ms,
        200,
        "Longest time a JSON request line waits to be written with others in one batch, when stdout "
        "is a pipe or file; warnings, 5xx lines and any other log line write the waiting ones first. "
        "`0` writes each line at once.",
    ),
    Setting(
        "slow_query_ms",
        ("OTEL_SETUP_SLOW_QUERY_MS",),
        _positive_int,
        200,
        "SQL statements slower than this many milliseconds are logged at WARNING (`otel_setup.db`, "
        "literals replaced by `?`).",
    ),
    Setting(
        "call_log_level",
        ("OTEL_SETUP_CALL_LOG_LEVEL",),
        _choice((*LOG_LEVELS, "off")),
        "debug",
        "Level of the per-call log events (`otel_setup.db`, `otel_setup.genai`, `otel_setup.cache`, "
        "`otel_setup.gw2`), or `off`; below the root level they cost one level check.",
    ),
    Setting(
        "server_timing",
        ("OTEL_SETUP_SERVER_TIMING",),
        _boolean,
        True,
        "Add `Server-Timing: app;dur=<ms>` to responses.",
    ),
    Setting(
        "response_time_header",
        ("OTEL_SETUP_RESPONSE_TIME_HEADER",),
        _boolean,
        True,
        "Add `X-Response-Time: <ms>ms` to responses.",
    ),
    Setting(
        "sentry_dsn",
        ("SENTRY_DSN",),
        _optional_text,
        None,
        "Enables Sentry for errors; without it nothing of Sentry is imported.",
        secret=True,
    ),
    Setting(
        "sentry_environment",
        ("SENTRY_ENVIRONMENT",),
        _optional_text,
        None,
        "Sentry `environment`; defaults to the deployment environment.",
    ),
    Setting(
        "sentry_sample_rate",
        ("OTEL_SETUP_SENTRY_SAMPLE_RATE",),
        _ratio,
        1.0,
        "Fraction of error events sent to Sentry.",
    ),
    Setting(
        "log_format", ("OTEL_SETUP_LOG_FORMAT",), _choice(LOG_FORMATS), "json", "Log rendering: `json` or `console`."
    ),
    # --- redaction, header capture, propagation and /metrics access (see docs/redaction.md)
    Setting(
        "redact_patterns",
        ("OTEL_SETUP_REDACT_PATTERNS",),
        _regexes,
        (),
        "Extra regular expressions of secrets, replaced wherever they appear in a string (commas inside "
        "`()`, `[]`, `{}` belong to the pattern); added to the defaults.",
    ),
    Setting(
        "redact_query_parameters",
        ("OTEL_SETUP_REDACT_QUERY_PARAMETERS",),
        _names,
        frozenset(),
        "Extra query parameter names whose values become `REDACTED` (case-insensitive); added to the defaults.",
    ),
    Setting(
        "redact_keys",
        ("OTEL_SETUP_REDACT_KEYS",),
        _names,
        frozenset(),
        "Extra key names (matched anywhere in a key, case-insensitive) whose string values become `REDACTED`.",
    ),
    Setting(
        "capture_headers",
        ("OTEL_SETUP_CAPTURE_HEADERS",),
        _header_capture,
        _NO_HEADERS,
        "Header names recorded as `http.request.header.<name>` (client responses: `http.response.header.<name>`), "
        "prefix `server:` or `client:` for one side; off by default. Credentials are always `REDACTED`.",
    ),
    Setting(
        "propagate_to",
        ("OTEL_SETUP_PROPAGATE_TO",),
        _hosts,
        ("internal",),
        "Hosts httpx sends `traceparent`/`baggage` to: `internal` (loopback, private, single-label and "
        "`.internal`/`.local`/`.svc` names), `all`, `none`, or a list of those, hosts, `*.suffix` and CIDRs.",
    ),
    Setting(
        "metrics_token",
        ("OTEL_SETUP_METRICS_TOKEN",),
        _token,
        None,
        "Bearer token `/metrics` requires (app path and separate port); without it the answer is 401.",
        secret=True,
    ),
    # --- GW2, GenAI and cache
    Setting(
        "gw2_api_base",
        ("OTEL_SETUP_GW2_API_BASE", "GW2_API_BASE"),
        _endpoint,
        None,
        "Base URL of a GW2 API besides `https://api.guildwars2.com` (a proxy or a stand-in); "
        "its calls get endpoint-template spans and metrics.",
    ),
    Setting(
        "genai_prices",
        ("OTEL_SETUP_GENAI_PRICES",),
        _price_source,
        None,
        "JSON file (or, as an argument, a mapping) of model prices merged over the shipped table.",
    ),
    Setting(
        "cache_key_prefixes",
        ("OTEL_SETUP_CACHE_KEY_PREFIXES",),
        _prefixes,
        (),
        "Comma list of Redis key prefixes naming logical caches (`gw2:account:` -> cache `gw2:account`); "
        "unset: the key's first `:`-separated segment when it looks like a namespace.",
    ),
)

_BY_NAME: Final = {setting.name: setting for setting in SETTINGS}


@dataclass(frozen=True)
class Settings:
    """The resolved values, plus where each one came from (for diagnostics)."""

    values: Mapping[str, Any]
    sources: Mapping[str, str] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def signal_endpoint(self, signal: str) -> str | None:
        """The URL one signal is pushed to, or None when nothing is configured."""
        specific: str | None = self.values[f"otlp_{signal}_endpoint"]
        if specific:
            return specific
        base: str | None = self.values["otlp_endpoint"]
        if not base:
            return None
        if self.signal_protocol(signal) == "grpc":
            return base
        return base.rstrip("/") + f"/v1/{signal}"

    def signal_protocol(self, signal: str) -> str:
        specific: str | None = self.values[f"otlp_{signal}_protocol"]
        return specific or str(self.values["otlp_protocol"])

    def masked(self) -> dict[str, Any]:
        """Values safe to print: secrets and URL credentials hidden."""
        shown: dict[str, Any] = {}
        for name, value in self.values.items():
            if _BY_NAME[name].secret and isinstance(value, Mapping):
                shown[name] = {key: "<hidden>" for key in value}
            elif _BY_NAME[name].secret and value:
                shown[name] = "<hidden>"
            elif isinstance(value, str) and "@" in value and "://" in value:
                shown[name] = mask_url(value)
            else:
                shown[name] = value
        return shown


def resolve(options: Mapping[str, object], environ: Mapping[str, str] | None = None) -> Settings:
    """Apply keyword argument > environment variable > default to every setting."""
    env = os.environ if environ is None else environ
    unknown = sorted(set(options) - set(_BY_NAME))
    if unknown:
        raise OtelSetupConfigError(
            unknown[0], options[unknown[0]], "one of the keyword arguments " + ", ".join(sorted(_BY_NAME))
        )
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for setting in SETTINGS:
        if setting.name in options and options[setting.name] is not None:
            values[setting.name] = setting.coerce(options[setting.name], setting.name)
            sources[setting.name] = "argument"
            continue
        for variable in setting.env:
            raw = env.get(variable)
            if raw is not None and raw.strip() != "":
                values[setting.name] = setting.coerce(raw, variable)
                sources[setting.name] = f"env:{variable}"
                break
        else:
            values[setting.name] = setting.default
            sources[setting.name] = "default"
    return Settings(values=values, sources=sources)


def config_error_policy(environ: Mapping[str, str] | None = None) -> str:
    """What the zero-code path does with a bad setting, read on its own.

    The whole table cannot be resolved when one of its values is bad, so this
    one variable is read apart from it; a bad value of it is itself an error.
    """
    env = os.environ if environ is None else environ
    raw = env.get(ON_CONFIG_ERROR_VARIABLE, "").strip()
    return _choice(ON_CONFIG_ERROR)(raw, ON_CONFIG_ERROR_VARIABLE) if raw else "exit"


def markdown_table() -> str:
    """docs/configuration.md's settings table, generated so it cannot drift from SETTINGS."""

    def shown(value: Any) -> str:
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
    for setting in SETTINGS:
        variables = " / ".join(f"`{variable}`" for variable in setting.env)
        rows.append(f"| {variables} | `{setting.name}` | {shown(setting.default)} | {setting.doc} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
