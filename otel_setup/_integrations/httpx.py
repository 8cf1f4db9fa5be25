"""httpx: client spans, ``http.client.request.duration`` and W3C propagation.

The transports' request methods are wrapped at class level, so sync and async
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
from collections.abc import AsyncIterator, Callable, Iterator
from random import getrandbits
from time import perf_counter
from typing import Any, Final, Protocol

from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.instrumentation.utils import is_http_instrumentation_enabled, suppress_http_instrumentation
from opentelemetry.metrics import MeterProvider
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from otel_setup._hotpath.context import SPAN_KEY, current_context, holds_only_a_span
from otel_setup._hotpath.keep import BufferingRoot, Built, buffer
from otel_setup._hotpath.metrics import histogram as fast_histogram
from otel_setup._hotpath.metrics import values_recorder
from otel_setup._hotpath.sampling import unsampled_children_dropped, unsampled_local
from otel_setup._security.propagation import NO_PROPAGATION, GuardedPropagator, refuse_propagation
from otel_setup._security.redaction import DEFAULT_REDACTOR, Redactor
from otel_setup.version import __version__

__all__ = [
    "ApiCall",
    "ApiHandler",
    "BodySink",
    "add_api_handler",
    "client_duration_histogram",
    "instrument_httpx",
    "instrumented_by_contrib",
    "observe_body",
    "protocol_version",
    "remove_api_handler",
    "request_attributes",
    "set_propagation_policy",
    "uninstrument_httpx",
]

_log = logging.getLogger("otel_setup")
_SCOPE: Final = ("otel_setup.httpx", __version__)
# Stable semconv's http.client.request.duration buckets, as contrib and the SDK advise them.
_DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
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
    _wrap_transports()
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
    """Make contrib's ``HTTPXClientInstrumentor().instrument()`` a no-op while ours runs.

    Called by habit after ``configure()``, it would add a second client span
    to every call. Its instrumentor reports "already instrumented" instead.
    """
    try:
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    except ImportError:
        return
    HTTPXClientInstrumentor()._is_instrumented_by_opentelemetry = claimed


def uninstrument_httpx() -> None:
    global _client
    if _client is not None:
        _claim_contrib(False)
    _client = None
    _unwrap_if_unused()


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
            parts = getattr(inner, "_propagators", None) if isinstance(inner, CompositePropagator) else None
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


# --- Known APIs (GW2, OpenAI-compatible): their own client spans -------------------------
#
# A generic client span is named after the method only, and its metric attributes cannot
# carry an endpoint template, so calls to APIs whose paths carry user identifiers (GW2) or
# whose bodies carry usage (GenAI) are handled by a handler that claims the request instead:
# one span, not two, no ``traceparent`` sent to a third party, and the duration recorded into
# the same ``http.client.request.duration`` instrument so that there stays one metric stream
# (two streams of one name break the Prometheus exposition).


class ApiCall(Protocol):
    """One claimed request in flight; both methods must never raise."""

    def finish(self, response: Any) -> None:
        """Headers are in; the body may not have been read yet (see :func:`observe_body`)."""

    def fail(self, error: BaseException) -> None:
        """The transport raised: no response at all."""


class ApiHandler(Protocol):
    def begin(self, request: Any) -> ApiCall | None:
        """Claim ``request`` (return its call) or leave it to the generic client span (None). Must be cheap."""


class BodySink(Protocol):
    def feed(self, chunk: bytes) -> None:
        """Raw (still content-encoded) bytes as the caller reads them."""

    def done(self, error: BaseException | None) -> None:
        """Called once: body fully read and closed, closed early, or failed."""


_api_handlers: list[ApiHandler] = []
_api_wrapped: list[str] = []


_propagation_allows: Callable[[str], bool] | None = None


def add_api_handler(handler: ApiHandler) -> None:
    """Route matching requests of every httpx client to ``handler``; wraps the transports once."""
    _api_handlers.append(handler)
    _wrap_transports()


def set_propagation_policy(allows: Callable[[str], bool] | None) -> None:
    """Send trace context only to hosts ``allows`` accepts (see ``otel_setup._security.propagation``)."""
    global _propagation_allows
    _propagation_allows = allows
    if allows is not None:
        _wrap_transports()
    else:
        _unwrap_if_unused()


def _wrap_transports() -> None:
    if _api_wrapped:
        return
    import httpx
    from wrapt import wrap_function_wrapper

    wrap_function_wrapper(httpx, "HTTPTransport.handle_request", _sync_wrapper)
    wrap_function_wrapper(httpx, "AsyncHTTPTransport.handle_async_request", _async_wrapper)
    _api_wrapped.extend(("HTTPTransport.handle_request", "AsyncHTTPTransport.handle_async_request"))


def remove_api_handler(handler: ApiHandler) -> None:
    """Stop routing to ``handler``; the transports are unwrapped with the last user."""
    if handler in _api_handlers:
        _api_handlers.remove(handler)
    _unwrap_if_unused()


def _unwrap_if_unused() -> None:
    if _api_handlers or _client is not None or _propagation_allows is not None or not _api_wrapped:
        return
    import httpx
    from opentelemetry.instrumentation.utils import unwrap

    for name in _api_wrapped:
        owner, _, attribute = name.partition(".")
        unwrap(getattr(httpx, owner), attribute)
    _api_wrapped.clear()


def _start(args: tuple[Any, ...], kwargs: dict[str, Any]) -> ApiCall | None:
    """The call that observes this request: a known API's, the generic one, a guard, or none."""
    context = current_context()
    plain = holds_only_a_span(context)
    if not plain and not is_http_instrumentation_enabled():
        return None
    request: Any = args[0] if args else kwargs.get("request")
    host = None
    try:
        allows = _propagation_allows
        host = request.url.host
        allowed = allows is None or (isinstance(host, str) and allows(host))
    except Exception:  # noqa: BLE001 - never break a request for telemetry
        _log.debug("otel_setup: httpx propagation policy failed", exc_info=True)
        allowed = False
    for handler in _api_handlers:
        try:
            call = handler.begin(request)
        except Exception:  # noqa: BLE001
            _log.debug("otel_setup: API handler failed to start", exc_info=True)
            continue
        if call is not None:
            # Known APIs never receive trace context, and an instrumentation below
            # this wrapper (contrib's, run by someone else) must not add a span.
            _strip_trace_context(request)
            return _Guarded(call, _SUPPRESS_HTTP)
    if not allowed:
        _strip_trace_context(request)  # a redirect's request starts with the previous hop's headers
    client = _client
    if client is None:
        # Contrib's instrumentation is active instead of ours: its inject goes
        # through the guarded global propagator, which this mark silences.
        return None if allowed else _Guarded(None, _NO_PROPAGATION)
    try:
        return client.start(request, allowed, host, context, plain)
    except Exception:  # noqa: BLE001
        _log.debug("otel_setup: httpx telemetry failed to start", exc_info=True)
        return None


