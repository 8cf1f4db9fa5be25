"""Cache hit/miss counting from Redis read replies.

Chosen over an explicit API the application would call: the Redis wrapper
already sees every command and its reply, so a service gets a hit rate with
no code change and cannot forget a call site. A nil reply (``None``; an empty
hash for ``HGETALL``) is a miss, anything else a hit; ``MGET`` and ``HMGET``
count each key or field. Not every ``GET`` is a cache read (a lock, a
counter), which is why reads are grouped by a logical cache name taken from
the key prefix, so dashboards pick the caches they mean.

The cache name is bounded and never the key: the longest configured prefix
(``OTEL_SETUP_CACHE_KEY_PREFIXES=gw2:account:,gw2:item:`` gives ``gw2:account``
and ``gw2:item``; a key matching none is ``_OTHER``); with none configured, the
key's first ``:``-separated segment when it looks like a namespace (short,
lowercase, at most two digits), else ``_OTHER``. Pipelines and transactions
are not counted.

The same observation feeds the ``otel_setup.cache`` log events (reads with
their result, writes with the TTL their arguments set): only after the
call-log level check, and with the key as its hash, never raw.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any, Final

from opentelemetry.metrics import Counter, MeterProvider

from otel_setup._core.options import CacheLookup, _call_listeners, emit_call
from otel_setup._hotpath.metrics import counter as fast_counter
from otel_setup._hotpath.metrics import values_adder
from otel_setup._integrations import calllog
from otel_setup.version import __version__

__all__ = ["CacheCounter", "cache_name", "key_hash", "lookup_counts", "write_ttl"]

_SCOPE_NAME: Final = "otel_setup.cache"
OTHER: Final = "_OTHER"
_NAMESPACE_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-.")


def _one(result: Any) -> tuple[int, int]:
    return (0, 1) if result is None else (1, 0)


def _many(result: Any) -> tuple[int, int]:
    if not isinstance(result, (list, tuple)):
        return (0, 0)
    misses = sum(1 for item in result if item is None)
    return (len(result) - misses, misses)


def _mapping(result: Any) -> tuple[int, int]:
    return (1, 0) if result else (0, 1)


# Read commands -> how their reply splits into hits and misses.
_READS: Final[dict[str, Callable[[Any], tuple[int, int]]]] = {
    "GET": _one,
    "GETEX": _one,
    "GETDEL": _one,
    "HGET": _one,
    "JSON.GET": _one,
    "MGET": _many,
    "HMGET": _many,
    "HGETALL": _mapping,
}


def lookup_counts(command: str, result: Any) -> tuple[int, int] | None:
    """(hits, misses) for a read command's reply, or None for commands that are not reads."""
    counter = _READS.get(command)
    return None if counter is None else counter(result)


def _text(key: Any) -> str:
    if isinstance(key, bytes):
        return key.decode("utf-8", "replace")
    return str(key)


def cache_name(key: str, prefixes: Sequence[str]) -> str:
    """The logical cache of ``key`` (see the module docstring); prefixes are longest first."""
    if prefixes:
        for prefix in prefixes:
            if key.startswith(prefix):
                return prefix.rstrip(":") or OTHER
        return OTHER
    head, sep, _ = key.partition(":")
    if not sep:
        return OTHER
    name = _heads.get(head)
    if name is None:
        looks_like_namespace = (
            0 < len(head) <= 32 and all(c in _NAMESPACE_CHARS for c in head) and sum(c.isdigit() for c in head) <= 2
        )
        name = head if looks_like_namespace else OTHER
        if len(_heads) < _MAX_HEADS:
            _heads[head] = name
    return name


_heads: dict[str, str] = {}
"""First key segment -> cache name: a service has few namespaces, and the check is per command."""
_MAX_HEADS: Final = 1024


