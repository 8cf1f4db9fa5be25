"""Real processes: uvicorn workers, SIGTERM, opentelemetry-instrument, and a hung collector."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

import otel_setup
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.processes import BIN, free_port, server, stop

pytestmark = pytest.mark.slow

APP = "tests.apps.basic_app:app"


def _env(receiver: OtlpReceiver, **extra: str) -> dict[str, str]:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_TRACES_SAMPLER_ARG": "1.0",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
        "OTEL_SERVICE_NAME": "basic-app",
    }
    env.update(extra)
    return env


def _server_spans(receiver: OtlpReceiver) -> list[object]:
    return [s for s in receiver.spans() if s.kind == "SERVER"]


def test_shutdown_returns_within_its_deadline_against_a_hung_collector(otlp_receiver: OtlpReceiver) -> None:
    otlp_receiver.mode = "hang"
    telemetry = otel_setup.configure(otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=1.0, otlp_timeout=30)
    tracer = telemetry.tracer_provider.get_tracer("test")
    for index in range(5000):
        tracer.start_span(f"work {index}").end()
    # The first batch is now stuck in a hung export.
    assert otlp_receiver.wait_for(lambda r: r.request_count("traces") >= 1, timeout=5)
    started = time.monotonic()
    delivered = telemetry.shutdown()
    elapsed = time.monotonic() - started
    assert elapsed < 5.0 + 1.0, f"shutdown took {elapsed:.1f}s (the SDK alone takes 30s here)"
    assert delivered is False, "a shutdown that could not deliver must say so"
    assert otlp_receiver.request_count("traces") >= 1


def test_flush_with_a_timeout_returns_within_it(otlp_receiver: OtlpReceiver) -> None:
    otlp_receiver.mode = "hang"
    telemetry = otel_setup.configure(otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=1.0)
    telemetry.tracer_provider.get_tracer("test").start_span("one").end()
    started = time.monotonic()
    assert telemetry.force_flush(timeout=1.0) is False
    assert time.monotonic() - started < 1.5


def test_last_requests_before_sigterm_reach_the_collector(otlp_receiver: OtlpReceiver, tmp_path: Path) -> None:
    port = free_port()
    argv = [str(BIN / "uvicorn"), APP, "--host", "127.0.0.1", "--port", str(port)]
    env = _env(otlp_receiver, CALL_CONFIGURE="1")
    with server(argv, env=env, ready_url=f"http://127.0.0.1:{port}/health", log_path=tmp_path / "log") as process:
        for index in range(3):
            assert httpx.get(f"http://127.0.0.1:{port}/items/{index}").status_code == 200
        elapsed = stop(process)
    assert elapsed < 6.0
    # The batch delay is 1 s: only the lifespan-shutdown flush can have sent these.
    assert otlp_receiver.wait_for(lambda r: len(_server_spans(r)) == 3, timeout=5)
    assert sorted(s.attributes["url.path"] for s in _server_spans(otlp_receiver)) == [
        "/items/0",
        "/items/1",
        "/items/2",
    ]


def test_sigterm_with_a_hung_collector_exits_within_the_deadline(otlp_receiver: OtlpReceiver, tmp_path: Path) -> None:
    otlp_receiver.mode = "hang"
    port = free_port()
    argv = [str(BIN / "uvicorn"), APP, "--host", "127.0.0.1", "--port", str(port)]
    env = _env(otlp_receiver, CALL_CONFIGURE="1", OTEL_EXPORTER_OTLP_TIMEOUT="30")
    with server(argv, env=env, ready_url=f"http://127.0.0.1:{port}/health", log_path=tmp_path / "log") as process:
        with httpx.Client() as client:
            for index in range(200):
                client.get(f"http://127.0.0.1:{port}/items/{index}")
        assert otlp_receiver.wait_for(lambda r: r.request_count("traces") >= 1, timeout=5)  # an export hangs
        elapsed = stop(process)
    assert elapsed < 5.0 + 1.0 + 0.5, f"exit took {elapsed:.1f}s"


@pytest.mark.parametrize("also_configure", ["0", "1"])
def test_opentelemetry_instrument_gives_the_same_telemetry_once(
    otlp_receiver: OtlpReceiver, tmp_path: Path, also_configure: str
) -> None:
    port = free_port()
    argv = [
        str(BIN / "opentelemetry-instrument"),
        str(BIN / "uvicorn"),
        APP,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    env = _env(
        otlp_receiver,
        CALL_CONFIGURE=also_configure,
        OTEL_PYTHON_DISTRO="otel_setup",
        OTEL_PYTHON_CONFIGURATOR="otel_setup",
    )
    log = tmp_path / "log"
    with server(argv, env=env, ready_url=f"http://127.0.0.1:{port}/health", log_path=log) as process:
        for index in range(4):
            assert httpx.get(f"http://127.0.0.1:{port}/items/{index}").status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/healthcare").status_code == 200
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        stop(process)
    assert otlp_receiver.wait_for(lambda r: len(_server_spans(r)) >= 5, timeout=5)
    spans = _server_spans(otlp_receiver)
    assert len(spans) == 5, [s.name for s in spans]
    assert sorted(s.name for s in spans) == ["GET /healthcare"] + ["GET /items/{item_id}"] * 4
    assert {s.scope_name for s in otlp_receiver.spans()} == {"otel_setup.fastapi"}
    assert len({s.resource["service.instance.id"] for s in spans}) == 1, "one provider"
    assert spans[0].resource["service.name"] == "basic-app"
    count_lines = [
        line
        for line in metrics.splitlines()
        if line.startswith("http_server_request_duration_seconds_count") and "/items/{item_id}" in line
    ]
    assert len(count_lines) == 1 and count_lines[0].endswith(" 4.0"), count_lines
    assert "Overriding of current" not in log.read_text(), "a second provider was attempted"


def test_two_uvicorn_workers_export_two_instance_ids(otlp_receiver: OtlpReceiver, tmp_path: Path) -> None:
    port = free_port()
    argv = [str(BIN / "uvicorn"), APP, "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    env = _env(otlp_receiver, CALL_CONFIGURE="1")
    with server(argv, env=env, ready_url=f"http://127.0.0.1:{port}/health", log_path=tmp_path / "log") as process:
        pids: set[int] = set()
        deadline = time.monotonic() + 20
        while len(pids) < 2 and time.monotonic() < deadline:
            # A new connection each time, so the kernel spreads them over both workers.
            pids.add(httpx.get(f"http://127.0.0.1:{port}/items/1", headers={"Connection": "close"}).json()["pid"])
        assert len(pids) == 2, "both workers should have served requests"
        stop(process)
    assert otlp_receiver.wait_for(lambda r: len({s.resource["process.pid"] for s in _server_spans(r)}) == 2, timeout=5)
    spans = _server_spans(otlp_receiver)
    instances = {s.resource["service.instance.id"] for s in spans}
    assert len(instances) == 2
    assert {s.resource["process.pid"] for s in spans} == pids
    metric_instances = {p.resource["service.instance.id"] for p in otlp_receiver.metric_points()}
    assert metric_instances == instances, "each worker pushes its metrics under its own instance id"


def test_app_without_configure_is_untouched() -> None:
    """Importing the package does nothing: no providers, no patches, no environment read."""
    import fastapi
    from opentelemetry import trace

    app = FastAPI()
    assert not hasattr(app, "_otel_setup_instrumented")
    assert fastapi.FastAPI.__init__.__module__ == "fastapi.applications"
    assert not trace.get_tracer_provider().get_tracer("x").start_span("y").is_recording()
