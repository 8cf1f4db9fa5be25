"""The handle ``configure()`` returns: providers, readiness checks, flush and shutdown."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry.metrics import MeterProvider, NoOpMeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import NoOpTracerProvider, TracerProvider

from otel_setup._core.integration import IntegrationStatus, TelemetryParts
from otel_setup._core.providers import Providers, run_within
from otel_setup._core.settings import Settings
from otel_setup._hotpath.users import ActiveUsers, DisabledActiveUsers
from otel_setup._security.metrics_access import metrics_endpoint, start_metrics_server
from otel_setup._security.redaction import DEFAULT_REDACTOR, Redactor
from otel_setup.health import Readiness, ReadinessCheck, health_endpoint, ready_endpoint

__all__ = ["Telemetry"]

_log = logging.getLogger("otel_setup")


class Telemetry:
    """What is running, and the way to stop it within a deadline."""

    def __init__(
        self,
        settings: Settings,
        providers: Providers | None,
        *,
        excluded_patterns: tuple[Any, ...] = (),
        shutdown_on_lifespan: bool = False,
        instrumentations: Mapping[str, IntegrationStatus] | None = None,
        redactor: Redactor = DEFAULT_REDACTOR,
        parts: TelemetryParts | None = None,
    ) -> None:
        """Built once, by ``configure()``, from what the integrations contributed (``parts``)."""
        parts = parts or TelemetryParts()
        self.settings = settings
        self.redactor = redactor
        """The runtime redaction table every channel of this handle uses."""
        self._providers = providers
        self.readiness = Readiness(timeout=settings.ready_timeout)
        for name, check in parts.readiness_checks.items():
            self.readiness.add(name, check)
        self.instrumentations: dict[str, IntegrationStatus] = dict(instrumentations or {})
        """Each integration's status (``str()``: ``active``, or ``off: <why>``); contrib ones as ``contrib:<name>``."""
        self._excluded_patterns = excluded_patterns
        self._shutdown_on_lifespan = shutdown_on_lifespan
        self._apps: list[Any] = []
        self._lock = threading.Lock()
        self._shut_down = False
        self._metrics_server: Any | None = None
        self._cleanups: list[Callable[[], None]] = list(parts.cleanups)
        self._resets: list[Callable[[], None]] = list(parts.resets)
        self._flush_steps: list[Callable[[float], object]] = list(parts.flush_steps)
        self._lifespan_flush: tuple[float, float] | None = None  # (started, ended), monotonic
        self.state = ServerState()
        """What the server middleware of every app reads: whether telemetry was shut down."""
        self._shutdown_steps: list[Callable[[], object]] = list(parts.shutdown_steps)
        self.request_log = parts.request_log
        self.write_waiting_lines = parts.write_waiting_lines
        """Writes request log lines still waiting for their batch (stdout a pipe or file)."""
        self.error_reporter = parts.error_reporter
        self.request_isolation = parts.request_isolation
        """Wraps the app inside the server middleware: one Sentry isolation scope per request."""

    # --- what is running -------------------------------------------------

    @property
    def enabled(self) -> bool:
        """False when ``OTEL_SDK_DISABLED`` (or ``disabled=True``) turned telemetry off."""
        return self._providers is not None

    @property
    def resource(self) -> Resource:
        return self._providers.resource if self._providers else Resource.get_empty()

    @property
    def tracer_provider(self) -> TracerProvider:
        return self._providers.tracer_provider if self._providers else NoOpTracerProvider()

    @property
    def meter_provider(self) -> MeterProvider:
        return self._providers.meter_provider if self._providers else NoOpMeterProvider()

    @property
    def logger_provider(self) -> Any | None:
        return self._providers.logger_provider if self._providers else None

    @property
    def prometheus_registry(self) -> Any | None:
        """The ``prometheus_client`` registry behind ``/metrics`` (None when Prometheus is off)."""
        return self._providers.prometheus_registry if self._providers else None

    @property
    def exporters(self) -> dict[str, tuple[str, ...]]:
        return dict(self._providers.exporters) if self._providers else {}

    # --- active users (otel_setup/_hotpath/users.py) -------------------------------

    _users: ActiveUsers | None = None

    @property
    def users(self) -> ActiveUsers:
        """Distinct accounts seen recently: ``telemetry.users.seen(account_id)`` on the request path.

        Created, and its gauge registered, on first use: a service that never calls it
        exports no ``otel_setup_users_active`` series. A no-op when telemetry is off.
        """
        users = self._users
        if users is None:
            with self._lock:
                if self._users is None:
                    if self._providers is None:
                        self._users = DisabledActiveUsers()
                    else:
                        self._users = ActiveUsers()
                        self._users.register(self._providers.meter_provider)
                users = self._users
        return users

    # --- end active users ----------------------------------------------------

    # --- app wiring ------------------------------------------------------

    def add_readiness_check(self, name: str, check: ReadinessCheck) -> None:
        """Register a check run by ``/ready``; a same-named check is replaced."""
        self.readiness.add(name, check)

    def instrument_app(self, app: Any) -> None:
        """Serve the probe and metrics routes on ``app`` and trace it (once per app)."""
        from otel_setup._compat import wrap_middleware_stack
        from otel_setup._integrations.fastapi import (
            ServerHooks,
            disable_native_telemetry,
            instrument_app,
            is_instrumented,
        )

        if any(existing is app for existing in self._apps) or is_instrumented(app):
            return
        self._apps.append(app)
        if _active(self.instrumentations, "logging"):
            # Servers configure their loggers before importing the app: routed
            # now, their first lines ("Started server process") take our format.
            _route_server_loggers()
        if self._providers is None or not _active(self.instrumentations, "fastapi"):
            self._add_routes(app)
            if self._providers is None:
                disable_native_telemetry(app)
            return
        excluded = [p for p in (self.settings.health_path, self.settings.ready_path) if p]
        if self.settings.metrics_path and self._providers.prometheus_registry is not None:
            excluded.append(self.settings.metrics_path)
        hooks = ServerHooks(
            excluded_paths=frozenset(excluded),
            excluded_patterns=self._excluded_patterns,
            on_startup=_route_server_loggers if _active(self.instrumentations, "logging") else None,
            on_shutdown=self.lifespan_ended,
            state=self.state,
            request_log=self.request_log,
            on_error=self.error_reporter,
            server_timing=bool(self.settings.server_timing),
            response_time_header=bool(self.settings.response_time_header),
            trust=_trust(self.settings.trusted_traceparent),
            probes=self._probes(),
            roots=self._providers.root_spans,
            keeper=self._providers.keeper,
            capture_headers=self._server_header_capture(),
        )
        isolation = self.request_isolation
        if isolation is not None and not is_instrumented(app):
            wrap_middleware_stack(app, lambda build: isolation(build()))
        instrument_app(
            app,
            tracer_provider=self._providers.tracer_provider,
            local_metrics=self._providers.local_metrics,
            hooks=hooks,
        )

    def _server_header_capture(self) -> Callable[[Any], dict[str, tuple[str, ...]]] | None:
        """Allow-listed request headers as span attributes, sanitised; None when capture is off."""
        allowed: frozenset[str] = self.settings.capture_headers["server"]
        if not allowed:
            return None
        from otel_setup._security.scrubbing import captured_headers

        redactor = self.redactor

        def capture(scope: Any) -> dict[str, tuple[str, ...]]:
            pairs = ((name.decode("latin-1"), value.decode("latin-1")) for name, value in scope.get("headers", ()))
            return captured_headers(pairs, allowed, "http.request.header", redactor)

        return capture

    def _probe_endpoints(self) -> dict[str, Any]:
        """The probe and metrics request handlers, keyed by the path each is served on."""
        endpoints: dict[str, Any] = {}
        if self.settings.health_path:
            endpoints[self.settings.health_path] = health_endpoint()
        if self.settings.ready_path:
            endpoints[self.settings.ready_path] = ready_endpoint(self.readiness)
        registry = self.prometheus_registry
        if registry is not None and self.settings.metrics_path and self.settings.metrics_port is None:
            endpoints[self.settings.metrics_path] = metrics_endpoint(registry, self.settings.metrics_token)
        return endpoints

    def _probes(self) -> dict[str, Any]:
        """The probe endpoints as ASGI apps, for the middleware to answer before routing."""
        from starlette.routing import request_response

        return {path: request_response(endpoint) for path, endpoint in self._probe_endpoints().items()}

    def _add_routes(self, app: Any) -> None:
        """The probe endpoints as routes, for apps the middleware does not wrap."""
        from starlette.routing import Route

        routes = [
            Route(path, endpoint, methods=["GET"], include_in_schema=False)
            for path, endpoint in self._probe_endpoints().items()
        ]
        # First in the table, so a catch-all route of the app cannot shadow them.
        app.router.routes[0:0] = routes

    def start_metrics_server(self) -> None:
        registry = self.prometheus_registry
        port = self.settings.metrics_port
        if registry is None or port is None or self._metrics_server is not None:
            return
        self._metrics_server = start_metrics_server(
            port, self.settings.metrics_host, registry, self.settings.metrics_token
        )

    def add_cleanup(self, cleanup: Callable[[], None]) -> None:
        """Run synchronously at shutdown (quick undo steps such as uninstrumenting)."""
        self._cleanups.append(cleanup)

    def add_reset(self, step: Callable[[], None]) -> None:
        """Run by ``reset()`` after shutdown (undoing process-wide changes such as the log handler)."""
        self._resets.append(step)

    def run_resets(self) -> None:
        for step in self._resets:
            try:
                step()
            except Exception:  # noqa: BLE001 - keep resetting the rest
                _log.debug("otel_setup: reset step failed", exc_info=True)
        self._resets.clear()

    def add_flush_step(self, step: Callable[[float], object]) -> None:
        """Run by ``force_flush`` (and so at the end of a lifespan) with its timeout in seconds."""
        self._flush_steps.append(step)

    def add_shutdown_step(self, step: Callable[[], object]) -> None:
        """Run at shutdown under the same deadline as the providers (flushing clients)."""
        self._shutdown_steps.append(step)

    # --- flush and shutdown ----------------------------------------------

    def force_flush(self, timeout: float = 5.0) -> bool:
        """Export what is queued; True only if it finished within ``timeout`` seconds."""
        if self.write_waiting_lines is not None:
            self.write_waiting_lines()
        if self._providers is None:
            return True
        extra = [lambda step=step: step(timeout) for step in self._flush_steps]
        return run_within([*self._providers.flush_steps(int(timeout * 1000)), *extra], timeout, "flush")

    def lifespan_ended(self) -> None:
        """An app's lifespan ended: export what is queued, within the shutdown deadline.

        Telemetry keeps running (a later lifespan, another app, the rest of a
        test session); the providers shut down at process exit, or here when
        ``FastAPIOptions(shutdown_on_lifespan=True)`` asks for it.
        """
        if self._shutdown_on_lifespan:
            self.shutdown()
            return
        if self._shut_down:
            return
        started = time.monotonic()
        self.force_flush(float(self.settings.shutdown_timeout))
        self._lifespan_flush = (started, time.monotonic())

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush and stop every provider, returning within ``timeout`` seconds.

        Defaults to ``OTEL_SETUP_SHUTDOWN_TIMEOUT`` (5 s). When the process
        exits right after a lifespan ended (uvicorn on SIGTERM), that flush
        and this shutdown share the one deadline. Safe to call more than once;
        later calls return True at once.
        """
        with self._lock:
            if self._shut_down:
                return True
            self._shut_down = True
            self.state.shut_down = True
        deadline = float(self.settings.shutdown_timeout if timeout is None else timeout)
        flushed = self._lifespan_flush
        if timeout is None and flushed is not None and time.monotonic() - flushed[1] < 1.0:
            deadline = max(0.5, deadline - (time.monotonic() - flushed[0]))
        for cleanup in self._cleanups:
            try:
                cleanup()
            except Exception:  # noqa: BLE001 - keep shutting the rest down
                _log.debug("otel_setup: cleanup failed", exc_info=True)
        if self._metrics_server is not None:
            threading.Thread(target=self._metrics_server.shutdown, daemon=True).start()
        if self._providers is None:
            return True
        return run_within([*self._shutdown_steps, *self._providers.shutdown_steps()], deadline, "shutdown")

    @property
    def is_shut_down(self) -> bool:
        return self._shut_down


class ServerState:
    """Shared by ``Telemetry`` and its server middlewares: one attribute read per request."""

    __slots__ = ("shut_down", "warned")

    def __init__(self) -> None:
        self.shut_down = False
        self.warned = False


def _active(statuses: Mapping[str, IntegrationStatus], name: str) -> bool:
    status = statuses.get(name)
    return status is not None and status.active


def _trust(values: tuple[str, ...]) -> Any:
    import ipaddress

    from otel_setup._integrations.fastapi import TraceparentTrust

    if values == ("all",):
        return TraceparentTrust(trust_all=True)
    origins = [v for v in values if v.startswith(("http://", "https://"))]
    networks = [ipaddress.ip_network(v, strict=False) for v in values if v not in origins and v != "none"]
    return TraceparentTrust(origins=origins, networks=networks)


def _route_server_loggers() -> None:
    from otel_setup._integrations.logging import route_server_loggers

    route_server_loggers()
