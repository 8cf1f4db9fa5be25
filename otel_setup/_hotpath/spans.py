"""Recording an exception on a span without leaking secrets or flooding the limit warnings."""

from __future__ import annotations

import traceback
from typing import Final

from opentelemetry.trace import Span, Status, StatusCode

from otel_setup._security.redaction import redact_text

__all__ = ["record_error"]

# The tail of a stack trace names the failing frame; keep it when trimming.
_STACKTRACE_LIMIT: Final = 2000


def record_error(span: Span, error: BaseException, *, escaped: bool = True) -> None:
    """An ``exception`` event (semconv attributes, redacted, bounded) and ERROR status."""
    # Redact first, then trim: a trim must never leave a piece of a secret.
    stacktrace = redact_text("".join(traceback.format_exception(type(error), error, error.__traceback__)))
    if len(stacktrace) > _STACKTRACE_LIMIT:
        stacktrace = "..." + stacktrace[-_STACKTRACE_LIMIT:]
    message = redact_text(str(error))[:_STACKTRACE_LIMIT]
    span.add_event(
        "exception",
        {
            "exception.type": f"{type(error).__module__}.{type(error).__qualname__}"
            if type(error).__module__ != "builtins"
            else type(error).__qualname__,
            "exception.message": message,
            "exception.stacktrace": stacktrace,
            "exception.escaped": escaped,
        },
    )
    span.set_status(Status(StatusCode.ERROR))
