"""One table of what counts as a secret, used by every telemetry channel.

Values are replaced by ``REDACTED`` and keys are kept (the semantic-conventions
style), so a reader still sees *that* a credential was sent and where. The
collector configs carry the same value patterns as a backstop; a test keeps
the two in step, and another keeps docs/redaction.md's lists equal to these.

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
    "RedactCallback",
    "Redactor",
    "is_sensitive_key",
    "redact_query",
    "redact_text",
    "redact_value",
]

_log = logging.getLogger("otel_setup")

REDACTED: Final = "REDACTED"

# (name, regular expression) of secrets found anywhere inside a string; the
# whole match is replaced. Every pattern is valid in Go's RE2 too: the
# collector's redaction processor carries the same list (blocked_values).
#
# The token formats from aws_access_key_id to private_key are the published
# rules of gitleaks (https://github.com/gitleaks/gitleaks, config/gitleaks.toml,
# MIT licence, Copyright (c) 2019 Zachary Rice; see NOTICE), taken as data: the rule's
# secret part, without gitleaks' trailing-context group (a redactor replaces
# the token, it does not report a line). Rule ids are in docs/redaction.md's table.
DEFAULT_VALUE_PATTERNS: Final[tuple[tuple[str, str], ...]] = (
    (
        "gw2_key",
        r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{20}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}",
    ),
    ("jwt", r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}"),
    ("openai_key", r"sk-(proj-)?[A-Za-z0-9_-]{20,}"),
    ("bearer", r"(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,}"),
    ("basic_auth", r"(?i:basic)\s+[A-Za-z0-9+/]{4,}[A-Z0-9+/=][A-Za-z0-9+/=]{3,}"),
    ("aws_access_key_id", r"\b(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}\b"),
    ("github_token", r"\bgh[pousr]_[0-9a-zA-Z]{36}"),
    ("github_fine_grained_pat", r"\bgithub_pat_\w{82}"),
    ("gitlab_token", r"\bgl(?:pat|dt|rt|ptt|ft|soat|cbt|imt|agent|oas|ffct)-[0-9a-zA-Z_.-]{20,}"),
    ("slack_token", r"\bxox[abeoprs]-[0-9a-zA-Z-]{10,}"),
    ("slack_webhook", r"hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/]{43,56}"),
    ("google_api_key", r"\bAIza[\w-]{35}"),
    ("stripe_key", r"\b(?:sk|rk)_(?:test|live|prod)_[a-zA-Z0-9]{10,99}"),
    ("npm_token", r"\bnpm_[a-zA-Z0-9]{36}"),
    ("sendgrid_key", r"\bSG\.[a-zA-Z0-9=_.-]{66}"),
    ("huggingface_token", r"\b(?:hf_|api_org_)[a-zA-Z]{34}"),
    (
        "private_key",
        r"-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----[A-Za-z0-9+/=\s:,.\\-]*",
    ),
    ("sql_parameters", r"\[parameters: [^\n]*\]"),
    ("db_key_detail", r"Key \([^\n]*?\)=\([^\n]*\)"),
    ("db_failing_row", r"Failing row contains \([^\n]*\)"),
)

# Literal pieces (lower-cased) of which each default pattern's match contains
# at least one: a pattern runs only on strings that contain one of its own, so
# ordinary strings pay a few substring tests instead of twenty expressions.
# ``None``: the GW2 key, which has no literal part, runs on strings with at
# least eight dashes.
_TRIGGERS: Final[dict[str, tuple[str, ...] | None]] = {
    "gw2_key": None,
    "jwt": ("eyj",),
    "openai_key": ("sk-",),
    "bearer": ("bearer",),
    "basic_auth": ("basic",),
    "aws_access_key_id": ("akia", "asia", "abia", "acca", "a3t"),
    "github_token": ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
    "github_fine_grained_pat": ("github_pat_",),
    "gitlab_token": (
        "glpat-",
        "gldt-",
        "glrt-",
        "glptt-",
        "glft-",
        "glsoat-",
        "glcbt-",
        "glimt-",
        "glagent-",
        "gloas-",
        "glffct-",
    ),
    "slack_token": ("xox",),
    "slack_webhook": ("hooks.slack.com",),
    "google_api_key": ("aiza",),
    "stripe_key": ("k_test_", "k_live_", "k_prod_"),
    "npm_token": ("npm_",),
    "sendgrid_key": ("sg.",),
    "huggingface_token": ("hf_", "api_org_"),
    "private_key": ("-----begin",),
    "sql_parameters": ("[parameters: ",),
    "db_key_detail": ("key (",),
    "db_failing_row": ("failing row contains",),
}

# One search finds which triggers a string holds; each maps to the indexes of
# the patterns it stands for ("" for the GW2 key's dashes).
_TRIGGERED: Final[dict[str, tuple[int, ...]]] = {}
for _index, (_name, _) in enumerate(DEFAULT_VALUE_PATTERNS):
    for _trigger in _TRIGGERS[_name] or ("",):
        _TRIGGERED[_trigger] = (*_TRIGGERED.get(_trigger, ()), _index)
_TRIGGER_RE: Final = re.compile("|".join(re.escape(t) for t in sorted(_TRIGGERED, key=len, reverse=True) if t))

# What a match becomes when the context is worth keeping (the columns of a
# unique violation, the brackets SQLAlchemy's message is read by); else REDACTED.
_REPLACEMENTS: Final[dict[int, str | Callable[[re.Match[str]], str]]] = {
    index: replacement
    for index, (name, _) in enumerate(DEFAULT_VALUE_PATTERNS)
    for key, replacement in (
        ("sql_parameters", f"[parameters: {REDACTED}]"),
        ("db_key_detail", lambda m: m.group(0).split(")=(", 1)[0] + f")=({REDACTED})"),
        ("db_failing_row", f"Failing row contains ({REDACTED})"),
    )
    if key == name
}

# Key names whose string values are secrets, case-insensitive: attribute keys,
# log fields, query parameter names, header names, metric attribute keys and
# the keys of ``key=value`` pairs in free text all go through this one rule.
# Words anywhere in the key, words as whole ``_ - .`` segments, and names that
# are sensitive only as the whole key (``?key=``, ``?code=``; ``code.lineno``
# and ``cache_key`` are not). Numbers under such keys are kept:
# ``gen_ai.usage.input_tokens`` is a count.
SENSITIVE_KEY_PATTERN: Final = (
    r"pass(word|wd|phrase)?|secret|token(?![-_.]?type)|authori[sz]ation|cookie|session|credential|signature"
    r"|(api|access|private|gw2|auth|client|signing|encryption|master|license)[-_.]?key"
    r"|(^|[-_.])(auth|sig|pwd|dsn|jwt|otp|csrf|xsrf|bearer)([-_.]|$)"
    r"|^(key|code)$"
)

RedactCallback = Callable[[str, str], str]
"""``(key, value) -> value``: the user's own rule, run on every string after the built-in ones.