def key_hash(key: str) -> str:
    """First 16 hex characters of the key's SHA-256: correlates log lines, never reveals the key."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _seconds(value: Any, scale: float) -> float | None:
    try:
        number = float(value.decode() if isinstance(value, bytes) else value)
    except (TypeError, ValueError, UnicodeDecodeError):
        return None
    return number * scale


def _option_ttl(options: tuple[Any, ...]) -> float | None:
    """``EX s`` / ``PX ms`` among ``SET``'s or ``GETEX``'s options (other options are skipped)."""
    for index in range(len(options) - 1):
        option = options[index]
        name = (option.decode("ascii", "replace") if isinstance(option, bytes) else str(option)).upper()
        if name == "EX":
            return _seconds(options[index + 1], 1.0)
        if name == "PX":
            return _seconds(options[index + 1], 0.001)
    return None


def write_ttl(command: str, args: tuple[Any, ...]) -> float | None:
    """The TTL in seconds a write sets, where its arguments say (``args[0]`` is the command)."""
    if command == "SET":
        return _option_ttl(args[3:])
    if command == "GETEX":
        return _option_ttl(args[2:])
    if command in ("SETEX", "EXPIRE") and len(args) > 2:
        return _seconds(args[2], 1.0)
    if command in ("PSETEX", "PEXPIRE") and len(args) > 2:
        return _seconds(args[2], 0.001)
    return None


# Writes logged as cache operations (with their TTL); they are not counted in the metric.
_LOOKUP_ATTRIBUTES: Final = ("cache.name", "db.system.name", "db.operation.name", "cache.result")
_WRITES: Final = frozenset({"SET", "SETEX", "PSETEX", "EXPIRE", "PEXPIRE", "DEL", "UNLINK"})


class CacheCounter:
    """Called by the Redis wrapper after each successful command; cheap for non-reads."""

    def __init__(self, meter_provider: MeterProvider, prefixes: Sequence[str]) -> None:
        self._prefixes = tuple(prefixes)
        lookups: Counter = fast_counter(
            meter_provider,
            (_SCOPE_NAME, __version__),
            "otel_setup.cache.lookups",
            "{lookup}",
            "Cache reads by logical cache and result (hit or miss); hit ratio = hit / all.",
            _LOOKUP_ATTRIBUTES,
        )
        self._add = values_adder(lookups, _LOOKUP_ATTRIBUTES)

    def observe(self, command: str, args: tuple[Any, ...], result: Any, elapsed: float = 0.0) -> None:
        counts = lookup_counts(command, result)
        if counts is None or len(args) < 2:
            if command in _WRITES and len(args) >= 2 and calllog.CACHE.enabled():
                self._log_write(command, args, elapsed)
            return
        hits, misses = counts
        if command == "MGET" and len(args) > 2:
            self._mget(args[1:], result, elapsed)
            return
        key = _text(args[1])
        name = cache_name(key, self._prefixes)
        if hits:
            self._add(hits, (name, "redis", command, "hit"))
        if misses:
            self._add(misses, (name, "redis", command, "miss"))
        logged = calllog.CACHE.enabled()
        if _call_listeners or logged:
            record = CacheLookup(name, command, hits, misses, key_hash(key))
            if _call_listeners:
                emit_call(record)
            if logged:
                ttl = write_ttl(command, args) if command == "GETEX" else None
                self._log_lookup(record, elapsed, ttl)

    def _mget(self, keys: tuple[Any, ...], result: Any, elapsed: float) -> None:
        """Keys of one MGET may belong to different caches: count each against its own."""
        if not isinstance(result, (list, tuple)) or len(result) != len(keys):
            return
        tally: dict[tuple[str, str], int] = {}
        for key, value in zip(keys, result, strict=True):
            name = cache_name(_text(key), self._prefixes)
            outcome = "miss" if value is None else "hit"
            tally[(name, outcome)] = tally.get((name, outcome), 0) + 1
        for (name, outcome), count in tally.items():
            self._add(count, (name, "redis", "MGET", outcome))
        logged = calllog.CACHE.enabled()
        if _call_listeners or logged:
            first = _text(keys[0])
            hits = sum(count for (_, outcome), count in tally.items() if outcome == "hit")
            record = CacheLookup(cache_name(first, self._prefixes), "MGET", hits, len(keys) - hits, key_hash(first))
            if _call_listeners:
                emit_call(record)
            if logged:
                self._log_lookup(record, elapsed, None)

    @staticmethod
    def _log_lookup(record: CacheLookup, elapsed: float, ttl: float | None) -> None:
        fields: dict[str, Any] = {
            "cache.name": record.cache,
            "db.operation.name": record.command,
            "cache.result": "hit" if record.hits and not record.misses else ("miss" if not record.hits else "partial"),
            "hits": record.hits,
            "misses": record.misses,
            "key_hash": record.key_hash,
            "duration_ms": round(elapsed * 1000.0, 3),
        }
        if ttl is not None:
            fields["ttl_s"] = ttl
        calllog.CACHE.write("cache lookup", fields)

    def _log_write(self, command: str, args: tuple[Any, ...], elapsed: float) -> None:
        key = _text(args[1])
        fields: dict[str, Any] = {
            "cache.name": cache_name(key, self._prefixes),
            "db.operation.name": command,
            "key_hash": key_hash(key),
            "duration_ms": round(elapsed * 1000.0, 3),
        }
        ttl = write_ttl(command, args)
        if ttl is not None:
            fields["ttl_s"] = ttl
        calllog.CACHE.write("cache write", fields)
