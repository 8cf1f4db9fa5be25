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
    "REDACTED",
    "SENSITIVE_QUERY_PARAMETERS",
    "redact_query",
    "redact_text",
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

_VALUE_RE: Final = re.compile("|".join(f"(?:{pattern})" for _, pattern in DEFAULT_VALUE_PATTERNS))
_QUERY_PAIR_RE: Final = re.compile(r"([^&=;]+)=([^&;]*)")
_USERINFO_RE: Final = re.compile(r"(?<=://)[^/@\s:]+(?::[^/@\s]*)?@")


def redact_text(text: str) -> str:
    """Replace secret-looking substrings and URL credentials inside free text."""
    if "@" in text:
        text = _USERINFO_RE.sub(f"{REDACTED}:{REDACTED}@", text)
    return _VALUE_RE.sub(REDACTED, text)


def redact_query(query: str) -> str:
    """``access_token=abc&lang=en`` -> ``access_token=REDACTED&lang=en``."""

    def replace(match: re.Match[str]) -> str:
        key = match.group(1)
        if key.strip().lower() in SENSITIVE_QUERY_PARAMETERS:
            return f"{key}={REDACTED}"
        return match.group(0)

    return redact_text(_QUERY_PAIR_RE.sub(replace, query))
