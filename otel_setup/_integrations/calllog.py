"""Structured log events for database queries, AI calls, cache operations and GW2 calls.

Metrics answer "how many, how slow" with bounded labels; a log event answers
"which call, with how many tokens, at what cost, which (hashed) key". The
events go through the standard library (and so through the package's
structlog chain: JSON, trace ids, redaction) on one logger per kind of call:
``otel_setup.db``, ``otel_setup.genai``, ``otel_setup.cache`` and
``otel_setup.gw2``.

They are written at ``OTEL_SETUP_CALL_LOG_LEVEL`` (``debug`` by default),
below the root logger's default ``info``, so a service pays for them only
when it asks for them. Every call site checks :meth:`CallLog.enabled` before
building a single field: when the events are off, the cost per query,
command or call is that check (``Logger.isEnabledFor`` answers from a
per-level cache). Slow queries are the exception: they are written at
WARNING whatever this level, like slow requests.

Fields never hold a raw cache key (a 16-hex-digit SHA-256 prefix instead), a
prompt, a completion, a character name, a guild id or an SQL literal.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from otel_setup._core.options import GenAICall, GW2Call

__all__ = ["CACHE", "DB", "GENAI", "GW2", "CallLog", "genai_fields", "gw2_fields", "set_call_log_level", "span_ids"]

_LEVELS: Final = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class CallLog:
    """One kind of call: its logger and the level its events are written at."""

    __slots__ = ("level", "logger", "on")

    def __init__(self, name: str) -> None:
        self.logger = logging.getLogger(name)
        self.level = logging.DEBUG
        self.on = True

    def enabled(self) -> bool:
        """Whether an event would be written; the only work done per call when it would not."""
        return self.on and self.logger.isEnabledFor(self.level)

    def write(self, event: str, fields: dict[str, Any], level: int | None = None) -> None:
        """Emit ``event`` with ``fields`` as structured data (``extra``: one key per field)."""
        self.logger.log(self.level if level is None else level, event, extra=fields)


DB: Final = CallLog("otel_setup.db")
GENAI: Final = CallLog("otel_setup.genai")
CACHE: Final = CallLog("otel_setup.cache")
GW2: Final = CallLog("otel_setup.gw2")


def set_call_log_level(level: str) -> None:
    """``debug``/``info``/``warning``/``error``, or ``off``; set by ``configure()``."""
    for log in (DB, GENAI, CACHE, GW2):
        log.on = level != "off"
        log.level = _LEVELS.get(level, logging.DEBUG)


def span_ids(span: Any) -> dict[str, str]:
    """The call's own span ids, which win over the current (parent) span's in the log line."""
    context = span.get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": format(context.trace_id, "032x"), "span_id": format(context.span_id, "016x")}


def _without_none(fields: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


def gw2_fields(record: GW2Call) -> dict[str, Any]:
    """A GW2 call as log fields: the endpoint template, never the path with its names and ids."""
    return _without_none(
        {
            "url.template": record.endpoint,
            "http.request.method": record.method,
            "http.response.status_code": record.status_code,
            "error.type": record.error_type,
            "gw2.error.reason": record.error_reason,
            "duration_ms": round(record.duration_s * 1000.0, 3),
        }
    )


def genai_fields(record: GenAICall) -> dict[str, Any]:
    """An AI call as log fields: model, tokens, cost and latency; never the prompt or completion."""
    return _without_none(
        {
            "gen_ai.provider.name": record.provider,
            "gen_ai.operation.name": record.operation,
            "gen_ai.request.model": record.request_model,
            "gen_ai.response.model": record.response_model,
            "gen_ai.usage.input_tokens": record.input_tokens,
            "gen_ai.usage.output_tokens": record.output_tokens,
            "gen_ai.usage.cache_read.input_tokens": record.cached_input_tokens,
            "cost_usd": record.cost_usd,
            "otel_setup.genai.price_model": record.price_model,
            "http.response.status_code": record.status_code,
            "error.type": record.error_type,
            "streamed": record.streamed,
            "usage_reported": record.usage_reported,
            "duration_ms": round(record.duration_s * 1000.0, 3),
        }
    )
