"""FastAPI server spans and RED metrics from one lean ASGI middleware.

Why not contrib's ``OpenTelemetryMiddleware``: it matches the route a second
time, builds attributes for two semantic-convention generations and wraps
``send``/``receive`` in spans, which costs more than the whole bare request on
a trivial route. This middleware reads the route the router already chose
(``scope["route"]``), builds attributes only for spans that are sampled, and
records the duration histogram for every request. Its stable-semconv output
(span name, kind, attributes, status and metric points) matches contrib's.

FastAPI 0.142+ ships its own telemetry that switches itself on as soon as a
global SDK provider exists; it is switched off on every app instrumented here
so that exactly one instrumentation runs.
"""

from __future__ import annotations

import contextlib
import inspect
import ipaddress
import logging
import re
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, Tracer, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from otel_setup._compat import (
    MOUNT_TEMPLATE,
    NATIVE_TELEMETRY_OFF,
    disable_native_telemetry,
    full_route_template,
    wrap_middleware_stack,
)
from otel_setup._compat import patch_constructor as compat_patch_constructor
from otel_setup._core.catalog import buckets
from otel_setup._hotpath.context import SpanActivation
from otel_setup._hotpath.keep import HELD, KEPT, BufferingRoot, Keeper, release
from otel_setup._hotpath.metrics import FastHistogram, InFlight, LocalMetrics, SdkHistogram, SdkInFlight, SdkSeries
from otel_setup._hotpath.sampling import RootSpans
from otel_setup._hotpath.spans import record_error
from otel_setup._integrations.log_processors import EXCEPTION_SPAN
from otel_setup._security.redaction import redact_query
from otel_setup.version import __version__

__all__ = ["ServerHooks", "ServerTelemetryMiddleware", "disable_native_telemetry", "instrument_app", "is_instrumented"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
RequestLogger = Callable[[str, "str | None", int, float, int, int], None]
ErrorReporter = Callable[["BaseException | None", str, "str | None", int], None]

_log = logging.getLogger("otel_setup")
_MARK: Final = "_otel_setup_instrumented"
_MOUNTED: Final = "_otel_setup_mounted"
_SCOPE_NAME: Final = "otel_setup.fastapi"
KNOWN_METHODS: Final = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE", "QUERY"}
)
_TRACE_CONTEXT: Final = TraceContextTextMapPropagator()
SERVER_DURATION_ATTRIBUTES: Final = (
    "http.request.method",
    "url.scheme",
    "network.protocol.version",
    "http.response.status_code",
    "http.route",
    "error.type",
)
_PROTOCOL_VERSIONS: Final = {"1.0": "1.0", "1.1": "1.1", "2": "2", "2.0": "2", "3": "3", "3.0": "3"}


def _route_template(scope: Scope, app_root: str, root_app: Any, cache: dict[int, tuple[Any, Any, Any]]) -> str | None:
    """The request's full route template, or None when no route matched.

    ``app_root`` is the ``root_path`` the request arrived with: the HTTP
    semantic conventions put the application root in ``http.route``, and a
    ``root_path`` longer than it at the end is the path of the mounts the
    request went through.
    """
    route = scope.get("route")
    template = full_route_template(scope, route, cache) if route is not None else _match_route(scope, cache)
    root = scope.get("root_path", "")
    if root == app_root:
        if template is None or not app_root:
            return template
    else:
        if template is None:
            template = MOUNT_TEMPLATE  # a mounted app that answered without a route of its own
        if root.startswith(app_root):
            template = _mount_prefix(root_app, root[len(app_root) :]) + template
        if not app_root:
            return template
    return app_root.rstrip("/") + template


_MOUNT_TEMPLATES: Final = "_otel_setup_mount_templates"
_MOUNT_PREFIX_CACHE_SIZE: Final = 1024


