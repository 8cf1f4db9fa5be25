"""What a GenAI call's response says, read without its content: usage, model, finish reasons, limits.

The body is fed as the caller reads it (``observe_body``): a Chat Completions
or Responses object, or a server-sent event stream whose final event carries
the usage. Reads are bounded; an encoding without a decoder here (br, zstd)
leaves the usage unknown rather than guessed. The ``x-ratelimit-*`` headers
are parsed tolerantly: absent, negative or malformed values give nothing.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

__all__ = ["BodyReader", "Result", "parse_duration", "parse_rate_limits"]

_MAX_RESPONSE_BODY: Final = 8 << 20
_MAX_ERROR_BODY: Final = 64 << 10
_MAX_SSE_LINE: Final = 1 << 20
_RATE_LIMIT_KINDS: Final = ("requests", "tokens")


_DURATION_UNITS: Final = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(text: str | None) -> float | None:
    """Seconds from Go-style durations (``6m0s``, ``12ms``, ``1h2m3.5s``) or a plain number.

    Negative, empty or malformed values give None: a gauge is better unset than wrong.
    """
    text = (text or "").strip()
    if not text:
        return None
    try:
        plain = float(text)
    except ValueError:
        return _go_duration(text)
    return plain if plain >= 0 and math.isfinite(plain) else None


def _go_duration(text: str) -> float | None:
    """``<number><unit>`` repeated; any other shape is None."""
    total, index, length = 0.0, 0, len(text)
    while index < length:
        start = index
        while index < length and (text[index].isdigit() or text[index] == "."):
            index += 1
        unit_start = index
        while index < length and not (text[index].isdigit() or text[index] == "."):
            index += 1
        factor = _DURATION_UNITS.get(text[unit_start:index])
        try:
            number = float(text[start:unit_start]) if factor is not None else math.nan
        except ValueError:
            number = math.nan
        if math.isnan(number):
            return None
        total += number * (factor or 0.0)
    return total


def _count(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        number = int(text.strip())
    except ValueError:
        return None
    return number if number >= 0 else None


def parse_rate_limits(headers: Mapping[str, str]) -> dict[tuple[str, str], float]:
    """``{("limit"|"remaining"|"reset", "requests"|"tokens"): value}`` for the usable headers only."""
    found: dict[tuple[str, str], float] = {}
    for kind in _RATE_LIMIT_KINDS:
        for measure in ("limit", "remaining"):
            value = _count(headers.get(f"x-ratelimit-{measure}-{kind}"))
            if value is not None:
                found[(measure, kind)] = float(value)
        reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
        if reset is not None:
            found[("reset", kind)] = reset
    return found


@dataclass
class Result:
    """What the response said; content is never kept."""

    response_model: str | None = None
    response_id: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None
    finish_reasons: list[str] = field(default_factory=list)
    error_code: str | None = None
    unreadable: bool = False


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _read_usage(result: Result, usage: Any) -> None:
    if not isinstance(usage, Mapping):
        return
    result.input_tokens = _int(usage.get("prompt_tokens", usage.get("input_tokens")))
    result.output_tokens = _int(usage.get("completion_tokens", usage.get("output_tokens")))
    details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details")
    if isinstance(details, Mapping):
        result.cached_tokens = _int(details.get("cached_tokens"))


def _read_finish_reasons(result: Result, body: Mapping[str, Any]) -> None:
    """Chat's ``choices[].finish_reason``; for a Responses object, its status mapped to the same words."""
    choices = body.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            reason = choice.get("finish_reason") if isinstance(choice, Mapping) else None
            if isinstance(reason, str) and reason not in result.finish_reasons and len(result.finish_reasons) < 8:
                result.finish_reasons.append(reason[:64])
    status = body.get("status")
    if body.get("object") == "response" and isinstance(status, str):
        incomplete = body.get("incomplete_details")
        reason = incomplete.get("reason") if isinstance(incomplete, Mapping) else None
        if status == "completed":
            result.finish_reasons = ["stop"]
        elif reason == "max_output_tokens":
            result.finish_reasons = ["length"]
        elif isinstance(reason, str):
            result.finish_reasons = [reason[:64]]


def _read_object(result: Result, body: Any) -> None:
    """A chat completion, a streamed chunk, or a Responses object; content is never read."""
    if not isinstance(body, Mapping):
        return
    model = body.get("model")
    if isinstance(model, str) and model:
        result.response_model = model[:256]
    identifier = body.get("id")
    if isinstance(identifier, str) and identifier:
        result.response_id = identifier[:256]
    _read_finish_reasons(result, body)
    if "usage" in body:
        _read_usage(result, body["usage"])
    error = body.get("error")
    if isinstance(error, Mapping):
        code = error.get("code") or error.get("type")
        if isinstance(code, str):
            result.error_code = code[:64]


class Completes(Protocol):
    def complete(self, status: int | None, result: Result, error: BaseException | None) -> None:
        """The body is read (or failed): record everything once."""


class BodyReader:
    """Fed raw body chunks; keeps only what usage and finish reasons need, within bounds."""

    def __init__(self, call: Completes, status: int, headers: Any) -> None:
        self._call = call
        self._status = status
        self.result = Result()
        content_type = headers.get("content-type", "")
        self._sse = status == 200 and content_type.startswith("text/event-stream")
        self._limit = _MAX_RESPONSE_BODY if status < 400 else _MAX_ERROR_BODY
        encoding = headers.get("content-encoding", "").strip().lower()
        self._decoder: Any = None
        if encoding in ("gzip", "deflate"):
            self._decoder = zlib.decompressobj(wbits=47)  # gzip or zlib header, detected
        elif encoding not in ("", "identity"):
            self.result.unreadable = True  # br/zstd: no decoder here; usage stays unknown
        self._buffer = bytearray()
        self._size = 0

    def feed(self, chunk: bytes) -> None:
        if self.result.unreadable or not chunk:
            return
        if self._decoder is not None:
            try:
                chunk = self._decoder.decompress(chunk, _MAX_RESPONSE_BODY)
            except zlib.error:
                self.result.unreadable = True
                return
        self._size += len(chunk)
        if not self._sse:
            if self._size > self._limit:
                self.result.unreadable = True
                self._buffer.clear()
                return
            self._buffer += chunk
            return
        self._buffer += chunk
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                break
            line = bytes(self._buffer[:end]).rstrip(b"\r")
            del self._buffer[: end + 1]
            self._event_line(line)
        if len(self._buffer) > _MAX_SSE_LINE:
            self.result.unreadable = True
            self._buffer.clear()

    def _event_line(self, line: bytes) -> None:
        if not line.startswith(b"data:"):
            return
        data = line[5:].strip()
        if not data or data == b"[DONE]":
            return
        try:
            event = json.loads(data)
        except ValueError:
            return
        if not isinstance(event, Mapping):
            return
        kind = event.get("type")
        if isinstance(kind, str) and kind.startswith("response."):
            # Responses API events; only the final ones carry the usage (and model, status).
            if kind in ("response.completed", "response.incomplete", "response.failed", "response.created"):
                _read_object(self.result, event.get("response"))
            return
        _read_object(self.result, event)

    def done(self, error: BaseException | None) -> None:
        if not self._sse and self._buffer and not self.result.unreadable:
            try:
                _read_object(self.result, json.loads(bytes(self._buffer)))
            except ValueError:
                self.result.unreadable = True
        elif self._sse and self._buffer:
            self._event_line(bytes(self._buffer).rstrip(b"\r"))
        self._buffer.clear()
        self._call.complete(self._status, self.result, error)
