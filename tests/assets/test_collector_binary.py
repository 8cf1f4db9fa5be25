"""Every collector stack loaded by the real binary built from collector/builder.yaml.

``otelcol validate --config base.yaml --config <overlay>.yaml`` is the collector's own merge
(maps deep-merged, lists replaced), ``${env:...}`` resolution and each component's own
settings validation: an unknown component type, a misspelt option or a bad value fails here.
``print-config`` shows what the merge produced; it is compared with the lint's Python merge in
tests/assets/test_collector_configs.py, so the lint checks what the collector really runs.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.assets.test_collector_configs import TEST_ENV, _pipelines, dotenv, load_stack
from tests.support.collector import (
    COLLECTOR_DIR,
    FULL_ENV,
    MANIFEST,
    STACKS,
    collector_binary,
    components,
    validate,
)

# Stacks the default build cannot load, and why (docs/collector.md, "The distribution").
NOT_IN_DEFAULT_BUILD: dict[str, str] = {
    "datadog": "the datadog exporter and connector are not in collector/builder.yaml (see docs/collector.md)",
}
KINDS = ("receivers", "processors", "exporters", "connectors", "extensions")


def manifest() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    return data


def manifest_modules(data: dict[str, Any]) -> list[tuple[str, str]]:
    modules = []
    for kind in (*KINDS, "providers"):
        for entry in data.get(kind) or []:
            path, version = entry["gomod"].split()
            modules.append((path, version))
    return modules


@pytest.fixture(scope="module")
def binary() -> Path:
    return collector_binary()


def stack_files(stack: str) -> list[Path]:
    return [COLLECTOR_DIR / name for name in STACKS[stack]]


def test_manifest_pins_every_module_to_one_release() -> None:
    data = manifest()
    release = data["dist"]["version"]
    modules = manifest_modules(data)
    assert modules
    versions = {version for _, version in modules}
    # Core's stable modules (1.x) are released together with the 0.x ones; nothing else.
    assert versions <= {f"v{release}", "v1.67.0"}, versions
    assert all(version == f"v{release}" for path, version in modules if "/opentelemetry-collector-contrib/" in path)
    # The compose stack and the Kubernetes manifests run the same release.
    assert dotenv()["OTELCOL_VERSION"] == release


def test_binary_has_every_component_the_stacks_use(binary: Path) -> None:
    built = components(binary)
    for stack in STACKS:
        if stack in NOT_IN_DEFAULT_BUILD:
            continue
        config = load_stack(stack, TEST_ENV)
        for kind in KINDS:
            for component_id in config.get(kind) or {}:
                assert component_id.split("/", 1)[0] in built[kind], (stack, kind, component_id)


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_real_collector_validates_the_stack(binary: Path, stack: str) -> None:
    if stack in NOT_IN_DEFAULT_BUILD:
        # The binary must refuse it for exactly that reason, not for a mistake elsewhere.
        result = validate(binary, stack_files(stack), FULL_ENV)
        assert result.returncode != 0
        assert "datadog" in result.stderr and "unknown type" in result.stderr, result.stderr
        return
    result = validate(binary, stack_files(stack), FULL_ENV)
    assert result.returncode == 0, f"{stack}: {result.stderr}"


def test_real_collector_rejects_a_misspelt_option(binary: Path, tmp_path: Path) -> None:
    # validate checks every component's own settings, which the Python lint cannot.
    overlay = tmp_path / "typo.yaml"
    overlay.write_text("exporters:\n  otlp_grpc/tempo:\n    sending_queue:\n      queue_sise: 10\n", encoding="utf-8")
    result = validate(binary, [*stack_files("staging"), overlay], FULL_ENV)
    assert result.returncode != 0
    assert "queue_sise" in result.stderr


def test_real_collector_requires_the_variables_without_default(binary: Path) -> None:
    env = {key: value for key, value in FULL_ENV.items() if key != "DEPLOYMENT_ENVIRONMENT"}
    result = validate(binary, stack_files("prod"), env)
    # An unset ${env:X} resolves to an empty string; the resource processor refuses an
    # upsert without a value, so a missing DEPLOYMENT_ENVIRONMENT fails at start-up.
    assert result.returncode != 0, result.stdout + result.stderr
    assert "resource" in result.stderr, result.stderr


def print_config(binary: Path, stack: str) -> dict[str, Any]:
    argv = [str(binary), "print-config", "--mode", "unredacted"]
    for path in stack_files(stack):
        argv += ["--config", str(path)]
    completed = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", **FULL_ENV}, check=False
    )
    assert completed.returncode == 0, completed.stderr
    data: dict[str, Any] = yaml.safe_load(completed.stdout)
    return data


@pytest.mark.parametrize("stack", sorted(set(STACKS) - set(NOT_IN_DEFAULT_BUILD)))
def test_lint_merge_matches_the_collectors_merge(binary: Path, stack: str) -> None:
    real = print_config(binary, stack)
    ours = load_stack(stack, FULL_ENV)
    for kind in KINDS:
        assert set(real.get(kind) or {}) == set(ours.get(kind) or {}), (stack, kind)
    assert _pipelines(real) == _pipelines(ours)
    assert real["service"]["extensions"] == ours["service"]["extensions"]
    assert real["processors"]["resource"]["attributes"][0]["value"] == "test"
    assert real["processors"]["redaction"]["blocked_values"] == ours["processors"]["redaction"]["blocked_values"]


def test_docs_name_the_validated_release() -> None:
    release = manifest()["dist"]["version"]
    text = (COLLECTOR_DIR.parent / "docs" / "collector.md").read_text(encoding="utf-8")
    assert re.search(rf"\bv?{re.escape(release)}\b", text), f"docs/collector.md does not name {release}"
