"""Grafana dashboards and provisioning, checked without a Grafana server.

The JSON is what deploy/grafana/generate.py writes; panels have unique ids and a valid grid;
uids are stable; every datasource uid is provisioned; every PromQL expression passes promtool
(as a recording rule in a throwaway file) and reads only metrics in docs/metrics.md (or
otelcol_*, node_*, up, ALERTS, the SLO recording rules).
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.assets._promql import REPO, run, tool, unknown_metrics

GRAFANA = REPO / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
STABLE_UIDS = {
    "system-overview.json": "otel-system-overview",
    "api-performance.json": "otel-api-performance",
    "errors-alerts.json": "otel-errors-alerts",
    "telemetry-pipeline.json": "otel-telemetry-pipeline",
}
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__range": "1h",
    "${job:regex}": ".+",
    "$job": ".+",
    "${trace_id}": "",
}


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def targets(kind: str) -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expr) for every target of a datasource type."""
    out = []
    for path in DASHBOARDS:
        for panel in panels(load(path)):
            for target in panel.get("targets", []):
                if (target.get("datasource") or panel["datasource"])["type"] == kind:
                    out.append((path.name, panel["title"], target["expr"]))
    return out


def substitute(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr.replace("${1}", ""), f"unknown Grafana variable in {expr}"
    return expr


def provisioned_datasources() -> dict[str, dict[str, Any]]:
    data = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "datasources.yaml").read_text(encoding="utf-8"))
    return {source["uid"]: source for source in data["datasources"]}


def test_dashboards_match_the_generator() -> None:
    spec = importlib.util.spec_from_file_location("grafana_generate", GRAFANA / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    for path, text in module.outputs().items():
        assert path.read_text(encoding="utf-8") == text, f"{path.name} is stale: run python deploy/grafana/generate.py"


def test_the_four_dashboards_exist_with_stable_uids() -> None:
    assert {path.name: load(path)["uid"] for path in DASHBOARDS} == STABLE_UIDS
    titles = [load(path)["title"] for path in DASHBOARDS]
    assert sorted(titles) == sorted({"System Overview", "API Performance", "Errors & Alerts", "Telemetry pipeline"})


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_structure(path: Path) -> None:
    dashboard = load(path)
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] == 39
    assert isinstance(dashboard["refresh"], str) and dashboard["editable"] is False
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    occupied: set[tuple[int, int]] = set()
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert all(isinstance(grid[key], int) for key in ("x", "y", "w", "h")), panel["title"]
        assert grid["x"] >= 0 and grid["w"] >= 1 and grid["x"] + grid["w"] <= 24, panel["title"]
        assert grid["y"] >= 0 and grid["h"] >= 1, panel["title"]
        cells = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells
        assert panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert {"job", "trace_id"} <= variables


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_datasource_uids_are_provisioned(path: Path) -> None:
    provisioned = provisioned_datasources()
    for panel in panels(load(path)):
        for source in [panel["datasource"], *(target.get("datasource") for target in panel["targets"])]:
            if source is None:
                continue
            assert source["uid"] in provisioned, (panel["title"], source)
            assert provisioned[source["uid"]]["type"] == source["type"], (panel["title"], source)


def test_provisioning_links_metrics_traces_and_logs() -> None:
    sources = provisioned_datasources()
    assert set(sources) == {"prometheus", "tempo", "loki"}
    assert sources["prometheus"]["jsonData"]["exemplarTraceIdDestinations"] == [
        {"name": "trace_id", "datasourceUid": "tempo"}
    ]
    assert sources["tempo"]["jsonData"]["tracesToLogsV2"]["datasourceUid"] == "loki"
    assert {field["datasourceUid"] for field in sources["loki"]["jsonData"]["derivedFields"]} == {"tempo"}
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "dashboards.yaml").read_text(encoding="utf-8"))
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['providers'][0]['options']['path']}:ro" in mounts


def test_latency_panels_link_to_traces_and_logs_filter_by_trace_id() -> None:
    latency = [
        (path.name, panel["title"])
        for path in DASHBOARDS
        for panel in panels(load(path))
        if panel.get("fieldConfig", {}).get("defaults", {}).get("unit") == "s" and panel["type"] == "timeseries"
    ]
    assert latency
    for path in DASHBOARDS:
        for panel in panels(load(path)):
            if (path.name, panel["title"]) in latency:
                assert all(target["exemplar"] for target in panel["targets"]), panel["title"]
    logs = targets("loki")
    assert logs and all('trace_id=~"${trace_id}' in expr for _, _, expr in logs)


def test_every_promql_expression_passes_promtool(tmp_path: Path) -> None:
    promtool = tool("promtool", "prometheus")
    exprs = targets("prometheus")
    rules = [
        {"record": f"dashboard:expr_{index}", "expr": substitute(expr)} for index, (_, _, expr) in enumerate(exprs)
    ]
    path = tmp_path / "dashboard_exprs.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}), encoding="utf-8")
    result = run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_a_broken_expression_is_caught(tmp_path: Path) -> None:
    promtool = tool("promtool", "prometheus")
    path = tmp_path / "broken.yml"
    path.write_text(
        yaml.safe_dump({"groups": [{"name": "x", "rules": [{"record": "x:y", "expr": "sum(rate(a[5m])"}]}]})
    )
    assert run(promtool, "check", "rules", str(path)).returncode == 1


@pytest.mark.parametrize(
    ("dashboard", "title", "expr"), targets("prometheus"), ids=lambda v: v if len(v) < 40 else v[:40]
)
def test_expression_reads_only_cataloged_metrics(dashboard: str, title: str, expr: str) -> None:
    assert unknown_metrics(substitute(expr)) == set(), f"{dashboard}: {title}"


def test_metric_name_check_catches_unknown_names() -> None:
    assert unknown_metrics('sum(rate(http_server_requests_total{job=~".+"}[5m]))') == {"http_server_requests_total"}
    assert unknown_metrics('rate({__name__=~"otelcol_(a|b)_total"}[5m])') == set()
    assert unknown_metrics('rate({__name__=~"app_(a|b)_total"}[5m])') == {"app_a_total", "app_b_total"}
    assert re.fullmatch(r"otel-[a-z-]+", STABLE_UIDS["errors-alerts.json"])
