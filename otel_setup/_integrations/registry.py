"""The one list of integrations: ``configure()``, the distro, ``doctor`` and the docs read it.

Each entry is an :class:`~otel_setup._core.integration.Integration`; order is
the order ``configure()`` instruments them in (httpx before the known APIs
that route through its transports, Sentry last, after the log handler it
ignores a logger of). Importing this module imports no instrumented library
and no integration's implementation: each ``instrument()`` does that itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from otel_setup._core.integration import ACTIVE, InstrumentContext, Integration, IntegrationStatus
from otel_setup._core.options import FastAPIOptions, HttpxOptions, LoggingOptions, RedisOptions, SQLAlchemyOptions

if TYPE_CHECKING:
    from otel_setup._core.settings import Settings
    from otel_setup._integrations.known_api import KnownHttpApi
    from otel_setup.health import ReadinessCheck

__all__ = [
    "INTEGRATIONS",
    "KnownApiIntegration",
    "covered",
    "disabled_list_names",
    "known_api_integrations",
    "markdown_table",
    "names",
]

_log = logging.getLogger("otel_setup")


def _guarded(name: str, instrument: Callable[[], bool], already: str) -> IntegrationStatus:
    """Run ``instrument`` and say what became of it: missing package, version conflict, or done."""
    from opentelemetry.instrumentation.dependencies import DependencyConflictError

    try:
        done = instrument()
    except DependencyConflictError as conflict:
        _log.warning("otel_setup: %s instrumentation skipped: %s", name, conflict)
        return IntegrationStatus.off(f"version conflict ({conflict})")
    except ImportError as missing:
        return IntegrationStatus.off(f"package missing ({missing.name})")
    return ACTIVE if done else IntegrationStatus.off(already)


class FastAPIIntegration(Integration):
    name = "fastapi"
    summary = "Server spans and RED metrics of the app passed to `configure()`, its probe and metrics routes."
    options_type = FastAPIOptions
    library = ("fastapi", ">=0.115.14,<0.166")
    module = "fastapi"
    replaces = frozenset({"fastapi", "asgi", "starlette"})

    def instrument(self, context: InstrumentContext) -> IntegrationStatus:
        """The app itself is wired by ``Telemetry.instrument_app``, for this app and any later one."""
        return ACTIVE


class SQLAlchemyIntegration(Integration):
    name = "sqlalchemy"
    summary = "A client span and `db.client.operation.duration` per statement, on every engine."
    options_type = SQLAlchemyOptions
    library = ("sqlalchemy", ">=2.0,<2.2")
    module = "sqlalchemy"
    replaces = frozenset({"sqlalchemy"})

    def instrument(self, context: InstrumentContext) -> IntegrationStatus:
        def run() -> bool:
            from otel_setup._integrations.sqlalchemy import instrument_sqlalchemy

            return instrument_sqlalchemy(
                tracer_provider=context.providers.tracer_provider,
                meter_provider=context.providers.meter_provider,
                slow_query_ms=context.settings.slow_query_ms,
            )

        return _guarded(self.name, run, "library not installed or already instrumented")

    def uninstrument(self) -> None:
        from otel_setup._integrations.sqlalchemy import uninstrument_sqlalchemy

        uninstrument_sqlalchemy()

    def readiness_checks(self, options: Any) -> Mapping[str, ReadinessCheck]:
        from otel_setup.health import sqlalchemy_check

        engines = options.engines if isinstance(options, SQLAlchemyOptions) else ()
        return {"database" if i == 0 else f"database_{i}": sqlalchemy_check(e) for i, e in enumerate(engines)}


class RedisIntegration(Integration):
    name = "redis"
    summary = "A client span and `db.client.operation.duration` per command; cache hits and misses by key prefix."
    options_type = RedisOptions
    library = ("redis", ">=5,<9")
    module = "redis"
    replaces = frozenset({"redis"})

    def instrument(self, context: InstrumentContext) -> IntegrationStatus:
        def run() -> bool:
            from otel_setup._integrations.redis import instrument_redis

            return instrument_redis(
                tracer_provider=context.providers.tracer_provider,
                meter_provider=context.providers.meter_provider,
                cache_key_prefixes=context.settings.cache_key_prefixes,
            )

        return _guarded(self.name, run, "library not installed or already instrumented")

    def uninstrument(self) -> None:
        from otel_setup._integrations.redis import uninstrument_redis

        uninstrument_redis()

    def readiness_checks(self, options: Any) -> Mapping[str, ReadinessCheck]:
        from otel_setup.health import redis_check

        clients = options.clients if isinstance(options, RedisOptions) else ()
        return {"redis" if i == 0 else f"redis_{i}": redis_check(c) for i, c in enumerate(clients)}


class HttpxIntegration(Integration):
    name = "httpx"
    summary = "A client span and `http.client.request.duration` per call; `traceparent` only to allowed hosts."
    options_type = HttpxOptions
    library = ("httpx", ">=0.27,<1")
    module = "httpx"
    replaces = frozenset({"httpx"})

    def instrument(self, context: InstrumentContext) -> IntegrationStatus:
        def run() -> bool:
            from otel_setup._integrations.httpx import instrument_httpx

            return instrument_httpx(
                tracer_provider=context.providers.tracer_provider,
                meter_provider=context.providers.meter_provider,
                capture_headers=context.settings.capture_headers["client"],
                redactor=context.redactor,
            )

        return _guarded(self.name, run, "library not installed or already instrumented")

    def uninstrument(self) -> None:
        from otel_setup._integrations.httpx import uninstrument_httpx

        uninstrument_httpx()


class KnownApiIntegration(Integration):
    """A :class:`~otel_setup.KnownHttpApi` as an integration: its handler added to httpx's transports."""

    module = "httpx"
    summary = "Calls to a known HTTP API (see docs/integrations.md)."

    def __init__(self, api: KnownHttpApi | None = None) -> None:
        self._api = api
        self._handler: Any = None
        if api is not None:
            self.name = api.name  # type: ignore[misc] # an instance of the generic entry takes its API's name

    def api(self, settings: Settings) -> KnownHttpApi:
        """The API to instrument; the built-ins build theirs from the settings."""
        if self._api is None:
            raise NotImplementedError
        return self._api

    def instrument(self, context: InstrumentContext) -> IntegrationStatus:
        if self._handler is not None:
            return IntegrationStatus.off("already instrumented")
        try:
            import httpx  # noqa: F401
        except ImportError:
            return IntegrationStatus.off("package missing (httpx)")
        from otel_setup._integrations.httpx_transport import add_api_handler

        api = self.api(context.settings)
        self._handler = api.handler(context.providers.tracer_provider, context.providers.meter_provider)
        add_api_handler(self._handler)
        return ACTIVE

    def uninstrument(self) -> None:
        handler, self._handler = self._handler, None
        if handler is not None:
            from otel_setup._integrations.httpx_transport import remove_api_handler

            remove_api_handler(handler)


