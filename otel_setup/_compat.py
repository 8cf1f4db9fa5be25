"""The one place that reads other libraries' private state (each read with a public fallback) or patches their objects.

FastAPI's native telemetry (0.142+) is configured only through the
constructor and kept on the app as a private dict read on every request:
``disable_native_telemetry`` flips its switches there (there is no public
switch for an app someone else constructed; without the dict there is nothing
to switch off).

FastAPI 0.138 nests included routers: the ``APIRoute`` a request matched
(``scope["route"]``) keeps the path its router was declared with, and the
template with every ``include_router`` prefix lives on the route context
FastAPI chose, which it keeps in its private ``scope["fastapi"]`` state. That
read is one dictionary lookup; the public fallback, FastAPI's
``iter_route_contexts`` (the same full templates, found by matching the request
again), costs a walk over the route table and is cached per route where the
answer cannot depend on the request. Before 0.138 the route's own path already
is the full template. Each path is tested on every FastAPI release the package
claims (``scripts/fastapi-matrix``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from typing import Any, Final

import structlog.contextvars
from starlette.routing import Mount

__all__ = [
    "MOUNT_TEMPLATE",
    "NATIVE_TELEMETRY_OFF",
    "choose_stable_semconv",
    "claim_instrumented",
    "composite_members",
    "disable_native_telemetry",
    "enable_processor_metrics",
    "full_route_template",
    "instrumentation_info",
    "on_sentry_lost_events",
    "patch_constructor",
    "public_api_only",
    "reset_global_providers",
    "route_template_from_contexts",
    "sentry_rate_limited",
    "span_containers",
    "structlog_context",
    "use_public_api",
    "wrap_middleware_stack",
]

_public_only = False
_log = logging.getLogger("otel_setup")


def use_public_api(public: bool) -> None:
    """``OTEL_SETUP_COMPAT=public``: every read below takes its public fallback from now on.

    Set by ``configure()`` from its settings before anything is installed, so
    the fallbacks can be proven by running the suite in that mode (CI does).
    """
    global _public_only
    _public_only = public


def public_api_only() -> bool:
    return _public_only


# --- OpenTelemetry SDK -----------------------------------------------------------------------------


def span_containers(span: Any) -> tuple[Mapping[str, Any], Sequence[Any], Sequence[Any]]:
    """A finished span's attributes, events and links, as the exporter thread scrubs them.

    The private containers are the span's own (no copy per span); the public
    properties copy the events and links into tuples and wrap the attributes
    in a read-only view. Dropped counts come from the public ``dropped_*``
    properties either way.
    """
    if not _public_only:
        attributes = getattr(span, "_attributes", None)
        events = getattr(span, "_events", None)
        links = getattr(span, "_links", None)
        if attributes is not None and events is not None and links is not None:
            return attributes, events, links
    return span.attributes or {}, span.events, span.links


def instrumentation_info(span: Any) -> Any:
    """The deprecated ``InstrumentationInfo`` a copied span keeps for old exporters; ``None`` publicly.

    Its public property warns on every read; exporters read
    ``instrumentation_scope``, which the copy always carries.
    """
    return None if _public_only else getattr(span, "_instrumentation_info", None)


def reset_global_providers() -> bool:
    """Reopen OpenTelemetry's set-once global providers (tests and ``reset()``); whether it could.

    The API has no public reset. Publicly the globals stay what the first
    ``configure()`` set: the package hands its own providers to every
    integration, so only code that reads the globals itself sees the old ones.
    """
    if _public_only:
        return False
    from opentelemetry import _logs, trace
    from opentelemetry.metrics import _internal as metrics_internal
    from opentelemetry.util._once import Once

    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    metrics_internal._METER_PROVIDER_SET_ONCE = Once()
    metrics_internal._METER_PROVIDER = None
    logs_internal: Any = getattr(_logs, "_internal", None)
    if logs_internal is not None and hasattr(logs_internal, "_LOGGER_PROVIDER_SET_ONCE"):
        logs_internal._LOGGER_PROVIDER_SET_ONCE = Once()
        logs_internal._LOGGER_PROVIDER = None
    return True


def composite_members(propagator: Any) -> Sequence[Any] | None:
    """The propagators a ``CompositePropagator`` calls, or ``None`` when they cannot be known.

    Knowing them lets client calls write a W3C ``traceparent`` directly
    instead of through the global propagator. Publicly they are unknown, and
    every call takes the general ``propagate.inject`` path (slower, same headers).
    """
    if _public_only:
        return None
    members = getattr(propagator, "_propagators", None)
    return members if isinstance(members, (list, tuple)) else None


def enable_processor_metrics(processor: Any, meter_provider: Any, signal: str) -> bool:
    """Turn on a batch processor's queue metrics (size, capacity, drops); whether they are on.

    The SDK switches them on only from ``OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED``
    (which would also make its OTLP exporters count what the package's counting
    exporters already count). Here its metric factory is handed the
    processor's queue directly. Publicly the processor keeps what it was built
    with (``meter_provider=``): queue metrics exactly when that variable is set.
    """
    if _public_only:
        return False
    try:
        from opentelemetry.sdk._shared_internal._processor_metrics import (
            NoOpProcessorMetrics,
            create_processor_metrics,
        )
        from opentelemetry.semconv._incubating.attributes.otel_attributes import OtelComponentTypeValues

        inner = processor._batch_processor
        if not isinstance(inner._metrics, NoOpProcessorMetrics):
            return True  # the variable is set: the SDK counts already, a second set would double every series
        component = (
            OtelComponentTypeValues.BATCHING_SPAN_PROCESSOR
            if signal == "traces"
            else OtelComponentTypeValues.BATCHING_LOG_PROCESSOR
        )
        metrics = create_processor_metrics(
            signal,  # type: ignore[arg-type] # "traces" or "logs"
            component,
            meter_provider,
            capacity=inner._max_queue_size,
            enabled=True,
        )
        queue = inner._queue
        metrics.register_queue_size(lambda: len(queue))
        inner._metrics = metrics
    except Exception:  # noqa: BLE001 - an SDK without these internals still exports fine
        _log.debug("otel_setup: SDK processor metrics unavailable", exc_info=True)
        return False
    return True


def choose_stable_semconv() -> bool | None:
    """Make contrib instrumentations emit the stable HTTP and database conventions.

    Contrib reads ``OTEL_SEMCONV_STABILITY_OPT_IN`` once, on its first
    instrumentor, and defaults to the old conventions (server metrics with
    ``Host``-derived attributes: one series per forged Host header). Here its
    switch is set directly, without touching ``os.environ``. Publicly the
    variable itself is set for contrib to read, unless the user set it.
    Returns True when chosen, False when contrib had chosen old conventions
    already, None when that cannot be told (public, or no contrib).
    """
    if _public_only:
        os.environ.setdefault(_SEMCONV_OPT_IN, "http,database")
        return None
    try:
        from opentelemetry.instrumentation._semconv import (
            _OpenTelemetrySemanticConventionStability as Stability,
        )
        from opentelemetry.instrumentation._semconv import (
            _OpenTelemetryStabilitySignalType as Signal,
        )
        from opentelemetry.instrumentation._semconv import _StabilityMode as Mode
    except ImportError:
        return None
    with Stability._lock:
        if Stability._initialized:
            current = Stability._OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING.get(Signal.HTTP)
            return current in (Mode.HTTP, Mode.HTTP_DUP)
        Stability._OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING = {
            Signal.HTTP: Mode.HTTP,
            Signal.DATABASE: Mode.DATABASE,
            Signal.GEN_AI: Mode.DEFAULT,
        }
        Stability._initialized = True
    return True


_SEMCONV_OPT_IN: Final = "OTEL_SEMCONV_STABILITY_OPT_IN"


# --- sentry_sdk ------------------------------------------------------------------------------------


def sentry_rate_limited(transport: Any) -> bool | None:
    """Whether an unhealthy Sentry transport is rate-limited (else its queue is full); None publicly.

    The public ``is_healthy()`` answers both at once.
    """
    if _public_only:
        return None
    limited = getattr(transport, "_is_rate_limited", None)
    return bool(limited()) if callable(limited) else None


# --- structlog -------------------------------------------------------------------------------------


def structlog_context() -> dict[str, Any] | None:
    """What ``structlog.contextvars`` holds for this context, or ``None`` when nothing was ever bound.

    structlog keeps the variables it created in a private dict: while it is
    empty, nothing was ever bound and the copy ``get_contextvars()`` makes per
    request is skipped. Publicly, that copy is made every time.
    """
    if not _public_only and not getattr(structlog.contextvars, "_CONTEXT_VARS", True):
        return None
    return structlog.contextvars.get_contextvars()


# --- FastAPI and Starlette -------------------------------------------------------------------------

MOUNT_TEMPLATE: Final = "/{path}"
"""What a mount contributes below its own prefix: the rest of the path, as its converter names it."""

_FASTAPI_STATE: Final = "fastapi"
_EFFECTIVE_CONTEXT: Final = "effective_route_context"
_CACHE_SIZE: Final = 4096
_NOT_CACHED: Final = object()

_iter_route_contexts: Callable[[Any], Iterable[Any]] | None
try:
    from fastapi.routing import iter_route_contexts as _iter_route_contexts
except ImportError:  # FastAPI < 0.138: included routes are copied with their full path
    _iter_route_contexts = None


def full_route_template(
    scope: MutableMapping[str, Any], route: Any, cache: dict[int, tuple[Any, Any, Any]]
) -> str | None:
    """The template of ``route`` with the prefixes of every router it was included through.

    Relative to the application that routed the request (mount paths and the
    application root are the caller's to add). ``cache`` belongs to the caller
    (one per instrumented app) and keeps the answers that do not depend on the
    request.
    """
    state = None if _public_only else scope.get(_FASTAPI_STATE)
    if state is not None and state.__class__ is dict:
        context = state.get(_EFFECTIVE_CONTEXT)
        if context is not None and getattr(context, "original_route", None) is route:
            template = getattr(getattr(context, "starlette_route", None), "path_format", None) or getattr(
                context, "path_format", None
            )
            if isinstance(template, str):
                return template
    return route_template_from_contexts(scope, route, cache)


def route_template_from_contexts(
    scope: MutableMapping[str, Any], route: Any, cache: dict[int, tuple[Any, Any, Any]]
) -> str | None:
    """Public-API answer: the route's own template, or its included contexts' matched against the request."""
    app = scope.get("app")
    cached = cache.get(id(route))
    if cached is not None and cached[0] is route and cached[1] is app:
        value = cached[2]
    else:
        value = _template_of(app, route)
        if len(cache) < _CACHE_SIZE:
            cache[id(route)] = (route, app, value)
    if value is _NOT_CACHED:
        return _match_contexts(scope, route)
    return value  # type: ignore[no-any-return] # a str or None, from _template_of


def _template_of(app: Any, route: Any) -> Any:
    """The route's template when it does not depend on the request, else ``_NOT_CACHED``."""
    if isinstance(route, Mount):  # a mounted app that did not route further (static files, a 404 inside)
        return MOUNT_TEMPLATE
    own = getattr(route, "path_format", None) or getattr(route, "path", None)
    template = own if isinstance(own, str) else None
    if _iter_route_contexts is None or app is None or template is None:
        return template
    contexts = _contexts_of(app, route)
    if len(contexts) == 1:
        return _context_template(contexts[0]) or template
    if contexts:
        return _NOT_CACHED  # one router included under several prefixes: the request decides
    return template


def _contexts_of(app: Any, route: Any) -> list[Any]:
    routes = getattr(getattr(app, "router", None), "routes", None)
    if not routes or _iter_route_contexts is None:
        return []
    return [context for context in _iter_route_contexts(routes) if context.original_route is route]


def _context_template(context: Any) -> str | None:
    template = getattr(context, "path_format", None) or getattr(context, "path", None)
    return template if isinstance(template, str) else None


def _match_contexts(scope: MutableMapping[str, Any], route: Any) -> str | None:
    from starlette.routing import Match

    partial: str | None = None
    for context in _contexts_of(scope.get("app"), route):
        try:
            match, _ = context.matches(scope)
        except Exception:  # noqa: BLE001 - a route's matcher must not break the request's telemetry
            continue
        if match is Match.FULL:
            return _context_template(context)
        if match is Match.PARTIAL and partial is None:
            partial = _context_template(context)
    return partial


def disable_native_telemetry(app: Any) -> bool:
    """Switch FastAPI's built-in telemetry (0.142+) off for this app.

    It is configured only through the constructor, and keeps that dict on the
    app and reads it on every request, so flipping its switches there is the
    one way to turn it off for an app someone else constructed. Returns whether
    the app had it.
    """
    config = getattr(app, "_telemetry", None)
    if not isinstance(config, dict) or "tracing" not in config:
        return False
    config.update(NATIVE_TELEMETRY_OFF)
    return True


NATIVE_TELEMETRY_OFF: Final = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}
"""FastAPI's ``telemetry=`` switches that leave a request to the package (its constructor's public option)."""