def _strip_trace_context(request: Any) -> None:
    headers = request.headers
    for name in propagate.get_global_textmap().fields:
        if name in headers:
            del headers[name]


_SUPPRESS_HTTP: Final = "suppress"
_NO_PROPAGATION: Final = "no_propagation"


class _Guarded:
    """Runs a request under a context mark: HTTP instrumentation suppressed, or propagation refused."""

    __slots__ = ("_call", "_mark")

    def __init__(self, call: ApiCall | None, mark: str) -> None:
        self._call = call
        self._mark = suppress_http_instrumentation() if mark == _SUPPRESS_HTTP else refuse_propagation()
        self._mark.__enter__()

    def finish(self, response: Any) -> None:
        self._detach()
        if self._call is not None:
            self._call.finish(response)

    def fail(self, error: BaseException) -> None:
        self._detach()
        if self._call is not None:
            self._call.fail(error)

    def _detach(self) -> None:
        try:
            self._mark.__exit__(None, None, None)
        except Exception:  # noqa: BLE001 - a context switched under us must not break the call
            _log.debug("otel_setup: httpx context detach failed", exc_info=True)


def _sync_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    call = _start(args, kwargs)
    if call is None:
        return wrapped(*args, **kwargs)
    try:
        response = wrapped(*args, **kwargs)
    except BaseException as error:
        call.fail(error)
        raise
    call.finish(response)
    return response


async def _async_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    call = _start(args, kwargs)
    if call is None:
        return await wrapped(*args, **kwargs)
    try:
        response = await wrapped(*args, **kwargs)
    except BaseException as error:
        call.fail(error)
        raise
    call.finish(response)
    return response


class _Observer:
    """Passes a response body through unchanged while a sink sees each chunk and the end."""

    def __init__(self, inner: Any, sink: BodySink) -> None:
        self.inner = inner
        self._sink = sink
        self._ended = False

    def feed(self, chunk: bytes) -> None:
        try:
            self._sink.feed(chunk)
        except Exception:  # noqa: BLE001 - never break a request for telemetry
            _log.debug("otel_setup: body observer failed", exc_info=True)

    def end(self, error: BaseException | None) -> None:
        if self._ended:
            return
        self._ended = True
        try:
            self._sink.done(error)
        except Exception:  # noqa: BLE001
            _log.debug("otel_setup: body observer failed", exc_info=True)


_stream_types: tuple[type, type] | None = None


def _observed_stream_types() -> tuple[type, type]:
    """Subclasses of httpx's stream bases (httpx checks them), built on first use only."""
    global _stream_types
    if _stream_types is not None:
        return _stream_types
    import httpx

    class SyncObserved(httpx.SyncByteStream):
        def __init__(self, observer: _Observer) -> None:
            self._observer = observer

        def __iter__(self) -> Iterator[bytes]:
            observer = self._observer
            try:
                for chunk in observer.inner:
                    observer.feed(chunk)
                    yield chunk
            except GeneratorExit:
                raise
            except BaseException as error:
                observer.end(error)
                raise

        def close(self) -> None:
            try:
                self._observer.inner.close()
            finally:
                self._observer.end(None)

    class AsyncObserved(httpx.AsyncByteStream):
        def __init__(self, observer: _Observer) -> None:
            self._observer = observer

        async def __aiter__(self) -> AsyncIterator[bytes]:
            observer = self._observer
            try:
                async for chunk in observer.inner:
                    observer.feed(chunk)
                    yield chunk
            except GeneratorExit:
                raise
            except BaseException as error:
                observer.end(error)
                raise

        async def aclose(self) -> None:
            try:
                await self._observer.inner.aclose()
            finally:
                self._observer.end(None)

    _stream_types = (SyncObserved, AsyncObserved)
    return _stream_types


def observe_body(response: Any, sink: BodySink) -> None:
    """Let ``sink`` watch the body as the caller reads it; the caller sees no difference.

    A body that is already in memory (a response built by hand) is fed at once.
    """
    import httpx

    sync_type, async_type = _observed_stream_types()
    stream = response.stream
    observer = _Observer(stream, sink)
    if isinstance(stream, httpx.AsyncByteStream):
        response.stream = async_type(observer)
    elif isinstance(stream, httpx.SyncByteStream):
        response.stream = sync_type(observer)
    else:
        observer.end(None)


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
            _DURATION_BUCKETS,
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
