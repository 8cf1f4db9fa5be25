"""GW2 API calls: spans and metrics named by endpoint template, never by identifier.

GW2 paths carry user identifiers (``/v2/characters/Aurora Lightbringer``,
``/v2/guild/<guild id>/log``), and character names are untrusted text. Contrib
would name the span ``GET`` and leave the path out of the metric; raw paths
would put names into labels. Here every call to ``api.guildwars2.com`` (or the
configured ``GW2_API_BASE``) gets:

* a client span ``GET /v2/characters/{name}`` with ``url.template``, the stable
  HTTP client attributes, and ``url.full`` rebuilt from the template (so the
  name is not in it either);
* ``http.client.request.duration`` with ``url.template`` (the one instrument every httpx call records into);
* ``gw2.api.requests``: a counter by template, method and status, so 429 (rate
  limited; the upstream bucket is 300 burst, 5 per second) and 403 are visible
  on their own. For 403 the small error body is read as the caller reads it, to
  tell ``invalid key`` (sometimes spurious upstream) from a missing scope.

No ``traceparent`` is sent to GW2, and no other HTTP instrumentation adds a span to these calls.
Templates are computed by splitting the path, not by regular expressions, and
are bounded: unknown top-level endpoints become ``/v2/_OTHER``.
"""

from __future__ import annotations

import json
import logging
from time import perf_counter
from typing import Any, Final
from urllib.parse import urlsplit

from opentelemetry.metrics import Counter, Histogram, MeterProvider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, TracerProvider

from otel_setup._core.options import GW2Call, emit_call
from otel_setup._hotpath.keep import KeepingTracer
from otel_setup._integrations import calllog
from otel_setup._integrations.httpx import (
    add_api_handler,
    client_duration_histogram,
    observe_body,
    protocol_version,
    remove_api_handler,
    request_attributes,
)
from otel_setup._security.redaction import redact_query
from otel_setup.version import __version__

__all__ = ["GW2_HOST", "endpoint_template", "error_reason", "instrument_gw2", "uninstrument_gw2"]

_log = logging.getLogger("otel_setup")
_SCOPE_NAME: Final = "otel_setup.gw2"
GW2_HOST: Final = "api.guildwars2.com"
OTHER: Final = "_OTHER"
_MAX_SEGMENTS: Final = 6
_MAX_ERROR_BODY: Final = 4096

# Top-level v2 endpoints (https://api.guildwars2.com/v2). Anything else is ``/v2/_OTHER``,
# which keeps the label set bounded whatever path the caller builds.
_ROOTS: Final = frozenset(
    [
        "account",
        "achievements",
        "backstory",
        "build",
        "characters",
        "colors",
        "commerce",
        "continents",
        "createsubtoken",
        "currencies",
        "dailycrafting",
        "dungeons",
        "emblem",
        "emotes",
        "files",
        "finishers",
        "gliders",
        "guild",
        "home",
        "homestead",
        "items",
        "itemstats",
        "jadebots",
        "legendaryarmory",
        "legends",
        "mailcarriers",
        "mapchests",
        "maps",
        "masteries",
        "materials",
        "minis",
        "mounts",
        "novelties",
        "outfits",
        "pets",
        "professions",
        "pvp",
        "quaggans",
        "quests",
        "races",
        "raids",
        "recipes",
        "skiffs",
        "skills",
        "skins",
        "specializations",
        "stories",
        "titles",
        "tokeninfo",
        "traits",
        "wizardsvault",
        "worldbosses",
        "worlds",
        "wvw",
    ]
)
# Where an identifier sits whatever it looks like: character names can be plain lowercase words.
_IDENTIFIER_AT: Final = {"characters": (2, "{name}"), "guild": (2, "{id}")}
_GUILD_LITERALS: Final = frozenset({"search", "upgrades", "permissions"})

# 403 texts (https://wiki.guildwars2.com/wiki/API:2) -> a bounded reason.
_REASONS: Final = (
    ("invalid key", "invalid_key"),
    ("endpoint requires authentication", "requires_authentication"),
    ("requires scope", "requires_scope"),
    ("membership required", "membership_required"),
    ("access restricted to guild leaders", "guild_leader_required"),
)


