"""``configure()``: settings -> providers -> instrumentations -> the app, exactly once per process."""

from __future__ import annotations

import atexit
import logging
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import metrics, trace
from typing_extensions import Unpack

from otel_setup._core.errors import OtelSetupConfigError, unknown_keyword
from otel_setup._core.options import (
    ConfigureOptions,
    FastAPIOptions,
    HttpxOptions,
    LoggingOptions,
    RedisOptions,
    SQLAlchemyOptions,
)
from otel_setup._core.providers import build_providers, build_resource
from otel_setup._core.runtime import lower_switch_interval
from otel_setup._core.settings import INSTRUMENTATIONS, Settings, resolve
from otel_setup._core.telemetry import Telemetry
from otel_setup._security.redaction import Redactor
from otel_setup.health import ReadinessCheck, redis_check, sqlalchemy_check

__all__ = ["active", "configure", "reset"]

_log = logging.getLogger("otel_setup")
_lock = threading.RLock()
_active: Telemetry | None = None

_FEATURES: dict[str, type] = {
    "fastapi": FastAPIOptions,
    "sqlalchemy": SQLAlchemyOptions,
    "redis": RedisOptions,
    "httpx": HttpxOptions,
    "logging": LoggingOptions,
}


def active() -> Telemetry | None:
    """The running handle, if ``configure()`` (or the ``opentelemetry-instrument`` path) ran."""
    return _active


def configure(app: Any = None, **options: Unpack[ConfigureOptions]) -> Telemetry:
    """Set up traces, metrics and probes for this process (and ``app``, when given).

    Reads the environment now, never at import. A second call changes
    nothing and returns the first handle; an app passed to it is instrumented
    with the existing providers, so running under ``opentelemetry-instrument``
    and calling ``configure(app)`` gives one provider and one middleware.
    """
    global _active
    with _lock:
        if _active is not None:
            if options:
                _log.info("otel_setup: configure() already ran; options of this call are ignored")
            if app is not None:
                _active.instrument_app(app)
            return _active
        features, checks, settings_options = _split(dict(options))
        settings = resolve(settings_options)
        telemetry = _build(settings, features, app)
        for name, check in checks.items():
            telemetry.add_readiness_check(name, check)
        if app is not None:
            telemetry.instrument_app(app)
        telemetry.start_metrics_server()
        _active = telemetry
        if telemetry.enabled:
            _log.info("otel_setup configured", extra=wiring(telemetry))
            if telemetry.resource.attributes.get("service.name") == "unknown_service":
                _log.warning(
                    "otel_setup: service.name is unknown_service; set OTEL_SERVICE_NAME (under "
                    "opentelemetry-instrument the app's title is not known yet when telemetry starts)"
                )
        return telemetry


def _split(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, ReadinessCheck], dict[str, Any]]:
    """Integration options, readiness checks and the settings' keywords, each apart; unknown keywords refused."""
    unknown = sorted(set(options) - set(ConfigureOptions.__annotations__))
    if unknown:
        raise unknown_keyword(unknown[0], options[unknown[0]], ConfigureOptions.__annotations__)
    features: dict[str, Any] = {}
    rest = dict(options)
    # The redact callback is code, not configuration: a keyword with no variable.
    callback = rest.pop("redact", None)
    if callback is not None and not callable(callback):
        raise OtelSetupConfigError("redact", callback, "a callable (key, value) -> value")
    features["redact"] = callback
    for name, kind in _FEATURES.items():
        if name not in rest:
            continue
        value = rest.pop(name)
        if value is not None and value is not False and not isinstance(value, kind):
            raise OtelSetupConfigError(name, value, f"None, False or {kind.__name__}(...)")
        features[name] = value
    checks = rest.pop("readiness_checks", None) or {}
    if not isinstance(checks, Mapping) or not all(isinstance(k, str) and callable(v) for k, v in checks.items()):
        raise OtelSetupConfigError("readiness_checks", checks, "a mapping of name to a zero-argument callable")
    return features, dict(checks), rest


