"""Requests to an app in-process, through its real ASGI stack (no server, no socket)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx


def get_all(app: Any, paths: list[str], headers: dict[str, str] | None = None) -> list[httpx.Response]:
    """GET each path in order on one client; the app's exceptions become its 500 answers, as a server's would."""

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return [await client.get(path, headers=headers) for path in paths]

    return asyncio.run(run())
