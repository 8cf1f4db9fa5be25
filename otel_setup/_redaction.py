"""One table of what counts as a secret, used by every telemetry channel.

Values are replaced by ``REDACTED`` and keys are kept (the semantic-conventions
style), so a reader still sees *that* a credential was sent and where. The
collector configs carry the same value patterns as a backstop; a test keeps
the two in step.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "DEFAULT_VALUE_PATTERNS",
    "SENSITIVE_KEY_PATTERN",
    "REDACTED",
    "SENSITIVE_QUERY_PARAMETERS",
    "redact_query",
    "redact_text",
    "redact_value",
]

REDACTED: Final = "REDACTED"

# Query parameters whose values are replaced, compared case-insensitively:
# the semantic-conventions list plus the names APIs of this stack use for
# keys and tokens (the GW2 API accepts its key as ``access_token``).
SENSITIVE_QUERY_PARAMETERS: Final = frozenset(
    name.lower()
    for name in (
        "AWSAccessKeyId", "Signature", "sig", "X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token",
        "X-Goog-Signature", "access_token", "token", "id_token", "refresh_token", "api_key", "apikey", "key",
        "code", "client_secret", "secret", "password", "auth", "signature", "session",
    )
)

# (name, regular expression) of secrets found anywhere inside a string.
DEFAULT_VALUE_PATTERNS: Final[tuple[tuple[str, str], ...]] = (
    ("gw2_key", r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{20}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}"),
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
_SENSITIVE_KEY_RE: Final = re.compile(SENSITIVE_KEY_PATTERN, re.IGNORECASE)
_TEXT_QUERY_RE: Final = re.compile(
    r"(?i)\b(" + "|".join(sorted((re.escape(n) for n in SENSITIVE_QUERY_PARAMETERS), key=len, reverse=True)) + r")=([^&\s\"'<>]+)"
)
_VALUE_RE: Final = re.compile("|".join(f"(?:{pattern})" for _, pattern in DEFAULT_VALUE_PATTERNS))
_QUERY_PAIR_RE: Final = re.compile(r"([^&=;]+)=([^&;]*)")
_USERINFO_RE: Final = re.compile(r"(?<=://)[^/@\s:]+(?::[^/@\s]*)?@")


def redact_text(text: str) -> str:
    """Replace secret-looking substrings, sensitive query values and URL credentials inside free text."""
    if "@" in text:
        text = _USERINFO_RE.sub(f"{REDACTED}:{REDACTED}@", text)
    if "=" in text:
        text = _TEXT_QUERY_RE.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    return _VALUE_RE.sub(REDACTED, text)


def is_sensitive_key(key: str) -> bool:
    return _SENSITIVE_KEY_RE.search(key) is not None


def redact_value(key: object, value: object, _depth: int = 0) -> object:
    """Redact ``value`` found under ``key``: strings by pattern, containers recursively."""
    if _depth > 8:
        return value
    if isinstance(value, (str, bytes)):
        if isinstance(key, str) and is_sensitive_key(key):
            return REDACTED
        text = value if isinstance(value, str) else value.decode("utf-8", "replace")
        return redact_text(text)
    if isinstance(value, dict):
        return {k: redact_value(k, v, _depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(key, item, _depth + 1) for item in value]
    return value


def redact_query(query: str) -> str:
    """``access_token=abc&lang=en`` -> ``access_token=REDACTED&lang=en``."""

    def replace(match: re.Match[str]) -> str:
        key = match.group(1)
        if key.strip().lower() in SENSITIVE_QUERY_PARAMETERS:
            return f"{key}={REDACTED}"
        return match.group(0)

    return redact_text(_QUERY_PAIR_RE.sub(replace, query))
