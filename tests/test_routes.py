"""Route templates on real app shapes: full prefixes, mounts, root_path, never a raw path.

The shapes are in ``tests/apps/shapes.py``. Each request's server span must
carry the span name, ``http.route``, status and ``error.type`` listed there,
have the app's client span as its child, and add exactly one point to the
``http.server.request.duration`` series of its labels. Contrib's FastAPI
instrumentation runs on the same shapes (in a subprocess, stable semconv) and
agrees everywhere except the differences listed in ``CONTRIB_DIFFERENCES``.
``scripts/fastapi-matrix`` runs this file on every FastAPI release claimed.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import pytest

from tests.apps.shapes import REQUESTS, UNMATCHED, Expect, build_app, drive, span_records
from tests.support.contrib_reference import run_reference

OURS = "otel_setup.fastapi"
CONTRIB = "opentelemetry.instrumentation.fastapi"

MOUNT_REASON = (
    "contrib names a request to a mounted app by the mount's own path only (GET /sub), so every route of the "
    "sub-app shares one series; otel_setup gives the mount path plus the sub-app's route, as FastAPI's own "
    "telemetry does"
)
SPA_REASON = "contrib leaves a catch-all mount at / without http.route (its path is empty); otel_setup names it /{path}"
ROOT_REASON = (
    "semantic conventions: http.route SHOULD include the application root; contrib leaves root_path out, "
    "otel_setup (and FastAPI's own telemetry) put it first"
)
CONVERTER_REASON = (
    "contrib keeps Starlette's converter in the template ({file_path:path}); otel_setup uses the path format "
    "({file_path}), as FastAPI's own telemetry does"
)
EXCEPTION_REASON = (
    "semantic conventions: error.type is the exception's class when one was raised; contrib reports the "
    "500 that Starlette's error middleware sent"
)
# request name -> (contrib's http.route, contrib's error.type, reason)
CONTRIB_DIFFERENCES: dict[str, tuple[str | None, str | None, str]] = {
    "dependency_raises": ("/api/v1/admin/broken", "500", EXCEPTION_REASON),
    "unhandled_500": ("/crash", "500", EXCEPTION_REASON),
    "path_converter": ("/files/{file_path:path}", None, CONVERTER_REASON),
    "fastapi_mount": ("/sub", None, MOUNT_REASON),
    "fastapi_mount_nested_router": ("/sub", None, MOUNT_REASON),
    "starlette_mount": ("/legacy", None, MOUNT_REASON),
    "mount_with_parameter": ("/tenants/{tenant}", None, MOUNT_REASON),
    "static_files": ("/static", None, MOUNT_REASON),
    "static_missing": ("/static", None, MOUNT_REASON),
    "spa_catch_all": (None, None, SPA_REASON),
    "spa_asset": (None, None, SPA_REASON),
    "root_path": ("/api/v1/items/{item_id}", None, ROOT_REASON),
    "root_path_mount": ("/sub", None, ROOT_REASON + "; " + MOUNT_REASON),
}


def _span_name(request: Expect) -> str:
    return f"{request.method} {request.route}" if request.route else request.method


def _server_spans(spans: list[dict[str, Any]], scope: str) -> list[dict[str, Any]]:
    return [s for s in spans if s["kind"] == "SERVER" and s["scope"] == scope]


def _duration_counts(registry: Any) -> Counter[tuple[str, str, str, str]]:
    counts: Counter[tuple[str, str, str, str]] = Counter()
    for family in registry.collect():
        if family.name != "http_server_request_duration_seconds":
            continue
        for sample in family.samples:
            if sample.name == "http_server_request_duration_seconds_count":
                labels = sample.labels
                key = (
                    labels["http_request_method"],
                    labels.get("http_route", ""),
                    labels["http_response_status_code"],
                    labels.get("error_type", ""),
                )
                counts[key] += int(sample.value)
    return counts


@pytest.fixture
def ours() -> dict[str, Any]:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import otel_setup

    telemetry = otel_setup.configure(sampling_ratio=1.0, logging=False)
    exporter = InMemorySpanExporter()
    telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))  # type: ignore[attr-defined]
    output: dict[str, Any] = {}
    for label, spa, requests in (("spa", True, REQUESTS), ("plain", False, UNMATCHED)):
        exporter.clear()
        app = build_app(spa=spa)
        telemetry.instrument_app(app)
        statuses = drive(app, requests)
        output[label] = {"statuses": statuses, "spans": span_records(exporter)}
    output["counts"] = _duration_counts(telemetry.prometheus_registry)
    return output


@pytest.fixture(scope="module")
def contrib() -> dict[str, Any]:
    return run_reference("tests.apps.shapes")


def _cases() -> list[tuple[str, Expect]]:
    return [("spa", r) for r in REQUESTS] + [("plain", r) for r in UNMATCHED]


def test_statuses(ours: dict[str, Any]) -> None:
    for label, requests in (("spa", REQUESTS), ("plain", UNMATCHED)):
        assert ours[label]["statuses"] == [r.status for r in requests]


def test_one_server_span_per_request_with_name_route_status_and_error_type(ours: dict[str, Any]) -> None:
    for label, requests in (("spa", REQUESTS), ("plain", UNMATCHED)):
        spans = ours[label]["spans"]
        # Mounted sub-apps add no span of their own (nor FastAPI's native one).
        assert [s for s in spans if s["kind"] == "SERVER" and s["scope"] != OURS] == []
        server = _server_spans(spans, OURS)
        assert len(server) == len(requests)
        for request, span in zip(requests, server, strict=True):
            attributes = span["attributes"]
            assert attributes["url.path"] == request.path.partition("?")[0], request.name
            assert span["name"] == _span_name(request), request.name
            assert attributes.get("http.route") == request.route, request.name
            assert attributes["http.response.status_code"] == request.status, request.name
            assert attributes.get("error.type") == request.error_type, request.name


def test_client_spans_are_children_of_their_request(ours: dict[str, Any]) -> None:
    spans = ours["spa"]["spans"]
    by_id = {s["span_id"]: s for s in spans}
    client = [s for s in spans if s["kind"] == "CLIENT"]
    assert len(client) == 3  # the successful item requests: /api/v1, /api/v2 and the one under root_path
    for span in client:
        parent = by_id[span["parent"]]
        assert parent["kind"] == "SERVER"
        assert parent["attributes"]["http.route"].endswith("/items/{item_id}")


def test_exactly_one_duration_point_per_request(ours: dict[str, Any]) -> None:
    expected: Counter[tuple[str, str, str, str]] = Counter(
        (r.method, r.route or "", str(r.status), r.error_type or "") for _, r in _cases()
    )
    assert ours["counts"] == expected


def test_unmatched_paths_never_become_a_label(ours: dict[str, Any]) -> None:
    routes = {key[1] for key in ours["counts"]}
    for _, request in _cases():
        if request.route is None:
            assert request.path not in routes


@pytest.mark.slow
def test_same_as_contrib_where_contrib_is_right(ours: dict[str, Any], contrib: dict[str, Any]) -> None:
    for label, requests in (("spa", REQUESTS), ("plain", UNMATCHED)):
        assert contrib[label]["statuses"] == ours[label]["statuses"]
        theirs = _server_spans(contrib[label]["spans"], CONTRIB)
        assert len(theirs) == len(requests)
        for request, span in zip(requests, theirs, strict=True):
            assert span["attributes"]["url.path"] == request.path.partition("?")[0]
            route, error_type = request.route, request.error_type
            if request.name in CONTRIB_DIFFERENCES:
                route, error_type, _ = CONTRIB_DIFFERENCES[request.name]
            assert span["attributes"].get("http.route") == route, request.name
            assert span["attributes"].get("error.type") == error_type, request.name
            assert span["attributes"]["http.response.status_code"] == request.status, request.name


def test_route_template_fallback_without_fastapis_private_state() -> None:
    """The public-API path of the compat seam gives the same full templates."""
    import fastapi

    from otel_setup import _compat

    app = build_app(spa=False)
    seen: list[tuple[str, str | None, str | None, str]] = []

    class Record:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await self.inner(scope, receive, send)
            route = scope.get("route")
            if scope["type"] == "http" and route is not None:
                private = _compat.full_route_template(scope, route, {})
                public_scope = {k: v for k, v in scope.items() if k != "fastapi"}
                public = _compat.route_template_from_contexts(public_scope, route, {})
                seen.append((route.path_format, private, public, scope["path"]))

    app.add_middleware(Record)
    drive(
        app, tuple(r for r in REQUESTS if r.name in {"prefixed", "repeated_router", "nested_router", "nested_repeated"})
    )
    privates = [private for _, private, _, _ in seen]
    assert privates == [
        "/api/v1/items/{item_id}",
        "/api/v2/items/{item_id}",
        "/api/v1/guilds/{guild_id}/members/{member}",
        "/api/v2/guilds/{guild_id}/members/{member}",
    ]
    version = tuple(int(part) for part in fastapi.__version__.split(".")[:2])
    if hasattr(fastapi.routing, "iter_route_contexts") or version < (0, 138):
        assert [public for _, _, public, _ in seen] == privates
    else:
        # Nested routers without the public iterator: only the private state knows the prefix.
        assert [public for _, _, public, _ in seen] == [own for own, _, _, _ in seen]
        assert [own for own, _, _, _ in seen] != privates


def test_matrix_runs_the_intended_release() -> None:
    expected = os.environ.get("FASTAPI_MATRIX_EXPECT")
    import fastapi

    if expected:
        assert fastapi.__version__ == expected
    else:
        assert fastapi.__file__.startswith(str(__import__("sys").prefix))


def test_a_mounted_app_instrumented_at_construction_adds_no_second_span() -> None:
    """Under zero code every ``FastAPI()`` is instrumented when built, mounted sub-apps included."""
    from fastapi import FastAPI
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import otel_setup

    telemetry = otel_setup.configure(sampling_ratio=1.0, logging=False)
    exporter = InMemorySpanExporter()
    telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))  # type: ignore[attr-defined]
    app = FastAPI()
    telemetry.instrument_app(app)
    sub = FastAPI()
    telemetry.instrument_app(sub)

    @sub.get("/ping/{n}")
    async def ping(n: int) -> dict[str, int]:
        return {"n": n}

    app.mount("/sub", sub)
    assert drive(app, (Expect("mounted", "GET", "/sub/ping/1", "", 200, "/sub/ping/{n}"),)) == [200]
    server = [s for s in span_records(exporter) if s["kind"] == "SERVER"]
    assert [(s["name"], s["scope"]) for s in server] == [("GET /sub/ping/{n}", OURS)]


def test_under_zero_code_fastapi_is_built_with_its_own_telemetry_off() -> None:
    """The constructor patch passes FastAPI's public ``telemetry=`` option (0.142+), over what the app passed."""
    import inspect

    import fastapi

    from otel_setup._compat import NATIVE_TELEMETRY_OFF
    from otel_setup._integrations.fastapi import patch_constructor, unpatch_constructor

    native = "telemetry" in inspect.signature(fastapi.FastAPI.__init__).parameters
    seen: list[Any] = []
    assert patch_constructor(seen.append)
    try:
        plain = fastapi.FastAPI(title="plain")
        options: Any = {"exclude": _never_excluded, "tracing": True}
        custom = fastapi.FastAPI(telemetry=options) if native else None
    finally:
        unpatch_constructor()
    after = fastapi.FastAPI()
    assert seen == ([plain, custom] if native else [plain]) and plain.title == "plain"
    if not native:
        assert not hasattr(plain, "_telemetry")
        return
    # Read before anything of the package's flipped a switch: the constructor itself was told.
    assert {key: plain._telemetry[key] for key in NATIVE_TELEMETRY_OFF} == NATIVE_TELEMETRY_OFF  # type: ignore[literal-required,unused-ignore]
    assert custom is not None and custom._telemetry["exclude"] is _never_excluded
    assert {key: custom._telemetry[key] for key in NATIVE_TELEMETRY_OFF} == NATIVE_TELEMETRY_OFF  # type: ignore[literal-required,unused-ignore]
    assert after._telemetry["tracing"] is True, "the class is restored"


def _never_excluded(scope: Any) -> bool:
    return False
