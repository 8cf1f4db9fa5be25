"""End to end: a real Prometheus (exemplar storage on) scrapes OpenMetrics; its exemplars name exported traces.

The app (tests/apps/keep_app.py, defaults: 10 % head sampling, errors and slow requests kept)
runs under uvicorn and exports spans over OTLP to the receiver of tests/support; Prometheus
scrapes ``/metrics`` every second, asking for OpenMetrics as it does by default. Every trace id
``/api/v1/query_exemplars`` returns must be among the exported spans, and the failing requests'
bucket carries the trace of a failing request that head sampling alone would have dropped.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.otlp_receiver import OtlpReceiver
from tests.support.processes import free_port, server
from tests.support.sampling import head_sampled

pytestmark = pytest.mark.slow

JOB = "keep-e2e"


def test_prometheus_exemplars_point_at_exported_traces_kept_errors_included(
    tmp_path: Path, otlp_receiver: OtlpReceiver
) -> None:
    prometheus_binary = shutil.which("prometheus")
    assert prometheus_binary, "Prometheus must be installed (Debian package prometheus); CI installs it"
    app_port, prometheus_port = free_port(), free_port()
    app = f"http://127.0.0.1:{app_port}"
    prometheus = f"http://127.0.0.1:{prometheus_port}"
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{app_port}"]}]}],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    started = time.time()
    with (
        server(
            [
                prometheus_binary,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
                "--enable-feature=exemplar-storage",
            ],
            env={},
            ready_url=f"{prometheus}/-/ready",
            log_path=tmp_path / "prometheus.log",
        ),
        server(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "tests.apps.keep_app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(app_port),
                "--log-level",
                "warning",
            ],
            env={
                "OTEL_SERVICE_NAME": JOB,
                "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint,
                "OTEL_METRICS_EXPORTER": "prometheus",
                "OTEL_LOGS_EXPORTER": "none",
                "OTEL_SETUP_REQUEST_LOG_BUFFER_MS": "0",
            },
            ready_url=f"{app}/health",
            log_path=tmp_path / "app.log",
        ),
    ):
        failing: set[str] = set()
        with httpx.Client(base_url=app, timeout=5.0) as client:
            for n in range(120):
                client.get(f"/fine/{n}")
                if n % 10 == 0:
                    # uvicorn closes the connection after an unhandled exception: a fresh one
                    assert httpx.get(f"{app}/fail/{n}", timeout=5.0).status_code == 500
        for line in (tmp_path / "app.log").read_text(encoding="utf-8").splitlines():
            if '"http.response.status_code": 500' in line and '"event": "request"' in line:
                failing.add(line.split('"trace_id": "')[1][:32])
        assert len(failing) == 12

        def exemplars() -> list[Any]:
            response = httpx.get(
                f"{prometheus}/api/v1/query_exemplars",
                params={
                    "query": f'http_server_request_duration_seconds_bucket{{job="{JOB}"}}',
                    "start": started - 60,
                    "end": time.time() + 60,
                },
                timeout=5.0,
            )
            response.raise_for_status()
            return list(response.json()["data"])

        deadline = time.monotonic() + 30
        found: list[Any] = []
        while time.monotonic() < deadline:
            found = exemplars()
            labels = [series["seriesLabels"] for series in found]
            if any(label.get("http_response_status_code") == "500" for label in labels):
                break
            time.sleep(0.5)
        points = [(series["seriesLabels"], e) for series in found for e in series["exemplars"]]
        assert points, (tmp_path / "prometheus.log").read_text(errors="replace")[-2000:]
        trace_ids = {e["labels"]["trace_id"] for _, e in points}
        assert otlp_receiver.wait_for(lambda r: trace_ids <= {s.trace_id for s in r.spans()}, timeout=15.0), (
            "every exemplar names an exported trace"
        )
        spans = {(s.trace_id, s.span_id): s for s in otlp_receiver.spans() if s.kind == "SERVER"}
        for labels, exemplar in points:
            span = spans[(exemplar["labels"]["trace_id"], exemplar["labels"]["span_id"])]
            assert span.attributes["http.route"] == labels["http_route"]
            assert str(span.attributes["http.response.status_code"]) == labels["http_response_status_code"]
        error_ids = {e["labels"]["trace_id"] for labels, e in points if labels["http_response_status_code"] == "500"}
        assert error_ids and error_ids <= failing
        unsampled_errors = {t for t in failing if not head_sampled(t)}
        assert unsampled_errors <= {s.trace_id for s in otlp_receiver.spans() if s.kind == "SERVER"}, (
            "failing requests head sampling dropped were exported all the same"
        )
