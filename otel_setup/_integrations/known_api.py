"""Known HTTP APIs: upstreams whose httpx calls get spans and metrics of their own.

A generic client span is named after the method only, and its metric cannot
carry an endpoint, because raw paths hold identifiers (a character name, a
city, an account id). A known API claims its requests instead: one span named
by endpoint template, the duration recorded into the shared
``http.client.request.duration`` stream with ``url.template``, whatever
counters it needs, and no ``traceparent`` sent to the third party.

Two layers, both public (``otel_setup.KnownHttpApi``, ``otel_setup.EndpointApi``):

* :class:`KnownHttpApi`, the protocol: a ``name`` and ``handler(tracer_provider,
  meter_provider)``, whose ``begin(request)`` claims a request (returning the
  call, which hears ``finish(response)`` or ``fail(error)``) or leaves it to the
  generic span. GenAI is built on it directly: it reads request and response
  bodies (``observe_body``).
* :class:`EndpointApi`, the REST case: give base URLs and ``template(path)``,
  get GW2's telemetry. GW2 is one.

Pass your own with ``configure(known_apis=[...])``; each is an integration like
the built-in ones (its status under its name, switched off by listing that name
in ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``). See docs/integrations.md.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import Any, ClassVar, Final, Protocol, runtime_checkable
from urllib.parse import urlsplit

from opentelemetry.metrics import Counter, Histogram, MeterProvider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, TracerProvider

from otel_setup._core.errors import OtelSetupConfigError
from otel_setup._hotpath.keep import KeepingTracer
from otel_setup._integrations.httpx import add_response_attributes, client_duration_histogram, request_attributes
from otel_setup._integrations.httpx_body import BodySink, observe_body
from otel_setup._integrations.httpx_transport import ApiCall, ApiHandler
from otel_setup._security.redaction import redact_query
from otel_setup.version import __version__

__all__ = [
    "ApiCall",
    "ApiHandler",
    "BodySink",
    "EndpointApi",
    "EndpointCall",
    "KnownHttpApi",
    "client_duration_histogram",
    "observe_body",
]

_log = logging.getLogger("otel_setup")
_MAX_ERROR_BODY: Final = 4096


@runtime_checkable
class KnownHttpApi(Protocol):
    """An upstream HTTP API called through httpx, instrumented as an integration of its own."""

    name: str
    """The integration's name: its key in ``Telemetry.instrumentations``; lower case, no spaces."""

    def handler(self, tracer_provider: TracerProvider, meter_provider: MeterProvider) -> ApiHandler:
        """Called once by ``configure()``: the handler that claims this API's requests.

        Record the duration into ``client_duration_histogram(meter_provider)``
        (one ``http.client.request.duration`` stream for every httpx call).
        """
        ...


@dataclass(frozen=True)
class EndpointCall:
    """One finished call to an :class:`EndpointApi`, as :meth:`EndpointApi.completed` receives it."""

    api: str
    endpoint: str
    """The endpoint template, never the raw path."""
    method: str
    status_code: int | None
    """None when no response arrived (timeout, connection error)."""
    error_type: str | None
    """Status code as text for 4xx/5xx, or the exception class; None on success."""
    error_reason: str | None
    """What :meth:`EndpointApi.error_reason` read from the error body, if anything."""
    duration_s: float


class EndpointApi:
    """A REST upstream: a span and metrics per endpoint template.

    Subclass it, set ``name`` and implement :meth:`template`; pass the base
    URLs to the constructor (or set ``base_urls``). Every httpx call under a
    base gets:

    * a CLIENT span ``{method} {template}`` with ``url.template``, the stable HTTP
      client attributes and ``url.full`` rebuilt from the template (query values
      redacted), so no identifier of the path reaches the span;
    * ``http.client.request.duration`` with ``url.template``;
    * ``{name}.api.requests``: a counter by template, method, status code and
      ``error.type`` (429s and 403s visible on their own), with
      ``{name}.error.reason`` for the statuses in ``error_body_statuses``.
    """

    name: str
    base_urls: Sequence[str] = ()
    requests_description: ClassVar[str] = "Requests to the API by endpoint template and outcome."
    error_body_statuses: ClassVar[frozenset[int]] = frozenset()
    """Statuses whose (small) body is read, as the caller reads it, for :meth:`error_reason`."""

    def __init__(self, *base_urls: str) -> None:
        if base_urls:
            self.base_urls = base_urls

    def template(self, path: str) -> str:
        """The endpoint template of ``path`` (below the base, still percent-encoded).

        Must be cheap and bounded: every distinct result is a metric series.
        """
        raise NotImplementedError

    def error_reason(self, status: int, body: bytes) -> str | None:
        """A bounded reason read from an error body (statuses in ``error_body_statuses``)."""
        return None

    def completed(self, call: EndpointCall, span: Span) -> None:
        """Runs after the call's telemetry is recorded and its span ended (call records, log lines)."""

    def handler(self, tracer_provider: TracerProvider, meter_provider: MeterProvider) -> ApiHandler:
        scope = f"otel_setup.{self.name}"
        tracer = KeepingTracer(tracer_provider.get_tracer(scope, __version__), scope)
        requests = meter_provider.get_meter(scope, __version__).create_counter(
            f"{self.name}.api.requests", unit="{request}", description=self.requests_description
        )
        return _EndpointHandler(self, tracer, client_duration_histogram(meter_provider), requests, self._bases())

    def _bases(self) -> dict[str, list[tuple[int, str]]]:
        """Host -> [(port, path prefix)], in the order given."""
        bases: dict[str, list[tuple[int, str]]] = {}
        for base in self.base_urls:
            parts = urlsplit(base)
            host = (parts.hostname or "").lower()
            try:
                port = parts.port or (443 if parts.scheme == "https" else 80)
            except ValueError:
                host = ""
            if parts.scheme not in ("http", "https") or not host:
                raise OtelSetupConfigError(f"{self.name} base URL", base, "an http:// or https:// URL")
            bases.setdefault(host, []).append((port, parts.path.rstrip("/")))
        return bases