def _wanted(name: str, features: Mapping[str, Any], settings: Settings) -> str:
    """``active`` if the integration should run, else the reason it does not."""
    if features.get(name, None) is False:
        return "off: disabled by argument"
    if name in settings.disabled_instrumentations and features.get(name) is None:
        return "off: listed in OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"
    return "active"


def _build(settings: Settings, features: Mapping[str, Any], app: Any) -> Telemetry:
    fastapi_options = features.get("fastapi") or FastAPIOptions()
    patterns = tuple(settings.excluded_urls) + tuple(_compile(fastapi_options.excluded_urls))
    if settings.disabled:
        return Telemetry(
            settings,
            None,
            instrumentations={name: "off: OTEL_SDK_DISABLED" for name in INSTRUMENTATIONS},
        )

    if settings.sentry_dsn:
        from otel_setup._integrations.sentry import validate_dsn

        validate_dsn(settings.sentry_dsn)  # before anything is installed
    resource = build_resource(
        settings,
        default_name=_app_attribute(app, "title", ignore="FastAPI"),
        default_version=_app_attribute(app, "version", ignore=None),
    )
    redactor = build_redactor(settings, features.get("redact"))
    providers = build_providers(settings, resource, redactor=redactor)
    _install_globals(providers.tracer_provider, providers.meter_provider, providers.logger_provider)

    from otel_setup._integrations._semconv import use_stable_semconv
    from otel_setup._integrations.calllog import set_call_log_level

    use_stable_semconv()
    set_call_log_level(settings.call_log_level)  # db, genai, cache and gw2 log events
    states: dict[str, str] = {}
    telemetry = Telemetry(
        settings,
        providers,
        excluded_patterns=patterns,
        shutdown_on_lifespan=fastapi_options.shutdown_on_lifespan,
        instrumentations=states,
        redactor=redactor,
    )
    states["fastapi"] = _wanted("fastapi", features, settings)
    for name in ("sqlalchemy", "redis", "httpx"):
        state = _wanted(name, features, settings)
        if state == "active":
            state = _instrument_library(name, providers.tracer_provider, providers.meter_provider, telemetry)
        states[name] = state
    telemetry.instrumentations.update(states)
    # --- GW2 and GenAI calls: own spans and metrics for known APIs over httpx
    _instrument_known_apis(settings, providers.tracer_provider, providers.meter_provider, telemetry)
    # Whoever instruments httpx (the package, or contrib's instrumentor run earlier by someone
    # else), trace context goes only where the host policy allows.
    from otel_setup._integrations.httpx import instrumented_by_contrib
    from otel_setup._security.propagation import HostPolicy, install_propagation_guard

    policy = HostPolicy(settings.propagate_to)
    if states.get("httpx") == "active" or instrumented_by_contrib() or settings.contrib_instrumentations:
        telemetry.add_cleanup(install_propagation_guard(policy))
    _start_runtime_and_contrib(settings, providers, telemetry, None if policy.allow_all else policy.allows)
    from otel_setup._security.propagation import install_trace_context_log_limits

    # A hostile traceparent/tracestate is echoed in a short prefix, a few lines a minute.
    telemetry.add_cleanup(install_trace_context_log_limits())
    _start_logging(settings, features, telemetry)
    # Export threads encode in Python: keep their hold on the interpreter lock short (see _runtime).
    telemetry.add_cleanup(lower_switch_interval(settings.switch_interval_ms))
    _start_sentry(settings, telemetry)

    sqlalchemy_options = features.get("sqlalchemy")
    if isinstance(sqlalchemy_options, SQLAlchemyOptions):
        for index, engine in enumerate(sqlalchemy_options.engines):
            telemetry.add_readiness_check("database" if index == 0 else f"database_{index}", sqlalchemy_check(engine))
    redis_options = features.get("redis")
    if isinstance(redis_options, RedisOptions):
        for index, client in enumerate(redis_options.clients):
            telemetry.add_readiness_check("redis" if index == 0 else f"redis_{index}", redis_check(client))
    # Providers are shut down when the process ends, within the deadline: at
    # interpreter exit, and on SIGTERM (uvicorn re-raises it after its graceful
    # shutdown, so atexit alone would never run under it).
    atexit.register(telemetry.shutdown)
    telemetry.add_reset(install_sigterm_shutdown(telemetry.shutdown))
    return telemetry