class GW2Integration(KnownApiIntegration):
    name = "gw2"
    summary = "GW2 API calls: spans and metrics by endpoint template; 429s and 403 reasons in `gw2.api.requests`."

    def api(self, settings: Settings) -> KnownHttpApi:
        from otel_setup._integrations.gw2 import GW2Api

        return GW2Api(settings.gw2_api_base)


class GenAIIntegration(KnownApiIntegration):
    name = "genai"
    summary = "OpenAI-compatible calls on any host: GenAI semantic-convention spans, tokens, cost, rate limits."

    def api(self, settings: Settings) -> KnownHttpApi:
        from otel_setup._core.prices import load_price_table
        from otel_setup._integrations.genai import GenAIApi

        return GenAIApi(load_price_table(settings.genai_prices))  # validated by the settings already


class ProcessIntegration(Integration):
    name = "process"
    summary = "Process and runtime metrics (CPU, memory, threads, open files, GC), process only."
    replaces = frozenset({"system_metrics"})
    follows_disabled_list = False

    def __init__(self) -> None:
        self._undo: Callable[[], None] | None = None

    def precondition(self, settings: Settings) -> str | None:
        return None if settings.process_metrics else "OTEL_SETUP_PROCESS_METRICS=false"

    def instrument(self, context: InstrumentContext) -> IntegrationStatus:
        from otel_setup._integrations.process import instrument_process_metrics

        self._undo = instrument_process_metrics(context.providers.meter_provider)
        return ACTIVE

    def uninstrument(self) -> None:
        undo, self._undo = self._undo, None
        if undo is not None:
            undo()


class LoggingIntegration(Integration):
    name = "logging"
    summary = "JSON (or console) logs for structlog and the standard library with trace ids; the request log line."
    options_type = LoggingOptions
    library = ("structlog", ">=24.1,<26.2")
    replaces = frozenset({"logging"})
    follows_disabled_list = False

    def __init__(self) -> None:
        self._detach: Callable[[], None] | None = None

    def instrument(self, context: InstrumentContext) -> IntegrationStatus:
        from otel_setup._integrations.log_lines import RequestLog
        from otel_setup._integrations.logging import configure_logging

        settings = context.settings
        attributes = context.providers.resource.attributes
        static = {"service.name": attributes.get("service.name")}
        if attributes.get("deployment.environment.name"):
            static["environment"] = attributes["deployment.environment.name"]
        options = context.options
        undo, fast, self._detach = configure_logging(
            log_format=settings.log_format,
            level=settings.log_level,
            static_fields=static,
            logger_provider=context.providers.logger_provider,
            processors=tuple(options.processors) if isinstance(options, LoggingOptions) else (),
            redactor=context.redactor,
            request_log_buffer_ms=settings.request_log_buffer_ms,
        )
        context.on_reset(undo)
        context.parts.request_log = RequestLog(
            settings.request_log_level, settings.slow_request_ms, fast, error_level=settings.request_log_error_level
        )
        if fast is not None:
            context.parts.write_waiting_lines = fast.write_waiting
        return ACTIVE

    def uninstrument(self) -> None:
        detach, self._detach = self._detach, None
        if detach is not None:
            detach()