def _mount_prefix(app: Any, prefix: str) -> str:
    """The template of the mounts that consumed ``prefix`` (``/users/{user_id}`` for ``/users/7``).

    Found by matching the mounts of ``app``'s route table once per distinct
    prefix; a prefix no mount explains is returned as it is.
    """
    cache: dict[str, str] | None = getattr(app, _MOUNT_TEMPLATES, None)
    if cache is None:
        cache = {}
        with contextlib.suppress(AttributeError, TypeError):
            setattr(app, _MOUNT_TEMPLATES, cache)
    cached = cache.get(prefix)
    if cached is not None:
        return cached
    from starlette.routing import Mount

    template = ""
    remaining = prefix
    routes: Iterable[Any] = getattr(getattr(app, "router", None), "routes", ())
    while remaining:
        for route in routes:
            if not isinstance(route, Mount) or not route.path:
                continue
            match = route.path_regex.match(remaining + "/")
            if match is None:
                continue
            rest = match.group("path") if "path" in match.groupdict() else ""
            template += route.path_format.removesuffix(MOUNT_TEMPLATE)
            remaining = ("/" + rest.rstrip("/")) if rest else ""
            routes = getattr(route, "routes", ())
            break
        else:
            return prefix
    if len(cache) < _MOUNT_PREFIX_CACHE_SIZE:  # a mount with a parameter: one entry per value
        cache[prefix] = template
    return template


def _match_route(scope: Scope, cache: dict[int, tuple[Any, Any, Any]]) -> str | None:
    """Starlette releases that do not record the matched route: match once, after the fact."""
    app = scope.get("app")
    routes: Iterable[Any] = getattr(getattr(app, "router", None), "routes", ())
    if "endpoint" not in scope:
        return None
    from starlette.routing import Match, Mount

    partial: str | None = None
    for route in routes:
        try:
            match, _ = route.matches(scope)
        except Exception:  # noqa: BLE001 - a route's matcher must not break the request's telemetry
            continue
        if match is Match.FULL:
            if isinstance(route, Mount):
                return MOUNT_TEMPLATE
            return full_route_template(scope, route, cache)
        if match is Match.PARTIAL and partial is None:
            partial = full_route_template(scope, route, cache)
    return partial


def _trace_context_carrier(traceparent: bytes, tracestate: bytes | None) -> dict[str, list[str]]:
    carrier = {"traceparent": [traceparent.decode("latin-1")]}
    if tracestate is not None:
        carrier["tracestate"] = [tracestate.decode("latin-1")]
    return carrier


def _repeated_trace_context_carrier(raw_headers: Iterable[Any]) -> dict[str, list[str]]:
    """Every value of repeated headers, as contrib's getter hands them over.

    W3C trace context: several ``tracestate`` headers are one list, joined;
    the propagator reads the first ``traceparent``.
    """
    carrier: dict[str, list[str]] = {}
    for name, value in raw_headers:
        if name in (b"traceparent", b"tracestate"):
            carrier.setdefault(name.decode("latin-1"), []).append(value.decode("latin-1"))
    return carrier


class TraceparentTrust:
    """Whose inbound ``traceparent`` is honoured as a parent (inbound ``baggage`` never is).

    ``all`` behind a trusted proxy or between internal services; ``none`` (the
    default) at a public edge; or a list of browser origins (the team's own
    frontend continuing its traces) and client networks (internal callers).
    """

    def __init__(
        self,
        trust_all: bool = False,
        origins: Iterable[str] = (),
        networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network] = (),
    ) -> None:
        self.trust_all = trust_all
        self.origins = frozenset(o.rstrip("/").encode("latin-1") for o in origins)
        self.networks = tuple(networks)

    def trusts(self, scope: Scope, origin: bytes | None) -> bool:
        if self.trust_all:
            return True
        if origin is not None and origin.rstrip(b"/") in self.origins:
            return True
        if self.networks:
            client = scope.get("client")
            if client:
                try:
                    address = ipaddress.ip_address(client[0])
                except ValueError:
                    return False
                return any(address in network for network in self.networks)
        return False


@dataclass(frozen=True)
class ServerHooks:
    """Everything the server middleware does besides spans and metrics, decided once in ``configure()``."""

    excluded_paths: frozenset[str] = frozenset()
    excluded_patterns: tuple[re.Pattern[str], ...] = ()
    on_startup: Callable[[], object] | None = None
    on_shutdown: Callable[[], object] | None = None
    request_log: RequestLogger | None = None
    on_error: ErrorReporter | None = None
    server_timing: bool = False
    response_time_header: bool = False
    trust: TraceparentTrust | None = None
    probes: Mapping[str, ASGIApp] = field(default_factory=dict)
    roots: RootSpans | None = None
    keeper: Keeper | None = None
    """Exports the buffered trace of an unsampled request that failed or was slow (None: keeping off)."""
    capture_headers: Callable[[Scope], Mapping[str, Any]] | None = None
    state: Any = None
    """Has ``shut_down`` (and ``warned``): requests after telemetry shut down get one warning."""