# --- patches of public methods ---------------------------------------------------------------------
# No private state is read below: each replaces a public method on an object or class, the same in
# both modes. They live here so every change the package makes to another library's objects is in
# one module (tests/test_compat_seam.py flags a method assigned anywhere else).


def wrap_middleware_stack(app: Any, wrap: Callable[[Callable[[], Any]], Any]) -> None:
    """Have a Starlette or FastAPI ``app`` build its middleware stack as ``wrap(original_build)``.

    Starlette builds the stack lazily through its public ``build_middleware_stack``;
    overriding it on the instance puts a middleware outside
    ``ServerErrorMiddleware`` (``add_middleware`` cannot, and refuses once the
    app has started). The stack is rebuilt on the next call.
    """
    original = app.build_middleware_stack

    def build_middleware_stack() -> Any:
        return wrap(original)

    app.build_middleware_stack = build_middleware_stack
    app.middleware_stack = None


def patch_constructor(
    cls: type, after_init: Callable[[Any], None], keywords: Callable[[dict[str, Any]], None] | None = None
) -> Callable[[], None]:
    """Call ``after_init(instance)`` after every ``cls(...)`` from now on; returns the undo.

    ``keywords``, when given, adjusts each call's keyword arguments first. The
    zero-code path runs before the application module is imported, so
    patching the class reaches instances however the class was imported.
    """
    own: Any = vars(cls).get("__init__")  # the class's own, not an inherited one
    original: Any = own if own is not None else type.__getattribute__(cls, "__init__")

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if keywords is not None:
            keywords(kwargs)
        original(self, *args, **kwargs)
        after_init(self)

    type.__setattr__(cls, "__init__", __init__)

    def undo() -> None:
        if own is None:
            type.__delattr__(cls, "__init__")
        else:
            type.__setattr__(cls, "__init__", own)

    return undo


