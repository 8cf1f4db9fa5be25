"""httpx: contrib's client spans, ``http.client.request.duration`` and W3C propagation.

Contrib patches the transports, so sync and async clients are covered whether
they were created before or after ``configure()``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Protocol

from opentelemetry.metrics import Histogram, MeterProvider
from opentelemetry.trace import TracerProvider

from otel_setup._redaction import DEFAULT_REDACTOR, Redactor

__all__ = [
    "ApiCall",
    "ApiHandler",
    "BodySink",
    "add_api_handler",
    "client_duration_histogram",
    "instrument_httpx",
    "observe_body",
    "protocol_version",
    "remove_api_handler",
    "request_attributes",
    "set_propagation_policy",
    "uninstrument_httpx",
]

_log = logging.getLogger("otel_setup")


def instrument_httpx(
    *,
    tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
    capture_headers: frozenset[str] = frozenset(),
    redactor: Redactor | None = None,
) -> bool:
    try:
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    except ImportError:
        _log.info("otel_setup: httpx instrumentation skipped (opentelemetry-instrumentation-httpx missing)")
        return False
    instrumentor = HTTPXClientInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        return False
    hooks: dict[str, Any] = {}
    if capture_headers:
        hooks = _header_hooks(capture_headers, redactor or DEFAULT_REDACTOR)
    instrumentor.instrument(
        tracer_provider=tracer_provider, meter_provider=meter_provider, raise_exception_on_conflict=True, **hooks
    )
    return True


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


def _header_hooks(allowed: frozenset[str], redactor: Redactor) -> dict[str, Any]:
    """Contrib's request/response hooks recording allow-listed headers, sanitised.

    Contrib's own capture reads its variables from the environment and
    sanitises nothing unless told; these hooks take the package's setting and
    its redaction table instead.
    """
    from otel_setup._scrubbing import captured_headers

    def on_request(span: Any, request: Any) -> None:
        if span.is_recording():
            span.set_attributes(captured_headers(_pairs(request.headers), allowed, "http.request.header", redactor))

    def on_response(span: Any, request: Any, response: Any) -> None:
        if span.is_recording():
            span.set_attributes(captured_headers(_pairs(response.headers), allowed, "http.response.header", redactor))

    async def on_async_request(span: Any, request: Any) -> None:
        on_request(span, request)

    async def on_async_response(span: Any, request: Any, response: Any) -> None:
        on_response(span, request, response)

    return {
        "request_hook": on_request,  # see _pairs for the shapes contrib hands over
        "response_hook": on_response,
        "async_request_hook": on_async_request,
        "async_response_hook": on_async_response,
    }


def uninstrument_httpx() -> None:
    try:
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    except ImportError:
        return
    HTTPXClientInstrumentor().uninstrument()


# --- Known APIs (GW2, OpenAI-compatible): otel_setup's own client spans --------------------
#
# Contrib names client spans after the method only and has no hook into its metric
# attributes, so calls to APIs whose paths carry user identifiers (GW2) or whose bodies carry
# usage (GenAI) are handled here instead: a handler claims the request, contrib is suppressed
# for it (one span, not two; and no ``traceparent`` sent to a third party), and the handler
# records into the very instrument contrib uses for ``http.client.request.duration`` so that
# there stays one metric stream (two streams of one name break the Prometheus exposition).


class ApiCall(Protocol):
    """One claimed request in flight; both methods must never raise."""

    def finish(self, response: Any) -> None:
        """Headers are in; the body may not have been read yet (see :func:`observe_body`)."""

    def fail(self, error: BaseException) -> None:
        """The transport raised: no response at all."""


class ApiHandler(Protocol):
    def begin(self, request: Any) -> ApiCall | None:
        """Claim ``request`` (return its call) or let contrib have it (return None). Must be cheap."""


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
    """Send trace context only to hosts ``allows`` accepts (see ``otel_setup._propagation``).

    Our wrapper must sit outside contrib's (it marks the context before
    contrib injects), so this runs after ``instrument_httpx``.
    """
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

    wrap_function_wrapper(httpx, "HTTPTransport.handle_request", _sync_api_wrapper)
    wrap_function_wrapper(httpx, "AsyncHTTPTransport.handle_async_request", _async_api_wrapper)
    _api_wrapped.extend(("HTTPTransport.handle_request", "AsyncHTTPTransport.handle_async_request"))


def remove_api_handler(handler: ApiHandler) -> None:
    """Stop routing to ``handler``; the transports are unwrapped with the last one."""
    if handler in _api_handlers:
        _api_handlers.remove(handler)
    _unwrap_if_unused()


def _unwrap_if_unused() -> None:
    if _api_handlers or _propagation_allows is not None or not _api_wrapped:
        return
    import httpx
    from opentelemetry.instrumentation.utils import unwrap

    for name in _api_wrapped:
        owner, _, attribute = name.partition(".")
        unwrap(getattr(httpx, owner), attribute)
    _api_wrapped.clear()


def _claim(args: tuple[Any, ...], kwargs: dict[str, Any]) -> ApiCall | None:
    request = args[0] if args else kwargs.get("request")
    for handler in _api_handlers:
        try:
            call = handler.begin(request)
        except Exception:  # noqa: BLE001 - never break a request for telemetry
            _log.debug("otel_setup: API handler failed to start", exc_info=True)
            continue
        if call is not None:
            return call
    return None


def _refused(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A context token when the request's host may not receive trace context, else None."""
    allows = _propagation_allows
    if allows is None:
        return None
    request: Any = args[0] if args else kwargs.get("request")
    host = getattr(getattr(request, "url", None), "host", None)
    if not isinstance(host, str):
        return None
    if allows(host):
        return None
    from opentelemetry import context

    from otel_setup._propagation import NO_PROPAGATION

    return context.attach(context.set_value(NO_PROPAGATION, True))


