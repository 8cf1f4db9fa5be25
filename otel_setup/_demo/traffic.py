"""A realistic mix of requests against the example service, at a steady rate.

The mix exercises every signal the report reads: cache misses that turn into
hits, database reads, GW2 calls (a burst of them runs into the upstream's rate
limit), AI calls with token usage, client errors, 5xx, and one slow request.
The driver only counts answers for its progress bar; latencies in the report
come from the app's own metrics.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Progress", "drive"]

# (weight, method, path, request options); keys are filled in by ``_mix``.
_Step = tuple[str, str, dict[str, Any]]


def _mix(gw2_key: str) -> list[tuple[float, _Step]]:
    key = {"headers": {"X-GW2-Key": gw2_key}}
    professions = ["Guardian", "Necromancer", "Elementalist", "Ranger", "Mesmer"]
    return [
        (18, ("GET", "/api/items/{seeded}", {})),  # database first, then the cache
        (6, ("GET", "/api/items/{upstream}", {})),  # GW2 once, then database and cache
        (3, ("GET", "/api/items/1", {})),  # GW2 every time: 404
        (14, ("GET", "/api/account", key)),  # one miss, then hits
        (8, ("GET", "/api/characters/Aurora Lightbringer", key)),
        (4, ("GET", "/api/characters/Grimtooth", key)),
        (3, ("GET", "/api/characters/Flaky", key)),  # upstream 503: a 502 here
        (2, ("GET", "/api/characters/Nobody", key)),  # 404
        (2, ("GET", "/api/account", {})),  # 401: no key
        (9, ("POST", "/api/ai/build-advice", {"json": {"profession": professions}})),
        (4, ("GET", "/api/accounts/me/build-advice", key)),  # GW2 + database + cache + AI
        (14, ("GET", "/healthcare", {})),
        (2, ("GET", "/api/boom", {})),  # an unhandled exception: 500
    ]


@dataclass
class Progress:
    """Counts of answers by class, for the progress bar."""

    started: float = field(default_factory=time.monotonic)
    sent: int = 0
    statuses: Counter[str] = field(default_factory=Counter)

    def record(self, status: int | None) -> None:
        self.statuses["failed" if status is None else f"{status // 100}xx"] += 1


def _bar(progress: Progress, duration: float, width: int = 28) -> str:
    elapsed = min(time.monotonic() - progress.started, duration)
    done = int(width * elapsed / duration) if duration else width
    counts = "  ".join(f"{name} {count}" for name, count in sorted(progress.statuses.items()))
    return f"[{'#' * done}{'.' * (width - done)}] {elapsed:4.1f}/{duration:.0f} s  {progress.sent} requests  {counts}"


async def _one(client: Any, progress: Progress, method: str, path: str, options: dict[str, Any]) -> None:
    progress.sent += 1
    try:
        response = await client.request(method, path, **options)
    except Exception:  # noqa: BLE001 - a refused or reset request is counted, not fatal
        progress.record(None)
        return
    progress.record(response.status_code)


async def _drive(
    base_url: str, gw2_key: str, duration: float, rps: float, tick: Callable[[Progress], None]
) -> Progress:
    import httpx

    rng = random.Random(20240607)
    mix = _mix(gw2_key)
    weights = [weight for weight, _ in mix]
    steps = [step for _, step in mix]
    progress = Progress()
    pending: set[asyncio.Task[None]] = set()
    slow_at = duration * 0.3
    burst_at = duration * 0.6
    slow_sent = burst_sent = False
    interval = 1.0 / rps
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
    async with httpx.AsyncClient(base_url=base_url, timeout=15.0, limits=limits) as client:

        def launch(method: str, path: str, options: dict[str, Any]) -> None:
            task = asyncio.create_task(_one(client, progress, method, path, options))
            pending.add(task)
            task.add_done_callback(pending.discard)

        next_at = progress.started
        last_tick = 0.0
        while (now := time.monotonic()) - progress.started < duration:
            if not slow_sent and now - progress.started >= slow_at:
                slow_sent = True
                launch("GET", "/api/slow", {"params": {"seconds": 1.2}})  # over the slow-request threshold
            if not burst_sent and now - progress.started >= burst_at:
                burst_sent = True
                for _ in range(16):  # more GW2 calls at once than the upstream's bucket holds
                    launch("GET", "/api/items/1", {})
            method, path, options = rng.choices(steps, weights)[0]
            path = path.format(seeded=rng.choice((19721, 19976, 19684)), upstream=rng.choice((24277, 30689)))
            if "json" in options:
                options = {"json": {"profession": rng.choice(options["json"]["profession"])}}
            launch(method, path, options)
            if now - last_tick >= 0.2:
                tick(progress)
                last_tick = now
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        if pending:
            await asyncio.wait(pending, timeout=15.0)
    tick(progress)
    return progress


def drive(base_url: str, gw2_key: str, *, duration: float, rps: float) -> Progress:
    """Send the mix for ``duration`` seconds at ``rps``, drawing a progress bar on stderr."""
    interactive = sys.stderr.isatty()
    printed = [0.0]

    def tick(progress: Progress) -> None:
        if interactive:
            sys.stderr.write("\r" + _bar(progress, duration))
        elif time.monotonic() - printed[0] >= 5.0 or time.monotonic() - progress.started >= duration:
            printed[0] = time.monotonic()
            sys.stderr.write(_bar(progress, duration) + "\n")
        sys.stderr.flush()

    progress = asyncio.run(_drive(base_url, gw2_key, duration, rps, tick))
    if interactive:
        sys.stderr.write("\n")
    return progress