def claim_instrumented(instrumentor: Any, claimed: bool) -> None:
    """Contrib's ``instrument()`` and ``uninstrument()`` as no-ops while the package instruments the library.

    Called by habit after ``configure()``, contrib's httpx instrumentor would
    add a second client span to every call, and its ``uninstrument()`` would
    unwrap the package's own wrappers. The singleton's public methods are
    shadowed on the instance (the same in both modes; its instrumented flag
    stays False, which is true of contrib itself).
    """
    if claimed:
        instrumentor.instrument = _skipped
        instrumentor.uninstrument = _skipped
    else:
        instrumentor.__dict__.pop("instrument", None)
        instrumentor.__dict__.pop("uninstrument", None)


def _skipped(**_options: Any) -> None:
    _log.debug("otel_setup: the package instruments this library; contrib's (un)instrument() is skipped")


def on_sentry_lost_events(transport: Any, count: Callable[[str, Any], None]) -> bool:
    """Call ``count(reason, data_category)`` for every event the Sentry SDK records as lost.

    The SDK has no hook for them; the transport's public ``record_lost_event``
    (the method its client reports go through, with its documented signature)
    is wrapped on the instance. The same in both modes: no private name is read.
    """
    original = getattr(transport, "record_lost_event", None)
    if transport is None or not callable(original):
        return False

    def record_lost_event(reason: str, data_category: Any = None, item: Any = None, *args: Any, **kwargs: Any) -> Any:
        with contextlib.suppress(Exception):  # counting must never break the transport
            count(str(reason), getattr(item, "data_category", None) if item is not None else data_category)
        return original(reason, data_category, item, *args, **kwargs)

    transport.record_lost_event = record_lost_event
    return True
