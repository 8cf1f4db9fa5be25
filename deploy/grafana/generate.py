"""Grafana dashboards for otel_setup, written as data instead of copy-pasted JSON.

    python deploy/grafana/generate.py           # rewrite deploy/grafana/dashboards/*.json
    python deploy/grafana/generate.py --check   # exit 1 when a committed file is out of date

Uids are fixed (links and bookmarks survive re-provisioning) and every panel names its
datasource by the uid provisioned in provisioning/datasources/datasources.yaml. Metric names
come from docs/metrics.md; tests/assets/test_dashboards.py checks every expression with promtool
and against that catalog. docs/dashboards.md explains the panels.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
SCHEMA_VERSION = 39

PROMETHEUS = {"type": "prometheus", "uid": "prometheus"}
LOKI = {"type": "loki", "uid": "loki"}

H = "http_server_request_duration_seconds"
JOB = 'job=~"$job"'


@dataclass
class Panel:
    """One panel: its queries and how to show them."""

    title: str
    exprs: list[tuple[str, str]]  # (expr, legend)
    kind: str = "timeseries"
    unit: str = "short"
    description: str = ""
    width: int = 8
    height: int = 8
    exemplars: bool = False
    thresholds: list[tuple[float | None, str]] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    datasource: dict[str, str] = field(default_factory=lambda: dict(PROMETHEUS))
    instant: bool = False


def quantile(q: float, by: str = "") -> str:
    group = f"le{', ' + by if by else ''}"
    return f"histogram_quantile({q}, sum by ({group}) (rate({H}_bucket{{{JOB}}}[$__rate_interval])))"


ERROR_RATIO = (
    f'sum(rate({H}_count{{{JOB},http_response_status_code=~"5.."}}[$__rate_interval]))'
    f" / sum(rate({H}_count{{{JOB}}}[$__rate_interval]))"
)
OBJECTIVES = [(None, "green"), (0.1, "yellow"), (0.2, "red")]


def budget_left(bad_ratio_30d: str, budget: float) -> str:
    return f"1 - ({bad_ratio_30d}) / {budget}"


AVAILABILITY_30D = (
    f'sum(increase({H}_count{{{JOB},http_response_status_code=~"5.."}}[30d])) / sum(increase({H}_count{{{JOB}}}[30d]))'
)
LATENCY_30D = f'1 - sum(increase({H}_bucket{{{JOB},le="0.2"}}[30d])) / sum(increase({H}_count{{{JOB}}}[30d]))'

GW2 = 'url_template=~"/v2/.*"'


def _per_signal(expr: str, legend: str) -> list[tuple[str, str]]:
    """One query per signal's counter, instead of one ``rate()`` over a ``__name__`` regex.

    ``rate()`` drops the metric names, and Prometheus refuses the result ("vector cannot
    contain metrics with the same labelset") as soon as two signals have a series with the
    same labels, which the collector's own metrics always do.
    """
    signals = (("spans", "spans"), ("metric_points", "metric points"), ("log_records", "log records"))
    return [(expr.format(metric), f"{legend.format()} {label}") for metric, label in signals]


def logs_panel(title: str, query: str, description: str) -> Panel:
    return Panel(
        title=title,
        exprs=[(query, "")],
        kind="logs",
        datasource=dict(LOKI),
        width=24,
        height=10,
        description=description,
        options={"showTime": True, "wrapLogMessage": True, "sortOrder": "Descending", "enableLogDetails": True},
    )


TRACE_LOGS = logs_panel(
    "Logs for a trace id",
    '{service_name=~"${job:regex}"} | trace_id=~"${trace_id}.*"',
    "Paste a trace id (from an exemplar, a Sentry event or a response header) into the trace_id "
    "box; empty shows every log line of the selected services.",
)

DASHBOARDS: dict[str, dict[str, Any]] = {
    "system-overview": {
        "uid": "otel-system-overview",
        "title": "System Overview",
        "description": "Is the service healthy right now, and against its objectives?",
        "panels": [
            Panel(
                "Request rate",
                [(f"sum(rate({H}_count{{{JOB}}}[$__rate_interval]))", "req/s")],
                kind="stat",
                unit="reqps",
                width=4,
                height=5,
            ),
            Panel(
                "Error rate (5xx)",
                [(ERROR_RATIO, "5xx")],
                kind="stat",
                unit="percentunit",
                width=4,
                height=5,
                thresholds=[(None, "green"), (0.01, "yellow"), (0.05, "red")],
            ),
            Panel(
                "p95 latency",
                [(quantile(0.95), "p95")],
                kind="stat",
                unit="s",
                width=4,
                height=5,
                thresholds=OBJECTIVES,
            ),
            Panel(
                "Availability budget left (30d, 99%)",
                [(budget_left(AVAILABILITY_30D, 0.01), "left")],
                kind="stat",
                unit="percentunit",
                width=4,
                height=5,
                thresholds=[(None, "red"), (0.25, "yellow"), (0.5, "green")],
            ),
            Panel(
                "Latency budget left (30d, p95 < 200 ms)",
                [(budget_left(LATENCY_30D, 0.05), "left")],
                kind="stat",
                unit="percentunit",
                width=4,
                height=5,
                thresholds=[(None, "red"), (0.25, "yellow"), (0.5, "green")],
            ),
            Panel(
                "Active requests",
                [(f"sum(http_server_active_requests{{{JOB}}})", "in flight")],
                kind="stat",
                unit="short",
                width=4,
                height=5,
            ),
            Panel(
                "Latency p50 / p95 / p99 against objectives (100 / 200 / 500 ms)",
                [(quantile(0.5), "p50"), (quantile(0.95), "p95"), (quantile(0.99), "p99")],
                unit="s",
                width=16,
                exemplars=True,
                thresholds=OBJECTIVES,
                description="Dots are exemplars: click one to open the trace in Tempo. Threshold "
                "lines: 100 ms (p50 objective), 200 ms (p95 objective).",
            ),
            Panel(
                "Requests by status class",
                [
                    (
                        f"sum by (status) (label_replace(rate({H}_count{{{JOB}}}[$__rate_interval]), "
                        '"status", "${1}xx", "http_response_status_code", "([0-9]).."))',
                        "{{status}}",
                    )
                ],
                unit="reqps",
                width=8,
            ),
            Panel(
                "Firing alerts",
                [('sum by (alertname, severity) (ALERTS{alertstate="firing"})', "")],
                kind="table",
                width=8,
                instant=True,
            ),
            Panel(
                "Burn rate (1h) by SLO",
                [
                    ('slo:sli_error:ratio_rate1h{job=~"$job",slo="availability"} / 0.01', "availability"),
                    ('slo:sli_error:ratio_rate1h{job=~"$job",slo="latency"} / 0.05', "latency"),
                ],
                unit="none",
                width=8,
                thresholds=[(None, "green"), (6, "yellow"), (14.4, "red")],
                description="1 = spending the 30-day budget exactly; 14.4 for an hour pages.",
            ),
            Panel(
                "Active users (distinct accounts)",
                [
                    (
                        f"sum by (otel_setup_users_window) (otel_setup_users_active{{{JOB}}})",
                        "{{otel_setup_users_window}}",
                    ),
                    (
                        f'max(otel_setup_users_active{{{JOB},otel_setup_users_window="5m"}})',
                        "5m, busiest process (lower bound)",
                    ),
                ],
                unit="short",
                width=8,
                description="Accounts seen within each sliding window, counted in each process from keyed "
                "hashes (no id in any label). Summed over processes: with several workers an account "
                "served by two of them counts twice, so the sum is an upper bound and the busiest "
                "process a lower bound.",
            ),
            Panel(
                "CPU per process (cores)",
                [
                    (
                        "sum by (service_instance_id) "
                        f"(rate(process_cpu_time_seconds_total{{{JOB}}}[$__rate_interval]))",
                        "{{service_instance_id}}",
                    )
                ],
                unit="none",
                width=8,
                description="User plus system CPU of each worker process; 1 = one core busy. Per "
                "service_instance_id when workers push OTLP through the collector.",
            ),
            Panel(
                "Resident memory per process",
                [(f"sum by (service_instance_id) (process_memory_usage_bytes{{{JOB}}})", "{{service_instance_id}}")],
                unit="bytes",
                width=8,
                description="RSS of each worker. A line that only climbs across deploys is a leak.",
            ),
            Panel(
                "Threads, open files, uncollectable objects",
                [
                    (f"sum(process_thread_count{{{JOB}}})", "threads"),
                    (f"sum(process_open_file_descriptor_count{{{JOB}}})", "open files"),
                    (
                        f"sum(increase(cpython_gc_uncollectable_objects_total{{{JOB}}}[$__rate_interval]))",
                        "uncollectable objects",
                    ),
                ],
                unit="short",
                width=8,
                description="Summed over processes. Open files near the ulimit refuse connections; "
                "uncollectable objects above zero are reference cycles the collector cannot free.",
            ),
            TRACE_LOGS,
        ],
    },
    "api-performance": {
        "uid": "otel-api-performance",
        "title": "API Performance",
        "description": "Where the time goes: routes, database, cache, GW2 API, AI calls.",
        "panels": [
            Panel(
                "p95 latency by route",
                [(quantile(0.95, "http_route"), "{{http_route}}")],
                unit="s",
                width=12,
                exemplars=True,
                thresholds=OBJECTIVES,
            ),
            Panel(
                "Request rate by route",
                [(f"sum by (http_route) (rate({H}_count{{{JOB}}}[$__rate_interval]))", "{{http_route}}")],
                unit="reqps",
                width=12,
            ),
            Panel(
                "Database p95 by operation",
                [
                    (
                        "histogram_quantile(0.95, sum by (le, db_system_name, db_operation_name) "
                        f'(rate(db_client_operation_duration_seconds_bucket{{{JOB},db_system_name!="redis"}}'
                        "[$__rate_interval])))",
                        "{{db_system_name}} {{db_operation_name}}",
                    )
                ],
                unit="s",
                width=8,
                exemplars=True,
            ),
            Panel(
                "Cache hit rate by cache",
                [
                    (
                        'sum by (cache_name) (rate(otel_setup_cache_lookups_total{job=~"$job",cache_result="hit"}'
                        "[$__rate_interval])) / sum by (cache_name) (rate(otel_setup_cache_lookups_total"
                        '{job=~"$job"}[$__rate_interval]))',
                        "{{cache_name}}",
                    )
                ],
                unit="percentunit",
                width=8,
                thresholds=[(None, "red"), (0.5, "green")],
            ),
            Panel(
                "Redis p95 by command",
                [
                    (
                        "histogram_quantile(0.95, sum by (le, db_operation_name) "
                        f'(rate(db_client_operation_duration_seconds_bucket{{{JOB},db_system_name="redis"}}'
                        "[$__rate_interval])))",
                        "{{db_operation_name}}",
                    )
                ],
                unit="s",
                width=8,
                exemplars=True,
            ),
            Panel(
                "GW2 API p95 by endpoint",
                [
                    (
                        "histogram_quantile(0.95, sum by (le, url_template) "
                        f"(rate(http_client_request_duration_seconds_bucket{{{JOB},{GW2}}}[$__rate_interval])))",
                        "{{url_template}}",
                    )
                ],
                unit="s",
                width=8,
                exemplars=True,
            ),
            Panel(
                "GW2 API responses by status",
                [
                    (
                        'sum by (http_response_status_code) (rate(gw2_api_requests_total{job=~"$job"}'
                        "[$__rate_interval]))",
                        "{{http_response_status_code}}",
                    )
                ],
                unit="reqps",
                width=8,
            ),
            Panel(
                "GW2 API rate limited (429) and rejected keys",
                [
                    (
                        'sum(rate(gw2_api_requests_total{job=~"$job",http_response_status_code="429"}'
                        "[$__rate_interval]))",
                        "429 rate limited",
                    ),
                    (
                        'sum by (gw2_error_reason) (rate(gw2_api_requests_total{job=~"$job",'
                        'http_response_status_code="403"}[$__rate_interval]))',
                        "403 {{gw2_error_reason}}",
                    ),
                ],
                unit="reqps",
                width=8,
                description="Upstream limit: 300 requests burst per IP, refilled at 5 per second.",
            ),
            Panel(
                "AI call p95 by model",
                [
                    (
                        "histogram_quantile(0.95, sum by (le, gen_ai_request_model) "
                        '(rate(gen_ai_client_operation_duration_seconds_bucket{job=~"$job"}[$__rate_interval])))',
                        "{{gen_ai_request_model}}",
                    )
                ],
                unit="s",
                width=8,
                exemplars=True,
            ),
            Panel(
                "AI tokens per minute by type",
                [
                    (
                        'sum by (gen_ai_token_type) (rate(gen_ai_client_token_usage_sum{job=~"$job"}'
                        "[$__rate_interval])) * 60",
                        "{{gen_ai_token_type}}",
                    )
                ],
                unit="short",
                width=8,
            ),
            Panel(
                "AI spend (USD, selected range)",
                [
                    (
                        "sum by (otel_setup_genai_price_model) (increase(otel_setup_genai_cost_usd_total"
                        '{job=~"$job"}[$__range]))',
                        "{{otel_setup_genai_price_model}}",
                    )
                ],
                kind="stat",
                unit="currencyUSD",
                width=4,
                instant=True,
            ),
            Panel(
                "AI quota and rate-limit errors",
                [
                    (
                        'sum by (otel_setup_genai_outcome) (increase(otel_setup_genai_requests_total{job=~"$job",'
                        'otel_setup_genai_outcome=~"insufficient_quota|rate_limited"}[$__range]))',
                        "{{otel_setup_genai_outcome}}",
                    )
                ],
                kind="stat",
                unit="short",
                width=4,
                instant=True,
                thresholds=[(None, "green"), (1, "red")],
            ),
        ],
    },
    "errors-alerts": {
        "uid": "otel-errors-alerts",
        "title": "Errors & Alerts",
        "description": "What is failing, where, and which alerts fire.",
        "panels": [
            Panel(
                "Firing and pending alerts",
                [("sum by (alertname, severity, alertstate, job) (ALERTS)", "")],
                kind="table",
                width=24,
                height=7,
                instant=True,
            ),
            Panel(
                "Error rate by route (5xx / all)",
                [
                    (
                        f'sum by (http_route) (rate({H}_count{{{JOB},http_response_status_code=~"5.."}}'
                        f"[$__rate_interval])) / sum by (http_route) (rate({H}_count{{{JOB}}}[$__rate_interval]))",
                        "{{http_route}}",
                    )
                ],
                unit="percentunit",
                width=12,
                thresholds=[(None, "green"), (0.01, "yellow"), (0.05, "red")],
            ),
            Panel(
                "5xx by status and error type",
                [
                    (
                        f"sum by (http_response_status_code, error_type) (rate({H}_count{{{JOB},"
                        f'http_response_status_code=~"5.."}}[$__rate_interval]))',
                        "{{http_response_status_code}} {{error_type}}",
                    )
                ],
                unit="reqps",
                width=12,
            ),
            Panel(
                "Failed AI calls by outcome",
                [
                    (
                        'sum by (otel_setup_genai_outcome) (rate(otel_setup_genai_requests_total{job=~"$job",'
                        'otel_setup_genai_outcome!="ok"}[$__rate_interval]))',
                        "{{otel_setup_genai_outcome}}",
                    )
                ],
                unit="reqps",
                width=8,
            ),
            Panel(
                "Database errors by type",
                [
                    (
                        "sum by (db_system_name, error_type) (rate(db_client_operation_duration_seconds_count"
                        '{job=~"$job",error_type!=""}[$__rate_interval]))',
                        "{{db_system_name}} {{error_type}}",
                    )
                ],
                unit="ops",
                width=8,
            ),
            Panel(
                "GW2 API errors by endpoint",
                [
                    (
                        'sum by (url_template, error_type) (rate(gw2_api_requests_total{job=~"$job",'
                        'error_type!=""}[$__rate_interval]))',
                        "{{url_template}} {{error_type}}",
                    )
                ],
                unit="reqps",
                width=8,
            ),
            logs_panel(
                "Error logs",
                '{service_name=~"${job:regex}"} | severity_text=~"(?i)error|critical" | trace_id=~"${trace_id}.*"',
                "Error-level lines; filter to one request with the trace_id box.",
            ),
        ],
    },
    "telemetry-pipeline": {
        "uid": "otel-telemetry-pipeline",
        "title": "Telemetry pipeline",
        "description": "Is telemetry arriving? Collector health, exports, queues, memory limiter, SDK limits.",
        "panels": [
            Panel(
                "Collector up",
                [('up{job="otel-collector"}', "{{instance}}")],
                kind="stat",
                width=6,
                height=5,
                thresholds=[(None, "red"), (1, "green")],
                instant=True,
            ),
            Panel(
                "Collector memory (RSS)",
                [("otelcol_process_memory_rss", "{{instance}}")],
                unit="bytes",
                width=6,
                height=5,
            ),
            Panel(
                "Overflow series (cardinality cap hit)",
                [('count by (job) ({otel_metric_overflow="true"})', "{{job}}")],
                kind="stat",
                width=6,
                height=5,
                thresholds=[(None, "green"), (1, "red")],
                instant=True,
            ),
            Panel(
                "Accepted by the collector",
                _per_signal(
                    "sum by (receiver) (rate(otelcol_receiver_accepted_{}_total[$__rate_interval]))", "{{{{receiver}}}}"
                ),
                unit="short",
                width=6,
                height=5,
            ),
            Panel(
                "Export failures (send + enqueue)",
                [
                    *_per_signal(
                        "sum by (exporter) (rate(otelcol_exporter_send_failed_{}_total[$__rate_interval]))",
                        "{{{{exporter}}}} send",
                    ),
                    *_per_signal(
                        "sum by (exporter) (rate(otelcol_exporter_enqueue_failed_{}_total[$__rate_interval]))",
                        "{{{{exporter}}}} enqueue",
                    ),
                ],
                unit="short",
                width=12,
            ),
            Panel(
                "Refused by receivers (memory limiter)",
                _per_signal(
                    "sum by (receiver) (rate(otelcol_receiver_refused_{}_total[$__rate_interval]))", "{{{{receiver}}}}"
                ),
                unit="short",
                width=12,
                description="memory_limiter refuses data with a retryable error; the SDK retries.",
            ),
            Panel(
                "Sending queue fill",
                [
                    (
                        "max by (exporter) (otelcol_exporter_queue_size) / max by (exporter) "
                        "(otelcol_exporter_queue_capacity)",
                        "{{exporter}}",
                    )
                ],
                unit="percentunit",
                width=12,
                thresholds=[(None, "green"), (0.8, "red")],
            ),
            Panel(
                "Spans sent and dropped",
                [
                    (
                        "sum by (exporter) (rate(otelcol_exporter_sent_spans_total[$__rate_interval]))",
                        "sent {{exporter}}",
                    ),
                    (
                        "sum by (exporter) (rate(otelcol_exporter_enqueue_failed_spans_total[$__rate_interval]))",
                        "dropped {{exporter}}",
                    ),
                ],
                unit="short",
                width=12,
            ),
        ],
    },
}


def thresholds(steps: list[tuple[float | None, str]]) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"color": color, "value": value} for value, color in steps]}


def panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    targets = []
    for index, (expr, legend) in enumerate(panel.exprs):
        target: dict[str, Any] = {"refId": chr(ord("A") + index), "datasource": panel.datasource, "expr": expr}
        if panel.datasource["type"] == "prometheus":
            target["legendFormat"] = legend or "__auto"
            target["range"] = not panel.instant
            target["instant"] = panel.instant
            target["exemplar"] = panel.exemplars
        else:
            target["queryType"] = "range"
        targets.append(target)
    defaults: dict[str, Any] = {"unit": panel.unit}
    if panel.thresholds:
        defaults["thresholds"] = thresholds(panel.thresholds)
        if panel.kind == "timeseries":
            defaults["custom"] = {"thresholdsStyle": {"mode": "line"}}
    body: dict[str, Any] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "datasource": panel.datasource,
        "gridPos": {"x": x, "y": y, "w": panel.width, "h": panel.height},
        "targets": targets,
    }
    if panel.description:
        body["description"] = panel.description
    if panel.kind != "logs":
        body["fieldConfig"] = {"defaults": defaults, "overrides": []}
    options = dict(panel.options)
    if panel.kind == "timeseries":
        options.setdefault("legend", {"displayMode": "list", "placement": "bottom", "showLegend": True})
        options.setdefault("tooltip", {"mode": "multi", "sort": "desc"})
    if panel.kind == "stat":
        options.setdefault("reduceOptions", {"calcs": ["lastNotNull"], "fields": "", "values": False})
        options.setdefault("colorMode", "value")
    body["options"] = options
    return body


def layout(panels: list[Panel]) -> list[dict[str, Any]]:
    """Left to right, wrapping at 24 columns; each row as tall as its tallest panel."""
    out, x, y, row_height = [], 0, 0, 0
    for panel_id, panel in enumerate(panels, start=1):
        if x + panel.width > 24:
            x, y, row_height = 0, y + row_height, 0
        out.append(panel_json(panel, panel_id, x, y))
        x += panel.width
        row_height = max(row_height, panel.height)
    return out


def variables() -> list[dict[str, Any]]:
    return [
        {
            "name": "job",
            "label": "Service",
            "type": "query",
            "datasource": PROMETHEUS,
            "query": {"query": f"label_values({H}_count, job)", "refId": "job"},
            "definition": f"label_values({H}_count, job)",
            "refresh": 2,
            "includeAll": True,
            "multi": True,
            "allValue": ".+",
            "current": {"text": "All", "value": "$__all"},
            "sort": 1,
        },
        {
            "name": "trace_id",
            "label": "Trace id",
            "type": "textbox",
            "query": "",
            "current": {"text": "", "value": ""},
        },
    ]


def dashboard(slug: str, spec: dict[str, Any]) -> dict[str, Any]:
    del slug
    return {
        "uid": spec["uid"],
        "title": spec["title"],
        "description": spec["description"],
        "tags": ["otel_setup"],
        "editable": False,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "timezone": "browser",
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": [
            {
                "title": "otel_setup dashboards",
                "type": "dashboards",
                "tags": ["otel_setup"],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "templating": {"list": variables()},
        "panels": layout(spec["panels"]),
    }


def outputs() -> dict[Path, str]:
    return {
        OUT / f"{slug}.json": json.dumps(dashboard(slug, spec), indent=2, ensure_ascii=False) + "\n"
        for slug, spec in DASHBOARDS.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed files are out of date")
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        if args.check:
            stale.append(path.name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.name}")
    for name in stale:
        print(f"out of date: {name} (run python deploy/grafana/generate.py)")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
