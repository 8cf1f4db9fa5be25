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
are bounded: unknown top-level endpoints become ``/v2/_OTHER``. The span and
metrics are :class:`~otel_setup.EndpointApi`'s, the public protocol any
upstream can use (``known_api.py``); this module gives the templates and reasons.
"""

from __future__ import annotations

import json
from typing import Final

from opentelemetry.trace import Span

from otel_setup._core.options import GW2Call, emit_call
from otel_setup._integrations import calllog
from otel_setup._integrations.known_api import EndpointApi, EndpointCall

__all__ = ["GW2_HOST", "GW2Api", "endpoint_template", "error_reason"]

GW2_HOST: Final = "api.guildwars2.com"
OTHER: Final = "_OTHER"
_MAX_SEGMENTS: Final = 6

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


class GW2Api(EndpointApi):
    """The GW2 API at ``api.guildwars2.com``, and at ``OTEL_SETUP_GW2_API_BASE`` when set."""

    name = "gw2"
    requests_description = "Requests to the GW2 API by endpoint template and outcome (429: rate limited)."
    error_body_statuses = frozenset({403})

    def __init__(self, extra_base: str | None = None) -> None:
        # The extra base first: a proxy on a shared host is matched before the defaults.
        super().__init__(*((extra_base,) if extra_base else ()), f"https://{GW2_HOST}", f"http://{GW2_HOST}")

    def template(self, path: str) -> str:
        return endpoint_template(path)

    def error_reason(self, status: int, body: bytes) -> str | None:
        return error_reason(status, body)

    def completed(self, call: EndpointCall, span: Span) -> None:
        record = GW2Call(
            endpoint=call.endpoint,
            method=call.method,
            status_code=call.status_code,
            error_type=call.error_type,
            error_reason=call.error_reason,
            duration_s=call.duration_s,
        )
        emit_call(record)
        if calllog.GW2.enabled():
            calllog.GW2.write("gw2 call", {**calllog.gw2_fields(record), **calllog.span_ids(span)})
