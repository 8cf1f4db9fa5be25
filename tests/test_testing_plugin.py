"""``otel_setup.testing``: the ``otel_capture`` fixture, from a project outside this repository."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import otel_setup
from otel_setup.testing import OtelCapture

pytest_plugins = ["pytester"]

USER_TESTS = """
import structlog
from fastapi import FastAPI
from fastapi.testclient import TestClient

import otel_setup


def create_app() -> FastAPI:
    app = FastAPI()
    log = structlog.get_logger("shop")

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        log.info("item.served", item_id=item_id)
        return {"id": item_id}

    otel_setup.configure(app)
    return app


def test_request_telemetry(otel_capture):
    client = TestClient(create_app())
    assert client.get("/items/3").status_code == 200
    assert client.get("/items/4").status_code == 200

    assert otel_capture.span_names() == ["GET /items/{item_id}", "GET /items/{item_id}"]
    first = otel_capture.spans_as_dicts()[0]
    assert first["trace_id"] == "00000000000000000000000000000001"
    assert first["span_id"] == "0000000000000001"
    assert first["kind"] == "SERVER"
    assert first["attributes"]["http.route"] == "/items/{item_id}"

    assert otel_capture.metric("http_server_request_duration_seconds_count", http_route="/items/{item_id}") == 2
    assert otel_capture.metric("http_server_request_duration_seconds_count", http_response_status_code="500") == 0

    served = [record for record in otel_capture.logs if record["event"] == "item.served"]
    assert [record["item_id"] for record in served] == [3, 4]
    assert served[0]["trace_id"] == first["trace_id"]
    requests = [record for record in otel_capture.logs if record["event"] == "request"]
    assert requests[0]["http.route"] == "/items/{item_id}"


def test_each_test_starts_empty(otel_capture):
    assert otel_capture.spans == [] and otel_capture.logs == []
    TestClient(create_app()).get("/items/9")
    assert otel_capture.spans_as_dicts()[0]["trace_id"] == "00000000000000000000000000000001"
    assert otel_capture.metric("http_server_request_duration_seconds_count") == 1


def test_without_the_fixture_nothing_is_configured():
    from otel_setup._core.configure import active

    assert active() is None
"""


def test_fixture_from_a_project_outside_the_package(pytester: pytest.Pytester) -> None:
    """A user's test file, run by a separate pytest process that finds the plugin by its entry point."""
    pytester.makepyfile(test_user_service=USER_TESTS)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_fixture_options_override_configure_arguments(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
import pytest

@pytest.fixture
def otel_capture_options():
    return {"service_name": "shop-under-test"}
"""
    )
    pytester.makepyfile(
        test_options="""
def test_resource(otel_capture):
    assert otel_capture.telemetry.resource.attributes["service.name"] == "shop-under-test"
"""
    )
    pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_fixture_coexists_with_this_suites_reset(otel_capture: OtelCapture) -> None:
    """Here ``clean_otel`` (autouse) resets around the test; the opt-in fixture configures in between."""
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    assert otel_setup.configure(app) is otel_capture.telemetry
    TestClient(app).get("/ping")
    assert otel_capture.span_names() == ["GET /ping"]
    assert otel_capture.metric("http_server_request_duration_seconds_count", http_route="/ping") == 1
