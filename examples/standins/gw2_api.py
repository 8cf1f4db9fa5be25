"""A loopback stand-in for the public Guild Wars 2 API v2 (https://api.guildwars2.com).

It reproduces what a client and its telemetry have to cope with: the real authentication rules
(``Authorization: Bearer <key>`` or ``?access_token=<key>``), the real error bodies
(``{"text": ...}``), the per-client token bucket (burst 300, refill 5 per second) and a few
injected failures (the character ``Flaky`` answers 503, ``Slow`` takes ``slow_seconds``).

Run it with ``python -m examples.standins.gw2_api --port 8101`` from the repository root, or
build it in tests with :func:`create_app`.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

KEY_PATTERN = re.compile(
    r"^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{20}"
    r"-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$"
)

#: A well-formed key with every permission; it owns the demo account and leads the demo guild.
DEMO_KEY = "ABCDEF01-2345-6789-ABCD-EF0123456789ABCDEF01-2345-6789-ABCD-EF0123456789"
#: A well-formed key limited to the ``account`` scope, to exercise "requires scope" errors.
LIMITED_KEY = "0123ABCD-4567-89EF-0123-456789ABCDEF0123ABCD-4567-89EF-0123-456789ABCDEF"

DEMO_GUILD_ID = "4BBB52AA-D768-4FC6-8EDE-C299F2822F0F"
ALL_PERMISSIONS = (
    "account",
    "builds",
    "characters",
    "guilds",
    "inventories",
    "progression",
    "pvp",
    "tradingpost",
    "unlocks",
    "wallet",
)
MAX_IDS = 200


@dataclass(frozen=True)
class KeyInfo:
    """What the stand-in knows about one API key: its scopes and the account behind it."""

    name: str
    permissions: tuple[str, ...]
    account: dict[str, Any]
    characters: dict[str, dict[str, Any]] = field(default_factory=dict)


class GW2Error(Exception):
    """An error answered the way the real API does: a status and ``{"text": ...}``."""

    def __init__(self, status_code: int, text: str) -> None:
        super().__init__(text)
        self.status_code = status_code
        self.text = text


class TokenBucket:
    """The upstream limiter: ``capacity`` requests at once, refilled at ``rate`` per second."""

    def __init__(self, capacity: float, rate: float, clock: Callable[[], float]) -> None:
        self.capacity = capacity
        self.rate = rate
        self._clock = clock
        self._tokens = capacity
        self._updated = clock()

    def take(self) -> bool:
        """Spend one token if there is one; False means the caller must answer 429."""
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


def _character(name: str, profession: str, race: str, level: int = 80) -> dict[str, Any]:
    return {
        "name": name,
        "race": race,
        "gender": "Female",
        "profession": profession,
        "level": level,
        "guild": DEMO_GUILD_ID,
        "age": 1_234_567,
        "created": "2015-10-23T17:00:00Z",
        "deaths": 421,
        "title": 298,
    }


def default_keys() -> dict[str, KeyInfo]:
    """The demo data: one full-access key and one key limited to ``account``."""
    account = {
        "id": "C9B1A2E4-9D2B-E111-9F4B-78E7D1936222",
        "name": "Demo Commander.1234",
        "age": 8_640_000,
        "world": 1001,
        "guilds": [DEMO_GUILD_ID],
        "guild_leader": [DEMO_GUILD_ID],
        "created": "2013-05-18T12:00:00Z",
        "access": ["GuildWars2", "HeartOfThorns", "PathOfFire", "EndOfDragons"],
        "commander": True,
        "fractal_level": 100,
        "daily_ap": 15_000,
        "monthly_ap": 1_200,
        "wvw_rank": 520,
    }
    characters = {
        c["name"]: c
        for c in (
            _character("Aurora Lightbringer", "Guardian", "Human"),
            _character("Grimtooth", "Necromancer", "Charr"),
            _character("Flaky", "Thief", "Asura", level=42),
            _character("Slow", "Ranger", "Sylvari", level=7),
        )
    }
    limited_account = {
        **account,
        "id": "1F3E5D7C-0000-4000-8000-00000000BEEF",
        "name": "Scoped Key.5678",
        "guilds": [],
        "guild_leader": [],
    }
    return {
        DEMO_KEY: KeyInfo("demo full access", ALL_PERMISSIONS, account, characters),
        LIMITED_KEY: KeyInfo("demo account only", ("account",), limited_account),
    }


_ITEM_LIST: tuple[dict[str, Any], ...] = (
    {
        "id": 19721,
        "name": "Glob of Ectoplasm",
        "type": "CraftingMaterial",
        "rarity": "Exotic",
        "level": 0,
        "vendor_value": 256,
    },
    {"id": 19976, "name": "Mystic Coin", "type": "CraftingMaterial", "rarity": "Rare", "level": 0, "vendor_value": 0},
    {
        "id": 19684,
        "name": "Mithril Ingot",
        "type": "CraftingMaterial",
        "rarity": "Basic",
        "level": 0,
        "vendor_value": 8,
    },
    {
        "id": 24277,
        "name": "Pile of Crystalline Dust",
        "type": "CraftingMaterial",
        "rarity": "Fine",
        "level": 0,
        "vendor_value": 8,
    },
    {"id": 30689, "name": "Eternity", "type": "Weapon", "rarity": "Legendary", "level": 80, "vendor_value": 100_000},
)
ITEMS: dict[int, dict[str, Any]] = {int(item["id"]): item for item in _ITEM_LIST}

GUILD_LOG: list[dict[str, Any]] = [
    {"id": 1001, "time": "2024-03-01T18:00:00.000Z", "type": "joined", "user": "Demo Commander.1234"},
    {
        "id": 1002,
        "time": "2024-03-02T19:30:00.000Z",
        "type": "treasury",
        "user": "Demo Commander.1234",
        "item_id": 19721,
        "count": 25,
    },
    {
        "id": 1003,
        "time": "2024-03-03T20:15:00.000Z",
        "type": "motd",
        "user": "Demo Commander.1234",
        "motd": "Raid night on Thursday!",
    },
]


def _presented_key(request: Request) -> str | None:
    """The key as the real API reads it: the Bearer header first, then ``access_token``."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return request.query_params.get("access_token") or None


