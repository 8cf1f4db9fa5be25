"""``configure()``: settings -> providers -> instrumentations -> the app, exactly once per process."""

from __future__ import annotations

import atexit
import logging
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry import metrics, trace
from typing_extensions import Unpack

from otel_setup._compat import reset_global_providers, use_public_api
from otel_setup._core.errors import OtelSetupConfigError, unknown_keyword
from otel_setup._core.integration import InstrumentContext, Integration, IntegrationStatus, TelemetryParts
from otel_setup._core.options import ConfigureOptions, FastAPIOptions
from otel_setup._core.providers import Providers, build_providers, build_resource
from otel_setup._core.runtime import lower_switch_interval
from otel_setup._core.settings import Settings, resolve
from otel_setup._core.telemetry import Telemetry
from otel_setup._integrations import registry
from otel_setup._security.propagation import HostPolicy
from otel_setup._security.redaction import Redactor
from otel_setup.health import ReadinessCheck

__all__ = ["active", "configure", "reset"]

_log = logging.getLogger("otel_setup")
_lock = threading.RLock()
_active: Telemetry | None = None


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
        features, checks, known_apis, settings_options = _split(dict(options))
        settings = resolve(settings_options)
        use_public_api(settings.compat == "public")
        integrations = registry.INTEGRATIONS + registry.known_api_integrations(known_apis, registry.names())
        telemetry = _build(settings, features, checks, integrations, app)
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


def _split(
    options: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, ReadinessCheck], tuple[Any, ...], dict[str, Any]]:
    """The keywords that are code (integration options, callbacks, checks, APIs), apart from settings."""
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
    for integration in registry.INTEGRATIONS:
        if integration.options_type is None or integration.name not in rest:
            continue
        value = rest.pop(integration.name)
        integration.check_options(value)
        features[integration.name] = value
    checks = rest.pop("readiness_checks", None) or {}
    if not isinstance(checks, Mapping) or not all(isinstance(k, str) and callable(v) for k, v in checks.items()):
        raise OtelSetupConfigError("readiness_checks", checks, "a mapping of name to a zero-argument callable")
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.metrics.view import View

    features["metric_readers"] = _instances(rest, "metric_readers", MetricReader, "a sequence of MetricReader objects")
    features["views"] = _instances(rest, "views", View, "a sequence of opentelemetry.sdk.metrics.view.View objects")
    apis = rest.pop("known_apis", None) or ()
    if isinstance(apis, (str, bytes)) or not isinstance(apis, Iterable):
        raise OtelSetupConfigError("known_apis", apis, "a sequence of KnownHttpApi objects")
    return features, dict(checks), tuple(apis), rest


def _instances(options: dict[str, Any], keyword: str, kind: type, allowed: str) -> tuple[Any, ...]:
    """``options[keyword]`` (removed from ``options``) as a tuple of ``kind`` instances, or the typed error."""
    value = options.pop(keyword, None) or ()
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise OtelSetupConfigError(keyword, value, allowed)
    items = tuple(value)
    if not all(isinstance(item, kind) for item in items):
        raise OtelSetupConfigError(keyword, items, allowed)
    return items