def _start_runtime_and_contrib(
    settings: Settings, providers: Any, telemetry: Telemetry, allows: Callable[[str], bool] | None
) -> None:
    """Process metrics, then the installed contrib instrumentations the package does not replace."""
    if settings.process_metrics:
        from otel_setup._integrations.process import instrument_process_metrics

        telemetry.add_cleanup(instrument_process_metrics(providers.meter_provider))
        telemetry.instrumentations["process"] = "active"
    else:
        telemetry.instrumentations["process"] = "off: OTEL_SETUP_PROCESS_METRICS=false"
    if not settings.contrib_instrumentations:
        return
    from otel_setup._integrations.contrib import activate_installed

    contrib, undo_contrib = activate_installed(
        tracer_provider=providers.tracer_provider,
        meter_provider=providers.meter_provider,
        disabled=settings.disabled_instrumentations,
        allows=allows,
    )
    telemetry.add_cleanup(undo_contrib)
    for entry in contrib:
        telemetry.instrumentations[f"contrib:{entry.name}"] = str(entry)


def wiring(telemetry: Telemetry) -> dict[str, Any]:
    """What is on and where each signal goes: the startup line's fields, and ``doctor``'s."""
    from otel_setup._core.settings import mask_url

    settings = telemetry.settings
    exporters = telemetry.exporters

    def destination(signal: str) -> list[str]:
        names = exporters.get(signal, ("none",))
        shown = []
        for name in names:
            if name == "otlp":
                endpoint = settings.signal_endpoint(signal)
                shown.append(f"otlp {settings.signal_protocol(signal)} {mask_url(endpoint) if endpoint else '?'}")
            elif name == "prometheus":
                port = settings.metrics_port
                path = settings.metrics_path or "(no path)"
                shown.append(f"prometheus {path} on port {port}" if port else f"prometheus {path} on the app")
            elif name == "none" and signal == "traces" and not settings.signal_endpoint("traces"):
                shown.append("none (no OTLP endpoint set: spans are not exported)")
            else:
                shown.append(name)
        return shown

    ratio = settings.sampling_ratio if "ratio" in settings.sampler else None
    return {
        "service.name": telemetry.resource.attributes.get("service.name"),
        "traces": destination("traces"),
        "sampler": settings.sampler if ratio is None else f"{settings.sampler} {ratio:g}",
        "metrics": destination("metrics"),
        "logs": [f"stdout {settings.log_format}", *(d for d in destination("logs") if d != "none")],
        "sentry": telemetry.instrumentations.get("sentry", "off"),
        "integrations": dict(telemetry.instrumentations),
    }


def install_sigterm_shutdown(shutdown: Any) -> Any:
    """Run ``shutdown`` on SIGTERM, then die of it as before; returns the undo.

    Installed only from the main thread over the default disposition: a
    handler the application or its server set stays theirs (uvicorn and
    gunicorn save ours and restore it before re-raising the signal).
    """
    import signal

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except (AttributeError, ValueError):
        return lambda: None
    if previous not in (signal.SIG_DFL, None):
        return lambda: None

    def on_sigterm(signum: int, frame: Any) -> None:
        try:
            shutdown()
        finally:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    signal.signal(signal.SIGTERM, on_sigterm)

    def undo() -> None:
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

    return undo


