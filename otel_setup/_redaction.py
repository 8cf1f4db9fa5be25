"""One table of what counts as a secret, used by every telemetry channel.

Values are replaced by ``REDACTED`` and keys are kept (the semantic-conventions
style), so a reader still sees *that* a credential was sent and where. The
collector configs carry the same value patterns as a backstop; a test keeps
the two in step, and another keeps the README's lists equal to these.

The defaults are module constants; :class:`Redactor` is the runtime table:
the defaults plus the user's extra patterns, query parameters, key names and
callback. ``configure()`` builds one and hands the same object to every
channel (span and log exporters, structlog, Sentry, header capture), so there
is never a second list to keep in step. The module-level functions use the
defaults alone, for code that runs before or without ``configure()``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

__all__ = [
    "DEFAULT_REDACTOR",
    "DEFAULT_VALUE_PATTERNS",
    "REDACTED",
    "SENSITIVE_KEY_PATTERN",
    "SENSITIVE_QUERY_PARAMETERS",
    "RedactCallback",
    "Redactor",
    "is_sensitive_key",
    "redact_query",
    "redact_text",
    "redact_value",
]

_log = logging.getLogger("otel_setup")

REDACTED: Final = "REDACTED"

# Query parameters whose values are replaced, compared case-insensitively:
# the semantic-conventions list plus the names APIs of this stack use for
# keys and tokens (the GW2 API accepts its key as ``access_token``).
SENSITIVE_QUERY_PARAMETERS: Final = frozenset(
    name.lower()
    for name in (
        "AWSAccessKeyId",
        "Signature",
        "sig",
        "X-Amz-Signature",
        "X-Amz-Credential",
        "X-Amz-Security-Token",
        "X-Goog-Signature",
        "access_token",
        "token",
        "id_token",
        "refresh_token",
        "api_key",
        "apikey",
        "key",
        "code",
        "client_secret",
        "secret",
        "password",
        "auth",
        "signature",
        "session",
    )
)

# (name, regular expression) of secrets found anywhere inside a string.
DEFAULT_VALUE_PATTERNS: Final[tuple[tuple[str, str], ...]] = (
    (
        "gw2_key",
        r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{20}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}",
    ),
    ("jwt", r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}"),
    ("openai_key", r"sk-(proj-)?[A-Za-z0-9_-]{20,}"),
    ("bearer", r"(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,}"),
)

# Key names whose string values are secrets, matched anywhere in the key and
# case-insensitively (``X-Api-Key``, ``gw2_key``, ``headers.Authorization``).
# Numbers under such keys are kept: ``gen_ai.usage.input_tokens`` is a count.
SENSITIVE_KEY_PATTERN: Final = (
    r"pass(word|wd)?|secret|token|api[-_.]?key|authori[sz]ation|cookie|session|credential"
    r"|private[-_.]?key|gw2[-_.]?key|access[-_.]?key|^auth$|dsn"
)

RedactCallback = Callable[[str, str], str]
"""``(key, value) -> value``: the user's own rule, run on every string after the built-in ones.

