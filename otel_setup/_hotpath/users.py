"""Active users: distinct accounts seen in the last minutes, with no identifier in any label.

A "users online" number is usually built by putting the user id in a label and counting
series, which is a cardinality explosion and a privacy leak in every backend the metric
reaches. Here the identifier never leaves the process, and never stays in it either: ``seen()``
replaces it with a keyed BLAKE2s digest (64 bits, the key is random per process and never
exported, so a digest cannot be matched against a guessed identifier elsewhere) and remembers
when that digest was last seen. Collection counts the digests seen within each window and
exports only those counts, as one gauge with a bounded ``otel_setup.users.window`` attribute.

Memory is bounded: at most ``max_entries`` digests (8 bytes each plus a timestamp) are kept,
the least recently seen going first, so under a flood of distinct ids the gauge saturates at
the cap instead of growing the process. ``seen()`` is on the request path: one hash, one clock
read and an ordered-dict update under a lock (about a microsecond); pruning and counting
happen on the collection thread.

Counts are per process: with several workers, each counts the users it served (see
docs/dashboards.md for summing them).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from otel_setup.version import __version__

__all__ = ["DEFAULT_MAX_ENTRIES", "DEFAULT_WINDOWS", "ActiveUsers", "DisabledActiveUsers", "window_label"]

METRIC: Final = "otel_setup.users.active"
WINDOW_ATTRIBUTE: Final = "otel_setup.users.window"
DEFAULT_WINDOWS: Final[tuple[float, ...]] = (60.0, 300.0, 900.0)
"""1, 5 and 15 minutes: "right now", the dashboard's default, and a smoother trend."""
DEFAULT_MAX_ENTRIES: Final = 100_000
_SCOPE: Final = "otel_setup.users"

# Instances alive in this process, reset in a forked child (see _after_fork).
_instances: weakref.WeakSet[ActiveUsers] = weakref.WeakSet()


def window_label(seconds: float) -> str:
    """``60`` -> ``1m``, ``300`` -> ``5m``, ``3600`` -> ``1h``, ``90`` -> ``90s``: bounded label values."""
    whole = int(seconds)
    if whole != seconds or whole <= 0:
        raise ValueError(f"a window is a positive whole number of seconds, not {seconds!r}")
    if whole % 3600 == 0:
        return f"{whole // 3600}h"
    if whole % 60 == 0:
        return f"{whole // 60}m"
    return f"{whole}s"


class ActiveUsers:
    """Distinct identifiers seen per sliding window, exported as a gauge (no identifier in labels).

    ``clock`` is injectable for tests; it must be monotonic (the default is ``time.monotonic``).
    """

    def __init__(
        self,
        *,
        windows: Sequence[float] = DEFAULT_WINDOWS,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not windows:
            raise ValueError("at least one window is needed")
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, not {max_entries!r}")
        self._windows = tuple(sorted((float(w), window_label(w)) for w in set(windows)))
        self._horizon = self._windows[-1][0]
        self._max_entries = max_entries
        self._clock = clock
        # A fresh key per process: digests are useless outside it, and none is ever exported.
        self._hasher = hashlib.blake2s(key=secrets.token_bytes(32), digest_size=8)
        # digest -> last seen; ordered oldest first, so pruning and eviction pop from the front.
        self._entries: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()
        self._evicted = 0
        self._registered = False
        _instances.add(self)

    @property
    def windows(self) -> tuple[str, ...]:
        """The window labels, shortest first (``1m``, ``5m``, ``15m`` by default)."""
        return tuple(label for _, label in self._windows)

    @property
    def max_entries(self) -> int:
        return self._max_entries

    @property
    def evicted(self) -> int:
        """Digests dropped because the cap was reached before they expired."""
        return self._evicted

    def seen(self, account_id: str | bytes | int) -> None:
        """Record that ``account_id`` was active now; only a keyed digest of it is kept."""
        if isinstance(account_id, str):
            data = account_id.encode("utf-8", "surrogatepass")
        elif isinstance(account_id, bytes):
            data = account_id
        else:
            data = str(account_id).encode()
        hasher = self._hasher.copy()
        hasher.update(data)
        digest = hasher.digest()
        now = self._clock()
        with self._lock:
            entries = self._entries
            entries[digest] = now
            entries.move_to_end(digest)
            if len(entries) > self._max_entries:
                entries.popitem(last=False)
                self._evicted += 1

    def counts(self) -> dict[str, int]:
        """Distinct ids seen within each window, by window label; expired ids are forgotten."""
        now = self._clock()
        with self._lock:
            entries = self._entries
            oldest = now - self._horizon
            while entries:
                digest, last = next(iter(entries.items()))
                if last >= oldest:
                    break
                del entries[digest]
            # Newest first: each window's count is the length of a prefix of this walk.
            result = dict.fromkeys(self.windows, 0)
            pending = list(self._windows)
            seen_so_far = 0
            for last in reversed(entries.values()):
                while pending and last < now - pending[0][0]:
                    result[pending.pop(0)[1]] = seen_so_far
                if not pending:
                    break
                seen_so_far += 1
            for _, label in pending:
                result[label] = seen_so_far
        return result

    def count(self, window: str | float | None = None) -> int:
        """Distinct ids seen within ``window`` (a label or seconds; default: the longest)."""
        label = self._windows[-1][1] if window is None else window if isinstance(window, str) else window_label(window)
        counts = self.counts()
        if label not in counts:
            raise KeyError(f"no window {label!r}; configured: {', '.join(counts)}")
        return counts[label]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def register(self, meter_provider: MeterProvider) -> bool:
        """Export the counts as the ``otel_setup.users.active`` gauge (once per instance)."""
        with self._lock:
            if self._registered:
                return False
            self._registered = True
        meter = meter_provider.get_meter(_SCOPE, __version__)
        meter.create_observable_gauge(
            METRIC,
            callbacks=[self._observe],
            unit="{user}",
            description="Distinct users seen within the window (keyed hashes in process memory; no id is exported).",
        )
        return True

    def _observe(self, options: CallbackOptions) -> Iterable[Observation]:
        del options
        return [Observation(count, {WINDOW_ATTRIBUTE: label}) for label, count in self.counts().items()]

    def _after_fork(self) -> None:
        """In a forked worker: a fresh lock (the parent's may have been held) and no parent ids."""
        self._lock = threading.Lock()
        self._entries = OrderedDict()


class DisabledActiveUsers(ActiveUsers):
    """What ``telemetry.users`` is when telemetry is off: ``seen()`` does nothing."""

    def seen(self, account_id: str | bytes | int) -> None:
        del account_id

    def register(self, meter_provider: Any) -> bool:
        del meter_provider
        return False


def _after_fork() -> None:
    for users in list(_instances):
        users._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
