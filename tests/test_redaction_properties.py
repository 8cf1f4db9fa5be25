"""Property test of the redactor: whatever the nesting and casing, no planted secret survives.

Structures up to four levels deep mix benign and sensitive keys (drawn from the
key table in random case), and strings embed secrets of every default kind in
longer text. The checks: no secret (and no 12-character piece of one) is left,
every planted secret left a ``REDACTED`` marker, and benign data is untouched.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from otel_setup._security.redaction import REDACTED, Redactor

REDACTOR = Redactor(extra_patterns=[r"acme_[0-9a-f]{24}"], extra_query_parameters=["voucher"], extra_keys=["email"])

SENSITIVE_KEYS = (
    "password",
    "passwd",
    "secret",
    "token",
    "access_token",
    "api_key",
    "api-key",
    "x-api-key",
    "apikey",
    "authorization",
    "cookie",
    "set-cookie",
    "session",
    "sessionid",
    "credentials",
    "private_key",
    "gw2_key",
    "client_secret",
    "refresh_token",
    "dsn",
    "user.email",
)
# Benign keys and text: nothing here may look like a secret (no "b" for "bearer", no "-", "=", "@"),
# and no 16 characters of benign text can equal a piece of a secret (disjoint alphabets).
BENIGN_KEYS = ("name", "world", "level", "profession", "count", "message", "route", "guild_rank")
BENIGN_ALPHABET = "ghijklmnopqrstuvwxyz "
TOKEN_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
HEX = "0123456789ABCDEF"


def mixed_case(draw: st.DrawFn, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if flip else c.lower() for c, flip in zip(text, flips, strict=True))


def _hex(draw: st.DrawFn, n: int) -> str:
    return draw(st.text(HEX, min_size=n, max_size=n))


@st.composite
def secret_text(draw: st.DrawFn) -> tuple[str, str]:
    """(text with a secret inside, the secret)."""
    kind = draw(
        st.sampled_from(
            ["gw2", "jwt", "openai", "bearer", "query", "userinfo", "custom", "empty_user", "pair", "format", "sql"]
        )
    )
    token = draw(st.text(TOKEN_ALPHABET, min_size=16, max_size=40))
    if kind == "gw2":
        secret = "-".join(_hex(draw, n) for n in (8, 4, 4, 4, 20, 4, 4, 4, 12))
        embedded = secret
    elif kind == "jwt":
        secret = f"eyJ{token}.eyJ{token[::-1]}.{token}sig"
        embedded = secret
    elif kind == "openai":
        secret = f"sk-proj-{token}"
        embedded = secret
    elif kind == "bearer":
        secret = token
        embedded = f"{mixed_case(draw, 'bearer')} {token}"
    elif kind == "query":
        name = mixed_case(draw, draw(st.sampled_from(["access_token", "api_key", "client_secret", "voucher", "sig"])))
        secret = token
        embedded = f"https://api.example/v2/x?lang=en&{name}={token}&page=2"
    elif kind == "userinfo":
        secret = token
        embedded = f"postgresql://app:{token}@db.internal:5432/app"
    elif kind == "empty_user":
        scheme = draw(st.sampled_from(["redis", "rediss", "https", "amqp"]))
        secret = token
        embedded = f"{scheme}://:{token}@cache.internal:6379/0"
    elif kind == "pair":
        name = mixed_case(
            draw, draw(st.sampled_from(["x-api-key", "auth_token", "private_token", "password", "secret"]))
        )
        shape = draw(st.sampled_from(["{k}={v}", "{k}: {v}", '"{k}": "{v}"', "'{k}': '{v}'", "{k}='{v}'"]))
        secret = token
        embedded = shape.format(k=name, v=token)
    elif kind == "format":
        prefix = draw(st.sampled_from(["ghp_", "glpat-", "npm_", "sk_live_", "xoxb-1234567890-"]))
        size = {"ghp_": 36, "npm_": 36}.get(prefix, 24)
        secret = prefix + draw(st.text(TOKEN_ALPHABET, min_size=size, max_size=size))
        embedded = secret
    elif kind == "sql":
        secret = token
        embedded = f"[parameters: {{'id': 2, 'email': '{token}'}}]"
    else:
        secret = "acme_" + draw(st.text("0123456789abcdef", min_size=24, max_size=24))
        embedded = secret
    prefix = draw(st.text(BENIGN_ALPHABET, max_size=20))
    suffix = draw(st.text(BENIGN_ALPHABET, max_size=20))
    return f"{prefix} {embedded} {suffix}", secret


@st.composite
def document(draw: st.DrawFn, depth: int = 0) -> tuple[Any, list[str]]:
    """(a nested structure of depth <= 4 with secrets planted at random places, those secrets)."""
    choice = draw(st.sampled_from(["dict", "list", "leaf", "leaf"] if depth < 4 else ["leaf"]))
    secrets: list[str] = []
    if choice == "dict":
        result: dict[str, Any] = {}
        for _ in range(draw(st.integers(1, 4))):
            if draw(st.booleans()):
                key = mixed_case(draw, draw(st.sampled_from(SENSITIVE_KEYS)))
                value = draw(st.text(TOKEN_ALPHABET, min_size=16, max_size=30))
                result[key] = value
            else:
                key = draw(st.sampled_from(BENIGN_KEYS))
                value, _inner = draw(document(depth + 1))
                result[key] = value
        # Only what survived key collisions was planted.
        for key, value in result.items():
            if any(key.lower() == k for k in SENSITIVE_KEYS):
                secrets.append(value)
        for key, value in result.items():
            if not any(key.lower() == k for k in SENSITIVE_KEYS):
                secrets.extend(_planted_in(value))
        return result, secrets
    if choice == "list":
        items = [draw(document(depth + 1)) for _ in range(draw(st.integers(0, 3)))]
        return [value for value, _ in items], [s for _, inner in items for s in inner]
    leaf = draw(st.sampled_from(["benign", "number", "secret"]))
    if leaf == "number":
        return draw(st.integers(-1000, 1000)), []
    if leaf == "benign":
        return draw(st.text(BENIGN_ALPHABET, max_size=30)), []
    text, secret = draw(secret_text())
    _SECRET_OF[text] = secret
    return text, [secret]


_SECRET_OF: dict[str, str] = {}


def _planted_in(value: Any) -> list[str]:
    """Secrets inside an already-built value (strings from secret_text, at any depth)."""
    if isinstance(value, str):
        return [_SECRET_OF[value]] if value in _SECRET_OF else []
    if isinstance(value, dict):
        found: list[str] = []
        for key, item in value.items():
            if any(key.lower() == k for k in SENSITIVE_KEYS):
                found.append(item)
            else:
                found.extend(_planted_in(item))
        return found
    if isinstance(value, list):
        return [s for item in value for s in _planted_in(item)]
    return []


@st.composite
def planted_documents(draw: st.DrawFn) -> tuple[Any, list[str]]:
    value, _ = draw(document(1))
    doc = {mixed_case(draw, "payload"): value}
    return doc, _planted_in(value)


def pieces(secret: str, size: int = 12) -> set[str]:
    return {secret[i : i + size] for i in range(max(1, len(secret) - size + 1))}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(planted_documents())
def test_no_planted_secret_survives_and_each_left_a_marker(case: tuple[Any, list[str]]) -> None:
    doc, secrets = case
    redacted = REDACTOR.value("root", doc)
    rendered = json.dumps(redacted)
    for secret in secrets:
        for piece in pieces(secret):
            assert piece not in rendered, (secret, rendered)
    # Each secret sat in a string of its own; every one of those strings now carries a marker.
    assert rendered.count(REDACTED) >= len(secrets)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.text(BENIGN_ALPHABET, max_size=30) | st.integers() | st.booleans() | st.none(),
        lambda children: (
            st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(BENIGN_KEYS), children, max_size=3)
        ),
        max_leaves=12,
    )
)
def test_benign_data_is_left_alone(doc: Any) -> None:
    redacted = REDACTOR.value("root", doc)
    assert json.dumps(redacted) == json.dumps(doc if not isinstance(doc, tuple) else list(doc))


@settings(max_examples=200, deadline=None)
@given(secret_text())
def test_secrets_inside_free_text(case: tuple[str, str]) -> None:
    text, secret = case
    out = REDACTOR.text(text)
    assert secret not in out and REDACTED in out
    assert all(piece not in out for piece in pieces(secret))
