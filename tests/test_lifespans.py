"""Lifespans entered and left several times, later apps, and the end of the process.

The end of a lifespan flushes and leaves telemetry running (module-scoped
``TestClient`` fixtures enter and leave it once per module); the providers shut
down at process exit, on SIGTERM and normal exit alike. uvicorn keeps logging
through the package's handler until the process ends.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import otel_setup
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.processes import BIN, ROOT, free_port, server, stop


def _app() -> FastAPI:
    app = FastAPI(title="lifespans")

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    return app


def _memory(telemetry: Any) -> Any:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


def _count(metrics: str, route: str) -> float:
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith("http_server_request_duration_seconds_count") and f'http_route="{route}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_lifespan_entered_and_left_three_times_stays_instrumented(caplog: pytest.LogCaptureFixture) -> None:
    app = _app()
    telemetry = otel_setup.configure(app, sampling_ratio=1.0)
    exporter = _memory(telemetry)
    for round_ in range(3):
        with TestClient(app) as client:  # enters and leaves the lifespan
            assert client.get(f"/items/{round_}").status_code == 200
    assert not telemetry.is_shut_down
    spans = [s for s in exporter.get_finished_spans() if s.name == "GET /items/{item_id}"]
    assert sorted(s.attributes["url.path"] for s in spans) == ["/items/0", "/items/1", "/items/2"]
    with TestClient(app) as client:
        metrics = client.get("/metrics").text
    assert _count(metrics, "/items/{item_id}") == 3.0
    assert not [r for r in caplog.records if "shut down" in r.getMessage()]


def test_a_second_app_after_the_first_lifespan_is_instrumented() -> None:
    first = _app()
    telemetry = otel_setup.configure(first, sampling_ratio=1.0)
    exporter = _memory(telemetry)
    with TestClient(first) as client:
        client.get("/items/1")
    second = _app()  # an app factory: a new app per test
    assert otel_setup.configure(second) is telemetry
    with TestClient(second) as client:
        assert client.get("/items/2").status_code == 200
        metrics = client.get("/metrics").text
    paths = sorted(s.attributes["url.path"] for s in exporter.get_finished_spans() if s.kind.name == "SERVER")
    assert paths == ["/items/1", "/items/2"]
    assert _count(metrics, "/items/{item_id}") == 2.0


def test_the_end_of_a_lifespan_flushes(otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")  # nothing leaves on its own during the test
    app = _app()
    telemetry = otel_setup.configure(app, otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=1.0)
    with TestClient(app) as client:
        client.get("/items/5")
        time.sleep(0.3)
        assert not [s for s in otlp_receiver.spans() if s.kind == "SERVER"]
    assert otlp_receiver.wait_for(lambda r: any(s.kind == "SERVER" for s in r.spans()), timeout=5)
    assert not telemetry.is_shut_down


def test_the_end_of_a_lifespan_runs_the_flush_steps_sentry_registers() -> None:
    app = _app()
    telemetry = otel_setup.configure(app, logging=False)
    timeouts: list[float] = []
    telemetry.add_flush_step(timeouts.append)  # as the Sentry bridge's queue flush is registered
    with TestClient(app) as client:
        client.get("/items/1")
    assert timeouts == [5.0]  # OTEL_SETUP_SHUTDOWN_TIMEOUT's default
    assert not telemetry.is_shut_down


def test_requests_after_a_real_shutdown_warn_once(caplog: pytest.LogCaptureFixture) -> None:
    app = _app()
    telemetry = otel_setup.configure(app, sampling_ratio=1.0, logging=False)
    telemetry.shutdown()
    with caplog.at_level(logging.WARNING, logger="otel_setup"), TestClient(app) as client:
        assert client.get("/items/1").status_code == 200
        assert client.get("/items/2").status_code == 200
    warnings = [r for r in caplog.records if "after telemetry was shut down" in r.getMessage()]
    assert len(warnings) == 1


def test_shutdown_on_lifespan_is_still_available() -> None:
    app = _app()
    telemetry = otel_setup.configure(app, fastapi=otel_setup.FastAPIOptions(shutdown_on_lifespan=True))
    with TestClient(app) as client:
        client.get("/items/1")
    assert telemetry.is_shut_down


_EXIT_SCRIPT = r"""
import os, sys
import otel_setup
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
telemetry = otel_setup.configure(sampling_ratio=1.0, logging=False)
class Exporter(InMemorySpanExporter):
    def shutdown(self):
        print("providers shut down", flush=True)
        super().shutdown()
telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(Exporter()))
print("ready", flush=True)
if sys.argv[1] == "sigterm":
    import signal
    os.kill(os.getpid(), signal.SIGTERM)
    import time; time.sleep(5)
    print("still alive", flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("how", ["exit", "sigterm"])
def test_providers_shut_down_at_process_exit(how: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _EXIT_SCRIPT, how], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.stdout.splitlines() == ["ready", "providers shut down"], done.stderr
    assert done.returncode == (-15 if how == "sigterm" else 0)


@pytest.mark.slow
def test_uvicorn_logs_to_the_end_and_its_exception_line_joins_the_request(
    otlp_receiver: OtlpReceiver, tmp_path: Path
) -> None:
    port = free_port()
    argv = [str(BIN / "uvicorn"), "tests.apps.basic_app:app", "--host", "127.0.0.1", "--port", str(port)]
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint,
        "OTEL_TRACES_SAMPLER_ARG": "1.0",
        "OTEL_SERVICE_NAME": "basic-app",
        "CALL_CONFIGURE": "1",
        "OTEL_SETUP_REQUEST_LOG_BUFFER_MS": "0",
    }
    log = tmp_path / "log"
    with server(argv, env=env, ready_url=f"http://127.0.0.1:{port}/health", log_path=log) as process:
        assert httpx.get(f"http://127.0.0.1:{port}/crash").status_code == 500
        assert httpx.get(f"http://127.0.0.1:{port}/items/1").status_code == 200
        elapsed = stop(process)
    assert elapsed < 6.0
    raw = log.read_text()
    assert "\x1b[" not in raw
    lines = [json.loads(line) for line in raw.splitlines() if line.startswith("{")]
    assert all("color_message" not in line for line in lines)
    events = [line["event"] for line in lines]
    # The last lines of uvicorn, after the lifespan ended, still go through the handler.
    assert "Application shutdown complete." in events
    assert any(event.startswith("Finished server process") for event in events)
    (request,) = [line for line in lines if line.get("http.route") == "/crash"]
    assert request["level"] == "error"
    (exception,) = [line for line in lines if line["event"].startswith("Exception in ASGI application")]
    assert exception["event"] == "Exception in ASGI application"
    assert exception["level"] == "error"
    assert (exception["trace_id"], exception["span_id"]) == (request["trace_id"], request["span_id"])
    # The providers shut down at exit: the spans reached the collector.
    assert otlp_receiver.wait_for(lambda r: len([s for s in r.spans() if s.kind == "SERVER"]) >= 2, timeout=5)
    (span,) = [s for s in otlp_receiver.spans() if s.attributes.get("http.route") == "/crash"]
    assert span.attributes["error.type"] == "RuntimeError"
    assert span.trace_id == request["trace_id"]
