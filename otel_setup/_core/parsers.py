"""Value parsers: each turns one raw setting into its typed value, or says why not.

A parser takes the raw value (a string from the environment, or whatever a
keyword argument received) and the name to blame, and returns the typed value
or raises :class:`OtelSetupConfigError` naming that variable or keyword, the
value (masked when it may hold a secret) and what is allowed. Parsers read
nothing themselves; :mod:`otel_setup._core.settings` decides what they see.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Final, Protocol, TypeVar
from urllib.parse import unquote, urlsplit

from otel_setup._core.errors import OtelSetupConfigError
from otel_setup._core.prices import load_price_table

T_co = TypeVar("T_co", covariant=True)


class Parser(Protocol[T_co]):
    """What every parser is: (raw value, name to blame) -> typed value."""

    def __call__(self, value: object, name: str, /) -> T_co: ...


_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off", ""})


def string(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise OtelSetupConfigError(name, value, "a string")
    return value.strip()


def optional_string(value: object, name: str) -> str | None:
    if value is None:
        return None
    text = string(value, name)
    return text or None


CREDENTIAL_PROVIDERS: Final = "opentelemetry_otlp_credential_provider"
"""The entry-point group whose callables give the SDK's HTTP exporters a ``requests.Session``."""


def credential_provider(value: object, name: str) -> str | None:
    """The name of an installed credential-provider entry point (checked at startup, not at first export)."""
    text = optional_string(value, name)
    if text is None:
        return None
    from importlib.metadata import entry_points

    installed = sorted({point.name for point in entry_points(group=CREDENTIAL_PROVIDERS)})
    if text not in installed:
        listed = f"one of {', '.join(installed)}" if installed else "none is installed"
        allowed = f"the name of an installed {CREDENTIAL_PROVIDERS} entry point ({listed})"
        raise OtelSetupConfigError(name, value, allowed)
    return text


