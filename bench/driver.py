"""Calls an ASGI app directly: a prebuilt scope, a constant ``receive``, a no-op ``send``.

No HTTP client or server is involved, so what is measured is the ASGI stack
(FastAPI, Starlette and whatever instrumentation wraps them) and nothing else.
CPU time is read per batch: ``thread_time_ns`` for the thread that serves the
requests, ``process_time_ns`` for the whole process, the difference being what
background threads (the span export thread) spent meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from typing import Any

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

BASE_SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.3"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/items/42",
    "raw_path": b"/items/42",
    "root_path": "",
    "query_string": b"",
    "headers": [
        (b"host", b"127.0.0.1:8000"),
        (b"user-agent", b"bench/1.0"),
        (b"accept", b"application/json"),
    ],
    "client": ("127.0.0.1", 51000),
    "server": ("127.0.0.1", 8000),
}

_REQUEST = {"type": "http.request", "body": b"", "more_body": False}


async def _receive() -> dict[str, Any]:
    return _REQUEST


async def _send(message: MutableMapping[str, Any]) -> None:
    return None


@dataclass(frozen=True)
class Batch:
    """CPU nanoseconds per request over one batch."""

    thread_ns: float
    process_ns: float


class Driver:
    """Runs batches of requests on one event loop owned by the calling thread."""

    def __init__(self, app: ASGIApp, scope: dict[str, Any] | None = None) -> None:
        self._app = app
        self._scope = dict(scope or BASE_SCOPE)
        self._loop = asyncio.new_event_loop()
        self._resources = AsyncExitStack()

    def enter(self, resource: AbstractAsyncContextManager[Any]) -> None:
        """Hold ``resource`` (an app's lifespan: its pools and clients) open until :meth:`close`."""
        self._loop.run_until_complete(self._resources.enter_async_context(resource))

    async def _many(self, count: int) -> None:
        app, scope, receive, send = self._app, self._scope, _receive, _send
        for _ in range(count):
            # Starlette writes into the scope (route, endpoint, path params): a fresh copy each time.
            await app(dict(scope), receive, send)

    def status(self) -> int:
        """One request, returning its status, to check the route answers before timing it."""
        seen: list[int] = []

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                seen.append(message["status"])

        self._loop.run_until_complete(self._app(dict(self._scope), _receive, send))
        return seen[0]

    def warm_up(self, count: int) -> None:
        self._loop.run_until_complete(self._many(count))

    def batch(self, count: int) -> Batch:
        thread_start, process_start = time.thread_time_ns(), time.process_time_ns()
        self._loop.run_until_complete(self._many(count))
        thread_ns, process_ns = time.thread_time_ns() - thread_start, time.process_time_ns() - process_start
        return Batch(thread_ns / count, process_ns / count)

    def close(self) -> None:
        self._loop.run_until_complete(self._resources.aclose())
        self._loop.close()