def _is_word(segment: str) -> bool:
    """A literal sub-resource such as ``bank`` or ``log``: short, ASCII, lowercase letters and ``_``."""
    return 0 < len(segment) <= 32 and segment.isascii() and segment.islower() and segment.replace("_", "a").isalpha()


def endpoint_template(path: str) -> str:
    """``/v2/characters/Aurora%20Lightbringer/equipment`` -> ``/v2/characters/{name}/equipment``."""
    segments = path.strip("/").split("/")
    if not segments or segments[0] != "v2":
        return OTHER
    if len(segments) == 1:
        return "/v2"
    root = segments[1]
    if root not in _ROOTS:
        return "/v2/" + OTHER
    identifier = _IDENTIFIER_AT.get(root)
    parts = ["", "v2", root]
    for index in range(2, min(len(segments), _MAX_SEGMENTS)):
        segment = segments[index]
        if identifier is not None and index == identifier[0]:
            parts.append(segment if root == "guild" and segment in _GUILD_LITERALS else identifier[1])
        else:
            parts.append(segment if _is_word(segment) else "{id}")
    if len(segments) > _MAX_SEGMENTS:
        parts.append("...")
    return "/".join(parts)


def error_reason(status: int, body: bytes) -> str | None:
    """The kind of a 403 from its ``{"text": ...}`` body; None for other statuses."""
    if status != 403:
        return None
    try:
        text = json.loads(body).get("text", "")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return "other"
    if not isinstance(text, str):
        return "other"
    text = text.lower()
    for needle, reason in _REASONS:
        if text.startswith(needle):
            return reason
    return "other"


class _Instruments:
    def __init__(self, tracer: Tracer, duration: Histogram, requests: Counter) -> None:
        self.tracer = tracer
        self.duration = duration
        self.requests = requests


class _ErrorBody:
    """Collects a 403 body (bounded), then finishes the call with its reason."""

    def __init__(self, call: _GW2Call) -> None:
        self._call = call
        self._body = bytearray()

    def feed(self, chunk: bytes) -> None:
        if len(self._body) < _MAX_ERROR_BODY:
            self._body += chunk[: _MAX_ERROR_BODY - len(self._body)]

    def done(self, error: BaseException | None) -> None:
        reason = error_reason(403, bytes(self._body)) if error is None else "other"
        self._call.complete(403, reason)


class _GW2Call:
    def __init__(self, instruments: _Instruments, span: Span, attributes: dict[str, Any], template: str) -> None:
        self._instruments = instruments
        self._span = span
        self._attributes = attributes  # metric attributes, completed with the response
        self._template = template
        self._start = perf_counter()
        self._duration: float | None = None

    def finish(self, response: Any) -> None:
        try:
            status = int(response.status_code)
            self._duration = perf_counter() - self._start
            attributes = self._attributes
            attributes["http.response.status_code"] = status
            version = protocol_version(response)
            if version:
                attributes["network.protocol.version"] = version
            if status >= 400:
                attributes["error.type"] = str(status)
            self._instruments.duration.record(self._duration, attributes)
            span = self._span
            if span.is_recording():
                span.set_attribute("http.response.status_code", status)
                if version:
                    span.set_attribute("network.protocol.version", version)
                if status >= 400:
                    span.set_attribute("error.type", str(status))
                    span.set_status(Status(StatusCode.ERROR))
            if status == 403:
                observe_body(response, _ErrorBody(self))
            else:
                self.complete(status, None)
        except Exception:  # noqa: BLE001 - never break a request for telemetry
            _log.debug("otel_setup: gw2 telemetry failed", exc_info=True)

    def fail(self, error: BaseException) -> None:
        try:
            self._duration = perf_counter() - self._start
            error_type = type(error).__qualname__
            self._attributes["error.type"] = error_type
            self._instruments.duration.record(self._duration, self._attributes)
            if self._span.is_recording():
                self._span.set_attribute("error.type", error_type)
                self._span.record_exception(error)  # httpx messages carry the URL: redacted by the scrubbing exporter
                self._span.set_status(Status(StatusCode.ERROR))
            self.complete(None, None)
        except Exception:  # noqa: BLE001
            _log.debug("otel_setup: gw2 telemetry failed", exc_info=True)

    def complete(self, status: int | None, reason: str | None) -> None:
        counted = {
            "url.template": self._template,
            "http.request.method": self._attributes["http.request.method"],
        }
        if status is not None:
            counted["http.response.status_code"] = status
        if "error.type" in self._attributes:
            counted["error.type"] = self._attributes["error.type"]
        if reason is not None:
            counted["gw2.error.reason"] = reason
            if self._span.is_recording():
                self._span.set_attribute("gw2.error.reason", reason)
        self._instruments.requests.add(1, counted)
        self._span.end()
        record = GW2Call(
            endpoint=self._template,
            method=str(counted["http.request.method"]),
            status_code=status,
            error_type=self._attributes.get("error.type"),
            error_reason=reason,
            duration_s=self._duration or 0.0,
        )
        emit_call(record)
        if calllog.GW2.enabled():
            calllog.GW2.write("gw2 call", {**calllog.gw2_fields(record), **calllog.span_ids(self._span)})


