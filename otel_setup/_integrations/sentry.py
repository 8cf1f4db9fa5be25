"""Errors to Sentry, linked to the OpenTelemetry trace, scrubbed, and nothing more.

Sentry is for errors only. Its own tracing stays off, its auto-enabled
integrations (FastAPI, httpx, Redis, SQLAlchemy...) stay off so nothing is
instrumented twice, it sends no ``sentry-trace``/``baggage`` header anywhere,
and its OTLP integration is used only for trace linking (its exporter and its
propagator, which would replace W3C propagation, are switched off). Request
errors are captured by the server middleware while the request span is
current, so an event's trace and span ids are the OTel ones; sentry-sdk's own
capture point sits outside every middleware, after the span has ended.

This module is imported only when ``SENTRY_DSN`` is set.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, Final

import sentry_sdk
from sentry_sdk.integrations.argv import ArgvIntegration
from sentry_sdk.integrations.otlp import OTLPIntegration
from sentry_sdk.scope import use_isolation_scope
from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber
from sentry_sdk.utils import BadDsn, Dsn

from otel_setup._compat import on_sentry_lost_events, sentry_rate_limited
from otel_setup._core.errors import OtelSetupConfigError
from otel_setup._security.redaction import DEFAULT_REDACTOR, Redactor

__all__ = ["SentryBridge", "validate_dsn"]

_log = logging.getLogger("otel_setup")
_EXTRA_DENYLIST: Final = [
    "access_token",
    "gw2_key",
    "gw2key",
    "x-api-key",
    "x_api_key",
    "api-key",
    "client_secret",
    "refresh_token",
    "id_token",
    "bearer",
]


def validate_dsn(dsn: str) -> None:
    """Fail at startup on a malformed DSN, without printing its key."""
    try:
        Dsn(dsn)
    except (BadDsn, ValueError):
        raise OtelSetupConfigError(
            "SENTRY_DSN", "<hidden>", "a DSN like https://<public key>@<host>/<project id>"
        ) from None


# The request's own isolation scope, read after the inner app returned (the
# server middleware captures the error outside it, while the span is current).
_REQUEST_SCOPE: contextvars.ContextVar[Any] = contextvars.ContextVar("otel_setup.sentry_request_scope", default=None)

ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]
]


# Loggers whose records must not become Sentry events or breadcrumbs: the
# servers log every request exception the middleware already captured (a
# second event, built from the traceback again on the request's time, which
# doubled the p99 of failing requests even while Sentry was rate-limiting),
# and the export path's failures must not travel to another failing sink.
_IGNORED_LOGGERS: Final = ("uvicorn.error", "gunicorn.error", "opentelemetry*", "urllib3*", "requests*")


def _quiet_duplicate_loggers() -> None:
    from sentry_sdk.integrations.logging import ignore_logger

    for name in _IGNORED_LOGGERS:
        ignore_logger(name)


class SentryBridge:
    """What the middleware calls on a failed request; owns the Sentry client's lifetime."""

    def __init__(
        self,
        *,
        dsn: str,
        environment: str | None,
        release: str | None,
        sample_rate: float,
        shutdown_timeout: float,
        ignored_urls: tuple[str, ...] = (),
        redactor: Redactor = DEFAULT_REDACTOR,
    ) -> None:
        validate_dsn(dsn)
        self._redactor = redactor
        self.dropped = 0
        """Events not built because Sentry was rate-limiting or its queue was full."""
        self._lost: dict[str, int] = {}
        self._lost_lock = threading.Lock()
        self._ignored_urls = tuple(url for url in ignored_urls if url)
        sentry_sdk.init(
            dsn=dsn,
            environment=environment,
            release=release,
            sample_rate=sample_rate,
            include_local_variables=False,
            include_source_context=False,
            max_request_body_size="never",
            traces_sample_rate=None,
            trace_propagation_targets=[],
            auto_enabling_integrations=False,
            auto_session_tracking=False,
            integrations=[OTLPIntegration(setup_otlp_traces_exporter=False, setup_propagator=False)],
            # sys.argv as event extra: command lines carry passwords (--ssl-keyfile-password ...).
            disabled_integrations=[ArgvIntegration()],
            event_scrubber=EventScrubber(
                recursive=True, denylist=[*DEFAULT_DENYLIST, *_EXTRA_DENYLIST, *sorted(redactor.extra_keys)]
            ),
            before_send=self._before_send,
            before_breadcrumb=self._before_breadcrumb,
            shutdown_timeout=shutdown_timeout,
        )
        _quiet_duplicate_loggers()

    def isolate(self, app: ASGIApp) -> ASGIApp:
        """``app`` with one Sentry isolation scope per HTTP request.

        Without it (sentry-sdk's own ASGI integration stays off), every
        breadcrumb, tag and user lands on the process-wide scope: one request's
        log lines and user would travel in every later request's error event.
        The fork starts without breadcrumbs: lines logged outside any request
        are not this request's.
        """

        async def isolated(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
            if scope.get("type") != "http":
                await app(scope, receive, send)
                return
            with sentry_sdk.isolation_scope() as isolation:
                isolation.clear_breadcrumbs()
                _REQUEST_SCOPE.set(isolation)
                await app(scope, receive, send)

        return isolated

    def _before_send(self, event: Any, hint: Any) -> Any:
        message = self._structured_message(hint)
        if message is not None and isinstance(event.get("logentry"), dict):
            event["logentry"] = {"message": message, "params": []}
        extra = event.get("extra")
        if isinstance(extra, dict):
            extra.pop("sys.argv", None)
        return self._redactor.value("event", event)

    def _before_breadcrumb(self, crumb: Any, hint: Any) -> Any:
        data = crumb.get("data") or {}
        url = str(data.get("url", ""))
        if self._ignored_urls and url.startswith(self._ignored_urls):
            return None  # the exporter's own requests to the collector
        message = self._structured_message(hint)
        if message is not None:
            crumb["message"] = message
        return self._redactor.value("breadcrumb", crumb)

    def _structured_message(self, hint: Any) -> str | None:
        """A structlog event's fields, redacted by key before they become one string.

        Sentry's logging integration renders a record's message with ``str()``;
        for a structlog event that is the repr of its field dict, where a
        secret under a sensitive key (``x-api-key``, ``password``) no longer
        has a key the redactor could see.
        """
        record = hint.get("log_record") if isinstance(hint, dict) else None
        fields = getattr(record, "msg", None)
        if not isinstance(fields, Mapping):
            return None
        visible = {str(k): v for k, v in fields.items() if not str(k).startswith("_")}
        return json.dumps(self._redactor.value("log", visible), default=str)

    def capture_request_error(self, error: BaseException | None, method: str, route: str | None, status: int) -> None:
        """An unhandled exception, or a 5xx answer without one; 4xx are not errors."""
        try:
            transport = sentry_sdk.get_client().transport
            if transport is not None and not transport.is_healthy():
                # Rate-limited (429) or a full queue: the event would be dropped
                # after costing the request the time to build it.
                self.dropped += 1
                limited = sentry_rate_limited(transport)
                self._count_lost("unhealthy" if limited is None else "rate_limited" if limited else "queue_full")
                return
            isolation = _REQUEST_SCOPE.get()
            request_scope = use_isolation_scope(isolation) if isolation is not None else contextlib.nullcontext()
            with request_scope, sentry_sdk.new_scope() as scope:
                name = f"{method} {route}" if route else method
                scope.set_transaction_name(name)
                scope.set_tag("http.request.method", method)
                scope.set_tag("http.response.status_code", str(status))
                if route:
                    scope.set_tag("http.route", route)
                if error is not None:
                    scope.capture_exception(error)
                else:
                    scope.capture_message(f"{name} answered {status}", level="error")
        except Exception:  # noqa: BLE001 - error reporting must never fail the request
            _log.debug("otel_setup: Sentry capture failed", exc_info=True)

    # --- drops as a metric -------------------------------------------------

    _DELIBERATE: Final = frozenset({"sample_rate", "before_send", "event_processor", "backpressure"})

    def _count_lost(self, reason: str, amount: int = 1) -> None:
        with self._lost_lock:
            self._lost[reason] = self._lost.get(reason, 0) + amount

    def lost_events(self) -> dict[str, int]:
        """Error events that never reached Sentry, by reason (a snapshot)."""
        with self._lost_lock:
            return dict(self._lost)

    def register_metrics(self, meter_provider: Any) -> bool:
        """Expose lost error events as ``otel_setup.sentry.events.dropped{reason}``.

        Two sources: events this bridge skipped because the transport was
        unhealthy (``rate_limited``, ``queue_full``), and sentry-sdk's own
        lost-event records for the error category (``network_error``,
        ``ratelimit_backoff``, ``queue_overflow``, ...), which the SDK only
        reports to Sentry itself, the very endpoint that is failing. Drops by
        design (sampling, ``before_send``) are not losses and are left out.
        """
        self._hook_transport()
        from opentelemetry.metrics import Observation

        from otel_setup.version import __version__

        def observe(options: Any) -> list[Any]:
            return [Observation(count, {"reason": reason}) for reason, count in self.lost_events().items()]

        try:
            meter = meter_provider.get_meter("otel_setup.sentry", __version__)
            meter.create_observable_counter(
                "otel_setup.sentry.events.dropped",
                callbacks=[observe],
                unit="{event}",
                description="Error events that did not reach Sentry (rate limit, full queue, network errors).",
            )
        except Exception:  # noqa: BLE001 - the bridge works without its metric
            _log.debug("otel_setup: Sentry drop metric unavailable", exc_info=True)
            return False
        return True

    def _hook_transport(self) -> None:
        """Count the SDK's own lost-event records (it has no public hook for them)."""
        on_sentry_lost_events(sentry_sdk.get_client().transport, self._count_sdk_lost)

    def _count_sdk_lost(self, reason: str, category: Any) -> None:
        if category == "error" and reason not in self._DELIBERATE:
            self._count_lost(reason)

    def close(self, timeout: float) -> None:
        sentry_sdk.get_client().close(timeout=timeout)