It sees values already redacted by the table (so it can add redaction, never
undo it). ``key`` is the attribute, log field or event key; free text without
one is passed as ``span.name``, ``event.name``, ``status.description`` or
``log.body``.
"""

_KEY_WORDS: Final = (
    "pass",
    "secret",
    "token",
    "authori",
    "cookie",
    "session",
    "credential",
    "sig",
    "key",
    "auth",
    "pwd",
    "dsn",
    "jwt",
    "otp",
    "csrf",
    "xsrf",
    "bearer",
    "code",
)

# Containers nested deeper than this are replaced whole: a value the redactor
# did not look at must not leave the process.
_MAX_DEPTH: Final = 12
_QUERY_PAIR_RE: Final = re.compile(r"([^&=;]+)=([^&;]*)")
# Everything between ``scheme://`` and the last ``@`` before the host: user and
# password, either of them empty (``redis://:pw@host``), ``@`` inside included.
_USERINFO_RE: Final = re.compile(r"(?<=://)[^/?#\s]+@")
# Sensitive-looking pairs in free text: ``"key": "value"`` and ``'key': 'value'``
# (JSON, dict reprs), ``key="value"`` / ``key: 'value'``, and bare
# ``key=value`` / ``key: value`` (query strings, log lines, header dumps). An
# authorization scheme is part of a bare value (``Authorization: Basic ...``).
_PAIR_RE: Final = re.compile(
    r"""(?P<q>["'])(?P<qk>[\w.-]{1,80}+)(?P=q)\s*[:=]\s*(?P<v>["'])(?P<qv>(?:\\.|(?!(?P=v))[^\\])*)(?P=v)"""
    r"""|(?<![\w.-])(?P<ck>[\w.-]{1,80}+)(?:=|:\s*)(?P<cq>["'])(?P<cv>(?:\\.|(?!(?P=cq))[^\\])*)(?P=cq)"""
    r"""|(?<![\w.-])(?P<bk>[\w.-]{1,80}+)(?:=|:[ \t]+)"""
    r"""(?P<bv>(?:(?i:basic|bearer|digest|token|negotiate|apikey)[ \t]+)?[^\s&"'<>,;()\[\]{}]+)"""
)
# The SDK keeps attribute values up to this many times the configured limit;
# the scrubber redacts the whole value first, then cuts it to the limit.
SDK_LENGTH_FACTOR: Final = 8
# A value the SDK already cut loses this tail before redaction: a secret
# straddling the SDK's cut would otherwise leave its first part.
_STRADDLE: Final = 512
_KEY_CACHE_LIMIT: Final = 4096
_VALUE_CACHE_LIMIT: Final = 8192
_CACHED_VALUE_LENGTH: Final = 256
_TEXT_CACHE_LIMIT: Final = 2048
_CACHED_TEXT_LENGTH: Final = 4096


class Redactor:
    """The runtime redaction table: defaults plus the user's additions, compiled once.

    Args:
        extra_patterns: regular expressions of secrets found anywhere inside strings.
        extra_query_parameters: names whose values are replaced when they are the
            whole key (query parameters, fields, ``name=value`` in text).
        extra_keys: key names (substrings, case-insensitive) whose string values are replaced.
        callback: see :data:`RedactCallback`; if it raises, the value is replaced
            whole (a broken rule must not let a secret through).
        max_length: string values are cut to this many characters after redaction
            (0: no cut); the SDK is given ``SDK_LENGTH_FACTOR`` times as much.
    """

    def __init__(
        self,
        *,
        extra_patterns: Iterable[str] = (),
        extra_query_parameters: Iterable[str] = (),
        extra_keys: Iterable[str] = (),
        callback: RedactCallback | None = None,
        max_length: int = 0,
    ) -> None:
        extra_patterns = tuple(extra_patterns)
        self.value_patterns: tuple[tuple[str, str], ...] = (
            *DEFAULT_VALUE_PATTERNS,
            *(("custom", pattern) for pattern in extra_patterns),
        )
        # (expression, triggers) per default pattern; the user's patterns in one expression that always runs.
        self._patterns: list[re.Pattern[str]] = [re.compile(pattern) for _, pattern in DEFAULT_VALUE_PATTERNS]
        self._custom_re = (
            re.compile("|".join(f"(?:{pattern})" for pattern in extra_patterns)) if extra_patterns else None
        )
        names = sorted({name.strip().lower() for name in extra_query_parameters if name.strip()})
        self.query_parameters: frozenset[str] = frozenset(names)
        keys = sorted({key.strip().lower() for key in extra_keys if key.strip()})
        self.extra_keys: frozenset[str] = frozenset(keys)
        self.key_pattern: str = (
            SENSITIVE_KEY_PATTERN
            + "".join("|" + re.escape(key) for key in keys)
            + "".join("|^" + re.escape(name) + "$" for name in names)
        )
        self.callback = callback
        self.max_length = max_length
        self.sdk_length = max_length * SDK_LENGTH_FACTOR
        self._key_re = re.compile(self.key_pattern, re.IGNORECASE)
        # Every alternative of the key rule contains one of these: text without any has no sensitive pair.
        self._key_words_re = re.compile("|".join([*_KEY_WORDS, *(re.escape(k) for k in (*keys, *names))]))
        self._key_cache: dict[str, bool] = {}
        # Export-side scrubbing sees the same short values on every span
        # ("GET", "/items/{item_id}", "127.0.0.1"): remember their outcome.
        self._value_cache: dict[tuple[str, str], Any] = {}
        self._text_cache: dict[str, str] = {}
        self._callback_failed = False

    # --- strings -----------------------------------------------------------

    def text(self, text: str, key: str = "") -> str:
        """Secrets inside free text replaced: URL credentials, token formats, sensitive pairs."""
        text = self._builtin(text)
        if self.callback is not None:
            text = self._call(key, text)
        return text

    def cached_text(self, text: str) -> str:
        """``text`` without the callback, remembered: for repeated strings (SQL statements) on the request path."""
        if self.callback is not None or len(text) > _CACHED_TEXT_LENGTH:
            return self.text(text)
        cached = self._text_cache.get(text)
        if cached is None:
            cached = self._builtin(text)
            if len(self._text_cache) >= _TEXT_CACHE_LIMIT:
                self._text_cache.clear()
            self._text_cache[text] = cached
        return cached

    def _builtin(self, text: str) -> str:
        if "@" in text and "://" in text:
            text = _USERINFO_RE.sub(f"{REDACTED}:{REDACTED}@", text)
        lowered = text.lower()
        hits = _TRIGGER_RE.findall(lowered)
        if text.count("-") >= 8:
            hits.append("")
        if hits:
            patterns = self._patterns
            for index in sorted({index for hit in hits for index in _TRIGGERED[hit]}):
                text = patterns[index].sub(_REPLACEMENTS.get(index, REDACTED), text)
        if self._custom_re is not None:
            text = self._custom_re.sub(REDACTED, text)
        if ("=" in text or ": " in text or ":'" in text or ':"' in text or ":\t" in text) and self._key_words_re.search(
            lowered
        ):
            text = _PAIR_RE.sub(self._pair, text)
        return text

    def _pair(self, match: re.Match[str]) -> str:
        """One pair found by ``_PAIR_RE``: its value replaced when its key is sensitive."""
        # The branch that matched: quoted key and value, bare key with quoted value, bare pair.
        value_group = "qv" if match.group("qk") is not None else "cv" if match.group("ck") is not None else "bv"
        key = match.group({"qv": "qk", "cv": "ck", "bv": "bk"}[value_group])
        whole = match.group(0)
        if not self.is_sensitive_key(key):
            return whole
        start, end = match.start(value_group) - match.start(), match.end(value_group) - match.start()
        return whole[:start] + REDACTED + whole[end:]

    def query(self, query: str) -> str:
        """``access_token=abc&lang=en`` -> ``access_token=REDACTED&lang=en``."""

        def replace(match: re.Match[str]) -> str:
            key = match.group(1)
            if self.is_sensitive_key(key.strip()):
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

    def value(self, key: object, value: object, _depth: int = 0, *, cut: bool = False) -> object:  # noqa: PLR0911 - one return per value kind
        """Redact ``value`` found under ``key``: strings by key and pattern, containers recursively.

        With ``cut``, strings are then cut to ``max_length`` (the export side:
        redact first, then cut).
        """
        if isinstance(value, (str, bytes)):
            name = key if isinstance(key, str) else ""
            if name and self.is_sensitive_key(name):
                return REDACTED
            text = value if isinstance(value, str) else value.decode("utf-8", "replace")
            if not cut:
                return self.text(text, name)
            if self.sdk_length and len(text) >= self.sdk_length:
                text = text[: len(text) - _STRADDLE]
            text = self.text(text, name)
            if self.max_length and len(text) > self.max_length:
                text = text[: self.max_length]
            return text
        if isinstance(value, Mapping):
            if _depth >= _MAX_DEPTH:
                return REDACTED
            return {k: self.value(k, v, _depth + 1, cut=cut) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            if _depth >= _MAX_DEPTH:
                return REDACTED
            return [self.value(key, item, _depth + 1, cut=cut) for item in value]
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
                    new = tuple(self.value(key, item, 1, cut=True) for item in value)
            elif isinstance(value, (Mapping, bytes)):
                new = self.value(key, value, cut=True)
            if new is not value and new != value:
                if changed is None:
                    changed = dict(attributes)
                changed[key] = new
        return changed

    def cached_value(self, key: str, value: str) -> Any:
        """``value(key, value)`` for a string, remembered for short strings when no callback is set."""
        if self.callback is not None or len(value) > _CACHED_VALUE_LENGTH:
            return self.value(key, value, cut=True)
        cache_key = (key, value)
        cached = self._value_cache.get(cache_key)
        if cached is None:
            cached = self.value(key, value, cut=True)
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
    """Replace secret-looking substrings, sensitive pairs and URL credentials inside free text."""
    return DEFAULT_REDACTOR.cached_text(text)


def is_sensitive_key(key: str) -> bool:
    return DEFAULT_REDACTOR.is_sensitive_key(key)


def redact_value(key: object, value: object, _depth: int = 0) -> object:
    """Redact ``value`` found under ``key``: strings by pattern, containers recursively."""
    return DEFAULT_REDACTOR.value(key, value, _depth)


def redact_query(query: str) -> str:
    """``access_token=abc&lang=en`` -> ``access_token=REDACTED&lang=en``."""
    return DEFAULT_REDACTOR.query(query)