class _EndpointHandler:
    """Claims requests under the bases; the check is a dict lookup on the host."""

    def __init__(
        self,
        api: EndpointApi,
        tracer: Tracer,
        duration: Histogram,
        requests: Counter,
        bases: dict[str, list[tuple[int, str]]],
    ) -> None:
        self.api = api
        self.tracer = tracer
        self.duration = duration
        self.requests = requests
        self.reason_attribute = f"{api.name}.error.reason"
        self._bases = bases

    def begin(self, request: Any) -> _EndpointCall | None:
        url = request.url
        bases = self._bases.get(url.host)
        if bases is None:
            return None
        path = url.raw_path.partition(b"?")[0].decode("ascii", "replace")  # still encoded: %2F stays in its segment
        port = url.port or (443 if url.scheme == "https" else 80)
        for base_port, prefix in bases:
            if base_port == port and path.startswith(prefix):
                break
        else:
            return None
        template = self.api.template(path[len(prefix) :])
        attributes = request_attributes(request)
        method = attributes["http.request.method"]
        span_attributes = dict(attributes)
        span_attributes["url.template"] = template
        span_attributes["url.scheme"] = url.scheme
        query = url.query.decode("ascii", "replace") if url.query else ""
        span_attributes["url.full"] = f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}{prefix}{template}" + (
            f"?{redact_query(query)}" if query else ""
        )
        span = self.tracer.start_span(f"{method} {template}", kind=SpanKind.CLIENT, attributes=span_attributes)
        attributes["url.template"] = template
        return _EndpointCall(self, span, attributes, template)


class _ErrorBody:
    """Collects an error body (bounded), then finishes the call with its reason."""

    def __init__(self, call: _EndpointCall, status: int) -> None:
        self._call = call
        self._status = status
        self._body = bytearray()

    def feed(self, chunk: bytes) -> None:
        if len(self._body) < _MAX_ERROR_BODY:
            self._body += chunk[: _MAX_ERROR_BODY - len(self._body)]

    def done(self, error: BaseException | None) -> None:
        reason = self._call.handler.api.error_reason(self._status, bytes(self._body)) if error is None else "other"
        self._call.complete(self._status, reason)


class _EndpointCall:
    def __init__(self, handler: _EndpointHandler, span: Span, attributes: dict[str, Any], template: str) -> None:
        self.handler = handler
        self._span = span
        self._attributes = attributes  # metric attributes, completed with the response
        self._template = template
        self._start = perf_counter()
        self._duration: float | None = None

    def finish(self, response: Any) -> None:
        try:
            self._duration = perf_counter() - self._start
            attributes = self._attributes
            status = add_response_attributes(attributes, response)
            self.handler.duration.record(self._duration, attributes)
            span = self._span
            if span.is_recording():
                span.set_attribute("http.response.status_code", status)
                version = attributes.get("network.protocol.version")
                if version:
                    span.set_attribute("network.protocol.version", version)
                if status >= 400:
                    span.set_attribute("error.type", str(status))
                    span.set_status(Status(StatusCode.ERROR))
            if status in self.handler.api.error_body_statuses:
                observe_body(response, _ErrorBody(self, status))
            else:
                self.complete(status, None)
        except Exception:  # noqa: BLE001 - never break a request for telemetry
            _log.debug("otel_setup: %s telemetry failed", self.handler.api.name, exc_info=True)

    def fail(self, error: BaseException) -> None:
        try:
            self._duration = perf_counter() - self._start
            error_type = type(error).__qualname__
            self._attributes["error.type"] = error_type
            self.handler.duration.record(self._duration, self._attributes)
            if self._span.is_recording():
                self._span.set_attribute("error.type", error_type)
                self._span.record_exception(error)  # httpx messages carry the URL: redacted by the scrubbing exporter
                self._span.set_status(Status(StatusCode.ERROR))
            self.complete(None, None)
        except Exception:  # noqa: BLE001
            _log.debug("otel_setup: %s telemetry failed", self.handler.api.name, exc_info=True)

    def complete(self, status: int | None, reason: str | None) -> None:
        handler = self.handler
        counted = {
            "url.template": self._template,
            "http.request.method": self._attributes["http.request.method"],
        }
        if status is not None:
            counted["http.response.status_code"] = status
        if "error.type" in self._attributes:
            counted["error.type"] = self._attributes["error.type"]
        if reason is not None:
            counted[handler.reason_attribute] = reason
            if self._span.is_recording():
                self._span.set_attribute(handler.reason_attribute, reason)
        handler.requests.add(1, counted)
        self._span.end()
        call = EndpointCall(
            api=handler.api.name,
            endpoint=self._template,
            method=str(counted["http.request.method"]),
            status_code=status,
            error_type=self._attributes.get("error.type"),
            error_reason=reason,
            duration_s=self._duration or 0.0,
        )
        try:
            handler.api.completed(call, self._span)
        except Exception:  # noqa: BLE001 - a user's hook never fails the call
            _log.debug("otel_setup: %s completed() failed", handler.api.name, exc_info=True)
