"""The structlog processors every line runs through: trace ids, levels, static fields, redaction.

Plain callables over the event dict, shared by structlog events and stdlib
records (``foreign_pre_chain``), so both render the same fields.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, Final

import structlog
from opentelemetry import trace

from otel_setup._security.redaction import DEFAULT_REDACTOR, Redactor

__all__ = [
    "EXCEPTION_SPAN",
    "LEVELS",
    "LEVEL_NAMES",
    "add_trace_context",
    "failed_request_context",
    "redact_event",
    "redaction_processor",
    "shared_processors",
]

EventDict = MutableMapping[str, Any]
Processor = Callable[[Any, str, EventDict], EventDict]

LEVELS: Final = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
LEVEL_NAMES: Final = {value: name for name, value in LEVELS.items()}


EXCEPTION_SPAN: Final = "_otel_setup_span_context"
"""Set on an exception that left a request: the request's span context, for lines logged after the span ended."""


def failed_request_context(exc_info: Any) -> Any:
    """The span context of the request an exception escaped from (uvicorn logs it after the span ended)."""
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
        exc_info = exc_info[1]
    return getattr(exc_info, EXCEPTION_SPAN, None) if isinstance(exc_info, BaseException) else None


def add_trace_context(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """``trace_id`` and ``span_id`` (W3C hex) of the current span, or of the failed request a record is about."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        record = event_dict.get("_record")
        exc_info = event_dict.get("exc_info") or (record.exc_info if record is not None else None)
        if not exc_info:
            return event_dict
        context = failed_request_context(exc_info)
        if context is None:
            return event_dict
    event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
    event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict


_ANSI: Final = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _plain_server_fields(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """Server records (uvicorn's): no ``color_message`` (ANSI escapes), no trailing newline in the event."""
    event_dict.pop("color_message", None)
    event = event_dict.get("event")
    if isinstance(event, str) and (event.endswith(("\n", " ")) or "\x1b" in event):
        if event_dict.get("message") == event:  # the rendered copy another handler left on the record
            del event_dict["message"]
        event_dict["event"] = _ANSI.sub("", event).rstrip()
    return event_dict


def redaction_processor(redactor: Redactor) -> Processor:
    """A structlog processor applying ``redactor`` (the runtime table) to every field."""

    def redact_event(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
        """Secrets out of every field, at any depth (keys and values)."""
        for key, value in list(event_dict.items()):
            event_dict[key] = redactor.value(key, value)
        return event_dict

    return redact_event


redact_event: Final = redaction_processor(DEFAULT_REDACTOR)
"""The same with the default table, for chains built without ``configure()``."""


def _static_fields(fields: Mapping[str, Any]) -> Processor:
    def add_static_fields(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
        for key, value in fields.items():
            event_dict.setdefault(key, value)
        return event_dict

    return add_static_fields


def _level_name(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    level = event_dict.get("level")
    if isinstance(level, str):
        event_dict["level"] = level.lower()
    # stdlib records carry their rendered message twice (``event`` and ``message``).
    if event_dict.get("message") == event_dict.get("event"):
        event_dict.pop("message", None)
    return event_dict


def shared_processors(static: Mapping[str, Any]) -> list[Any]:
    """The chain structlog events and stdlib records both run before rendering."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        _level_name,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        _plain_server_fields,
        _level_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        _static_fields(static),
        add_trace_context,
    ]