@dataclass
class StandinState:
    """Per-app state, kept on ``app.state`` so that dependencies can live at module level."""

    keys: dict[str, KeyInfo]
    burst: float
    refill_per_second: float
    slow_seconds: float
    clock: Callable[[], float]
    buckets: dict[str, TokenBucket] = field(default_factory=dict)


def _state(request: Request) -> StandinState:
    state: StandinState = request.app.state.standin
    return state


def rate_limit(request: Request) -> None:
    """One bucket per client address, checked before anything else, like upstream."""
    state = _state(request)
    client = request.client.host if request.client else "unknown"
    bucket = state.buckets.get(client)
    if bucket is None:
        bucket = state.buckets[client] = TokenBucket(state.burst, state.refill_per_second, state.clock)
    if not bucket.take():
        raise GW2Error(429, "too many requests")


def authenticated(request: Request) -> KeyInfo:
    key = _presented_key(request)
    if key is None:
        raise GW2Error(403, "endpoint requires authentication")
    info = _state(request).keys.get(key) if KEY_PATTERN.match(key) else None
    if info is None:
        raise GW2Error(403, "invalid key")
    return info


Authenticated = Annotated[KeyInfo, Depends(authenticated)]


def requires(scope: str) -> Callable[[KeyInfo], KeyInfo]:
    """A dependency that also checks one permission of the key."""

    def check(info: Authenticated) -> KeyInfo:
        if scope not in info.permissions:
            raise GW2Error(403, f"requires scope {scope}")
        return info

    return check


AccountScope = Annotated[KeyInfo, Depends(requires("account"))]
CharactersScope = Annotated[KeyInfo, Depends(requires("characters"))]
GuildsScope = Annotated[KeyInfo, Depends(requires("guilds"))]