def _start_logging(settings: Settings, features: Mapping[str, Any], telemetry: Telemetry) -> None:
    options = features.get("logging")
    if options is False:
        telemetry.instrumentations["logging"] = "off: disabled by argument"
        return
    from otel_setup._integrations.logging import RequestLog, configure_logging

    attributes = telemetry.resource.attributes
    static = {"service.name": attributes.get("service.name")}
    if attributes.get("deployment.environment.name"):
        static["environment"] = attributes["deployment.environment.name"]
    undo, fast, detach_export = configure_logging(
        log_format=settings.log_format,
        level=settings.log_level,
        static_fields=static,
        logger_provider=telemetry.logger_provider,
        processors=tuple(options.processors) if isinstance(options, LoggingOptions) else (),
        redactor=telemetry.redactor,
        request_log_buffer_ms=settings.request_log_buffer_ms,
    )
    telemetry.add_cleanup(detach_export)
    telemetry.add_reset(undo)
    telemetry.request_log = RequestLog(
        settings.request_log_level, settings.slow_request_ms, fast, error_level=settings.request_log_error_level
    )
    if fast is not None:
        telemetry.write_waiting_lines = fast.write_waiting
    telemetry.instrumentations["logging"] = "active"


def _start_sentry(settings: Settings, telemetry: Telemetry) -> None:
    if not settings.sentry_dsn:
        telemetry.instrumentations["sentry"] = "off: SENTRY_DSN not set"
        return
    from otel_setup._integrations.sentry import SentryBridge

    attributes = telemetry.resource.attributes
    environment = settings.sentry_environment or attributes.get("deployment.environment.name")
    version = attributes.get("service.version")
    endpoints = tuple(e for e in (settings.signal_endpoint(s) for s in ("traces", "metrics", "logs")) if e)
    bridge = SentryBridge(
        dsn=settings.sentry_dsn,
        environment=str(environment) if environment else None,
        release=f"{attributes.get('service.name')}@{version}" if version else None,
        sample_rate=settings.sentry_sample_rate,
        shutdown_timeout=min(2.0, float(settings.shutdown_timeout)),
        ignored_urls=endpoints,
        redactor=telemetry.redactor,
    )
    telemetry.error_reporter = bridge.capture_request_error
    telemetry.request_isolation = bridge.isolate
    from sentry_sdk.integrations.logging import ignore_logger

    # 5xx request lines are logged at error: the failed request is already one event.
    ignore_logger("otel_setup.request")
    bridge.register_metrics(telemetry.meter_provider)  # otel_setup.sentry.events.dropped
    telemetry.add_shutdown_step(lambda: bridge.close(min(2.0, float(settings.shutdown_timeout))))
    # The end of a lifespan flushes Sentry's queue too (a SIGTERM may end the process right after).
    import sentry_sdk

    telemetry.add_flush_step(lambda timeout: sentry_sdk.get_client().flush(timeout=min(2.0, timeout)))
    telemetry.instrumentations["sentry"] = "active"


def _instrument_library(name: str, tracer_provider: Any, meter_provider: Any, telemetry: Telemetry) -> str:
    from opentelemetry.instrumentation.dependencies import DependencyConflictError

    try:
        if name == "sqlalchemy":
            from otel_setup._integrations.sqlalchemy import instrument_sqlalchemy, uninstrument_sqlalchemy

            done = instrument_sqlalchemy(
                tracer_provider=tracer_provider,
                meter_provider=meter_provider,
                slow_query_ms=telemetry.settings.slow_query_ms,
            )
            telemetry.add_cleanup(uninstrument_sqlalchemy)
        elif name == "redis":
            from otel_setup._integrations.redis import instrument_redis, uninstrument_redis

            done = instrument_redis(
                tracer_provider=tracer_provider,
                meter_provider=meter_provider,
                cache_key_prefixes=telemetry.settings.cache_key_prefixes,  # cache hit/miss names
            )
            telemetry.add_cleanup(uninstrument_redis)
        else:
            from otel_setup._integrations.httpx import instrument_httpx, uninstrument_httpx

            done = instrument_httpx(
                tracer_provider=tracer_provider,
                meter_provider=meter_provider,
                capture_headers=telemetry.settings.capture_headers["client"],
                redactor=telemetry.redactor,
            )
            telemetry.add_cleanup(uninstrument_httpx)
    except DependencyConflictError as conflict:
        _log.warning("otel_setup: %s instrumentation skipped: %s", name, conflict)
        return f"off: version conflict ({conflict})"
    except ImportError as missing:
        return f"off: package missing ({missing.name})"
    return "active" if done else "off: library not installed or already instrumented"


