"""App shapes real FastAPI services have, built fresh per call, and a raw ASGI driver for them.

Every router is included with a prefix (one of them twice, one nested in
another), sub-applications are mounted (FastAPI, Starlette, a mount with a
path parameter, static files and a catch-all SPA at ``/``), and the error
paths go through dependencies, ``HTTPException``, a custom handler and
request validation. ``REQUESTS`` says what each request's telemetry must be.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any, NamedTuple

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

STATIC = Path(__file__).with_name("static")


class Expect(NamedTuple):
    name: str
    method: str
    path: str
    root_path: str
    status: int
    route: str | None
    error_type: str | None = None


# route None: no route matched, so no http.route and a span named by the method alone.
REQUESTS: tuple[Expect, ...] = (
    Expect("prefixed", "GET", "/api/v1/items/7", "", 200, "/api/v1/items/{item_id}"),
    Expect("repeated_router", "GET", "/api/v2/items/7", "", 200, "/api/v2/items/{item_id}"),
    Expect(
        "nested_router", "GET", "/api/v1/guilds/g1/members/m2", "", 200, "/api/v1/guilds/{guild_id}/members/{member}"
    ),
    Expect(
        "nested_repeated", "GET", "/api/v2/guilds/g1/members/m2", "", 200, "/api/v2/guilds/{guild_id}/members/{member}"
    ),
    Expect("router_dependency_401", "GET", "/api/v1/admin/stats", "", 401, "/api/v1/admin/stats"),
    Expect("router_dependency_ok", "GET", "/api/v1/admin/stats?token=ok", "", 200, "/api/v1/admin/stats"),
    Expect("dependency_raises", "GET", "/api/v1/admin/broken", "", 500, "/api/v1/admin/broken", "RuntimeError"),
    Expect("path_converter", "GET", "/files/maps/tyria.png", "", 200, "/files/{file_path}"),
    Expect("custom_route_class", "GET", "/custom/3", "", 200, "/custom/{n}"),
    Expect("http_exception", "GET", "/api/v1/items/0", "", 404, "/api/v1/items/{item_id}"),
    Expect("custom_handler_418", "GET", "/teapot", "", 418, "/teapot"),
    Expect("custom_handler_503", "GET", "/quota", "", 503, "/quota", "503"),
    Expect("validation_422", "GET", "/api/v1/items/not-a-number", "", 422, "/api/v1/items/{item_id}"),
    Expect("unhandled_500", "GET", "/crash", "", 500, "/crash", "RuntimeError"),
    Expect("fastapi_mount", "GET", "/sub/ping/5", "", 200, "/sub/ping/{n}"),
    Expect("fastapi_mount_nested_router", "GET", "/sub/v3/things/5", "", 200, "/sub/v3/things/{thing}"),
    Expect("starlette_mount", "GET", "/legacy/report/12", "", 200, "/legacy/report/{report_id}"),
    Expect("mount_with_parameter", "GET", "/tenants/acme/info", "", 200, "/tenants/{tenant}/info"),
    Expect("static_files", "GET", "/static/assets/app.js", "", 200, "/static/{path}"),
    Expect("static_missing", "GET", "/static/nope.js", "", 404, "/static/{path}"),
    Expect("spa_catch_all", "GET", "/guild/overview", "", 200, "/{path}"),
    Expect("spa_asset", "GET", "/assets/app.js", "", 200, "/{path}"),
    Expect("root_path", "GET", "/svc/api/v1/items/7", "/svc", 200, "/svc/api/v1/items/{item_id}"),
    Expect("root_path_mount", "GET", "/svc/sub/ping/5", "/svc", 200, "/svc/sub/ping/{n}"),
)

# The same shapes without the SPA catch-all (which answers every method on every path it reaches).
UNMATCHED: tuple[Expect, ...] = (
    Expect("head", "HEAD", "/api/v1/items/7", "", 405, "/api/v1/items/{item_id}"),
    Expect("options", "OPTIONS", "/api/v1/items/7", "", 405, "/api/v1/items/{item_id}"),
    Expect("method_not_allowed", "DELETE", "/api/v1/items/7", "", 405, "/api/v1/items/{item_id}"),
    Expect("unmatched", "GET", "/no/such/path", "", 404, None),
    Expect("unmatched_id", "GET", "/api/v1/nothing/123456", "", 404, None),
)


class TimedRoute(APIRoute):
    """A custom route class, as services use for timing or body logging."""

    def get_route_handler(self) -> Callable[[Request], Any]:
        handler = super().get_route_handler()

        async def timed(request: Request) -> Any:
            response = await handler(request)
            response.headers["x-timed"] = "1"
            return response

        return timed


class QuotaExceeded(Exception):
    pass


class Teapot(Exception):
    pass


def _require_token(token: str | None = None) -> None:
    if token != "ok":
        raise HTTPException(status_code=401, detail="token required")


def _broken_dependency() -> None:
    raise RuntimeError("dependency failed")


def build_app(*, spa: bool = True) -> FastAPI:
    """A new app on every call (an app factory, as test suites use one per test)."""
    tracer = trace.get_tracer("shapes")
    app = FastAPI(title="shapes")

    items = APIRouter(tags=["items"])

    @items.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        if item_id == 0:
            raise HTTPException(status_code=404, detail="no such item")
        # A client call made while handling the request: a child of the server span.
        with tracer.start_as_current_span("GET api.guildwars2.com", kind=SpanKind.CLIENT):
            pass
        return {"item_id": item_id}

    members = APIRouter(prefix="/members")

    @members.get("/{member}")
    async def member(guild_id: str, member: str) -> dict[str, str]:
        return {"guild": guild_id, "member": member}

    guilds = APIRouter()
    guilds.include_router(members, prefix="/guilds/{guild_id}")
    items.include_router(guilds)

    admin = APIRouter(prefix="/admin", dependencies=[Depends(_require_token)])

    @admin.get("/stats")
    async def stats() -> dict[str, int]:
        return {"users": 3}

    broken = APIRouter(prefix="/admin")

    @broken.get("/broken", dependencies=[Depends(_broken_dependency)])
    async def broken_route() -> dict[str, str]:
        return {}

    app.include_router(items, prefix="/api/v1")
    app.include_router(items, prefix="/api/v2")
    app.include_router(admin, prefix="/api/v1")
    app.include_router(broken, prefix="/api/v1")

    custom = APIRouter(route_class=TimedRoute)

    @custom.get("/custom/{n}")
    async def custom_route(n: int) -> dict[str, int]:
        return {"n": n}

    app.include_router(custom)

    @app.get("/files/{file_path:path}")
    async def files(file_path: str) -> dict[str, str]:
        return {"file": file_path}

    @app.exception_handler(Teapot)
    async def teapot(request: Request, exc: Teapot) -> JSONResponse:
        return JSONResponse({"detail": "teapot"}, status_code=418)

    @app.exception_handler(QuotaExceeded)
    async def quota(request: Request, exc: QuotaExceeded) -> JSONResponse:
        return JSONResponse({"detail": "quota"}, status_code=503)

    @app.get("/teapot")
    async def teapot_route() -> None:
        raise Teapot

    @app.get("/quota")
    async def quota_route() -> None:
        raise QuotaExceeded

    @app.get("/crash")
    async def crash() -> None:
        raise RuntimeError("boom")

    sub = FastAPI()

    @sub.get("/ping/{n}")
    async def ping(n: int) -> dict[str, int]:
        return {"n": n}

    things = APIRouter(prefix="/things")

    @things.get("/{thing}")
    async def thing(thing: str) -> dict[str, str]:
        return {"thing": thing}

    sub.include_router(things, prefix="/v3")
    app.mount("/sub", sub)

    async def report(request: Any) -> PlainTextResponse:
        return PlainTextResponse(str(request.path_params["report_id"]))

    app.mount("/legacy", Starlette(routes=[Route("/report/{report_id:int}", report)]))

    tenant = FastAPI()

    @tenant.get("/info")
    async def info(request: Request) -> dict[str, str]:
        return {"tenant": request.path_params.get("tenant", "")}

    app.mount("/tenants/{tenant}", tenant)
    app.mount("/static", StaticFiles(directory=STATIC))
    if spa:
        # Last: a single-page app's catch-all serves index.html for every client-side route.
        app.mount("/", SpaFiles(directory=STATIC, html=True))
    return app


class SpaFiles(StaticFiles):
    """StaticFiles that answer index.html for client-side routes (the usual SPA fallback)."""

    async def get_response(self, path: str, scope: Any) -> Any:
        try:
            return await super().get_response(path, scope)
        except HTTPException as exc:
            if exc.status_code != 404:
                raise
            return await super().get_response("index.html", scope)
        except Exception as exc:
            if getattr(exc, "status_code", None) != 404:
                raise
            return await super().get_response("index.html", scope)


def drive(app: Any, requests: tuple[Expect, ...]) -> list[int]:
    """Each request straight to the ASGI callable; the response statuses, in order."""

    async def one(request: Expect) -> int:
        path, _, query = request.path.partition("?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": request.root_path,
            "query_string": query.encode(),
            "headers": [(b"host", b"testserver"), (b"user-agent", b"shapes/1.0")],
            "client": ("127.0.0.1", 50123),
            "server": ("testserver", 80),
        }
        messages = [{"type": "http.request", "body": b"", "more_body": False}]
        statuses: list[int] = []

        async def receive() -> dict[str, Any]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        with contextlib.suppress(RuntimeError):  # unhandled exceptions leave the app after the 500 was sent
            await app(scope, receive, send)
        return statuses[0]

    async def all_requests() -> list[int]:
        return [await one(request) for request in requests]

    return asyncio.run(all_requests())


def span_records(exporter: Any) -> list[dict[str, Any]]:
    return [
        {
            "name": span.name,
            "kind": span.kind.name,
            "scope": span.instrumentation_scope.name if span.instrumentation_scope else None,
            "span_id": span.context.span_id,
            "parent": span.parent.span_id if span.parent else None,
            "attributes": {k: v for k, v in (span.attributes or {}).items()},
        }
        for span in exporter.get_finished_spans()
    ]


def _contrib_main() -> None:
    """Contrib's FastAPI instrumentation on the same shapes, as JSON on stdout."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    from tests.support.contrib_reference import duration_points, in_memory_providers

    exporter, tracer_provider, reader, meter_provider = in_memory_providers()
    trace.set_tracer_provider(tracer_provider)
    output: dict[str, Any] = {}
    for label, spa, requests in (("spa", True, REQUESTS), ("plain", False, UNMATCHED)):
        exporter.clear()
        app = build_app(spa=spa)
        FastAPIInstrumentor.instrument_app(
            app, tracer_provider=tracer_provider, meter_provider=meter_provider, exclude_spans=["receive", "send"]
        )
        statuses = drive(app, requests)
        output[label] = {"statuses": statuses, "spans": span_records(exporter)}
    output["points"] = duration_points(reader, "http.server.request.duration")
    print(json.dumps(output, default=str))


if __name__ == "__main__":
    _contrib_main()
