"""Active users: distinct counting per window, expiry, the memory cap, and no identifier exported.

The clock is injected so windows expire without sleeping; the last tests go through
``configure()`` and read the real ``/metrics`` text, where an identifier must not appear in
any form (raw, or as the hash an attacker could compute without the process key).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import timeit

import httpx
import pytest
from fastapi import FastAPI

import otel_setup
from otel_setup._hotpath.users import ActiveUsers, DisabledActiveUsers, window_label


class Clock:
    """A hand-moved monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_distinct_ids_are_counted_once_in_every_window() -> None:
    clock = Clock()
    users = ActiveUsers(clock=clock)
    for account in ["alice", "bob", "alice", b"carol", 42, "42", "alice"]:
        users.seen(account)
    # 42 and "42" are one identifier (ints are hashed by their decimal text).
    assert users.counts() == {"1m": 4, "5m": 4, "15m": 4}
    assert users.windows == ("1m", "5m", "15m")
    assert users.count() == users.count("15m") == users.count(900) == 4


def test_windows_expire_with_the_clock() -> None:
    clock = Clock()
    users = ActiveUsers(clock=clock)
    users.seen("old-1")
    users.seen("old-2")
    clock.now += 120  # 2 minutes later
    users.seen("recent")
    users.seen("old-1")  # seen again: it is recent now
    assert users.counts() == {"1m": 2, "5m": 3, "15m": 3}
    clock.now += 61
    assert users.counts() == {"1m": 0, "5m": 3, "15m": 3}
    clock.now += 240  # old-2 was last seen 421 s ago, the others 301 s ago
    assert users.counts() == {"1m": 0, "5m": 0, "15m": 3}
    clock.now += 600
    assert users.counts() == {"1m": 0, "5m": 0, "15m": 0}
    assert len(users._entries) == 0, "expired digests are forgotten, not just left out of the count"


def test_window_boundary_is_inclusive() -> None:
    clock = Clock()
    users = ActiveUsers(windows=[60], clock=clock)
    users.seen("a")
    clock.now += 60
    assert users.count("1m") == 1
    clock.now += 0.001
    assert users.count("1m") == 0


def test_the_cap_bounds_memory_and_drops_the_least_recently_seen() -> None:
    clock = Clock()
    users = ActiveUsers(windows=[300], max_entries=100, clock=clock)
    users.seen("keep-me")
    for index in range(1000):
        clock.now += 0.01
        users.seen(f"flood-{index}")
        if index % 10 == 0:
            users.seen("keep-me")  # active all along: never evicted
    assert len(users._entries) == 100
    assert users.count() == 100, "the gauge saturates at the cap"
    assert users.evicted == 1001 - 100
    digest = users._hasher.copy()
    digest.update(b"keep-me")
    assert digest.digest() in users._entries


def test_only_keyed_digests_are_kept() -> None:
    users = ActiveUsers()
    other = ActiveUsers()
    users.seen("alice@example.com")
    other.seen("alice@example.com")
    (digest,) = users._entries
    assert len(digest) == 8 and b"alice" not in digest
    assert digest not in other._entries, "each instance has its own random key"
    plain = [
        hashlib.blake2s(b"alice@example.com", digest_size=8).digest(),
        hashlib.sha256(b"alice@example.com").digest()[:8],
    ]
    assert digest not in plain


def test_settings_are_validated() -> None:
    assert [window_label(s) for s in (30, 60, 90, 300, 3600, 7200)] == ["30s", "1m", "90s", "5m", "1h", "2h"]
    with pytest.raises(ValueError, match="whole number"):
        window_label(1.5)
    with pytest.raises(ValueError, match="at least one window"):
        ActiveUsers(windows=[])
    with pytest.raises(ValueError, match="max_entries"):
        ActiveUsers(max_entries=0)
    with pytest.raises(KeyError, match="no window"):
        ActiveUsers().count("2m")


def test_seen_is_cheap() -> None:
    """The request path pays one hash and an ordered-dict update: a few microseconds at most."""
    users = ActiveUsers()
    ids = [f"gw2:account:{index:016x}" for index in range(1000)]
    rounds = 20
    best = min(timeit.repeat(lambda: [users.seen(i) for i in ids], number=1, repeat=rounds)) / len(ids)
    assert best < 20e-6, f"seen() took {best * 1e6:.1f} µs"


def _metrics(app: FastAPI) -> str:
    async def get() -> str:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return (await client.get("/metrics")).text

    return asyncio.run(get())


def test_metrics_show_counts_and_never_an_identifier() -> None:
    app = FastAPI()
    telemetry = otel_setup.configure(app, metrics_exporter="prometheus")
    assert "otel_setup_users_active" not in _metrics(app), "no series until the feature is used"
    accounts = ["Alice.1234", "Bob.5678", "alice@example.com", "ABCDEF01-2345-6789-ABCD-EF0123456789"]
    for account in accounts * 3:
        telemetry.users.seen(account)
    text = _metrics(app)
    samples = {}
    for line in text.splitlines():
        if line.startswith("otel_setup_users_active{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("{", 1)[1].rsplit("}", 1)[0]))
            assert {name for name in labels if not name.startswith("otel_scope_")} == {"otel_setup_users_window"}
            assert labels["otel_scope_name"] == "otel_setup.users"
            samples[labels["otel_setup_users_window"]] = line.rsplit(" ", 1)[1]
    assert samples == {"1m": "4.0", "5m": "4.0", "15m": "4.0"}
    lowered = text.lower()
    for account in accounts:
        data = account.encode()
        for form in (
            account,
            hashlib.sha256(data).hexdigest()[:16],
            hashlib.blake2s(data, digest_size=8).hexdigest(),
        ):
            assert form.lower() not in lowered
        for digest in telemetry.users._entries:
            assert digest.hex() not in lowered


def test_telemetry_off_makes_seen_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    telemetry = otel_setup.configure()
    assert isinstance(telemetry.users, DisabledActiveUsers)
    telemetry.users.seen("alice")
    assert telemetry.users.count() == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_worker_starts_empty() -> None:
    users = ActiveUsers()
    users.seen("parent-only")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            users.seen("child")
            os.write(write, str(users.count()).encode())
        finally:
            os._exit(0)
    os.close(write)
    try:
        answer = os.read(read, 16)
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    assert answer == b"1"
    assert users.count() == 1
