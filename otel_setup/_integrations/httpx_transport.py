"""Where every httpx request is seen: the transports' request methods, wrapped once.

Each request goes to exactly one observer: a known API's handler when one
claims it (its own span, no ``traceparent`` to the third party, no other HTTP
instrumentation below), else the generic client span of ``httpx.py``, else,
for a host the propagation policy refuses, a mark that keeps contrib's
instrumentation from injecting. The wrappers stay installed while any of the
three is in use.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final, Protocol

from opentelemetry import propagate
from opentelemetry.instrumentation.utils import is_http_instrumentation_enabled, suppress_http_instrumentation

from otel_setup._hotpath.context import current_context, holds_only_a_span
from otel_setup._security.propagation import refuse_propagation

__all__ = [
    "ApiCall",
    "ApiHandler",
    "GenericCalls",
    "add_api_handler",
    "remove_api_handler",
    "set_generic_calls",
    "set_propagation_policy",
]

_log = logging.getLogger("otel_setup")

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


class GenericCalls(Protocol):
    """The generic client spans (``httpx.py``): every request no handler claimed."""

    def start(self, request: Any, propagate_context: bool, host: Any, context: Any, plain: bool) -> ApiCall: ...


_client: GenericCalls | None = None


def set_generic_calls(calls: GenericCalls | None) -> None:
    """Route unclaimed requests to ``calls`` (None: to nothing); wraps or unwraps the transports."""
    global _client
    _client = calls
    if calls is not None:
        _wrap_transports()
    else:
        _unwrap_if_unused()


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
