"""httpx: client spans, ``http.client.request.duration`` and W3C propagation.

The transports' request methods are wrapped at class level (``httpx_transport.py``,
which also routes known APIs' requests to their handlers), so sync and async
clients are covered whether they were created before or after ``configure()``.
The output is contrib's stable-semconv output (``tests/test_differential_httpx.py``
compares the two), produced without contrib's per-call costs: the URL is not
parsed again, headers are not normalised unless some are captured, the duration
goes into a pre-aggregated histogram, and inside an unsampled request no span
is built at all (the SDK would build a non-recording one; its context is made
directly and propagated the same way).
"""

from __future__ import annotations

import logging
import weakref
from random import getrandbits
from time import perf_counter
from typing import Any, Final

from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.metrics import MeterProvider
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from otel_setup._compat import claim_instrumented, composite_members
from otel_setup._core.catalog import buckets
from otel_setup._hotpath.context import SPAN_KEY
from otel_setup._hotpath.keep import BufferingRoot, Built, buffer
from otel_setup._hotpath.metrics import histogram as fast_histogram
from otel_setup._hotpath.metrics import values_recorder
from otel_setup._hotpath.sampling import unsampled_children_dropped, unsampled_local
from otel_setup._integrations.httpx_transport import set_generic_calls
from otel_setup._security.propagation import NO_PROPAGATION, GuardedPropagator
from otel_setup._security.redaction import DEFAULT_REDACTOR, Redactor
from otel_setup.version import __version__

__all__ = [
    "client_duration_histogram",
    "instrument_httpx",
    "instrumented_by_contrib",
    "protocol_version",
    "request_attributes",
    "uninstrument_httpx",
]

_log = logging.getLogger("otel_setup")
_SCOPE: Final = ("otel_setup.httpx", __version__)
# Stable semconv's http.client.request.duration buckets, as contrib and the SDK advise them.
_DURATION_ATTRIBUTES: Final = (
    "http.request.method",
    "server.address",
    "server.port",
    "network.protocol.version",
    "http.response.status_code",
    "error.type",
    "url.template",
)
_KNOWN_METHODS: Final = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY")
)


def instrument_httpx(
    *,
    tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
    capture_headers: frozenset[str] = frozenset(),
    redactor: Redactor | None = None,
) -> bool:
    """Returns False when httpx is missing or this ran already."""
    global _client
    if _client is not None:
        return False
    try:
        import httpx  # noqa: F401
    except ImportError:
        _log.info("otel_setup: httpx instrumentation skipped (httpx missing)")
        return False
    if instrumented_by_contrib():
        _log.info("otel_setup: httpx already instrumented by opentelemetry-instrumentation-httpx; left to it")
        return False
    _client = _ClientCalls(
        tracer_provider, client_duration_histogram(meter_provider), capture_headers, redactor or DEFAULT_REDACTOR
    )
    set_generic_calls(_client)
    _claim_contrib(True)
    return True


def instrumented_by_contrib() -> bool:
    """Contrib's httpx instrumentor is active (someone else ran it): ours would make a second span per call."""
    try:
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    except ImportError:
        return False
    return bool(HTTPXClientInstrumentor().is_instrumented_by_opentelemetry)


def _claim_contrib(claimed: bool) -> None:
    """Make contrib's ``HTTPXClientInstrumentor().instrument()`` a no-op while ours runs."""
    try:
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    except ImportError:
        return
    claim_instrumented(HTTPXClientInstrumentor(), claimed)


def uninstrument_httpx() -> None:
    global _client
    if _client is not None:
        _claim_contrib(False)
    _client = None
    set_generic_calls(None)


def _pairs(headers: Any) -> list[tuple[str, str]]:
    """Header pairs from ``httpx.Headers`` or a raw list of (bytes, bytes)."""
    if headers is None:
        return []
    if hasattr(headers, "multi_items"):
        return list(headers.multi_items())
    pairs: list[tuple[str, str]] = []
    for name, value in headers:
        pairs.append(
            (
                name.decode("latin-1") if isinstance(name, bytes) else str(name),
                value.decode("latin-1") if isinstance(value, bytes) else str(value),
            )
        )
    return pairs