# --- GW2 and GenAI (see otel_setup/_integrations/gw2.py and genai.py) -------------------------


def _instrument_known_apis(settings: Settings, tracer_provider: Any, meter_provider: Any, telemetry: Telemetry) -> None:
    """GW2 and OpenAI-compatible calls get their own spans; both wrap httpx's transports.

    GW2 is registered first, so a request to the GW2 base is GW2's even on a shared host.
    """
    for name in ("gw2", "genai"):
        state = _wanted(name, {}, settings)
        if state == "active":
            try:
                if name == "gw2":
                    from otel_setup._integrations.gw2 import instrument_gw2, uninstrument_gw2

                    done = instrument_gw2(
                        tracer_provider=tracer_provider, meter_provider=meter_provider, api_base=settings.gw2_api_base
                    )
                    telemetry.add_cleanup(uninstrument_gw2)
                else:
                    from otel_setup._integrations.genai import instrument_genai, uninstrument_genai

                    done = instrument_genai(
                        tracer_provider=tracer_provider,
                        meter_provider=meter_provider,
                        prices=settings.genai_prices,
                    )
                    telemetry.add_cleanup(uninstrument_genai)
            except ImportError as missing:
                state = f"off: package missing ({missing.name})"
            else:
                state = "active" if done else "off: httpx not installed or already instrumented"
        telemetry.instrumentations[name] = state


def build_redactor(settings: Settings, callback: Any = None) -> Redactor:
    """The one runtime redaction table: defaults plus the settings' extras and the callback."""
    return Redactor(
        extra_patterns=settings.redact_patterns,
        extra_query_parameters=settings.redact_query_parameters,
        extra_keys=settings.redact_keys,
        callback=callback,
        max_length=settings.attribute_value_length_limit,
    )


def _compile(patterns: Any) -> list[re.Pattern[str]]:
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except (re.error, TypeError):
            raise OtelSetupConfigError("FastAPIOptions.excluded_urls", pattern, "regular expressions") from None
    return compiled


def _app_attribute(app: Any, name: str, *, ignore: str | None) -> str | None:
    value = getattr(app, name, None) if app is not None else None
    if not isinstance(value, str) or not value or value == ignore:
        return None
    return value


def _install_globals(tracer_provider: Any, meter_provider: Any, logger_provider: Any) -> None:
    """Make ours the global providers, for libraries that look them up themselves."""
    from opentelemetry.trace import ProxyTracerProvider

    if not isinstance(trace.get_tracer_provider(), ProxyTracerProvider):
        _log.warning("otel_setup: a global TracerProvider was already set; otel_setup's instrumentations use their own")
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    if logger_provider is not None:
        from opentelemetry._logs import set_logger_provider

        set_logger_provider(logger_provider)


def reset() -> None:
    """Undo ``configure()`` for test suites: shut down, uninstrument, clear the globals.

    OpenTelemetry's globals can be set once per process; this reopens them the
    same way opentelemetry-python's own test utilities do.
    """
    global _active
    with _lock:
        telemetry = _active
        _active = None
        if telemetry is not None:
            telemetry.shutdown(timeout=2.0)
            atexit.unregister(telemetry.shutdown)
            telemetry.run_resets()
        from opentelemetry import _logs
        from opentelemetry.metrics import _internal as metrics_internal
        from opentelemetry.util._once import Once

        trace._TRACER_PROVIDER_SET_ONCE = Once()
        trace._TRACER_PROVIDER = None
        metrics_internal._METER_PROVIDER_SET_ONCE = Once()
        metrics_internal._METER_PROVIDER = None
        logs_internal: Any = getattr(_logs, "_internal", None)
        if logs_internal is not None and hasattr(logs_internal, "_LOGGER_PROVIDER_SET_ONCE"):
            logs_internal._LOGGER_PROVIDER_SET_ONCE = Once()
            logs_internal._LOGGER_PROVIDER = None
