"""Liveness (``/health``) and readiness (``/ready``) endpoints.

Liveness never touches a dependency or the telemetry pipeline: a slow
database must not get a healthy process restarted. Readiness runs every
registered check concurrently, each under its own timeout, and answers 503
with the name of what failed and a short reason, never an exception message,
a stack trace or a connection string.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

__all__ = ["Readiness", "ReadinessCheck", "redis_check", "sqlalchemy_check"]

ReadinessCheck = Callable[[], bool | Awaitable[bool | None] | None]
"""A zero-argument callable (sync or async); raising or returning False means not ready."""


class Readiness:
    """The registry of readiness checks behind ``/ready``."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._checks: dict[str, ReadinessCheck] = {}

    def add(self, name: str, check: ReadinessCheck) -> None:
        if not name or not callable(check):
            raise ValueError("a readiness check needs a name and a callable")
        self._checks[name] = check

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._checks)

    async def _run_one(self, check: ReadinessCheck) -> str:
        try:
            if inspect.iscoroutinefunction(check):
                result: Any = await asyncio.wait_for(check(), self.timeout)
            else:
                result = await asyncio.wait_for(asyncio.to_thread(check), self.timeout)
                if inspect.isawaitable(result):
                    result = await asyncio.wait_for(result, self.timeout)
        except TimeoutError:
            return "timeout"
        except Exception as exc:  # noqa: BLE001 - the reason shown is the type only, never the message
            return f"error: {type(exc).__name__}"
        return "ok" if result is not False else "failed"

    async def run(self) -> tuple[bool, dict[str, str]]:
        names = list(self._checks)
        outcomes = await asyncio.gather(*(self._run_one(self._checks[name]) for name in names))
        results = dict(zip(names, outcomes, strict=True))
        return all(outcome == "ok" for outcome in outcomes), results


def _json_response(status: int, body: Mapping[str, Any]) -> Any:
    from starlette.responses import Response

    return Response(
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def health_endpoint() -> Callable[[Any], Awaitable[Any]]:
    async def health(request: Any) -> Any:
        return _json_response(200, {"status": "ok"})

    return health


def ready_endpoint(readiness: Readiness) -> Callable[[Any], Awaitable[Any]]:
    async def ready(request: Any) -> Any:
        ok, checks = await readiness.run()
        return _json_response(200 if ok else 503, {"status": "ready" if ok else "unavailable", "checks": checks})

    return ready


def sqlalchemy_check(engine: Any) -> ReadinessCheck:
    """``SELECT 1`` on a sync or async SQLAlchemy engine."""
    from sqlalchemy import text

    sync_engine = getattr(engine, "sync_engine", None)
    if sync_engine is not None:

        async def ping_async() -> bool:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
            return True

        return ping_async

    def ping() -> bool:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True

    return ping


def redis_check(client: Any) -> ReadinessCheck:
    """``PING`` on a sync or asyncio redis-py client."""
    if type(client).__module__.startswith("redis.asyncio"):

        async def ping_async() -> bool:
            return bool(await client.ping())

        return ping_async

    def ping() -> bool:
        return bool(client.ping())

    return ping
