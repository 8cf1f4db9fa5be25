"""Middleware stacks, background tasks, streams and WebSockets, as one app built per call.

``build_app(telemetry)`` adds CORS, GZip, TrustedHost, a ``BaseHTTPMiddleware``
and a pure ASGI middleware before ``configure()`` runs on the app, and another
pure ASGI middleware and a ``BaseHTTPMiddleware`` after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, BackgroundTasks, FastAPI, Request, WebSocket
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import StreamingResponse
from opentelemetry import trace
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware

ORIGIN = "https://app.example.com"
STREAM_SECONDS = 0.6
BACKGROUND_SECONDS = 0.5


class PureASGI:
    """A pure ASGI middleware that tags the response, as request-id middlewares do."""

    def __init__(self, app: Any, header: bytes) -> None:
        self.app = app
        self.header = header

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def tagged(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (self.header, b"1")]
            await send(message)

        await self.app(scope, receive, tagged)


async def _seen_trace(request: Request, call_next: Callable[[Request], Any]) -> Any:
    """A BaseHTTPMiddleware that reads the current span, as logging middlewares do."""
    response = await call_next(request)
    context = trace.get_current_span().get_span_context()
    response.headers["x-seen-trace"] = format(context.trace_id, "032x") if context.is_valid else "none"
    return response


def build_app(configure: Callable[[FastAPI], Any]) -> FastAPI:
    tracer = trace.get_tracer("stacks")
    app = FastAPI(title="stacks")
    app.add_middleware(PureASGI, header=b"x-before")
    app.add_middleware(BaseHTTPMiddleware, dispatch=_seen_trace)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=["testserver", "api.example.com"])
    app.add_middleware(GZipMiddleware, minimum_size=100)
    app.add_middleware(CORSMiddleware, allow_origins=[ORIGIN], allow_methods=["GET", "POST"])

    api = APIRouter()

    def refresh_cache(item_id: int) -> None:
        with tracer.start_as_current_span("refresh cache"):
            import time

            time.sleep(BACKGROUND_SECONDS)

    def failing_task() -> None:
        raise RuntimeError("background task failed")

    @api.get("/items/{item_id}")
    async def item(item_id: int, tasks: BackgroundTasks) -> dict[str, Any]:
        tasks.add_task(refresh_cache, item_id)
        return {"item_id": item_id, "padding": "x" * 200}  # long enough to be gzipped

    @api.post("/jobs")
    async def job(tasks: BackgroundTasks) -> dict[str, str]:
        tasks.add_task(failing_task)
        return {"queued": "yes"}

    @api.get("/download")
    async def download() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(3):
                await asyncio.sleep(STREAM_SECONDS / 3)
                yield b"chunk\n"

        return StreamingResponse(chunks(), media_type="application/octet-stream")

    @api.get("/events")
    async def events() -> StreamingResponse:
        async def stream() -> AsyncIterator[bytes]:
            for index in range(3):
                yield f"data: {index}\n\n".encode()
                await asyncio.sleep(STREAM_SECONDS / 3)

        return StreamingResponse(stream(), media_type="text/event-stream")

    @api.websocket("/ws/{room}")
    async def chat(websocket: WebSocket, room: str) -> None:
        await websocket.accept()
        message = await websocket.receive_text()
        with tracer.start_as_current_span("handle message"):
            await websocket.send_text(f"{room}:{message}")
        await websocket.close()

    app.include_router(api, prefix="/api")
    configure(app)
    # After configure(): still inside the package's middleware, which stays outermost.
    app.add_middleware(PureASGI, header=b"x-after")
    return app