It sees values already redacted by the table (so it can add redaction, never
undo it). ``key`` is the attribute, log field or event key; free text without
one is passed as ``span.name``, ``event.name``, ``status.description`` or
``log.body``.
"""

# Containers nested deeper than this are replaced whole: a value the redactor
# did not look at must not leave the process.
_MAX_DEPTH: Final = 12
_QUERY_PAIR_RE: Final = re.compile(r"([^&=;]+)=([^&;]*)")
_USERINFO_RE: Final = re.compile(r"(?<=://)[^/@\s:]+(?::[^/@\s]*)?@")
_KEY_CACHE_LIMIT: Final = 4096
_VALUE_CACHE_LIMIT: Final = 8192
_CACHED_VALUE_LENGTH: Final = 256


class Redactor:
    """The runtime redaction table: defaults plus the user's additions, compiled once.

    Args:
        extra_patterns: regular expressions of secrets found anywhere inside strings.
        extra_query_parameters: query parameter names whose values are replaced.
        extra_keys: key names (substrings, case-insensitive) whose string values are replaced.
        callback: see :data:`RedactCallback`; if it raises, the value is replaced
            whole (a broken rule must not let a secret through).
    """

    def __init__(
        self,
        *,
        extra_patterns: Iterable[str] = (),
        extra_query_parameters: Iterable[str] = (),
        extra_keys: Iterable[str] = (),
        callback: RedactCallback | None = None,
    ) -> None:
        extra_patterns = tuple(extra_patterns)
        self.value_patterns: tuple[tuple[str, str], ...] = (
            *DEFAULT_VALUE_PATTERNS,
            *(("custom", pattern) for pattern in extra_patterns),
        )
        self.query_parameters: frozenset[str] = SENSITIVE_QUERY_PARAMETERS | {
            name.strip().lower() for name in extra_query_parameters if name.strip()
        }
        keys = sorted({key.strip().lower() for key in extra_keys if key.strip()})
        self.extra_keys: frozenset[str] = frozenset(keys)
        self.key_pattern: str = SENSITIVE_KEY_PATTERN + "".join("|" + re.escape(key) for key in keys)
        self.callback = callback
        self._key_re = re.compile(self.key_pattern, re.IGNORECASE)
        names = sorted((re.escape(name) for name in self.query_parameters), key=len, reverse=True)
        self._text_query_re = re.compile(r"(?i)\b(" + "|".join(names) + r")=([^&\s\"'<>]+)")
        self._value_re = re.compile("|".join(f"(?:{pattern})" for _, pattern in self.value_patterns))
        self._key_cache: dict[str, bool] = {}
        # Export-side scrubbing sees the same short values on every span
        # ("GET", "/items/{item_id}", "127.0.0.1"): remember their outcome.
        self._value_cache: dict[tuple[str, str], Any] = {}
        self._callback_failed = False

    # --- strings -----------------------------------------------------------

    def text(self, text: str, key: str = "") -> str:
        """Secret-looking substrings, sensitive query values and URL credentials replaced inside free text."""
        if "@" in text:
            text = _USERINFO_RE.sub(f"{REDACTED}:{REDACTED}@", text)
        if "=" in text:
            text = self._text_query_re.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
        text = self._value_re.sub(REDACTED, text)
        if self.callback is not None:
            text = self._call(key, text)
        return text

    def query(self, query: str) -> str:
        """``access_token=abc&lang=en`` -> ``access_token=REDACTED&lang=en``."""
        parameters = self.query_parameters

        def replace(match: re.Match[str]) -> str:
            key = match.group(1)
            if key.strip().lower() in parameters:
                return f"{key}={REDACTED}"
            return match.group(0)

        return self.text(_QUERY_PAIR_RE.sub(replace, query), "url.query")

    def is_sensitive_key(self, key: str) -> bool:
        cached = self._key_cache.get(key)
        if cached is None:
            cached = self._key_re.search(key) is not None
            if len(self._key_cache) < _KEY_CACHE_LIMIT:
                self._key_cache[key] = cached
        return cached

    # --- structures --------------------------------------------------------

    def value(self, key: object, value: object, _depth: int = 0) -> object:  # noqa: PLR0911 - one return per value kind
        """Redact ``value`` found under ``key``: strings by key and pattern, containers recursively."""
        if isinstance(value, (str, bytes)):
            name = key if isinstance(key, str) else ""
            if name and self.is_sensitive_key(name):
                return REDACTED
            text = value if isinstance(value, str) else value.decode("utf-8", "replace")
            return self.text(text, name)
        if isinstance(value, Mapping):
            if _depth >= _MAX_DEPTH:
                return REDACTED
            return {k: self.value(k, v, _depth + 1) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            if _depth >= _MAX_DEPTH:
                return REDACTED
            return [self.value(key, item, _depth + 1) for item in value]
        return value

    def attributes(self, attributes: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """A redacted copy of OTel attributes, or None when nothing changed (the common case).

        Attribute values are strings, scalars, homogeneous sequences, or (on log
        records) nested maps; sequences keep their tuple type.
        """
        if not attributes:
            return None
        changed: dict[str, Any] | None = None
        for key, value in attributes.items():
            new: Any = value
            if isinstance(value, str):
                new = self.cached_value(key, value)
            elif isinstance(value, (tuple, list)):
                if any(isinstance(item, (str, bytes, Mapping)) for item in value):
                    new = tuple(self.value(key, item, 1) for item in value)
            elif isinstance(value, (Mapping, bytes)):
                new = self.value(key, value)
            if new is not value and new != value:
                if changed is None:
                    changed = dict(attributes)
                changed[key] = new
        return changed

    def cached_value(self, key: str, value: str) -> Any:
        """``value(key, value)`` for a string, remembered for short strings when no callback is set."""
        if self.callback is not None or len(value) > _CACHED_VALUE_LENGTH:
            return self.value(key, value)
        cache_key = (key, value)
        cached = self._value_cache.get(cache_key)
        if cached is None:
            cached = self.value(key, value)
            if len(self._value_cache) >= _VALUE_CACHE_LIMIT:
                self._value_cache.clear()
            self._value_cache[cache_key] = cached
        return cached

    def _call(self, key: str, text: str) -> str:
        callback = self.callback
        assert callback is not None
        try:
            result = callback(key, text)
        except Exception:  # noqa: BLE001 - fail closed: a broken rule must not let a secret through
            if not self._callback_failed:
                self._callback_failed = True
                _log.warning("otel_setup: the redact callback raised; values it fails on are replaced whole")
            return REDACTED
        return result if isinstance(result, str) else REDACTED


DEFAULT_REDACTOR: Final = Redactor()
"""The defaults alone, for code paths that run without ``configure()``."""


def redact_text(text: str) -> str:
    """Replace secret-looking substrings, sensitive query values and URL credentials inside free text."""
    return DEFAULT_REDACTOR.text(text)


def is_sensitive_key(key: str) -> bool:
    return DEFAULT_REDACTOR.is_sensitive_key(key)


def redact_value(key: object, value: object, _depth: int = 0) -> object:
    """Redact ``value`` found under ``key``: strings by pattern, containers recursively."""
    return DEFAULT_REDACTOR.value(key, value, _depth)


def redact_query(query: str) -> str:
    """``access_token=abc&lang=en`` -> ``access_token=REDACTED&lang=en``."""
    return DEFAULT_REDACTOR.query(query)