class ServerTelemetryMiddleware:
    """Outermost ASGI wrapper: one SERVER span (when sampled) and duration/active metrics (always)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        tracer: Tracer,
        duration: FastHistogram | SdkHistogram,
        active: InFlight | SdkInFlight,
        hooks: ServerHooks,
        root_app: Any = None,
    ) -> None:
        self.app = app
        self._root_app = root_app  # the instrumented application, whose mounts name mounted paths
        self._templates: dict[int, tuple[Any, Any, Any]] = {}  # route templates that do not depend on the request
        self._tracer = tracer
        self._duration = duration
        self._active = active
        self._active_series = active.series
        # Unpacked into attributes once: the request path reads them every time.
        self._excluded_paths = hooks.excluded_paths
        self._excluded_patterns = hooks.excluded_patterns
        self._on_startup = hooks.on_startup
        self._on_shutdown = hooks.on_shutdown
        self._request_log = hooks.request_log
        self._on_error = hooks.on_error
        self._server_timing = hooks.server_timing
        self._response_time_header = hooks.response_time_header
        self._trust = hooks.trust or TraceparentTrust()
        self._probes = dict(hooks.probes)
        self._roots = hooks.roots
        self._keeper = hooks.keeper
        # Below this a fine request's buffer is dropped without asking the keeper.
        self._slow_seconds = hooks.keeper.slow_seconds if hooks.keeper is not None else float("inf")
        self._capture_headers = hooks.capture_headers  # allow-listed, sanitised request headers (off: None)
        self._state = hooks.state if hooks.state is not None else _NeverShutDown()
        self._timing_headers = hooks.server_timing or hooks.response_time_header
        self._activation = SpanActivation()
        self._expose_names = b", ".join(
            name
            for name, on in ((b"Server-Timing", hooks.server_timing), (b"X-Response-Time", hooks.response_time_header))
            if on
        )

    def _matches_excluded_pattern(self, path: str) -> bool:
        return any(pattern.fullmatch(path) for pattern in self._excluded_patterns)

    async def __call__(  # noqa: PLR0912, PLR0915 - the per-request path is one function on purpose: each call costs
        self, scope: Scope, receive: Receive, send: Send
    ) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan" and (self._on_shutdown is not None or self._on_startup is not None):
                await self.app(scope, receive, self._lifespan_send(send))
                return
            if kind == "websocket" and not self._state.shut_down:
                await self._websocket(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        probe = self._probes.get(path)
        if probe is not None and scope["method"] in ("GET", "HEAD"):
            # Probes and /metrics are answered here, untraced and before any
            # routing: a catch-all route cannot shadow them, and the app's
            # requests do not pay for matching three more routes.
            await probe(scope, receive, send)
            return
        if path in self._excluded_paths or (self._excluded_patterns and self._matches_excluded_pattern(path)):
            await self.app(scope, receive, send)
            return

        if self._state.shut_down:
            self._after_shutdown()
        start = perf_counter()
        app_root: str = scope.get("root_path", "")
        raw_method: str = scope["method"]
        method = raw_method if raw_method in KNOWN_METHODS else "_OTHER"
        scheme: str = scope.get("scheme", "http")

        raw_headers = scope.get("headers") or ()
        if not isinstance(raw_headers, list | tuple):
            raw_headers = list(raw_headers)
        # One C-level pass over the headers (for a repeated header the dict keeps the last value).
        headers: dict[bytes, bytes] = dict(raw_headers)
        origin = headers.get(b"origin")
        traceparent = headers.get(b"traceparent")
        parent_context = None
        links: list[Link] | None = None
        if traceparent is not None:
            carrier = (
                _trace_context_carrier(traceparent, headers.get(b"tracestate"))
                if len(headers) == len(raw_headers)
                else _repeated_trace_context_carrier(raw_headers)
            )
            if self._trust.trusts(scope, origin):
                # Trace context only: inbound baggage never enters our context,
                # so it can never be forwarded on outbound calls.
                parent_context = _TRACE_CONTEXT.extract(carrier)
            else:
                # Public edge: the caller's flags must not decide our sampling
                # (a sampled flag would force 100 %) and its baggage is not ours
                # to forward. Start a new trace that links to the caller's.
                remote = _TRACE_CONTEXT.extract(carrier)
                remote_span = trace.get_current_span(remote).get_span_context()
                if remote_span.is_valid:
                    links = [Link(remote_span)]

        name = raw_method if method != "_OTHER" else "HTTP"
        span: trace.Span
        roots = self._roots
        if parent_context is None and roots is not None:
            span = roots.start(self._tracer, name, links)
        else:
            span = self._tracer.start_span(name, context=parent_context, kind=SpanKind.SERVER, links=links)
            if self._keeper is not None and not span.is_recording() and parent_context is not None:
                # A trusted caller's unsampled trace: buffered like our own unsampled roots.
                span = BufferingRoot(span.get_span_context())
                span.parent = parent_context
                span.links = links
        recording = span.is_recording()
        if recording:
            attributes = _request_attributes(scope, method, raw_method, scheme, headers.get(b"user-agent"))
            if self._keeper is not None:
                attributes[KEPT] = "head"
            span.set_attributes(attributes)
            if self._capture_headers is not None:  # header capture: off by default
                span.set_attributes(self._capture_headers(scope))
        token = self._activation.attach(span, parent_context)
        in_flight = self._active_series.get((method, scheme))
        if in_flight is None:
            in_flight = self._active.series_for((method, scheme))
        in_flight.append(None)

        status_code = 0
        timing_headers = self._timing_headers
        # Browsers send Origin with every cross-origin request; without it no
        # CORS middleware answers, so there is no expose list to extend.
        cross_origin = origin is not None

        # When the response ended for the duration histogram: its last byte, so
        # background tasks run after it do not count; for a server-sent event
        # stream (open for minutes) its first event, so streams cannot swamp
        # the latency percentiles. The span covers all of it.
        ended = 0.0
        response_headers: Any = None

        async def send_wrapper(message: Message) -> None:
            nonlocal status_code, ended, response_headers
            if message["type"] == "http.response.start":
                status_code = message["status"]
                response_headers = message.get("headers")
                if timing_headers:
                    self._add_timing_headers(message, perf_counter() - start, cross_origin)
            elif not message.get("more_body", False):
                if not ended:
                    ended = perf_counter()
            elif response_headers is not None:  # the first chunk of a streamed body
                if _is_event_stream(response_headers):
                    ended = perf_counter()
                response_headers = None
            await send(message)

        error: BaseException | None = None
        try:
            await self.app(scope, receive, send_wrapper)
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._finish(scope, span, recording, method, scheme, status_code, error, start, in_flight, app_root, ended)
            self._activation.detach(token)

    def _finish(  # noqa: PLR0912 - every branch is one attribute of the finished request
        self,
        scope: Scope,
        span: trace.Span,
        recording: bool,
        method: str,
        scheme: str,
        status_code: int,
        error: BaseException | None,
        start: float,
        in_flight: list[None] | SdkSeries,
        app_root: str,
        ended: float = 0.0,
    ) -> None:
        try:
            elapsed = (ended or perf_counter()) - start
            in_flight.pop()
            if error is not None and status_code == 0:
                status_code = 500
            route = _route_template(scope, app_root, self._root_app, self._templates)
            # Semantic conventions: the exception's class when one left the app
            # (Starlette's error middleware sends the 500 before re-raising it),
            # else the status code of a server error.
            error_type: str | None = None
            if error is not None:
                error_type = type(error).__qualname__
            elif status_code >= 500:
                error_type = str(status_code)
            if error is not None and status_code == 0:
                status_code = 500
            protocol = _PROTOCOL_VERSIONS.get(scope.get("http_version", "1.1"), "1.1")
            context = span.get_span_context()
            exported = recording
            if not recording and span.__class__ is BufferingRoot:
                if error_type is not None or elapsed >= self._slow_seconds:
                    exported = self._keep_or_drop(
                        span, scope, method, scheme, status_code, error, error_type, route, elapsed, start
                    )
                else:
                    records = span.records  # a fine request: its records go, inline (most have none)
                    if records:
                        span.records = None
                        del HELD[-len(records) :]
            self._duration.record(
                elapsed,
                (method, scheme, protocol, status_code or None, route, error_type),
                context.trace_id if exported else 0,
                context.span_id if exported else 0,
            )
            if self._request_log is not None:
                self._request_log(method, route, status_code, elapsed, context.trace_id, context.span_id)
            if (
                self._on_error is not None
                and (error is not None or status_code >= 500)
                and (error is None or isinstance(error, Exception))
            ):
                self._on_error(error, method, route, status_code)
            if recording:
                if route is not None:
                    span.update_name(f"{method if method != '_OTHER' else 'HTTP'} {route}")
                    span.set_attribute("http.route", route)
                if status_code:
                    span.set_attribute("http.response.status_code", status_code)
                if error is not None:
                    record_error(span, error)
                if error_type is not None:
                    span.set_attribute("error.type", error_type)
                    span.set_status(Status(StatusCode.ERROR))
            if error is not None and context.is_valid:
                # uvicorn logs the exception after this span ended: its line joins the request's trace.
                with contextlib.suppress(AttributeError, TypeError):
                    setattr(error, EXCEPTION_SPAN, context)
        except Exception:  # noqa: BLE001 - a telemetry failure must never fail the request
            _log.debug("otel_setup: could not finish server telemetry", exc_info=True)
        finally:
            if recording:  # a span that did not record at its start has nothing to end
                span.end()

    def _keep_or_drop(
        self,
        span: BufferingRoot,
        scope: Scope,
        method: str,
        scheme: str,
        status_code: int,
        error: BaseException | None,
        error_type: str | None,
        route: str | None,
        elapsed: float,
        start: float,
    ) -> bool:
        """An unsampled request's end: export its buffered trace when it failed or was slow; else drop it."""
        keeper = self._keeper
        reason = keeper.reason(error_type is not None, elapsed) if keeper is not None else None
        if keeper is None or reason is None:
            if span.records:
                release(span)
            return False
        headers = scope.get("headers") or ()
        user_agent = next((value for name, value in headers if name == b"user-agent"), None)
        attributes = _request_attributes(scope, method, scope["method"], scheme, user_agent)
        if self._capture_headers is not None:
            attributes.update(self._capture_headers(scope))
        if route is not None:
            attributes["http.route"] = route
        if status_code:
            attributes["http.response.status_code"] = status_code
        if error_type is not None:
            attributes["error.type"] = error_type
        name = method if method != "_OTHER" else "HTTP"
        try:
            keeper.keep(
                span, reason, f"{name} {route}" if route is not None else name, attributes, start, error, error_type
            )
        except Exception:  # noqa: BLE001 - a trace that cannot be kept must not cost the request's metrics
            release(span)
            _log.debug("otel_setup: could not export a kept trace", exc_info=True)
            return False
        return True

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One SERVER span per connection, named by its route; WebSockets stay out of the HTTP histogram."""
        app_root: str = scope.get("root_path", "")
        span = self._tracer.start_span(
            "WebSocket",
            kind=SpanKind.SERVER,
            attributes={
                "url.scheme": scope.get("scheme", "ws"),
                "url.path": scope.get("path", ""),
                "network.protocol.name": "websocket",
            },
        )
        token = self._activation.attach(span, None)
        error: BaseException | None = None
        try:
            await self.app(scope, receive, send)
        except BaseException as exc:
            error = exc
            raise
        finally:
            try:
                if span.is_recording():
                    route = _route_template(scope, app_root, self._root_app, self._templates)
                    if route is not None:
                        span.update_name(route)  # as contrib names WebSocket spans: the route alone
                        span.set_attribute("http.route", route)
                    if error is not None:
                        record_error(span, error)
                        span.set_attribute("error.type", type(error).__qualname__)
                        span.set_status(Status(StatusCode.ERROR))
            except Exception:  # noqa: BLE001 - a telemetry failure must never fail the connection
                _log.debug("otel_setup: could not finish WebSocket telemetry", exc_info=True)
            finally:
                span.end()
                self._activation.detach(token)

    def _after_shutdown(self) -> None:
        state = self._state
        if not state.warned:
            state.warned = True
            _log.warning(
                "otel_setup: a request arrived after telemetry was shut down (shutdown() or "
                "FastAPIOptions(shutdown_on_lifespan=True)); its spans, metrics and OTLP logs are not exported"
            )

    def _add_timing_headers(self, message: Message, elapsed: float, cross_origin: bool) -> None:
        """``Server-Timing``/``X-Response-Time``: time to the first byte, as the browser sees it."""
        milliseconds = b"%.1f" % (elapsed * 1000.0)
        # A copy: the app may send the same header list with every response.
        headers = list(message.get("headers", ()))
        if cross_origin:
            for name, _ in headers:
                if name == b"access-control-allow-origin":
                    # CORS answered this request: let the browser's scripts read the timings.
                    for other, (other_name, other_value) in enumerate(headers):
                        if other_name == b"access-control-expose-headers":
                            headers[other] = (other_name, other_value + b", " + self._expose_names)
                            break
                    else:
                        headers.append((b"access-control-expose-headers", self._expose_names))
                    break
        if self._server_timing:
            headers.append((b"server-timing", b"app;dur=" + milliseconds))
        if self._response_time_header:
            headers.append((b"x-response-time", milliseconds + b"ms"))
        message["headers"] = headers

    def _lifespan_send(self, send: Send) -> Send:
        on_shutdown = self._on_shutdown
        on_startup = self._on_startup

        async def lifespan_send(message: Message) -> None:
            if on_startup is not None and message.get("type") == "lifespan.startup.complete":
                try:
                    on_startup()
                except Exception:  # noqa: BLE001 - telemetry must not fail the app's startup
                    _log.warning("otel_setup: startup hook failed", exc_info=True)
            # The end of a lifespan flushes (uvicorn on SIGTERM: the last moment
            # the event loop waits for); the providers shut down at process exit.
            if on_shutdown is not None and message.get("type") in (
                "lifespan.shutdown.complete",
                "lifespan.shutdown.failed",
            ):
                try:
                    on_shutdown()
                except Exception:  # noqa: BLE001 - shutdown of telemetry must not fail the app's shutdown
                    _log.warning("otel_setup: telemetry shutdown failed", exc_info=True)
            await send(message)

        return lifespan_send


def _is_event_stream(headers: Any) -> bool:
    """Whether a response streaming its body is server-sent events (checked once, at its first chunk)."""
    for name, value in headers or ():
        if name.lower() == b"content-type":
            return bool(value.startswith(b"text/event-stream"))
    return False


class _NeverShutDown:
    shut_down = False
    warned = False


def _request_attributes(
    scope: Scope, method: str, raw_method: str, scheme: str, user_agent: bytes | None
) -> dict[str, Any]:
    """Span attributes, built only for sampled requests."""
    attributes: dict[str, Any] = {
        "http.request.method": method,
        "url.scheme": scheme,
        "url.path": scope.get("path", ""),
        "network.protocol.version": _PROTOCOL_VERSIONS.get(scope.get("http_version", "1.1"), "1.1"),
    }
    if method == "_OTHER":
        attributes["http.request.method_original"] = raw_method
    query: bytes = scope.get("query_string", b"")
    if query:
        attributes["url.query"] = redact_query(query.decode("latin-1"))
    server = scope.get("server")
    if server:
        attributes["server.address"] = server[0]
        if server[1] is not None:
            attributes["server.port"] = server[1]
    client = scope.get("client")
    if client:
        attributes["client.address"] = client[0]
        attributes["client.port"] = client[1]
    if user_agent:
        attributes["user_agent.original"] = user_agent.decode("latin-1")
    return attributes


def is_instrumented(app: Any) -> bool:
    return bool(getattr(app, _MARK, False))


_server_instruments: weakref.WeakKeyDictionary[
    LocalMetrics, tuple[FastHistogram | SdkHistogram, InFlight | SdkInFlight]
] = weakref.WeakKeyDictionary()


def _new_server_instruments(local_metrics: LocalMetrics) -> tuple[FastHistogram | SdkHistogram, InFlight | SdkInFlight]:
    """One duration histogram and in-flight count per process, shared by every app (no duplicate series)."""
    scope = (_SCOPE_NAME, __version__)
    duration = local_metrics.new_histogram(
        scope,
        "http.server.request.duration",
        "s",
        "Duration of HTTP server requests.",
        buckets("http.server.request.duration"),
        SERVER_DURATION_ATTRIBUTES,
    )
    active = local_metrics.new_in_flight(
        scope,
        "http.server.active_requests",
        "{request}",
        "Number of active HTTP server requests.",
        ("http.request.method", "url.scheme"),
    )
    return duration, active


def instrument_app(
    app: Any,
    *,
    tracer_provider: TracerProvider,
    local_metrics: LocalMetrics,
    hooks: ServerHooks,
) -> bool:
    """Wrap ``app``'s middleware stack once; a second call is a no-op returning False."""
    if is_instrumented(app):
        return False
    tracer = tracer_provider.get_tracer(_SCOPE_NAME, __version__)
    shared = _server_instruments.get(local_metrics)
    if shared is None:
        shared = _server_instruments[local_metrics] = _new_server_instruments(local_metrics)
    duration, active = shared

    def build_middleware_stack(original_build: Callable[[], ASGIApp]) -> ASGIApp:
        if getattr(app, _MOUNTED, False):
            stack: ASGIApp = original_build()  # mounted in an instrumented app: its requests are already traced
            return stack
        # Built at the first request or lifespan, when the app's mounts are in place.
        _adopt_mounted_apps(app)
        # Outermost, outside ServerErrorMiddleware: unhandled exceptions are
        # seen (and recorded) while the request span is still current.
        return ServerTelemetryMiddleware(
            original_build(), tracer=tracer, duration=duration, active=active, hooks=hooks, root_app=app
        )

    # Rebuilt on the next call, also when configure() runs inside the lifespan.
    wrap_middleware_stack(app, build_middleware_stack)
    setattr(app, _MARK, True)
    disable_native_telemetry(app)
    return True