def _build(
    settings: Settings,
    features: Mapping[str, Any],
    checks: Mapping[str, ReadinessCheck],
    integrations: tuple[Integration, ...],
    app: Any,
) -> Telemetry:
    """Providers, then every integration in registry order, then one ``Telemetry`` from the results."""
    fastapi_options = features.get("fastapi") or FastAPIOptions()
    patterns = tuple(settings.excluded_urls) + tuple(_compile(fastapi_options.excluded_urls))
    if settings.disabled:
        off = IntegrationStatus.off("OTEL_SDK_DISABLED")
        return Telemetry(
            settings,
            None,
            instrumentations={integration.name: off for integration in integrations},
            parts=TelemetryParts(readiness_checks=dict(checks)),
        )

    for integration in integrations:
        integration.validate(settings)  # before anything is installed
    resource = build_resource(
        settings,
        default_name=_app_attribute(app, "title", ignore="FastAPI"),
        default_version=_app_attribute(app, "version", ignore=None),
    )
    redactor = build_redactor(settings, features.get("redact"))
    providers = build_providers(
        settings,
        resource,
        redactor=redactor,
        metric_readers=features.get("metric_readers", ()),
        views=features.get("views", ()),
    )
    _install_globals(providers.tracer_provider, providers.meter_provider, providers.logger_provider)

    from otel_setup._integrations._semconv import use_stable_semconv
    from otel_setup._integrations.calllog import set_call_log_level

    use_stable_semconv()
    set_call_log_level(settings.call_log_level)  # db, genai, cache and gw2 log events
    parts = TelemetryParts()
    statuses = _instrument_all(integrations, settings, features, providers, redactor, parts)
    policy = _guard_propagation(settings, statuses, parts)
    _start_contrib(settings, providers, statuses, parts, policy)
    from otel_setup._security.propagation import install_trace_context_log_limits

    # A hostile traceparent/tracestate is echoed in a short prefix, a few lines a minute.
    parts.cleanups.append(install_trace_context_log_limits())
    # Export threads encode in Python: keep their hold on the interpreter lock short (see _runtime).
    parts.cleanups.append(lower_switch_interval(settings.switch_interval_ms))
    parts.readiness_checks.update(checks)
    telemetry = Telemetry(
        settings,
        providers,
        excluded_patterns=patterns,
        shutdown_on_lifespan=fastapi_options.shutdown_on_lifespan,
        instrumentations=statuses,
        redactor=redactor,
        parts=parts,
    )
    # Providers are shut down when the process ends, within the deadline: at
    # interpreter exit, and on SIGTERM (uvicorn re-raises it after its graceful
    # shutdown, so atexit alone would never run under it).
    atexit.register(telemetry.shutdown)
    telemetry.add_reset(install_sigterm_shutdown(telemetry.shutdown))
    return telemetry


def _instrument_all(
    integrations: tuple[Integration, ...],
    settings: Settings,
    features: Mapping[str, Any],
    providers: Providers,
    redactor: Redactor,
    parts: TelemetryParts,
) -> dict[str, IntegrationStatus]:
    """Each integration's status; an active one is uninstrumented at shutdown."""
    statuses: dict[str, IntegrationStatus] = {}
    for integration in integrations:
        options = features.get(integration.name)
        status = integration.wanted(settings, options)
        if status is None:
            context = InstrumentContext(settings, providers, redactor, options, statuses, parts)
            status = integration.instrument(context)
            if status.active:
                parts.cleanups.append(integration.uninstrument)
        statuses[integration.name] = status
        if options is not False:
            parts.readiness_checks.update(integration.readiness_checks(options))
    return statuses


def _guard_propagation(
    settings: Settings, statuses: Mapping[str, IntegrationStatus], parts: TelemetryParts
) -> HostPolicy:
    """Trace context only where the host policy allows, whoever instruments httpx; returns the policy.

    That is the package, or contrib's instrumentor run earlier by someone else.
    """
    from otel_setup._integrations.httpx import instrumented_by_contrib
    from otel_setup._integrations.httpx_transport import set_propagation_policy
    from otel_setup._security.propagation import install_propagation_guard

    policy = HostPolicy(settings.propagate_to)
    httpx = statuses.get("httpx")
    if not ((httpx is not None and httpx.active) or instrumented_by_contrib() or settings.contrib_instrumentations):
        return policy
    unguard = install_propagation_guard()
    set_propagation_policy(None if policy.allow_all else policy.allows)

    def undo() -> None:
        set_propagation_policy(None)
        unguard()

    parts.cleanups.append(undo)
    return policy


def _start_contrib(
    settings: Settings,
    providers: Providers,
    statuses: dict[str, IntegrationStatus],
    parts: TelemetryParts,
    policy: HostPolicy,
) -> None:
    """The installed contrib instrumentations the registry does not replace, as ``contrib:<name>``."""
    if not settings.contrib_instrumentations:
        return
    from otel_setup._integrations.contrib import activate_installed

    contrib, undo_contrib = activate_installed(
        tracer_provider=providers.tracer_provider,
        meter_provider=providers.meter_provider,
        disabled=settings.disabled_instrumentations,
        allows=None if policy.allow_all else policy.allows,
    )
    parts.cleanups.append(undo_contrib)
    for entry in contrib:
        statuses[f"contrib:{entry.name}"] = entry.status


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
        "sentry": str(telemetry.instrumentations.get("sentry", "off")),
        "integrations": {name: str(status) for name, status in telemetry.instrumentations.items()},
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
    same way opentelemetry-python's own test utilities do (not under
    ``OTEL_SETUP_COMPAT=public``: there is no public way).
    """
    global _active
    with _lock:
        telemetry = _active
        _active = None
        if telemetry is not None:
            telemetry.shutdown(timeout=2.0)
            atexit.unregister(telemetry.shutdown)
            telemetry.run_resets()
        reset_global_providers()