class _ClientCalls:
    """Every request no known-API handler claimed: a CLIENT span named after the method."""

    def __init__(
        self, tracer_provider: TracerProvider, duration: Any, capture_headers: frozenset[str], redactor: Redactor
    ) -> None:
        self.tracer = tracer_provider.get_tracer(*_SCOPE)
        self.capture_headers = capture_headers
        self.redactor = redactor
        self.skip_unsampled = unsampled_children_dropped(tracer_provider)
        self.record = values_recorder(duration, _DURATION_ATTRIBUTES)
        self._textmap: Any = None
        self._textmap_is_w3c = False

    def start(self, request: Any, propagate_context: bool, host: Any, context: Context, plain: bool) -> _ClientCall:
        """``context``: the current one; ``plain``: it holds only a span (see :func:`holds_only_a_span`)."""
        parent = trace.get_current_span(context).get_span_context()
        method = request.method
        if method not in _KNOWN_METHODS:
            upper = method.strip().upper()
            method = upper if upper in _KNOWN_METHODS else "_OTHER"
        if self.skip_unsampled and unsampled_local(parent):
            span_id = self._inject_unsampled(request.headers, parent, context, plain) if propagate_context else 0
            call = _ClientCall(self, method, request.url, host, None, None)
            root = context.get(SPAN_KEY)
            if root.__class__ is BufferingRoot:  # kept if the request fails or is slow
                call._root = root
                call._span_id = span_id
            return call
        span = self.tracer.start_span("HTTP" if method == "_OTHER" else method, kind=SpanKind.CLIENT)
        try:
            if span.is_recording():
                span.set_attributes(self._request_attributes(request, method))
            context = trace.set_span_in_context(span)
            if propagate_context:
                propagate.inject(request.headers, context=context)
        except BaseException:
            span.end()
            raise
        return _ClientCall(self, method, request.url, host, span, otel_context.attach(context))

    def _inject_unsampled(self, headers: Any, parent: SpanContext, context: Context, plain: bool) -> int:
        """What the propagator would write for a dropped child of ``parent``: a fresh span id, same flags.

        With the default propagators (W3C trace context and baggage) and no
        baggage, the header is written directly (``tests/test_differential_httpx.py``
        compares it with the propagator's); any other propagator gets the child's
        context to inject as it sees fit.
        """
        span_id = getrandbits(64) or 1
        if self._w3c_only() and (
            plain or (not baggage.get_all(context) and not otel_context.get_value(NO_PROPAGATION, context))
        ):
            headers["traceparent"] = f"00-{parent.trace_id:032x}-{span_id:016x}-{parent.trace_flags:02x}"
            if parent.trace_state:
                headers["tracestate"] = parent.trace_state.to_header()
            return span_id
        child = SpanContext(parent.trace_id, span_id, False, parent.trace_flags, parent.trace_state)
        propagate.inject(headers, context=trace.set_span_in_context(NonRecordingSpan(child)))
        return span_id

    def _w3c_only(self) -> bool:
        """The global propagator is W3C trace context, optionally with baggage, behind the package's guard."""
        textmap = propagate.get_global_textmap()
        if textmap is not self._textmap:
            self._textmap = textmap
            inner = textmap.inner if isinstance(textmap, GuardedPropagator) else None
            parts = composite_members(inner) if isinstance(inner, CompositePropagator) else None
            self._textmap_is_w3c = (
                parts is not None
                and any(type(part) is TraceContextTextMapPropagator for part in parts)
                and all(type(part) in _W3C_PROPAGATORS for part in parts)
            )
        return self._textmap_is_w3c

    def _request_attributes(self, request: Any, method: str) -> dict[str, Any]:
        attributes = _url_attributes(method, request.url)
        original = request.method.strip()
        if original != method:
            attributes["http.request.method_original"] = original
        if self.capture_headers:
            attributes.update(self._headers(request.headers, "http.request.header"))
        return attributes

    def _headers(self, headers: Any, prefix: str) -> dict[str, Any]:
        from otel_setup._security.scrubbing import captured_headers

        return captured_headers(_pairs(headers), self.capture_headers, prefix, self.redactor)


class _ClientCall:
    __slots__ = ("_calls", "_host", "_method", "_root", "_span", "_span_id", "_start", "_token", "_url")

    _root: Any
    _span_id: int

    def __init__(self, calls: _ClientCalls, method: str, url: Any, host: Any, span: Span | None, token: Any) -> None:
        self._calls = calls
        self._method = method
        self._url = url
        self._host = host
        self._span = span
        self._token = token
        self._root = None
        self._span_id = 0
        self._start = perf_counter()

    def finish(self, response: Any) -> None:
        """Never raises: a response was received, whatever its status."""
        elapsed = perf_counter() - self._start
        try:
            status = int(response.status_code)
            version = protocol_version(response) or "1.1"  # httpx's own default, as contrib reports it
            error_type = str(status) if status >= 400 or status < 100 else None
            # _DURATION_ATTRIBUTES order; an absent host or a default (omitted) port stays out, as in contrib's points
            self._calls.record(
                elapsed, (self._method, self._host or None, self._url.port or None, version, status, error_type, None)
            )
            if self._root is not None:
                buffer(
                    self._root,
                    (
                        self._start,
                        self._start + elapsed,
                        self._span_id,
                        _call_span,
                        (self, status, version, error_type),
                    ),
                )
            span = self._span
            if span is not None:
                if span.is_recording():
                    span_attributes: dict[str, Any] = {
                        "http.response.status_code": status,
                        "network.protocol.version": version,
                    }
                    if error_type is not None:
                        span_attributes["error.type"] = error_type
                    if self._calls.capture_headers:
                        span_attributes.update(self._calls._headers(response.headers, "http.response.header"))
                    span.set_attributes(span_attributes)
                    span.set_status(Status(StatusCode.ERROR if error_type is not None else StatusCode.UNSET))
                span.end()
        except Exception:  # noqa: BLE001 - never break a request for telemetry
            _log.debug("otel_setup: httpx telemetry failed", exc_info=True)
        finally:
            self._detach()

    def fail(self, error: BaseException) -> None:
        """The transport raised (connect error, timeout, cancellation): no response at all."""
        elapsed = perf_counter() - self._start
        try:
            is_error = isinstance(error, Exception)
            error_type = type(error).__qualname__
            if is_error:
                self._calls.record(
                    elapsed, (self._method, self._host or None, self._url.port or None, None, None, error_type, None)
                )
                if self._root is not None:
                    buffer(
                        self._root,
                        (self._start, self._start + elapsed, self._span_id, _failed_call_span, (self, error)),
                    )
            span = self._span
            if span is not None:
                if is_error and span.is_recording():
                    span.set_attribute("error.type", error_type)
                    span.record_exception(error)  # httpx messages carry the URL: redacted by the scrubbing exporter
                    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
                span.end()
        except Exception:  # noqa: BLE001 - never break a request for telemetry
            _log.debug("otel_setup: httpx telemetry failed", exc_info=True)
        finally:
            self._detach()

    def _detach(self) -> None:
        if self._token is not None:
            try:
                otel_context.detach(self._token)
            except Exception:  # noqa: BLE001 - a context switched under us must not break the call
                _log.debug("otel_setup: httpx context detach failed", exc_info=True)
            self._token = None