def boolean(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise OtelSetupConfigError(name, value, "true or false")


def ratio(value: object, name: str) -> float:
    allowed = "a number between 0 and 1"
    try:
        number = float(value) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else math.nan
    except ValueError:
        raise OtelSetupConfigError(name, value, allowed) from None
    if not 0.0 <= number <= 1.0:  # also rejects NaN
        raise OtelSetupConfigError(name, value, allowed)
    return number


def positive_seconds(limit: float) -> Callable[[object, str], float]:
    def coerce(value: object, name: str) -> float:
        allowed = f"a number of seconds greater than 0 and at most {limit:g}"
        try:
            number = float(value) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else math.nan
        except ValueError:
            raise OtelSetupConfigError(name, value, allowed) from None
        if not 0.0 < number <= limit:
            raise OtelSetupConfigError(name, value, allowed)
        return number

    return coerce


def whole_number(low: int, high: int, allowed: str) -> Callable[[object, str], int]:
    def coerce(value: object, name: str) -> int:
        try:
            number = int(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else low - 1
        except ValueError:
            raise OtelSetupConfigError(name, value, allowed) from None
        if not low <= number <= high:
            raise OtelSetupConfigError(name, value, allowed)
        return number

    return coerce


milliseconds: Final = whole_number(100, 3_600_000, "a whole number of milliseconds between 100 and 3600000")
buffer_ms: Final = whole_number(
    0, 10_000, "a whole number of milliseconds between 0 (every line written at once) and 10000"
)
positive_int: Final = whole_number(1, sys.maxsize, "a whole number greater than 0")


def switch_interval(value: object, name: str) -> float:
    allowed = "milliseconds between 0.1 and 5 (CPython's default is 5), or 0 to leave the interpreter's setting alone"
    try:
        number = float(value) if isinstance(value, (int, float, str)) and not isinstance(value, bool) else -1.0
    except ValueError:
        raise OtelSetupConfigError(name, value, allowed) from None
    if number != 0 and not 0.1 <= number <= 5:
        raise OtelSetupConfigError(name, value, allowed)
    return number


port: Final = whole_number(1, 65535, "a TCP port between 1 and 65535")


def optional_port(value: object, name: str) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return port(value, name)


def choice(choices: Sequence[str]) -> Callable[[object, str], str]:
    def coerce(value: object, name: str) -> str:
        text = string(value, name).lower()
        if text not in choices:
            raise OtelSetupConfigError(name, value, "one of " + ", ".join(choices))
        return text

    return coerce


def optional_choice(choices: Sequence[str]) -> Callable[[object, str], str | None]:
    strict = choice(choices)

    def coerce(value: object, name: str) -> str | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return strict(value, name)

    return coerce


def choices(choices: Sequence[str]) -> Callable[[object, str], tuple[str, ...] | None]:
    def coerce(value: object, name: str) -> tuple[str, ...] | None:
        if value is None:
            return None
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise OtelSetupConfigError(name, value, "a comma-separated list of " + ", ".join(choices))
        picked: list[str] = []
        for item in items:
            text = str(item).strip().lower()
            if not text:
                continue
            if text not in choices:
                raise OtelSetupConfigError(name, value, "a comma-separated list of " + ", ".join(choices))
            if text not in picked:
                picked.append(text)
        return tuple(picked) if picked else None

    return coerce


KEEP_REASONS: Final = ("errors", "slow")


def keep(value: object, name: str) -> tuple[str, ...]:
    """``errors``, ``slow``, both (comma list), or ``none``: which unsampled traces are kept whole."""
    allowed = "a comma list of errors, slow, or none"
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise OtelSetupConfigError(name, value, allowed)
    picked = [str(item).strip().lower() for item in items if str(item).strip()]
    if not picked or picked == ["none"]:
        return ()
    if any(item not in KEEP_REASONS for item in picked):
        raise OtelSetupConfigError(name, value, allowed)
    return tuple(reason for reason in KEEP_REASONS if reason in picked)


def names(value: object, name: str) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset(part.strip().lower() for part in value.split(",") if part.strip())
    if isinstance(value, (list, tuple, set, frozenset)):
        return frozenset(str(part).strip().lower() for part in value)
    raise OtelSetupConfigError(name, value, "a comma-separated list of names")


def mask_url(url: str) -> str:
    """Hide userinfo so an error message never prints a credential."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return parts._replace(netloc=f"REDACTED@{host}{port}").geturl()


def endpoint(value: object, name: str) -> str | None:
    if value is None:
        return None
    text = string(value, name)
    if not text:
        return None
    allowed = "an http:// or https:// URL with a host, such as http://127.0.0.1:4318"
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise OtelSetupConfigError(name, mask_url(text) if "@" in text else text, allowed) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OtelSetupConfigError(name, mask_url(text), allowed)
    return text


def key_values(secret: bool) -> Callable[[object, str], dict[str, str]]:
    def coerce(value: object, name: str) -> dict[str, str]:
        if value is None:
            return {}
        if isinstance(value, Mapping):
            return {str(k): str(v) for k, v in value.items()}
        text = string(value, name)
        result: dict[str, str] = {}
        for pair in text.split(","):
            if not pair.strip():
                continue
            key, sep, item = pair.partition("=")
            if not sep or not key.strip():
                shown = "<hidden>" if secret else value
                raise OtelSetupConfigError(name, shown, "comma-separated key=value pairs")
            result[unquote(key.strip())] = unquote(item.strip())
        return result

    return coerce


def patterns(value: object, name: str) -> tuple[re.Pattern[str], ...]:
    if value is None:
        return ()
    items = [p for p in value.split(",")] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise OtelSetupConfigError(name, value, "a comma-separated list of path regular expressions")
    compiled: list[re.Pattern[str]] = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        try:
            compiled.append(re.compile(text))
        except re.error:
            raise OtelSetupConfigError(
                name, value, "valid regular expressions matched against the whole path"
            ) from None
    return tuple(compiled)


def path(value: object, name: str) -> str | None:
    """A URL path to serve on, or None (also from ``False``/``""``) for off."""
    if value is None or value is False:
        return None
    text = string(value, name)
    if not text or text.lower() in ("off", "false", "none"):
        return None
    if not text.startswith("/") or any(c in text for c in "?#{} "):
        raise OtelSetupConfigError(name, value, "a path starting with '/', or 'off'")
    return text.rstrip("/") or "/"


# --- GW2, GenAI and cache settings


def price_source(value: object, name: str) -> str | Mapping[str, object] | None:
    """A price-table override: a JSON file path, or a mapping; checked now, at startup."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        source: str | Mapping[str, object] = {str(key): item for key, item in value.items()}
    else:
        text = string(value, name)
        if not text:
            return None
        source = text
    load_price_table(source, name)  # raises OtelSetupConfigError naming ``name``
    return source


def prefixes(value: object, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(item, str) for item in items):
        raise OtelSetupConfigError(name, value, "a comma-separated list of Redis key prefixes, such as gw2:account:")
    return tuple(sorted({item.strip() for item in items if item.strip()}, key=len, reverse=True))


def trust(value: object, name: str) -> tuple[str, ...]:
    """``all``, ``none``, or origins (``https://app.example``) and networks (``10.0.0.0/8``)."""
    import ipaddress

    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise OtelSetupConfigError(name, value, "all, none, or a comma list of origins and CIDR networks")
    picked = tuple(str(item).strip() for item in items if str(item).strip())
    allowed = "all, none, or a comma list of origins (https://app.example) and CIDR networks (10.0.0.0/8)"
    if not picked:
        return ("none",)
    if len(picked) == 1 and picked[0].lower() in ("all", "none"):
        return (picked[0].lower(),)
    for item in picked:
        if item.startswith(("http://", "https://")):
            parts = urlsplit(item)
            if not parts.hostname or parts.path not in ("", "/"):
                raise OtelSetupConfigError(name, value, allowed)
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise OtelSetupConfigError(name, value, allowed) from None
    return picked


# --- redaction, header capture, propagation and /metrics access


def _split_patterns(text: str) -> list[str]:
    """Comma-separated regular expressions; commas inside (), [] or {} belong to the pattern."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
            continue
        if char == "\\":
            escaped = True
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def regexes(value: object, name: str) -> tuple[str, ...]:
    """Extra secret patterns: each must compile and must not match the empty string."""
    if value is None:
        return ()
    items = _split_patterns(value) if isinstance(value, str) else value
    allowed = "comma-separated regular expressions that cannot match an empty string"
    if not isinstance(items, (list, tuple)):
        raise OtelSetupConfigError(name, value, allowed)
    picked: list[str] = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        try:
            compiled = re.compile(text)
        except re.error:
            raise OtelSetupConfigError(name, value, allowed) from None
        if compiled.fullmatch("") is not None:
            raise OtelSetupConfigError(name, value, allowed)
        picked.append(text)
    return tuple(picked)


NO_HEADERS: Final[dict[str, frozenset[str]]] = {"server": frozenset(), "client": frozenset()}
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]+")


def header_capture(value: object, name: str) -> dict[str, frozenset[str]]:
    """``x-request-id,server:user-agent,client:x-ratelimit-remaining`` -> names per side."""
    captured: dict[str, set[str]] = {"server": set(), "client": set()}
    if value is None:
        return {side: frozenset(names) for side, names in captured.items()}
    items = value.split(",") if isinstance(value, str) else value
    allowed = "a comma list of header names (no wildcards), each optionally prefixed by server: or client:"
    if not isinstance(items, (list, tuple, set, frozenset)):
        raise OtelSetupConfigError(name, value, allowed)
    for item in items:
        text = str(item).strip().lower()
        if not text:
            continue
        side, sep, header = text.partition(":")
        sides = (side,) if sep else ("server", "client")
        header = header if sep else text
        header = header.strip()
        if (sep and side not in captured) or not _HEADER_NAME.fullmatch(header) or header in ("*", ".*"):
            raise OtelSetupConfigError(name, value, allowed)
        for chosen in sides:
            captured[chosen].add(header)
    return {side: frozenset(names) for side, names in captured.items()}


def hosts(value: object, name: str) -> tuple[str, ...]:
    """``internal``, ``all``, ``none``, host names, ``*.suffix`` wildcards and CIDR networks."""
    import ipaddress

    items = value.split(",") if isinstance(value, str) else value
    allowed = "internal, all, none, or a comma list of those, host names, *.suffix wildcards and CIDR networks"
    if not isinstance(items, (list, tuple)):
        raise OtelSetupConfigError(name, value, allowed)
    picked = tuple(str(item).strip().lower() for item in items if str(item).strip())
    if not picked:
        return ("none",)
    for item in picked:
        if item in ("internal", "all", "none"):
            continue
        host = item[2:] if item.startswith("*.") else item.lstrip(".")
        try:
            ipaddress.ip_network(host, strict=False)
            continue
        except ValueError:
            pass
        if not re.fullmatch(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*\.?", host):
            raise OtelSetupConfigError(name, value, allowed)
    return picked


def token(value: object, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise OtelSetupConfigError(name, "<hidden>", "a string")
    text = value.strip()
    if not text:
        return None
    if len(text) < 16 or any(c.isspace() for c in text):
        raise OtelSetupConfigError(name, "<hidden>", "a token of at least 16 characters without spaces")
    return text