class GW2Handler:
    """Claims requests to the GW2 hosts; the check is a set lookup on the host."""

    def __init__(self, instruments: _Instruments, extra_base: str | None) -> None:
        self._instruments = instruments
        # host -> [(port or None for any, path prefix)]
        self._bases: dict[str, list[tuple[int | None, str]]] = {GW2_HOST: [(None, "")]}
        if extra_base:
            parts = urlsplit(extra_base)
            host = (parts.hostname or "").lower()
            port = parts.port or (443 if parts.scheme == "https" else 80)
            self._bases.setdefault(host, []).insert(0, (port, parts.path.rstrip("/")))

    def begin(self, request: Any) -> _GW2Call | None:
        url = request.url
        bases = self._bases.get(url.host)
        if bases is None:
            return None
        path = url.raw_path.partition(b"?")[0].decode("ascii", "replace")  # still encoded: %2F stays in its segment
        port = url.port or (443 if url.scheme == "https" else 80)
        for base_port, prefix in bases:
            if (base_port is None or base_port == port) and path.startswith(prefix):
                break
        else:
            return None
        template = endpoint_template(path[len(prefix) :])
        attributes = request_attributes(request)
        method = attributes["http.request.method"]
        span_attributes = dict(attributes)
        span_attributes["url.template"] = template
        span_attributes["url.scheme"] = url.scheme
        query = url.query.decode("ascii", "replace") if url.query else ""
        span_attributes["url.full"] = f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}{prefix}{template}" + (
            f"?{redact_query(query)}" if query else ""
        )
        span = self._instruments.tracer.start_span(
            f"{method} {template}", kind=SpanKind.CLIENT, attributes=span_attributes
        )
        attributes["url.template"] = template
        return _GW2Call(self._instruments, span, attributes, template)


_handlers: list[GW2Handler] = []


def instrument_gw2(*, tracer_provider: TracerProvider, meter_provider: MeterProvider, api_base: str | None) -> bool:
    """Returns False when httpx is missing or this ran already."""
    if _handlers:
        return False
    try:
        import httpx  # noqa: F401
    except ImportError:
        return False
    meter = meter_provider.get_meter(_SCOPE_NAME, __version__)
    instruments = _Instruments(
        tracer=KeepingTracer(tracer_provider.get_tracer(_SCOPE_NAME, __version__), _SCOPE_NAME),
        duration=client_duration_histogram(meter_provider),
        requests=meter.create_counter(
            "gw2.api.requests",
            unit="{request}",
            description="Requests to the GW2 API by endpoint template and outcome (429: rate limited).",
        ),
    )
    handler = GW2Handler(instruments, api_base)
    _handlers.append(handler)
    add_api_handler(handler)
    return True


def uninstrument_gw2() -> None:
    while _handlers:
        remove_api_handler(_handlers.pop())
