"""Which outbound hosts receive ``traceparent``: internal ones only, by default.

A W3C ``traceparent`` (and ``baggage``, and ``tracestate``) sent to a third
party tells it our trace ids and whatever the baggage carries; the GW2 and AI
APIs have no use for either. The rule is one host policy,
``OTEL_SETUP_PROPAGATE_TO``:

* ``internal`` (the default): loopback and private addresses, ``localhost``,
  single-label names (``users``, a compose or Kubernetes service) and the
  private suffixes ``.internal``, ``.local``, ``.lan``, ``.svc``,
  ``.cluster.local``, ``.home.arpa``. Public names such as
  ``api.guildwars2.com`` or ``api.openai.com`` are never internal.
* ``none``, ``all``, or a comma list mixing ``internal``, host names,
  ``*.suffix`` wildcards and CIDR networks.

Calls to the GW2 and OpenAI-compatible APIs are handled by the package's own
client spans and never carry the headers, whatever the policy says.

Mechanism: the package's own httpx client spans (``httpx_transport.py``) inject only for hosts the
policy allows, and remove the headers from a request to any other host (httpx
builds a redirect from the previous hop's headers). When contrib's httpx
instrumentation runs instead of the package's, the transport wrapper marks the
context of a call to a refused host and the global propagator is wrapped so
that ``inject`` does nothing under that mark. Explicit ``propagate.inject()``
calls elsewhere are unaffected.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Final

from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)

__all__ = [
    "NO_PROPAGATION",
    "GuardedPropagator",
    "HostPolicy",
    "HostileTraceContextFilter",
    "install_propagation_guard",
    "install_trace_context_log_limits",
    "refuse_propagation",
]

NO_PROPAGATION: Final = otel_context.create_key("otel_setup.no_propagation")
_INTERNAL_SUFFIXES: Final = (".internal", ".local", ".lan", ".svc", ".cluster.local", ".home.arpa", ".localhost")
_CACHE_LIMIT: Final = 1024


def is_internal_host(host: str) -> bool:
    """Loopback, private and link-local addresses; local names and private DNS suffixes."""
    host = host.strip("[]").rstrip(".").lower()
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost" or "." not in host or host.endswith(_INTERNAL_SUFFIXES)
    return address.is_private or address.is_loopback or address.is_link_local


class HostPolicy:
    """Decides, per host, whether trace context may be sent there (results cached)."""

    def __init__(self, entries: Iterable[str]) -> None:
        items = tuple(entry.strip().lower() for entry in entries if entry.strip())
        self.allow_all = "all" in items
        self.internal = "internal" in items
        self._hosts: set[str] = set()
        self._suffixes: list[str] = []
        self._networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for item in items:
            if item in ("all", "none", "internal"):
                continue
            if item.startswith(("*.", ".")):
                self._suffixes.append("." + item.lstrip("*."))
                continue
            try:
                self._networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                self._hosts.add(item.rstrip("."))
        self._cache: dict[str, bool] = {}

    def allows(self, host: str) -> bool:
        cached = self._cache.get(host)
        if cached is None:
            cached = self._decide(host)
            if len(self._cache) < _CACHE_LIMIT:
                self._cache[host] = cached
        return cached

    def _decide(self, host: str) -> bool:
        if self.allow_all:
            return True
        name = host.strip("[]").rstrip(".").lower()
        if name in self._hosts or any(name.endswith(suffix) for suffix in self._suffixes):
            return True
        if self._networks:
            try:
                address = ipaddress.ip_address(name)
            except ValueError:
                pass
            else:
                if any(address in network for network in self._networks):
                    return True
        return self.internal and is_internal_host(name)


class GuardedPropagator(TextMapPropagator):
    """The global propagator, silent for calls the host policy refused."""

    def __init__(self, inner: TextMapPropagator) -> None:
        self.inner = inner

    def extract(
        self, carrier: CarrierT, context: Context | None = None, getter: Getter[CarrierT] = default_getter
    ) -> Context:
        return self.inner.extract(carrier, context, getter)

    def inject(
        self, carrier: CarrierT, context: Context | None = None, setter: Setter[CarrierT] = default_setter
    ) -> None:
        if otel_context.get_value(NO_PROPAGATION, context):
            return
        self.inner.inject(carrier, context, setter)

    @property
    def fields(self) -> set[str]:
        return self.inner.fields


@contextlib.contextmanager
def refuse_propagation() -> Iterator[None]:
    """Within this block the guarded global propagator injects nothing."""
    token = otel_context.attach(otel_context.set_value(NO_PROPAGATION, True))
    try:
        yield
    finally:
        otel_context.detach(token)


def install_propagation_guard() -> Callable[[], None]:
    """Wrap the global propagator so that :func:`refuse_propagation` silences it; returns the undo.

    The httpx transports apply the host policy themselves
    (``httpx_transport.set_propagation_policy``): this module imports no integration.
    """
    current = propagate.get_global_textmap()
    guarded = current if isinstance(current, GuardedPropagator) else GuardedPropagator(current)
    propagate.set_global_textmap(guarded)

    def undo() -> None:
        if propagate.get_global_textmap() is guarded:
            propagate.set_global_textmap(guarded.inner)

    return undo


# Loggers that echo a client's traceparent or tracestate when they reject it.
_TRACE_CONTEXT_LOGGERS: Final = ("opentelemetry.trace.span", "opentelemetry.trace.propagation.tracecontext")
_ECHO_LIMIT: Final = 32


class HostileTraceContextFilter(logging.Filter):
    """Warnings about an invalid ``traceparent``/``tracestate``: a short prefix of the client's text, rate-limited.

    The SDK logs the rejected header (``tracestate`` may be 4 KB a line) once
    per bad request: a client could write what it likes into our logs, as
    often as it likes. Each argument is cut to ``_ECHO_LIMIT`` characters and
    at most ``per_minute`` lines a minute pass per logger, as for export failures.
    """

    def __init__(self, per_minute: int = 3, clock: Callable[[], float] | None = None) -> None:
        super().__init__()
        import time

        self._per_minute = per_minute
        self._clock = clock or time.monotonic
        self._windows: dict[str, tuple[float, int]] = {}
        self.suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = self._clock()
        start, count = self._windows.get(record.name, (now, 0))
        if now - start >= 60.0:
            start, count = now, 0
        self._windows[record.name] = (start, count + 1)
        if count >= self._per_minute:
            self.suppressed += 1
            return False
        record.msg = _bounded(str(record.msg), 160)
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(_bounded(str(arg), _ECHO_LIMIT) for arg in args)
        return True


def _bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}...({len(text) - limit} more characters)"


def install_trace_context_log_limits(per_minute: int = 3) -> Callable[[], None]:
    """Put :class:`HostileTraceContextFilter` on the SDK's trace-context loggers; returns the undo."""
    limiter = HostileTraceContextFilter(per_minute)
    loggers = [logging.getLogger(name) for name in _TRACE_CONTEXT_LOGGERS]
    for logger in loggers:
        logger.addFilter(limiter)

    def undo() -> None:
        for logger in loggers:
            logger.removeFilter(limiter)

    return undo