def _call_attributes(call: _ClientCall) -> dict[str, Any]:
    return _url_attributes(call._method, call._url)


def _url_attributes(method: str, url: Any) -> dict[str, Any]:
    """A client span's method, redacted ``url.full`` and peer, the same for recorded and kept calls."""
    from opentelemetry.util.http import redact_url

    attributes: dict[str, Any] = {"http.request.method": method, "url.full": redact_url(str(url))}
    if url.host:
        attributes["server.address"] = url.host
        attributes["network.peer.address"] = url.host
    if url.port:
        attributes["server.port"] = url.port
        attributes["network.peer.port"] = url.port
    return attributes


def _call_span(call: _ClientCall, status: int, version: str, error_type: str | None) -> Built:
    """A call of an unsampled request that is kept: the attributes its sampled span gets (headers aside)."""
    attributes = _call_attributes(call)
    attributes["http.response.status_code"] = status
    attributes["network.protocol.version"] = version
    if error_type is not None:
        attributes["error.type"] = error_type
    name = "HTTP" if call._method == "_OTHER" else call._method
    return _SCOPE[0], name, SpanKind.CLIENT, attributes, error_type, None


def _failed_call_span(call: _ClientCall, error: BaseException) -> Built:
    attributes = _call_attributes(call)
    error_type = attributes["error.type"] = type(error).__qualname__
    name = "HTTP" if call._method == "_OTHER" else call._method
    return _SCOPE[0], name, SpanKind.CLIENT, attributes, error_type, error


_client: _ClientCalls | None = None
_W3C_PROPAGATORS: Final = (TraceContextTextMapPropagator, W3CBaggagePropagator)


_durations: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def client_duration_histogram(meter_provider: MeterProvider) -> Any:
    """``http.client.request.duration``: one instrument per provider, shared by every httpx caller.

    Generic calls, GW2 and GenAI record into the same stream (the SDK's
    ``Histogram.record(value, attributes)`` call shape, pre-aggregated when the
    provider is the package's).
    """
    duration = _durations.get(meter_provider)
    if duration is None:
        duration = _durations[meter_provider] = fast_histogram(
            meter_provider,
            _SCOPE,
            "http.client.request.duration",
            "s",
            "Duration of HTTP client requests.",
            buckets("http.client.request.duration"),
            _DURATION_ATTRIBUTES,
        )
    return duration


def request_attributes(request: Any) -> dict[str, Any]:
    """The stable HTTP client attributes known before the response (as contrib sets them)."""
    url = request.url
    attributes: dict[str, Any] = {"http.request.method": request.method, "server.address": url.host}
    port = url.port or (443 if url.scheme == "https" else 80)
    attributes["server.port"] = port
    return attributes


def protocol_version(response: Any) -> str | None:
    """``1.1`` / ``2`` from httpx's ``http_version`` extension, when present."""
    raw = response.extensions.get("http_version") if response.extensions else None
    if isinstance(raw, bytes) and raw.startswith(b"HTTP/"):
        return raw[5:].decode("ascii", "replace")
    return None


def add_response_attributes(attributes: dict[str, Any], response: Any) -> int:
    """A client call's response attributes (status, protocol version, ``error.type`` for 4xx/5xx); the status."""
    status = int(response.status_code)
    attributes["http.response.status_code"] = status
    version = protocol_version(response)
    if version:
        attributes["network.protocol.version"] = version
    if status >= 400:
        attributes["error.type"] = str(status)
    return status