def _sync_api_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    call = _claim(args, kwargs) if _api_handlers else None
    if call is None:
        token = _refused(args, kwargs)
        if token is None:
            return wrapped(*args, **kwargs)
        from opentelemetry import context

        try:
            return wrapped(*args, **kwargs)
        finally:
            context.detach(token)
    from opentelemetry.instrumentation.utils import suppress_http_instrumentation

    try:
        with suppress_http_instrumentation():
            response = wrapped(*args, **kwargs)
    except BaseException as error:
        call.fail(error)
        raise
    call.finish(response)
    return response


async def _async_api_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    call = _claim(args, kwargs) if _api_handlers else None
    if call is None:
        token = _refused(args, kwargs)
        if token is None:
            return await wrapped(*args, **kwargs)
        from opentelemetry import context

        try:
            return await wrapped(*args, **kwargs)
        finally:
            context.detach(token)
    from opentelemetry.instrumentation.utils import suppress_http_instrumentation

    try:
        with suppress_http_instrumentation():
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


def client_duration_histogram(meter_provider: MeterProvider) -> Histogram:
    """The instrument contrib records ``http.client.request.duration`` into (same scope, same stream)."""
    from opentelemetry.instrumentation._semconv import (
        HTTP_DURATION_HISTOGRAM_BUCKETS_NEW,
        _get_schema_url,
        _StabilityMode,
    )
    from opentelemetry.instrumentation.httpx.version import __version__ as contrib_version

    meter = meter_provider.get_meter(
        "opentelemetry.instrumentation.httpx", contrib_version, _get_schema_url(_StabilityMode.HTTP)
    )
    return meter.create_histogram(
        name="http.client.request.duration",
        unit="s",
        description="Duration of HTTP client requests.",
        explicit_bucket_boundaries_advisory=HTTP_DURATION_HISTOGRAM_BUCKETS_NEW,
    )


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