class SentryIntegration(Integration):
    name = "sentry"
    summary = "Errors to Sentry, linked to the trace; no Sentry tracing, no PII."
    library = ("sentry-sdk", ">=2.47,<2.77")
    module = "sentry_sdk"
    follows_disabled_list = False

    def validate(self, settings: Settings) -> None:
        if settings.sentry_dsn:
            from otel_setup._integrations.sentry import validate_dsn

            validate_dsn(settings.sentry_dsn)

    def precondition(self, settings: Settings) -> str | None:
        return None if settings.sentry_dsn else "SENTRY_DSN not set"

    def instrument(self, context: InstrumentContext) -> IntegrationStatus:
        import sentry_sdk
        from sentry_sdk.integrations.logging import ignore_logger

        from otel_setup._integrations.sentry import SentryBridge

        settings = context.settings
        assert settings.sentry_dsn is not None  # the precondition
        attributes = context.providers.resource.attributes
        environment = settings.sentry_environment or attributes.get("deployment.environment.name")
        version = attributes.get("service.version")
        endpoints = tuple(e for e in (settings.signal_endpoint(s) for s in ("traces", "metrics", "logs")) if e)
        timeout = min(2.0, float(settings.shutdown_timeout))
        bridge = SentryBridge(
            dsn=settings.sentry_dsn,
            environment=str(environment) if environment else None,
            release=f"{attributes.get('service.name')}@{version}" if version else None,
            sample_rate=settings.sentry_sample_rate,
            shutdown_timeout=timeout,
            ignored_urls=endpoints,
            redactor=context.redactor,
        )
        parts = context.parts
        parts.error_reporter = bridge.capture_request_error
        parts.request_isolation = bridge.isolate
        # 5xx request lines are logged at error: the failed request is already one event.
        ignore_logger("otel_setup.request")
        bridge.register_metrics(context.providers.meter_provider)  # otel_setup.sentry.events.dropped
        parts.shutdown_steps.append(lambda: bridge.close(timeout))
        # The end of a lifespan flushes Sentry's queue too (a SIGTERM may end the process right after).
        parts.flush_steps.append(lambda flush_timeout: sentry_sdk.get_client().flush(timeout=min(2.0, flush_timeout)))
        return ACTIVE


INTEGRATIONS: Final[tuple[Integration, ...]] = (
    FastAPIIntegration(),
    SQLAlchemyIntegration(),
    RedisIntegration(),
    HttpxIntegration(),
    GW2Integration(),
    GenAIIntegration(),
    ProcessIntegration(),
    LoggingIntegration(),
    SentryIntegration(),
)


def names(integrations: Iterable[Integration] = INTEGRATIONS) -> tuple[str, ...]:
    return tuple(integration.name for integration in integrations)


def disabled_list_names() -> tuple[str, ...]:
    """The names ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` may list (besides contrib ones and known APIs)."""
    return tuple(integration.name for integration in INTEGRATIONS if integration.follows_disabled_list)


def covered(integrations: Iterable[Integration] = INTEGRATIONS) -> frozenset[str]:
    """The contrib entry points the integrations replace: the distro and ``configure()`` never run them."""
    return frozenset(name for integration in integrations for name in integration.replaces)


def known_api_integrations(apis: Sequence[Any], taken: Iterable[str]) -> tuple[Integration, ...]:
    """The user's known APIs as integrations, after the built-in ones (a request is the first claimer's)."""
    from otel_setup._core.errors import OtelSetupConfigError
    from otel_setup._integrations.known_api import KnownHttpApi

    seen = set(taken)
    found: list[Integration] = []
    for api in apis:
        name = getattr(api, "name", None)
        if not isinstance(api, KnownHttpApi) or not isinstance(name, str) or not name or name in seen:
            raise OtelSetupConfigError(
                "known_apis", api, "KnownHttpApi objects (a name and handler()), each name used once"
            )
        seen.add(name)
        found.append(KnownApiIntegration(api))
    return tuple(found)


def markdown_table(integrations: Iterable[Integration] = INTEGRATIONS) -> str:
    """The docs table (docs/integrations.md); ``python -m otel_setup._integrations.registry`` prints it."""
    rows = [
        "| Integration | `configure()` keyword | Tested with | Replaces contrib | What it records |",
        "|---|---|---|---|---|",
    ]
    for integration in integrations:
        kind = integration.options_type
        keyword = f"`{integration.name}=` `{kind.__name__}` / `False`" if kind is not None else "—"
        library = f"{integration.library[0]} `{integration.library[1]}`" if integration.library else "—"
        replaces = ", ".join(f"`{name}`" for name in sorted(integration.replaces)) or "—"
        rows.append(f"| `{integration.name}` | {keyword} | {library} | {replaces} | {integration.summary} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
