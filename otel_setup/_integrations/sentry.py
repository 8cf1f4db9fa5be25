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

import logging
from typing import Any, Final

import sentry_sdk
from sentry_sdk.integrations.otlp import OTLPIntegration
from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber
from sentry_sdk.utils import BadDsn, Dsn

from otel_setup._errors import OtelSetupConfigError
from otel_setup._redaction import redact_value

__all__ = ["SentryBridge", "validate_dsn"]

_log = logging.getLogger("otel_setup")
_EXTRA_DENYLIST: Final = [
    "access_token", "gw2_key", "gw2key", "x-api-key", "x_api_key", "api-key", "client_secret", "refresh_token",
    "id_token", "bearer",
]


def validate_dsn(dsn: str) -> None:
    """Fail at startup on a malformed DSN, without printing its key."""
    try:
        Dsn(dsn)
    except (BadDsn, ValueError):
        raise OtelSetupConfigError(
            "SENTRY_DSN", "<hidden>", "a DSN like https://<public key>@<host>/<project id>"
        ) from None


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
    ) -> None:
        validate_dsn(dsn)
        self.dropped = 0
        """Events not built because Sentry was rate-limiting or its queue was full."""
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
            event_scrubber=EventScrubber(recursive=True, denylist=[*DEFAULT_DENYLIST, *_EXTRA_DENYLIST]),
            before_send=self._before_send,
            before_breadcrumb=self._before_breadcrumb,
            shutdown_timeout=shutdown_timeout,
        )

    @staticmethod
    def _before_send(event: Any, hint: Any) -> Any:
        return redact_value("event", event)

    def _before_breadcrumb(self, crumb: Any, hint: Any) -> Any:
        data = crumb.get("data") or {}
        url = str(data.get("url", ""))
        if self._ignored_urls and url.startswith(self._ignored_urls):
            return None  # the exporter's own requests to the collector
        return redact_value("breadcrumb", crumb)

    def capture_request_error(
        self, error: BaseException | None, method: str, route: str | None, status: int
    ) -> None:
        """An unhandled exception, or a 5xx answer without one; 4xx are not errors."""
        try:
            transport = sentry_sdk.get_client().transport
            if transport is not None and not transport.is_healthy():
                # Rate-limited (429) or a full queue: the event would be dropped
                # after costing the request the time to build it.
                self.dropped += 1
                return
            with sentry_sdk.new_scope() as scope:
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

    def close(self, timeout: float) -> None:
        sentry_sdk.get_client().close(timeout=timeout)