def create_app(
    *,
    burst: float = 300,
    refill_per_second: float = 5.0,
    keys: Mapping[str, KeyInfo] | None = None,
    slow_seconds: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
) -> FastAPI:
    """Build a stand-in app; a small ``burst`` lets tests reach the 429 quickly."""
    app = FastAPI(title="Guild Wars 2 API v2 (loopback stand-in)", dependencies=[Depends(rate_limit)])
    app.state.standin = StandinState(
        keys=dict(default_keys() if keys is None else keys),
        burst=burst,
        refill_per_second=refill_per_second,
        slow_seconds=slow_seconds,
        clock=clock,
    )

    @app.exception_handler(GW2Error)
    async def gw2_error(_: Request, exc: GW2Error) -> JSONResponse:
        return JSONResponse({"text": exc.text}, status_code=exc.status_code)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"text": str(exc.detail).lower()}, status_code=exc.status_code)

    @app.get("/v2/tokeninfo")
    async def tokeninfo(request: Request, info: Authenticated) -> dict[str, Any]:
        key = _presented_key(request) or ""
        return {"id": key[:36], "name": info.name, "permissions": list(info.permissions), "type": "APIKey"}

    @app.get("/v2/account")
    async def account(info: AccountScope) -> dict[str, Any]:
        return info.account

    @app.get("/v2/characters")
    async def characters(info: CharactersScope) -> JSONResponse:
        names = list(info.characters)
        return JSONResponse(names, headers=_result_headers(len(names), len(names)))

    @app.get("/v2/characters/{name}")
    async def character(request: Request, name: str, info: CharactersScope) -> Any:
        found = info.characters.get(name)
        if found is None:
            raise GW2Error(404, "no such id")
        if name == "Flaky":
            raise GW2Error(503, "API not active")
        if name == "Slow":
            await asyncio.sleep(_state(request).slow_seconds)
        return found

    @app.get("/v2/guild/{guild_id}/log")
    async def guild_log(guild_id: str, info: GuildsScope, since: int | None = None) -> list[dict[str, Any]]:
        if guild_id.upper() != DEMO_GUILD_ID:
            raise GW2Error(404, "no such id")
        if guild_id.upper() not in info.account.get("guild_leader", []):
            raise GW2Error(403, "access restricted to guild leaders")
        entries = [e for e in GUILD_LOG if since is None or e["id"] > since]
        return sorted(entries, key=lambda e: e["id"], reverse=True)

    @app.get("/v2/items")
    async def items(ids: str | None = None) -> JSONResponse:
        if ids is None:
            return JSONResponse(list(ITEMS), headers=_result_headers(len(ITEMS), len(ITEMS)))
        wanted = [part.strip() for part in ids.split(",") if part.strip()]
        if len(wanted) > MAX_IDS:
            raise GW2Error(400, f"id list too long; this endpoint is limited to {MAX_IDS} ids at once")
        found = [ITEMS[int(i)] for i in wanted if i.isdigit() and int(i) in ITEMS]
        if not found:
            raise GW2Error(404, "all ids provided are invalid")
        status = 200 if len(found) == len(wanted) else 206
        return JSONResponse(found, status_code=status, headers=_result_headers(len(found), len(ITEMS)))

    @app.get("/v2/items/{item_id}")
    async def item(item_id: int) -> dict[str, Any]:
        if item_id not in ITEMS:
            raise GW2Error(404, "no such id")
        return ITEMS[item_id]

    return app


def _result_headers(count: int, total: int) -> dict[str, str]:
    """Bulk endpoints report their sizes in headers, as upstream does."""
    return {"X-Result-Count": str(count), "X-Result-Total": str(total)}


def main(argv: list[str] | None = None) -> None:
    """Serve the stand-in on loopback only; it is never meant to face a network."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8101)
    parser.add_argument("--burst", type=float, default=300)
    parser.add_argument("--refill", type=float, default=5.0, help="tokens per second")
    parser.add_argument("--slow-seconds", type=float, default=2.0)
    args = parser.parse_args(argv)
    app = create_app(burst=args.burst, refill_per_second=args.refill, slow_seconds=args.slow_seconds)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