def _adopt_mounted_apps(app: Any, depth: int = 0) -> None:
    """Mounted sub-applications: no native telemetry, and no second server span of ours.

    Their requests are the parent's, already traced with the mount path in the
    route; FastAPI's native telemetry (0.142+) would start a second trace for
    each, and under zero code the sub-app was instrumented at construction.
    """
    from starlette.routing import Mount

    if depth > 8:
        return
    for route in getattr(getattr(app, "router", None), "routes", ()):
        if not isinstance(route, Mount):
            continue
        sub: Any = route.app
        if sub is app or not hasattr(sub, "build_middleware_stack"):
            continue
        disable_native_telemetry(sub)
        if not getattr(sub, _MOUNTED, False):
            with contextlib.suppress(AttributeError, TypeError):
                setattr(sub, _MOUNTED, True)
                if is_instrumented(sub):
                    sub.middleware_stack = None  # rebuilt without our middleware
        _adopt_mounted_apps(sub, depth + 1)


_undo_constructor: Callable[[], None] | None = None


def patch_constructor(on_new_app: Callable[[Any], None]) -> bool:
    """Have every ``FastAPI()`` built from now on handed to ``on_new_app``."""
    global _undo_constructor
    try:
        import fastapi
    except ImportError:
        return False
    if _undo_constructor is not None:
        return False

    def after_init(app: Any) -> None:
        try:
            on_new_app(app)
        except Exception:  # noqa: BLE001 - an app must construct even if telemetry cannot attach
            _log.warning("otel_setup: could not instrument a FastAPI app", exc_info=True)

    keywords = None
    if "telemetry" in inspect.signature(fastapi.FastAPI.__init__).parameters:

        def keywords(options: dict[str, Any]) -> None:
            """FastAPI's own telemetry off through its public option (0.142+), over whatever the app passed."""
            options["telemetry"] = {**(options.get("telemetry") or {}), **NATIVE_TELEMETRY_OFF}

    _undo_constructor = compat_patch_constructor(fastapi.FastAPI, after_init, keywords)
    return True


def unpatch_constructor() -> None:
    global _undo_constructor
    if _undo_constructor is not None:
        _undo_constructor()
        _undo_constructor = None
