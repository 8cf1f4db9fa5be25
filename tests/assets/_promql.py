"""Shared by the rule, dashboard and Alertmanager tests: tools, the metric catalog, PromQL names."""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
RULES_DIR = PROMETHEUS_DIR / "rules"
RULE_TESTS_DIR = RULES_DIR / "tests"
RUNBOOK = REPO / "docs" / "runbook.md"
CATALOG = REPO / "docs" / "metrics.md"
RUNBOOK_BASE = "https://github.com/your-org/otel_setup/blob/main/docs/runbook.md"
# Series that are not the package's: the collector's own, node-exporter's, Prometheus' own.
ALLOWED_PREFIXES = ("otelcol_", "node_")
ALLOWED_NAMES = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE"})
_KEYWORDS = frozenset(
    {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
        "atan2",
    }
)


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package {package}); CI installs it")
    return path


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)


def rule_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yml"))


def alerting_rules() -> list[dict[str, Any]]:
    rules = []
    for path in rule_files():
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            rules.extend(rule for rule in group["rules"] if "alert" in rule)
    return rules


def recorded_names() -> set[str]:
    names = set()
    for path in rule_files():
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            names.update(rule["record"] for rule in group["rules"] if "record" in rule)
    return names


def catalog() -> set[str]:
    """Prometheus names from the last column of docs/metrics.md's tables, braces expanded."""
    names: set[str] = set()
    for line in CATALOG.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 3:
            continue
        for token in re.findall(r"`([^`]+)`", cells[-1]):
            match = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*?)(?:_\{([a-z_,]+)\})?", token)
            if not match:
                continue
            if match.group(2):
                names.update(f"{match.group(1)}_{suffix}" for suffix in match.group(2).split(","))
            else:
                names.add(match.group(1))
    return names


def _expand(pattern: str) -> list[str]:
    """Names a simple `a(b|c)d` regex matches (no nesting); enough for __name__ matchers."""
    parts = re.split(r"\(([^()]*)\)", pattern)
    choices = [[part] if i % 2 == 0 else part.split("|") for i, part in enumerate(parts)]
    return ["".join(combo) for combo in itertools.product(*choices)]


def metric_names(expr: str) -> set[str]:
    names: set[str] = set()
    for pattern in re.findall(r'__name__\s*=~\s*"([^"]*)"', expr):
        names.update(_expand(pattern))
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^{}]*\}", "", text)
    text = re.sub(r"\[[^\[\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", text)
    for match in re.finditer(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word in _KEYWORDS:
            continue
        names.add(word)
    return names


def unknown_metrics(expr: str) -> set[str]:
    known = catalog() | recorded_names() | ALLOWED_NAMES
    return {name for name in metric_names(expr) if name not in known and not name.startswith(ALLOWED_PREFIXES)}


def github_anchor(heading: str) -> str:
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def runbook_anchors() -> set[str]:
    return {
        github_anchor(line.lstrip("#"))
        for line in RUNBOOK.read_text(encoding="utf-8").splitlines()
        if line.startswith("## ")
    }
