"""Alert and recording rules: promtool checks, promtool unit tests, and the house rules.

Every alert has `for:`, a severity Alertmanager routes, a summary and a runbook_url pointing
at its own section of docs/runbook.md; every metric a rule reads is in docs/metrics.md; the
SLO file is what deploy/prometheus/slo.py generates; and every alert (each severity) has a
promtool case that fires, a healthy case and a case still inside `for:`.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.assets._promql import (
    PROMETHEUS_DIR,
    RULE_TESTS_DIR,
    RUNBOOK_BASE,
    alerting_rules,
    github_anchor,
    rule_files,
    run,
    runbook_anchors,
    tool,
    unknown_metrics,
)

SEVERITIES = {"critical", "warning"}


def _slo_module() -> Any:
    spec = importlib.util.spec_from_file_location("slo_generator", PROMETHEUS_DIR / "slo.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", rule_files(), ids=lambda p: p.name)
def test_promtool_check_rules(path: Path) -> None:
    result = run(tool("promtool", "prometheus"), "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_config_with_rules(tmp_path: Path) -> None:
    promtool = tool("promtool", "prometheus")
    shutil.copy(PROMETHEUS_DIR / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copytree(PROMETHEUS_DIR / "rules", tmp_path / "rules")
    result = run(promtool, "check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rule_files())} rule files found" in result.stdout + result.stderr


def test_promtool_unit_tests() -> None:
    """All test files, run side by side (the SLO files replay days of samples)."""
    promtool = tool("promtool", "prometheus")
    files = sorted(RULE_TESTS_DIR.glob("*.yaml"))
    assert files
    with ThreadPoolExecutor(max_workers=len(files)) as pool:
        results = list(pool.map(lambda f: run(promtool, "test", "rules", str(f), timeout=300), files))
    failures = [f"{f.name}:\n{r.stdout}{r.stderr}" for f, r in zip(files, results, strict=True) if r.returncode != 0]
    assert not failures, "\n".join(failures)


def test_a_wrong_expectation_fails(tmp_path: Path) -> None:
    """The unit tests can fail: flip one expectation and promtool must say so."""
    promtool = tool("promtool", "prometheus")
    data = yaml.safe_load((RULE_TESTS_DIR / "http_test.yaml").read_text(encoding="utf-8"))
    data["rule_files"] = [str(PROMETHEUS_DIR / "rules" / "http.yml")]
    data["tests"][0]["alert_rule_test"][1]["exp_alerts"] = data["tests"][0]["alert_rule_test"][2]["exp_alerts"]
    broken = tmp_path / "broken_test.yaml"
    broken.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = run(promtool, "test", "rules", str(broken))
    assert result.returncode == 1
    assert "FAILED" in result.stdout + result.stderr


def test_slo_rules_match_the_generator() -> None:
    slo = _slo_module()
    for path, text in slo.outputs().items():
        assert path.read_text(encoding="utf-8") == text, f"{path.name} is stale: run python deploy/prometheus/slo.py"


def test_slo_table_is_the_sre_workbook_one() -> None:
    slo = _slo_module()
    rows = [(w.long, w.short, w.factor, w.severity) for w in slo.WINDOWS]
    assert rows == [
        ("1h", "5m", 14.4, "critical"),
        ("6h", "30m", 6, "critical"),
        ("1d", "2h", 3, "warning"),
        ("3d", "6h", 1, "warning"),
    ]
    assert {s.name: s.budget for s in slo.SLOS} == {"availability": 0.01, "latency": 0.05}
    assert 'le="0.2"' in next(s for s in slo.SLOS if s.name == "latency").error_ratio


@pytest.mark.parametrize("rule", alerting_rules(), ids=lambda r: f"{r['alert']}-{r['labels']['severity']}")
def test_alert_has_for_severity_summary_and_runbook(rule: dict[str, Any]) -> None:
    assert rule.get("for"), "every alert needs for:"
    assert rule["labels"]["severity"] in SEVERITIES
    assert rule["annotations"]["summary"]
    assert rule["annotations"]["runbook_url"] == f"{RUNBOOK_BASE}#{github_anchor(rule['alert'])}"
    assert github_anchor(rule["alert"]) in runbook_anchors(), f"docs/runbook.md has no section ## {rule['alert']}"


def test_runbook_has_no_orphan_alert_sections() -> None:
    alerts = {github_anchor(rule["alert"]) for rule in alerting_rules()}
    sections = runbook_anchors()
    generic = {"how-to-use-this-runbook", "escalation", "silencing-and-maintenance"}
    assert sections - generic <= alerts, sections - generic - alerts


@pytest.mark.parametrize("path", rule_files(), ids=lambda p: p.name)
def test_rules_read_only_cataloged_metrics(path: Path) -> None:
    for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
        for rule in group["rules"]:
            assert unknown_metrics(rule["expr"]) == set(), rule.get("alert") or rule.get("record")


def _cases() -> dict[str, list[tuple[str, list[dict[str, Any]]]]]:
    """alertname -> [(group name, [alert_rule_test...])] over every promtool test file."""
    cases: dict[str, list[tuple[str, list[dict[str, Any]]]]] = {}
    for path in sorted(RULE_TESTS_DIR.glob("*.yaml")):
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["tests"]:
            by_alert: dict[str, list[dict[str, Any]]] = {}
            for case in group.get("alert_rule_test", []):
                by_alert.setdefault(case["alertname"], []).append(case)
            for alertname, alert_cases in by_alert.items():
                cases.setdefault(alertname, []).append((group["name"], alert_cases))
    return cases


@pytest.mark.parametrize("rule", alerting_rules(), ids=lambda r: f"{r['alert']}-{r['labels']['severity']}")
def test_alert_has_firing_healthy_and_pending_cases(rule: dict[str, Any]) -> None:
    groups = _cases().get(rule["alert"], [])
    severity = rule["labels"]["severity"]
    fires = healthy = pending = False
    for _name, cases in groups:
        states = [any(a["exp_labels"].get("severity") == severity for a in case["exp_alerts"] or []) for case in cases]
        if not states:
            continue
        # Exact labels and annotations on the firing case.
        for case in cases:
            for expected in case["exp_alerts"] or []:
                if expected["exp_labels"].get("severity") == severity:
                    fires = True
                    assert expected["exp_annotations"]["runbook_url"] == rule["annotations"]["runbook_url"]
                    assert "summary" in expected["exp_annotations"]
        healthy = healthy or not states[0]
        # A not-firing check after the healthy one and before a firing one: inside for:.
        for i in range(1, len(states) - 1):
            if not states[i] and any(states[i + 1 :]) and cases[i]["eval_time"] != cases[0]["eval_time"]:
                pending = True
    assert fires, "no case where it fires"
    assert healthy, "no healthy case"
    assert pending, "no case inside for: (condition true, alert not yet firing)"
