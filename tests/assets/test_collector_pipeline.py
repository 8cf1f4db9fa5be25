"""The compose path end to end with the real collector: app (2 workers) -> collector -> backends.

Everything listens on 127.0.0.1 and is stopped by the test:

* the example service under uvicorn with two workers, exporting traces, metrics and logs over
  OTLP/HTTP to the collector exactly as docker-compose.yml configures it (100 % head sampling
  so every request's span can be looked for);
* the collector built from collector/builder.yaml, started on ``base.yaml + staging.yaml`` plus
  the loopback layer of :mod:`tests.support.collector` (addresses only);
* a loopback OTLP receiver standing in for Tempo (gRPC) and Loki (OTLP/HTTP);
* Prometheus scraping the collector's prometheus exporter as deploy/prometheus/prometheus.yml
  does (``honor_labels``), with the repository's rules loaded;
* a plain OpenTelemetry SDK sender that does not use otel_setup, planting secrets in a span.

What it proves: spans reach the backend with their resource and the collector's
``deployment.environment.name``; the collector's redaction processor masks the planted secrets;
both workers' RED series are in Prometheus, one per ``service.instance.id``; every panel query
of the shipped dashboards returns data on this path except those in
:data:`NO_DATA_ON_COLLECTOR_PATH` (which must then be empty, so the list cannot go stale).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from tests.assets._promql import run
from tests.assets.test_e2e_prometheus import (
    Load,
    Target,
    binaries,
    demo_keys,
    finite,
    panel_targets,
    query,
    standins,
    wait_for,
    write_rules,
)
from tests.support.collector import STACKS, collector_binary, running
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.processes import free_port, server

pytestmark = pytest.mark.slow

JOB = "gw2-app"  # service.name; the prometheus exporter turns it into the job label
TIME_BUDGET = 100.0
SECRET_VALUE = "sk-proj-Zq8wR2nT5vY1bC4xK7mP0sLd"
SECRET_KEY_VALUE = "hunter2-not-for-traces"

# Panel queries (dashboard file, panel title, refId) without data on this path, and why.
_NOTHING_FAILS = "the collector creates this series on the first failure; nothing fails here"
NO_DATA_ON_COLLECTOR_PATH: dict[tuple[str, str, str], str] = {
    ("telemetry-pipeline.json", "Overflow series (cardinality cap hit)", "A"): (
        "only exists when the SDK's cardinality limit overflows; the example's labels are bounded"
    ),
    **{("telemetry-pipeline.json", "Export failures (send + enqueue)", ref): _NOTHING_FAILS for ref in "ABCDEF"},
    ("telemetry-pipeline.json", "Spans sent and dropped", "B"): _NOTHING_FAILS,
}


def prepared_database(directory: Path) -> str:
    """A seeded SQLite database for the example service, so its two workers do not race to seed it."""
    url = f"sqlite:///{directory / 'gw2_app.db'}"
    subprocess.run(
        [sys.executable, "-c", "from examples.gw2_app import db; db.create_tables()"],
        env={**os.environ, "DATABASE_URL": url, "OTEL_SDK_DISABLED": "true"},
        cwd=Path(__file__).resolve().parents[2],
        check=True,
        timeout=120,
    )
    return url


def write_prometheus_config(path: Path, rules: Path, collector_metrics_port: int) -> Path:
    """deploy/prometheus/prometheus.yml's collector job, on loopback, scraped every second."""
    shipped = yaml.safe_load((Path(__file__).resolve().parents[2] / "deploy/prometheus/prometheus.yml").read_text())
    (job,) = [job for job in shipped["scrape_configs"] if job["job_name"] == "otel-collector"]
    job = {**job, "static_configs": [{"targets": [f"127.0.0.1:{collector_metrics_port}"]}]}
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules / "*.yml")],
        "scrape_configs": [job],
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def plant_secrets(collector_http: str) -> str:
    """A service without otel_setup sends one span carrying secrets; returns its trace id."""
    provider = TracerProvider(resource=Resource.create({"service.name": "legacy-billing"}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{collector_http}/v1/traces", timeout=5))
    )
    tracer = provider.get_tracer("legacy.billing")
    with tracer.start_as_current_span("POST /charge", kind=SpanKind.SERVER) as span:
        span.set_attribute("http.route", "/charge")
        span.set_attribute("error.detail", f"upstream refused key {SECRET_VALUE} for tenant 7")
        span.set_attribute("password", SECRET_KEY_VALUE)
        trace_id = f"{span.get_span_context().trace_id:032x}"
    provider.shutdown()
    return trace_id


def test_app_collector_backends_and_prometheus(tmp_path: Path) -> None:
    started = time.monotonic()
    deadline = started + TIME_BUDGET
    binary = collector_binary()
    tools = binaries()
    from examples.standins.ai_api import DEMO_API_KEY

    keys = demo_keys()
    rules = write_rules(tmp_path / "rules")
    app_port, prometheus_port = free_port(), free_port()
    app, prometheus = f"http://127.0.0.1:{app_port}", f"http://127.0.0.1:{prometheus_port}"

    with ExitStack() as stack:
        backend = stack.enter_context(OtlpReceiver(grpc=True))
        collector = stack.enter_context(
            running(
                binary,
                STACKS["staging"],
                directory=tmp_path,
                env={
                    "DEPLOYMENT_ENVIRONMENT": "staging",
                    "TEMPO_OTLP_GRPC_ENDPOINT": backend.grpc_endpoint.removeprefix("http://"),
                    "LOKI_OTLP_HTTP_ENDPOINT": backend.endpoint,
                },
            )
        )
        prometheus_yml = write_prometheus_config(tmp_path / "prometheus.yml", rules, collector.ports.prometheus)
        checked = run(tools["promtool"], "check", "config", str(prometheus_yml))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        stack.enter_context(
            server(
                [
                    tools["prometheus"],
                    f"--config.file={prometheus_yml}",
                    f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
                    f"--web.listen-address=127.0.0.1:{prometheus_port}",
                    f"--web.external-url={prometheus}",
                ],
                env={},
                ready_url=f"{prometheus}/-/ready",
                log_path=tmp_path / "prometheus.log",
            )
        )
        gw2_port, gw2, ai_port, quota = stack.enter_context(standins(keys))
        stack.enter_context(
            server(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "examples.gw2_app.main:app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(app_port),
                    "--workers",
                    "2",
                    "--log-level",
                    "warning",
                ],
                env={
                    # docker-compose.yml's OTel settings, with the collector on loopback.
                    "OTEL_SERVICE_NAME": JOB,
                    "OTEL_EXPORTER_OTLP_ENDPOINT": collector.ports.http_url,
                    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                    "OTEL_TRACES_EXPORTER": "otlp",
                    "OTEL_METRICS_EXPORTER": "otlp",
                    "OTEL_LOGS_EXPORTER": "otlp",
                    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                    "OTEL_TRACES_SAMPLER_ARG": "1.0",
                    "OTEL_METRIC_EXPORT_INTERVAL": "1000",
                    "OTEL_SEMCONV_STABILITY_OPT_IN": "http",
                    "DATABASE_URL": prepared_database(tmp_path),
                    "GW2_API_BASE": f"http://127.0.0.1:{gw2_port}",
                    "AI_API_BASE": f"http://127.0.0.1:{ai_port}/v1",
                    "AI_API_KEY": DEMO_API_KEY,
                },
                ready_url=f"{app}/health",
                log_path=tmp_path / "app.log",
            )
        )
        user_keys = [key for key, info in keys.items() if "account" in info.permissions]
        load = stack.enter_context(Load(app, user_keys, quota, gw2).running())

        def logs() -> str:
            return "\n".join(
                f"--- {name}\n{(tmp_path / name).read_text(errors='replace')[-2500:]}"
                for name in ("app.log", "collector.log", "prometheus.log")
            )

        planted = plant_secrets(collector.ports.http_url)
        assert wait_for(lambda: load.requests >= 300, deadline, load=load), f"load stalled: {load.statuses}\n{logs()}"
        load.once(load.rare_errors)
        load.once(load.gw2_rate_limited)
        load.once(load.quota_error)
        rounds = load.rounds
        assert wait_for(lambda: load.rounds >= rounds + 8, deadline, load=load), load.statuses
        load.burst.set()  # the alert panels need a firing alert

        # 1. Spans reached the backend through the collector, resource intact and stamped.
        def app_servers() -> list[Any]:
            return [s for s in backend.spans() if s.kind == "SERVER" and s.resource.get("service.name") == JOB]

        assert wait_for(lambda: len({s.resource["service.instance.id"] for s in app_servers()}) == 2, deadline), (
            f"spans of both workers did not arrive: {len(backend.spans())} spans, "
            f"{Counter((s.resource.get('service.name'), s.kind) for s in backend.spans())}, "
            f"receiver errors {backend.errors()[:3]}, {time.monotonic() - started:.0f} s\n{logs()}"
        )
        servers = app_servers()
        instances = {s.resource["service.instance.id"] for s in servers}
        assert len({s.resource["process.pid"] for s in servers}) == 2
        assert {s.resource["deployment.environment.name"] for s in servers} == {"staging"}
        assert {s.resource["telemetry.sdk.language"] for s in servers} == {"python"}
        assert "GET /api/items/{item_id}" in {s.name for s in servers}
        children = [s for s in backend.spans() if s.parent_span_id and s.resource.get("service.name") == JOB]
        by_id = {s.span_id: s for s in backend.spans()}
        assert any(c.parent_span_id in by_id and by_id[c.parent_span_id].trace_id == c.trace_id for c in children)
        assert wait_for(lambda: any(r.resource.get("service.name") == JOB for r in backend.log_records()), deadline), (
            "no application log record reached the logs backend"
        )

        # 2. The redaction processor masked what the plain SDK sender planted.
        assert wait_for(lambda: any(s.trace_id == planted for s in backend.spans()), deadline), logs()
        (legacy,) = [s for s in backend.spans() if s.trace_id == planted]
        assert legacy.resource["deployment.environment.name"] == "staging"
        assert legacy.attributes["http.route"] == "/charge"
        detail = str(legacy.attributes["error.detail"])
        assert SECRET_VALUE not in detail and "sk-proj-" not in detail, detail
        assert detail.startswith("upstream refused key ") and detail.endswith(" for tenant 7"), detail
        assert SECRET_KEY_VALUE not in str(legacy.attributes.get("password")), legacy.attributes
        everything = repr([(s.attributes, s.resource) for s in backend.spans()]) + repr(backend.log_records())
        assert SECRET_VALUE not in everything and SECRET_KEY_VALUE not in everything

        # 3. Both workers' RED series, one per service.instance.id (Prometheus's instance label).
        red = f'sum by (instance) (http_server_request_duration_seconds_count{{job="{JOB}"}})'
        assert wait_for(lambda: len(query(prometheus, red)) == 2, deadline, load=load), (
            f"{query(prometheus, red)}\n{logs()}"
        )
        assert {series["metric"]["instance"] for series in query(prometheus, red)} == instances
        errors = (
            "sum by (instance) (http_server_request_duration_seconds_count"
            f'{{job="{JOB}",http_response_status_code=~"5.."}})'
        )
        assert wait_for(lambda: len(query(prometheus, errors)) == 2, deadline, load=load), query(prometheus, errors)
        info = query(prometheus, f'target_info{{job="{JOB}"}}')
        assert {series["metric"]["instance"] for series in info} == instances
        assert {series["metric"].get("deployment_environment_name") for series in info} == {"staging"}

        # 4. The shipped dashboards' queries return data on this path.
        targets = panel_targets()
        assert {(t.dashboard, t.panel, t.ref) for t in targets} >= set(NO_DATA_ON_COLLECTOR_PATH)
        expected = [t for t in targets if (t.dashboard, t.panel, t.ref) not in NO_DATA_ON_COLLECTOR_PATH]

        def missing() -> list[Target]:
            return [t for t in expected if not finite(query(prometheus, t.expr))]

        wait_for(lambda: not missing(), min(deadline, time.monotonic() + 30.0), step=1.0, load=load)
        empty = missing()
        assert empty == [], "panels without data on the collector path:\n" + "\n".join(f"{t}: {t.expr}" for t in empty)
        unexpected = [
            t
            for t in targets
            if (t.dashboard, t.panel, t.ref) in NO_DATA_ON_COLLECTOR_PATH and query(prometheus, t.expr)
        ]
        assert unexpected == [], f"listed as without data but have some (update the list): {unexpected}"
        accepted = query(prometheus, 'sum(otelcol_receiver_accepted_spans_total{receiver="otlp"})')
        assert finite(accepted) and finite(accepted)[0] >= len(servers)
        print(
            f"{len(expected)} panel queries with data on the collector path; {load.requests} requests "
            f"{dict(load.statuses)}; {len(backend.spans())} spans at the backend; {time.monotonic() - started:.1f} s"
        )
