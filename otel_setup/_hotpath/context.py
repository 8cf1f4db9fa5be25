"""The current context in one C call, and the request's span made current in another.

``context.attach(trace.set_span_in_context(span))``, ``context.detach`` and
``context.get_current()`` go through two or three Python frames each; with
the default runtime context (a ``ContextVar`` holding immutable ``Context``
dicts) each is one method of that variable. The variable and the span's key
are learnt once through the public API (the token ``attach`` returns names
its variable), never from private attributes; any other runtime context
(``OTEL_PYTHON_CONTEXT``) keeps the API path.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context

__all__ = ["SPAN_KEY", "SpanActivation", "current_context", "holds_only_a_span"]

_log = logging.getLogger("otel_setup")

SPAN_KEY: Final = next(iter(trace.set_span_in_context(trace.INVALID_SPAN, Context())))
"""The context key of the current span, as the trace API stores it."""


def runtime_variable() -> contextvars.ContextVar[Context] | None:
    """The ``ContextVar`` behind ``attach``/``get_current``, when the runtime context is one."""
    probe = Context({SPAN_KEY: trace.INVALID_SPAN})
    token: Any = otel_context.attach(probe)
    try:
        var = getattr(token, "var", None)
        if (
            isinstance(token, contextvars.Token)
            and isinstance(var, contextvars.ContextVar)
            and var.get() is probe
            and otel_context.get_current() is probe
        ):
            return var
        return None
    finally:
        otel_context.detach(token)


_VARIABLE: Final = runtime_variable()

current_context: Callable[[], Context] = _VARIABLE.get if _VARIABLE is not None else otel_context.get_current
"""``opentelemetry.context.get_current``, without its Python frames when the runtime allows."""


def holds_only_a_span(context: Context) -> bool:
    """Nothing but the current span in ``context``: no suppression, baggage or propagation refusal to look up.

    Inside a request that is the usual context, so client instrumentations
    can skip half a dozen ``get_value`` calls with one ``len``.
    """
    return len(context) == 1 and SPAN_KEY in context


class SpanActivation:
    """``attach``/``detach`` of a span; ``var`` is None when the API path must be taken."""

    __slots__ = ("var",)

    def __init__(self, var: contextvars.ContextVar[Context] | None = _VARIABLE) -> None:
        self.var = var

    def attach(self, span: trace.Span, parent: Context | None = None) -> object:
        """The API path's result in one ``ContextVar.set``; returns the token for :meth:`detach`."""
        var = self.var
        if var is None:
            return otel_context.attach(trace.set_span_in_context(span, parent))
        base = var.get() if parent is None else parent
        return var.set(Context({**base, SPAN_KEY: span}) if base else Context({SPAN_KEY: span}))

    def detach(self, token: Any) -> None:
        var = self.var
        if var is None:
            otel_context.detach(token)
            return
        try:
            var.reset(token)
        except (ValueError, RuntimeError):  # the API logs the same failure and carries on
            _log.exception("otel_setup: failed to detach context")
