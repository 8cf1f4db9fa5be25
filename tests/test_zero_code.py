"""Zero code behaves like code: bad settings stop the process, every line is JSON, and the
process says at startup what is wired (``opentelemetry-instrument`` run for real)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

import otel_setup
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.processes import BIN, ROOT, free_port, server, stop

APP = "tests.apps.basic_app:app"


def _wrapped(port: int) -> list[str]:
    return [
        str(BIN / "opentelemetry-instrument"),
        str(BIN / "uvicorn"),
        APP,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SENTRY_"))}
    env.update({"OTEL_PYTHON_DISTRO": "otel_setup", "OTEL_PYTHON_CONFIGURATOR": "otel_setup"})
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


@pytest.mark.slow
def test_a_bad_setting_under_the_wrapper_stops_the_process_with_the_one_line_error() -> None:
    port = free_port()
    result = subprocess.run(
        _wrapped(port),
        cwd=ROOT,
        env=_env(OTEL_TRACES_SAMPLER_ARG="abc"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    expected = "OtelSetupConfigError: OTEL_TRACES_SAMPLER_ARG='abc' is not valid: expected a number between 0 and 1"
    assert result.stderr.strip().splitlines() == [expected]
    assert "Traceback" not in result.stderr + result.stdout
    assert "Uvicorn running" not in result.stderr + result.stdout, "it must never start serving"


@pytest.mark.slow
def test_a_bad_policy_value_is_itself_the_error() -> None:
    result = subprocess.run(
        _wrapped(free_port()),
        cwd=ROOT,
        env=_env(OTEL_SETUP_ON_CONFIG_ERROR="maybe"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "OtelSetupConfigError: OTEL_SETUP_ON_CONFIG_ERROR='maybe' is not valid: expected one of exit, warn"
    )


@pytest.mark.slow
def test_the_warn_opt_out_serves_and_says_it_has_no_telemetry(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "log"
    env = _env(OTEL_TRACES_SAMPLER_ARG="abc", OTEL_SETUP_ON_CONFIG_ERROR="warn")
    with server(_wrapped(port), env=env, ready_url=f"http://127.0.0.1:{port}/items/1", log_path=log) as process:
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 404
        stop(process)
    text = log.read_text()
    assert "OTEL_TRACES_SAMPLER_ARG='abc' is not valid" in text
    assert "serving WITHOUT telemetry or probes (OTEL_SETUP_ON_CONFIG_ERROR=warn)" in text


@pytest.mark.slow
def test_under_the_wrapper_every_line_is_json_from_the_first_one_and_the_wiring_is_announced(
    otlp_receiver: OtlpReceiver, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "log"
    env = _env(
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.endpoint,
        OTEL_SERVICE_NAME="basic-app",
        OTEL_TRACES_SAMPLER_ARG="0.25",
    )
    with server(_wrapped(port), env=env, ready_url=f"http://127.0.0.1:{port}/health", log_path=log) as process:
        assert httpx.get(f"http://127.0.0.1:{port}/items/1").status_code == 200
        stop(process)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}\n" + "\n".join(lines[:10]))
    events = [record["event"] for record in records]
    assert events[0] == "otel_setup configured", events[:5]
    assert any(event.startswith("Started server process") for event in events), events
    assert "Waiting for application startup." in events
    [wiring] = [record for record in records if record["event"] == "otel_setup configured"]
    assert wiring["level"] == "info"
    assert wiring["service.name"] == "basic-app"
    assert wiring["traces"] == [f"otlp http/protobuf {otlp_receiver.endpoint}/v1/traces"]
    assert wiring["sampler"] == "parentbased_traceidratio 0.25"
    assert wiring["metrics"] == [
        "prometheus /metrics on the app",
        f"otlp http/protobuf {otlp_receiver.endpoint}/v1/metrics",
    ]
    assert wiring["sentry"] == "off: SENTRY_DSN not set"
    assert wiring["integrations"]["fastapi"] == "active"
    assert wiring["integrations"]["process"] == "active"
    assert wiring["integrations"]["contrib:requests"] == "active"


def test_configure_announces_that_spans_go_nowhere_without_an_endpoint(capfd: pytest.CaptureFixture[str]) -> None:
    from fastapi import FastAPI

    otel_setup.configure(FastAPI(title="gw2-companion"))
    out = capfd.readouterr().out
    [line] = [json.loads(line) for line in out.splitlines() if '"otel_setup configured"' in line]
    assert line["service.name"] == "gw2-companion"
    assert line["traces"] == ["none (no OTLP endpoint set: spans are not exported)"]
    assert line["metrics"] == ["prometheus /metrics on the app"]
    assert line["logs"] == ["stdout json"]
    assert set(line["integrations"]) >= {"fastapi", "sqlalchemy", "redis", "httpx", "gw2", "genai", "logging"}


def _local_http_server(seen: list[dict[str, str]] | None = None) -> tuple[str, object]:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if seen is not None:
                seen.append({k.lower(): v for k, v in self.headers.items()})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}", httpd


def test_configure_activates_installed_contrib_instrumentations(otlp_receiver: OtlpReceiver) -> None:
    import requests

    base, httpd = _local_http_server()
    try:
        telemetry = otel_setup.configure(otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=1.0)
        assert telemetry.instrumentations["contrib:requests"] == "active"
        assert all(f"contrib:{name}" not in telemetry.instrumentations for name in ("fastapi", "httpx", "redis"))
        assert requests.get(f"{base}/ping", timeout=5).status_code == 204
        telemetry.force_flush()
    finally:
        httpd.shutdown()  # type: ignore[attr-defined]
    assert otlp_receiver.wait_for(
        lambda r: any(s.scope_name == "opentelemetry.instrumentation.requests" for s in r.spans()), timeout=5
    )
    [span] = [s for s in otlp_receiver.spans() if s.scope_name == "opentelemetry.instrumentation.requests"]
    assert span.kind == "CLIENT" and span.name == "GET"
    assert span.attributes["http.response.status_code"] == 204
    assert span.resource["service.instance.id"] == telemetry.resource.attributes["service.instance.id"]


def test_contrib_instrumentations_can_be_listed_off_or_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "requests")
    telemetry = otel_setup.configure()
    assert telemetry.instrumentations["contrib:requests"] == "off: listed in OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"
    assert not RequestsInstrumentor().is_instrumented_by_opentelemetry
    otel_setup._core.configure.reset()
    monkeypatch.delenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS")
    telemetry = otel_setup.configure(contrib_instrumentations=False)
    assert not any(name.startswith("contrib:") for name in telemetry.instrumentations)
    assert not RequestsInstrumentor().is_instrumented_by_opentelemetry


def test_process_metrics_on_metrics_and_over_otlp(otlp_receiver: OtlpReceiver) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    app = FastAPI()
    telemetry = otel_setup.configure(app, otlp_endpoint=otlp_receiver.endpoint)
    with TestClient(app) as client:
        text = client.get("/metrics").text
    values = {
        line.split("{")[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(("process_", "cpython_")) and 'type="system"' not in line
    }
    assert values["process_memory_usage_bytes"] > 10 * 2**20
    assert values["process_thread_count"] >= 2, "the export threads at least"
    assert values["process_open_file_descriptor_count"] >= 3
    assert values["process_cpu_time_seconds_total"] > 0
    assert values["cpython_gc_collections_total"] >= 0
    telemetry.force_flush()
    assert otlp_receiver.wait_for(lambda r: any(p.name == "process.memory.usage" for p in r.metric_points()), timeout=5)
    [point] = [p for p in otlp_receiver.metric_points() if p.name == "process.memory.usage"][:1]
    assert point.resource["service.instance.id"] == telemetry.resource.attributes["service.instance.id"]
    assert point.value > 10 * 2**20


def test_console_traces_are_a_tree_on_stderr_and_stdout_stays_json(capfd: pytest.CaptureFixture[str]) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    app = FastAPI(title="tree-app")

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        tracer = telemetry.tracer_provider.get_tracer("app")
        with tracer.start_as_current_span("load item"), tracer.start_as_current_span("SELECT items"):
            pass
        with tracer.start_as_current_span("render"):
            pass
        return {"item_id": item_id}

    telemetry = otel_setup.configure(app, traces_exporter="console", sampling_ratio=1.0)
    with TestClient(app) as client:
        assert client.get("/items/7?token=hunter2hunter2").status_code == 200
        telemetry.force_flush()
    captured = capfd.readouterr()
    for line in captured.out.splitlines():
        json.loads(line)  # one JSON object per line, no span documents in between
    tree = [line for line in captured.err.splitlines() if line.strip()]
    assert tree[0].startswith("trace ") and "4 spans" in tree[0], captured.err
    assert tree[1].startswith("  `-- GET /items/{item_id}  [server]  ") and "http.response.status_code=200" in tree[1]
    assert tree[2].startswith("      |-- load item  [internal]  ")
    assert tree[3].startswith("      |   `-- SELECT items  [internal]  ")
    assert tree[4].startswith("      `-- render  [internal]  ")
    assert "hunter2" not in captured.err


def test_an_unnamed_service_is_told_how_to_name_itself(capfd: pytest.CaptureFixture[str]) -> None:
    otel_setup.configure()
    lines = [json.loads(line) for line in capfd.readouterr().out.splitlines()]
    [warning] = [line for line in lines if line["level"] == "warning"]
    assert "service.name is unknown_service; set OTEL_SERVICE_NAME" in warning["event"]
    otel_setup._core.configure.reset()
    otel_setup.configure(service_name="gw2-api")
    assert not [line for line in capfd.readouterr().out.splitlines() if '"warning"' in line]


@pytest.mark.parametrize(("propagate_to", "sent"), [("internal", True), ("api.internal", False)])
def test_contrib_http_clients_follow_the_outbound_host_policy(propagate_to: str, sent: bool) -> None:
    import requests

    seen: list[dict[str, str]] = []
    base, httpd = _local_http_server(seen)
    try:
        telemetry = otel_setup.configure(sampling_ratio=1.0, propagate_to=propagate_to)
        assert telemetry.instrumentations["contrib:requests"] == "active"
        tracer = telemetry.tracer_provider.get_tracer("test")
        with tracer.start_as_current_span("job"):
            requests.get(f"{base}/via-requests", timeout=5)
            requests.Session().get(f"{base}/via-a-session", timeout=5)
    finally:
        httpd.shutdown()  # type: ignore[attr-defined]
    assert len(seen) == 2
    assert [("traceparent" in headers) for headers in seen] == [sent, sent], seen
