"""Collector configurations: a semantic lint of every environment as it is loaded.

The real collector loads every stack in tests/assets/test_collector_binary.py
(``otelcol validate``), which checks component types and their own settings.
This lint checks what a binary cannot: the rules of docs/collector.md that span
components and files (secrets only from the environment, redaction everywhere,
persistent queues in production tiers, tail sampling only behind trace-id
routing, the datadog connector ahead of sampling...). It loads the stacks with
a Python merge (maps merged deeply, lists replaced, ``${env:NAME}`` /
``${env:NAME:-default}`` expanded) so it runs without Go;
test_collector_binary.py checks that merge against the collector's own
``print-config``. Each rule has a negative test on a mutated copy.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.collector import STACKS

# --- loading ------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]
COLLECTOR_DIR = REPO / "collector"

# Stacks that run in production and must persist their sending queues.
PROD_STACKS = frozenset({"prod", "agent", "gateway"})

# Components an overlay cannot remove from base.yaml and that are unused on
# purpose. The collector only starts components referenced by a pipeline.
INTENTIONALLY_UNUSED: dict[str, dict[str, frozenset[str]]] = {
    "datadog": {"exporters": frozenset({"otlp_grpc/tempo", "otlp_http/loki", "prometheus"})},
    "agent": {"exporters": frozenset({"otlp_grpc/tempo"})},
}

# Push exporters that talk to a remote backend and need queue + retry.
NETWORK_EXPORTERS = frozenset({"otlp_grpc", "otlp_http", "datadog", "load_balancing"})
# Exporter names replaced in v0.144 (and the later snake_case rename of
# loadbalancing); the pinned version still accepts them as deprecated aliases.
DEPRECATED_EXPORTER_TYPES = {"otlp": "otlp_grpc", "otlphttp": "otlp_http", "loadbalancing": "load_balancing"}
SAMPLING_PROCESSORS = frozenset({"tail_sampling", "probabilistic_sampler"})
# Extensions and exporters that open a listening socket.
LISTENING_EXTENSIONS = frozenset({"health_check", "zpages", "pprof"})
DEBUG_ONLY_EXTENSIONS = frozenset({"zpages", "pprof"})
KINDS = ("receivers", "processors", "exporters", "connectors", "extensions")

_ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def component_type(component_id: str) -> str:
    """``otlp_grpc/tempo`` -> ``otlp_grpc``."""
    return component_id.split("/", 1)[0]


def deep_merge(base: Any, overlay: Any) -> Any:
    """Merge like the collector's confmap: maps recursively, anything else replaced."""
    if isinstance(base, Mapping) and isinstance(overlay, Mapping):
        merged = {key: copy.deepcopy(value) for key, value in base.items()}
        for key, value in overlay.items():
            merged[key] = deep_merge(merged[key], value) if key in merged else copy.deepcopy(value)
        return merged
    return copy.deepcopy(overlay)


def env_references(text: str) -> set[str]:
    return {match.group(1) for match in _ENV_REF.finditer(text)}


def expand_env(value: Any, env: Mapping[str, str]) -> Any:
    """Expand ``${env:NAME}`` and ``${env:NAME:-default}``; unset without default is an error."""
    if isinstance(value, Mapping):
        return {key: expand_env(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [expand_env(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise KeyError(f"${{env:{name}}} is not set and has no default")

    return _ENV_REF.sub(replace, value)


def load_raw(files: Iterable[str]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for name in files:
        data = yaml.safe_load((COLLECTOR_DIR / name).read_text(encoding="utf-8")) or {}
        merged = deep_merge(merged, data)
    return merged


def load_stack(stack: str, env: Mapping[str, str]) -> dict[str, Any]:
    config: dict[str, Any] = expand_env(load_raw(STACKS[stack]), env)
    return config


@dataclass
class LintOptions:
    env_name: str
    prod: bool = False
    # Value patterns the redaction backstop must block (regex strings).
    required_blocked_values: tuple[str, ...] = ()
    intentionally_unused: Mapping[str, frozenset[str]] = field(default_factory=dict)


def _section(config: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """Components of one kind; a component written as ``name:`` (null) has default settings."""
    return {component: body or {} for component, body in (config.get(kind) or {}).items()}


def _pipelines(config: Mapping[str, Any]) -> dict[str, dict[str, list[str]]]:
    pipelines = (config.get("service") or {}).get("pipelines") or {}
    return {
        name: {part: list((body or {}).get(part) or []) for part in ("receivers", "processors", "exporters")}
        for name, body in pipelines.items()
    }


def _has_explicit_host(endpoint: Any) -> bool:
    if not isinstance(endpoint, str) or ":" not in endpoint:
        return False
    host = endpoint.rsplit(":", 1)[0]
    return host not in ("", "localhost")


def _lint_wiring(config: Mapping[str, Any], options: LintOptions) -> list[str]:
    problems: list[str] = []
    pipelines = _pipelines(config)
    if not pipelines:
        return ["service.pipelines is empty"]
    connectors = _section(config, "connectors")
    used: dict[str, set[str]] = {kind: set() for kind in KINDS}
    for name, parts in pipelines.items():
        for receiver in parts["receivers"]:
            kind = "connectors" if receiver in connectors else "receivers"
            if receiver not in _section(config, kind):
                problems.append(f"pipeline {name}: receiver {receiver!r} is not defined")
            used[kind].add(receiver)
        for processor in parts["processors"]:
            if processor not in _section(config, "processors"):
                problems.append(f"pipeline {name}: processor {processor!r} is not defined")
            used["processors"].add(processor)
        for exporter in parts["exporters"]:
            kind = "connectors" if exporter in connectors else "exporters"
            if exporter not in _section(config, kind):
                problems.append(f"pipeline {name}: exporter {exporter!r} is not defined")
            used[kind].add(exporter)
    for extension in (config.get("service") or {}).get("extensions") or []:
        if extension not in _section(config, "extensions"):
            problems.append(f"service.extensions: {extension!r} is not defined")
        used["extensions"].add(extension)
    for kind in KINDS:
        allowed = options.intentionally_unused.get(kind, frozenset())
        for component in _section(config, kind):
            if component not in used[kind] and component not in allowed:
                problems.append(f"{kind}: {component!r} is defined but not used")
            if kind == "exporters" and component_type(component) in DEPRECATED_EXPORTER_TYPES:
                new = DEPRECATED_EXPORTER_TYPES[component_type(component)]
                problems.append(f"exporters: {component!r} uses a deprecated type, use {new!r}")
    for connector in connectors:
        fed = any(connector in parts["exporters"] for parts in pipelines.values())
        feeds = any(connector in parts["receivers"] for parts in pipelines.values())
        if not (fed and feeds):
            problems.append(f"connector {connector!r} must be an exporter of one pipeline and a receiver of another")
    return problems


def _lint_processor_order(config: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    connectors = _section(config, "connectors")
    for name, parts in _pipelines(config).items():
        processors = parts["processors"]
        types = [component_type(p) for p in processors]
        # Pipelines fed only by connectors receive data that already went
        # through a memory_limiter upstream.
        external = [r for r in parts["receivers"] if r not in connectors]
        if external and (not types or types[0] != "memory_limiter"):
            problems.append(f"pipeline {name}: memory_limiter must be the first processor")
        if "memory_limiter" in types[1:]:
            problems.append(f"pipeline {name}: memory_limiter appears after another processor")
        if "batch" in types and types[-1] != "batch":
            problems.append(f"pipeline {name}: batch must be the last processor")
    for processor_id, body in _section(config, "processors").items():
        if component_type(processor_id) == "memory_limiter":
            if "limit_percentage" not in body or "spike_limit_percentage" not in body:
                problems.append(f"{processor_id}: set limit_percentage and spike_limit_percentage")
            if body.get("check_interval") != "1s":
                problems.append(f"{processor_id}: check_interval should be 1s")
    return problems


def _lint_endpoints(config: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    for receiver_id, body in _section(config, "receivers").items():
        if component_type(receiver_id) == "otlp":
            protocols = (body or {}).get("protocols") or {}
            if not protocols:
                problems.append(f"receiver {receiver_id}: no protocols")
            for protocol, settings in protocols.items():
                if not _has_explicit_host((settings or {}).get("endpoint")):
                    problems.append(f"receiver {receiver_id}/{protocol}: endpoint must be explicit host:port")
    for extension_id, body in _section(config, "extensions").items():
        if component_type(extension_id) in LISTENING_EXTENSIONS and not _has_explicit_host(body.get("endpoint")):
            problems.append(f"extension {extension_id}: endpoint must be explicit host:port")
    for exporter_id, body in _section(config, "exporters").items():
        if component_type(exporter_id) == "prometheus":
            if not _has_explicit_host(body.get("endpoint")):
                problems.append(f"exporter {exporter_id}: endpoint must be explicit host:port")
            if body.get("enable_open_metrics") is not True:
                problems.append(f"exporter {exporter_id}: enable_open_metrics must be true (exemplars)")
    telemetry = ((config.get("service") or {}).get("telemetry") or {}).get("metrics") or {}
    if "address" in telemetry:
        problems.append("service.telemetry.metrics.address is deprecated, use readers")
    for reader in telemetry.get("readers") or []:
        prometheus = (((reader or {}).get("pull") or {}).get("exporter") or {}).get("prometheus")
        if prometheus is not None and not prometheus.get("host"):
            problems.append("service.telemetry.metrics: the prometheus reader needs an explicit host")
        elif prometheus is not None and prometheus.get("host") not in ("127.0.0.1", "localhost", "::1"):
            problems.append("service.telemetry.metrics: keep the collector's own metrics on loopback")
    return problems


def _lint_health_and_debug(config: Mapping[str, Any], options: LintOptions) -> list[str]:
    problems: list[str] = []
    service_extensions = (config.get("service") or {}).get("extensions") or []
    if not any(component_type(e) == "health_check" for e in service_extensions):
        problems.append("health_check must be in service.extensions")
    for extension_id, body in _section(config, "extensions").items():
        if component_type(extension_id) == "health_check" and "check_collector_pipeline" in (body or {}):
            problems.append(f"{extension_id}: check_collector_pipeline is unreliable upstream, remove it")
        if options.prod and component_type(extension_id) in DEBUG_ONLY_EXTENSIONS:
            problems.append(f"{extension_id}: no zpages/pprof in production")
    if options.prod:
        used = {e for parts in _pipelines(config).values() for e in parts["exporters"]}
        for exporter_id, body in _section(config, "exporters").items():
            if component_type(exporter_id) != "debug":
                continue
            if (body or {}).get("verbosity") == "detailed":
                problems.append(f"{exporter_id}: verbosity detailed in production")
            if exporter_id in used:
                problems.append(f"{exporter_id}: debug exporter in a production pipeline")
    return problems


def _lint_exporter_reliability(config: Mapping[str, Any], options: LintOptions) -> list[str]:
    problems: list[str] = []
    extensions = _section(config, "extensions")
    service_extensions = (config.get("service") or {}).get("extensions") or []
    for exporter_id, body in _section(config, "exporters").items():
        if component_type(exporter_id) not in NETWORK_EXPORTERS:
            continue
        queue = body.get("sending_queue") or {}
        retry = body.get("retry_on_failure") or {}
        if queue.get("enabled") is not True:
            problems.append(f"{exporter_id}: sending_queue.enabled must be true")
        if retry.get("enabled") is not True:
            problems.append(f"{exporter_id}: retry_on_failure.enabled must be true")
        if options.prod:
            storage = queue.get("storage")
            if not storage:
                problems.append(f"{exporter_id}: production needs sending_queue.storage (file_storage)")
            elif storage not in extensions or component_type(storage) != "file_storage":
                problems.append(f"{exporter_id}: sending_queue.storage {storage!r} is not a declared file_storage")
            elif storage not in service_extensions:
                problems.append(f"{exporter_id}: storage extension {storage!r} is not in service.extensions")
    return problems


def _lint_redaction(config: Mapping[str, Any], options: LintOptions) -> list[str]:
    problems: list[str] = []
    processors = _section(config, "processors")
    connectors = _section(config, "connectors")
    for name, parts in _pipelines(config).items():
        signal = name.split("/", 1)[0]
        if signal not in ("traces", "logs") or not any(r not in connectors for r in parts["receivers"]):
            continue
        redactions = [p for p in parts["processors"] if component_type(p) == "redaction"]
        if not redactions:
            problems.append(f"pipeline {name}: no redaction processor")
            continue
        body = processors.get(redactions[0]) or {}
        if body.get("allow_all_keys") is not True:
            problems.append(f"{redactions[0]}: allow_all_keys must be true (an empty allow-list drops every attribute)")
        missing = set(options.required_blocked_values) - set(body.get("blocked_values") or [])
        if missing:
            problems.append(f"{redactions[0]}: blocked_values lacks {sorted(missing)}")
    return problems


def _lint_sampling(config: Mapping[str, Any], options: LintOptions) -> list[str]:
    problems: list[str] = []
    pipelines = _pipelines(config)
    for name, parts in pipelines.items():
        if any(component_type(p) == "tail_sampling" for p in parts["processors"]) and options.env_name != "gateway":
            problems.append(f"pipeline {name}: tail_sampling belongs only in the gateway fed by load_balancing")
    for exporter_id in _section(config, "exporters"):
        if component_type(exporter_id) == "load_balancing":
            body = _section(config, "exporters")[exporter_id] or {}
            if body.get("routing_key") != "traceID":
                problems.append(f"{exporter_id}: routing_key must be traceID so whole traces reach one gateway")
    # The datadog connector computes APM stats; it must see spans before sampling.
    connectors = _section(config, "connectors")
    for connector_id in connectors:
        if component_type(connector_id) != "datadog":
            continue
        for name, parts in pipelines.items():
            if connector_id in parts["exporters"]:
                sampling = [p for p in parts["processors"] if component_type(p) in SAMPLING_PROCESSORS]
                if sampling:
                    problems.append(f"pipeline {name}: {sampling} runs before {connector_id}")
    return problems


def lint(config: Mapping[str, Any], options: LintOptions) -> list[str]:
    problems: list[str] = []
    problems += _lint_wiring(config, options)
    problems += _lint_processor_order(config)
    problems += _lint_endpoints(config)
    problems += _lint_health_and_debug(config, options)
    problems += _lint_exporter_reliability(config, options)
    problems += _lint_redaction(config, options)
    problems += _lint_sampling(config, options)
    return problems


# --- fixtures and shared data --------------------------------------------------

K8S_DIR = REPO / "deploy" / "k8s"
DOCS = REPO / "docs" / "collector.md"
COMPOSE_FILE = REPO / "docker-compose.yml"

# What each environment's variables look like when the collector starts.
TEST_ENV: dict[str, str] = {
    "DEPLOYMENT_ENVIRONMENT": "test",
    "DD_API_KEY": "0123456789abcdef0123456789abcdef",
    "DD_SITE": "datadoghq.eu",
}


# Used only until otel_setup._security.redaction exists; then the package's table wins.
def package_value_patterns() -> tuple[tuple[str, str], ...]:
    """The package's redaction table: the collector must block every value pattern the app redacts."""
    from otel_setup._security.redaction import DEFAULT_VALUE_PATTERNS

    return tuple(DEFAULT_VALUE_PATTERNS)


def options_for(stack: str) -> LintOptions:
    return LintOptions(
        env_name=stack,
        prod=stack in PROD_STACKS,
        required_blocked_values=tuple(pattern for _, pattern in package_value_patterns()),
        intentionally_unused=INTENTIONALLY_UNUSED.get(stack, {}),
    )


def k8s_documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((K8S_DIR / name).read_text(encoding="utf-8")) if doc]


def k8s_collector_containers() -> dict[str, dict[str, Any]]:
    """Collector container spec per tier, from the DaemonSet and Deployment."""
    containers: dict[str, dict[str, Any]] = {}
    for tier in ("agent", "gateway"):
        for doc in k8s_documents(f"{tier}.yaml"):
            if doc["kind"] in ("DaemonSet", "Deployment"):
                (container,) = doc["spec"]["template"]["spec"]["containers"]
                containers[tier] = container
    return containers


def dotenv() -> dict[str, str]:
    values: dict[str, str] = {}
    for raw_line in (REPO / ".env").read_text(encoding="utf-8").splitlines():
        line = raw_line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


@pytest.fixture(scope="module", params=sorted(STACKS))
def stack(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# --- the configurations as shipped ----------------------------------------------


def test_every_collector_file_belongs_to_a_stack() -> None:
    used = {name for files in STACKS.values() for name in files}
    # builder*.yaml are the distribution's manifests (scripts/collector), not configurations.
    on_disk = {path.name for path in COLLECTOR_DIR.glob("*.yaml") if not path.name.startswith("builder")}
    assert on_disk == used


def test_config_passes_lint(stack: str) -> None:
    config = load_stack(stack, TEST_ENV)
    assert lint(config, options_for(stack)) == []


def test_deep_merge_replaces_lists_and_merges_maps() -> None:
    base = {"a": {"b": 1, "c": [1, 2]}, "d": [1]}
    overlay = {"a": {"c": [3]}, "e": 2}
    assert deep_merge(base, overlay) == {"a": {"b": 1, "c": [3]}, "d": [1], "e": 2}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": [1]}


def test_expand_env_defaults_and_missing() -> None:
    assert expand_env("${env:X:-tempo:4317}", {}) == "tempo:4317"
    assert expand_env("${env:X:-tempo:4317}", {"X": "h:1"}) == "h:1"
    with pytest.raises(KeyError, match="DD_API_KEY"):
        expand_env({"k": "${env:DD_API_KEY}"}, {})


def test_overlays_keep_base_exporters_unless_they_switch_vendor() -> None:
    # Lists are replaced on merge: an overlay that adds `debug` must restate
    # the base exporters, or the backend silently stops receiving data.
    base = _pipelines(load_stack("staging", TEST_ENV))
    for stack_name in ("dev", "prod", "gateway"):
        pipelines = _pipelines(load_stack(stack_name, TEST_ENV))
        for name, parts in base.items():
            assert set(parts["exporters"]) <= set(pipelines[name]["exporters"]), (stack_name, name)


def test_redaction_patterns_match_the_package_table() -> None:
    patterns = [pattern for _, pattern in package_value_patterns()]
    blocked = load_stack("prod", TEST_ENV)["processors"]["redaction"]["blocked_values"]
    assert set(patterns) <= set(blocked)
    for pattern in blocked:
        # `$` would be taken for a variable by the collector's resolver.
        assert "$" not in pattern
        re.compile(pattern)


@pytest.mark.parametrize(
    ("secret", "benign"),
    [
        ("0123ABCD-0123-0123-0123-0123456789ABCDEF0123-0123-0123-0123-0123456789AB", "0123abcd-0123-0123-0123-0123"),
        ("eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.c2lnbmF0dXJlLXZhbHVl", "eyJ is a prefix"),
        ("sk-proj-abcdefghijklmnopqrstuv", "sk-short"),
        ("Authorization: Bearer abc.def-123456", "bearer of news"),
    ],
)
def test_blocked_values_catch_secrets_not_prose(secret: str, benign: str) -> None:
    blocked = load_stack("prod", TEST_ENV)["processors"]["redaction"]["blocked_values"]
    assert any(re.search(pattern, f"error: {secret} rejected") for pattern in blocked)
    assert not any(re.search(pattern, benign) for pattern in blocked)


def test_datadog_connector_sees_traces_before_any_sampling() -> None:
    config = load_stack("datadog", TEST_ENV)
    pipelines = _pipelines(config)
    assert "datadog/connector" in config["connectors"]
    # The OTLP traces pipeline feeds the connector, and nothing in it samples.
    otlp_traces = [n for n, p in pipelines.items() if n.split("/")[0] == "traces" and "otlp" in p["receivers"]]
    assert otlp_traces
    for name in otlp_traces:
        assert "datadog/connector" in pipelines[name]["exporters"]
        assert not {component_type(p) for p in pipelines[name]["processors"]} & SAMPLING_PROCESSORS
    # The connector's metrics (APM stats) reach Datadog.
    metrics_from_connector = [
        p for n, p in pipelines.items() if n.startswith("metrics") and "datadog/connector" in p["receivers"]
    ]
    assert metrics_from_connector and all("datadog" in p["exporters"] for p in metrics_from_connector)


# Matched against the setting's dotted path: ``api.key`` is a credential, an attribute's ``key`` is not.
_CREDENTIAL_PATH = re.compile(
    r"(?i)(^|\.)(api\.key|api_?key|password|passwd|secret|token|[a-z_]*_token|authorization|bearer|hmac_key)$"
)


def literal_secrets(data: Any, path: str = "") -> list[str]:
    """Settings named like credentials whose value is written in the file, not ``${env:...}``.

    A binary cannot tell a pasted API key from a variable reference once resolved; this can.
    """
    found: list[str] = []
    if isinstance(data, Mapping):
        for key, value in data.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(value, str) and _CREDENTIAL_PATH.search(where) and not _ENV_REF.fullmatch(value):
                found.append(where)
            found += literal_secrets(value, where)
    elif isinstance(data, list):
        for index, item in enumerate(data):
            found += literal_secrets(item, f"{path}[{index}]")
    return found


def test_no_credential_is_written_in_a_config_file() -> None:
    for path in sorted(COLLECTOR_DIR.glob("*.yaml")):
        if path.name.startswith("builder"):
            continue
        text = path.read_text(encoding="utf-8")
        assert literal_secrets(yaml.safe_load(text)) == [], path.name
        blocked = load_stack("prod", TEST_ENV)["processors"]["redaction"]["blocked_values"]
        values = [line.split(":", 1)[-1] for line in text.splitlines() if not line.lstrip().startswith(("#", "-"))]
        assert not [v for v in values if any(re.search(p, v) for p in blocked)], path.name


def test_literal_secrets_catches_a_pasted_key() -> None:
    raw = load_raw(STACKS["datadog"])
    assert literal_secrets(raw) == []
    raw["exporters"]["datadog"]["api"]["key"] = "0123456789abcdef0123456789abcdef"
    raw["exporters"]["otlp_http/loki"]["headers"] = {"authorization": "Bearer abc.def-123456"}
    assert sorted(literal_secrets(raw)) == [
        "exporters.datadog.api.key",
        "exporters.otlp_http/loki.headers.authorization",
    ]


def test_datadog_credentials_come_from_the_environment() -> None:
    raw = load_raw(STACKS["datadog"])
    api = raw["exporters"]["datadog"]["api"]
    assert api == {"key": "${env:DD_API_KEY}", "site": "${env:DD_SITE}"}
    assert load_stack("datadog", TEST_ENV)["exporters"]["datadog"]["api"]["key"] == TEST_ENV["DD_API_KEY"]


def test_resource_stamps_deployment_environment(stack: str) -> None:
    attributes = load_stack(stack, TEST_ENV)["processors"]["resource"]["attributes"]
    assert {"key": "deployment.environment.name", "value": "test", "action": "upsert"} in attributes


def test_every_env_variable_is_documented() -> None:
    documented = DOCS.read_text(encoding="utf-8")
    for path in COLLECTOR_DIR.glob("*.yaml"):
        if path.name.startswith("builder"):
            continue
        for name in env_references(path.read_text(encoding="utf-8")):
            assert f"`{name}`" in documented, f"{name} (used in {path.name}) is not in docs/collector.md"


def test_required_env_variables_are_only_the_known_ones() -> None:
    # Variables without a default must be provided by every deployment.
    required = {
        match.group(1)
        for path in COLLECTOR_DIR.glob("*.yaml")
        if not path.name.startswith("builder")
        for match in _ENV_REF.finditer(path.read_text(encoding="utf-8"))
        if match.group(2) is None
    }
    assert required == {"DEPLOYMENT_ENVIRONMENT", "DD_API_KEY", "DD_SITE"}


# --- how the configurations are started ------------------------------------------


def test_compose_starts_base_plus_one_overlay() -> None:
    compose = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    command = compose["services"]["collector"]["command"]
    assert command == ["--config=/etc/otelcol/base.yaml", "--config=/etc/otelcol/${COLLECTOR_ENV}.yaml"]
    assert dotenv()["COLLECTOR_ENV"] in STACKS


def test_k8s_tiers_start_the_linted_stacks() -> None:
    for tier, container in k8s_collector_containers().items():
        files = tuple(arg.removeprefix("--config=/etc/otelcol/") for arg in container["args"])
        assert files == STACKS[tier]


def test_collector_version_is_pinned_once() -> None:
    version = dotenv()["OTELCOL_VERSION"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    assert tuple(int(part) for part in version.split(".")) >= (0, 144, 0), "configs use post-v0.144 names"
    compose = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    collector = compose["services"]["collector"]
    # Built from collector/Dockerfile at that release (tests/assets/test_compose.py holds the stages).
    assert collector["image"] == "otel-setup-collector:${OTELCOL_VERSION}-${COLLECTOR_ENV}"
    assert collector["build"]["args"] == {"OTELCOL_VERSION": "${OTELCOL_VERSION}"}
    for container in k8s_collector_containers().values():
        assert container["image"] == f"otel/opentelemetry-collector-contrib:{version}"


def _mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "KiB": 1 / 1024, "MiB": 1, "GiB": 1024, "m": 1, "g": 1024}
    match = re.fullmatch(r"(\d+)([A-Za-z]+)", quantity)
    assert match, quantity
    return int(match.group(1)) * units[match.group(2)]


def test_gomemlimit_sits_below_the_memory_limiter() -> None:
    # memory_limiter's hard limit is limit_percentage of the container limit;
    # GOMEMLIMIT must be set and stay under it so the GC acts first.
    limit_percentage = load_stack("prod", TEST_ENV)["processors"]["memory_limiter"]["limit_percentage"]
    deployments: list[tuple[str, str]] = []
    for container in k8s_collector_containers().values():
        env = {item["name"]: item["value"] for item in container["env"]}
        deployments.append((env["GOMEMLIMIT"], container["resources"]["limits"]["memory"]))
        assert container["resources"]["limits"].get("cpu")
    compose = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["services"]["collector"]
    deployments.append((compose["environment"]["GOMEMLIMIT"], compose["mem_limit"]))
    for gomemlimit, memory_limit in deployments:
        assert _mebibytes(gomemlimit) <= _mebibytes(memory_limit) * limit_percentage / 100


def test_agents_route_traces_to_the_headless_gateway_service() -> None:
    services = [doc for doc in k8s_documents("gateway.yaml") if doc["kind"] == "Service"]
    (headless,) = [s for s in services if s["spec"].get("clusterIP") == "None"]
    fqdn = f"{headless['metadata']['name']}.{headless['metadata']['namespace']}.svc.cluster.local"
    agent_env = {item["name"]: item["value"] for item in k8s_collector_containers()["agent"]["env"]}
    config = load_stack("agent", agent_env)
    exporter = config["exporters"]["load_balancing"]
    assert exporter["routing_key"] == "traceID"
    assert exporter["resolver"]["dns"]["hostname"] == fqdn
    assert load_raw(STACKS["agent"])["exporters"]["load_balancing"]["resolver"]["dns"]["hostname"].endswith(
        f":-{fqdn}}}"
    )


def test_tail_sampling_is_deployed_only_with_full_head_sampling() -> None:
    # A tail sampler chooses among the traces the SDK kept. Wherever the
    # gateway tail-samples, the instrumented apps must keep every trace.
    gateway = load_stack("gateway", TEST_ENV)
    assert "tail_sampling" in gateway["processors"]
    (instrumentation,) = k8s_documents("instrumentation.yaml")
    assert instrumentation["spec"]["sampler"]["argument"] == "1.0"


# --- switching environments changes no application setting -------------------------


def compose_app_env() -> dict[str, str]:
    compose = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return {key: str(value) for key, value in compose["services"]["app"]["environment"].items()}


def k8s_app_env() -> dict[str, str]:
    """What the operator gives the instrumented container, plus its own env."""
    (instrumentation,) = k8s_documents("instrumentation.yaml")
    spec = instrumentation["spec"]
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": spec["exporter"]["endpoint"],
        "OTEL_TRACES_SAMPLER": spec["sampler"]["type"],
        "OTEL_TRACES_SAMPLER_ARG": spec["sampler"]["argument"],
    }
    env.update({item["name"]: item["value"] for item in spec.get("env", [])})
    env.update({item["name"]: item["value"] for item in spec.get("python", {}).get("env", [])})
    (deployment,) = k8s_documents("app.yaml")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env.update({item["name"]: item["value"] for item in container.get("env", [])})
    return env


def otel_settings(env: Mapping[str, str]) -> dict[str, str]:
    return {key: value for key, value in env.items() if key.startswith("OTEL_") or key.startswith("SENTRY_")}


def test_app_settings_do_not_depend_on_the_collector_environment() -> None:
    # Only the collector reads COLLECTOR_ENV, DD_* and DEPLOYMENT_ENVIRONMENT.
    compose = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    app_text = yaml.safe_dump(compose["services"]["app"])
    for variable in ("COLLECTOR_ENV", "DD_API_KEY", "DD_SITE", "DEPLOYMENT_ENVIRONMENT"):
        assert variable not in app_text


def test_app_settings_match_between_compose_and_kubernetes() -> None:
    compose, k8s = otel_settings(compose_app_env()), otel_settings(k8s_app_env())
    assert compose.keys() == k8s.keys()
    differing = {key for key in compose if compose[key] != k8s[key]}
    # The endpoint, and the documented sampling profile (10% head on one
    # machine, 100% head in front of the tail-sampling gateway).
    assert differing == {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_SAMPLER_ARG"}
    assert (compose["OTEL_TRACES_SAMPLER_ARG"], k8s["OTEL_TRACES_SAMPLER_ARG"]) == ("0.1", "1.0")


# --- the lint catches what it claims to catch --------------------------------------

# Returns whatever its last step returns; only the side effect matters.
Mutation = Callable[[dict[str, Any]], object]


def _traces(config: dict[str, Any]) -> dict[str, Any]:
    pipeline: dict[str, Any] = config["service"]["pipelines"]["traces"]
    return pipeline


def _set_processors(config: dict[str, Any], processors: list[str]) -> dict[str, Any]:
    pipeline = _traces(config)
    pipeline["processors"] = processors
    return pipeline


NEGATIVE_CASES: list[tuple[str, str, Mutation, str]] = [
    (
        "prod",
        "undefined processor",
        lambda c: _traces(c)["processors"].append("filter/ghost"),
        "'filter/ghost' is not defined",
    ),
    (
        "prod",
        "undefined exporter",
        lambda c: _traces(c)["exporters"].append("otlp_grpc/ghost"),
        "'otlp_grpc/ghost' is not defined",
    ),
    (
        "prod",
        "unused exporter",
        lambda c: c["exporters"].update({"otlp_http/spare": {}}),
        "'otlp_http/spare' is defined but not used",
    ),
    (
        "prod",
        "unused extension",
        lambda c: c["extensions"].update({"zpages": {"endpoint": "127.0.0.1:55679"}}),
        "'zpages' is defined but not used",
    ),
    (
        "prod",
        "memory_limiter not first",
        lambda c: _set_processors(c, ["resource", "memory_limiter", "redaction"]),
        "memory_limiter must be the first",
    ),
    (
        "prod",
        "batch not last",
        lambda c: (
            c["processors"].update({"batch": {}}),
            _set_processors(c, ["memory_limiter", "batch", "resource", "redaction"]),
        ),
        "batch must be the last",
    ),
    (
        "prod",
        "memory_limiter in MiB",
        lambda c: c["processors"].update({"memory_limiter": {"check_interval": "1s", "limit_mib": 400}}),
        "limit_percentage",
    ),
    (
        "prod",
        "receiver on default host",
        lambda c: c["receivers"]["otlp"]["protocols"]["grpc"].pop("endpoint"),
        "otlp/grpc: endpoint must be explicit",
    ),
    (
        "prod",
        "receiver on localhost",
        lambda c: c["receivers"]["otlp"]["protocols"]["http"].update({"endpoint": "localhost:4318"}),
        "otlp/http: endpoint must be explicit",
    ),
    (
        "prod",
        "health_check default endpoint",
        lambda c: c["extensions"]["health_check"].pop("endpoint"),
        "extension health_check: endpoint",
    ),
    (
        "prod",
        "prometheus exporter default endpoint",
        lambda c: c["exporters"]["prometheus"].pop("endpoint"),
        "exporter prometheus: endpoint",
    ),
    (
        "prod",
        "no exemplars",
        lambda c: c["exporters"]["prometheus"].update({"enable_open_metrics": False}),
        "enable_open_metrics",
    ),
    (
        "prod",
        "self-metrics exposed",
        lambda c: c["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]["prometheus"].update(
            {"host": "0.0.0.0"}
        ),
        "loopback",
    ),
    (
        "prod",
        "no health_check",
        lambda c: c["service"].update({"extensions": ["file_storage"]}),
        "health_check must be in service.extensions",
    ),
    (
        "prod",
        "check_collector_pipeline",
        lambda c: c["extensions"]["health_check"].update({"check_collector_pipeline": {"enabled": True}}),
        "check_collector_pipeline",
    ),
    (
        "prod",
        "queue disabled",
        lambda c: c["exporters"]["otlp_grpc/tempo"]["sending_queue"].update({"enabled": False}),
        "otlp_grpc/tempo: sending_queue.enabled",
    ),
    (
        "dev",
        "queue implicit",
        lambda c: c["exporters"]["otlp_http/loki"]["sending_queue"].pop("enabled"),
        "otlp_http/loki: sending_queue.enabled",
    ),
    (
        "prod",
        "retry disabled",
        lambda c: c["exporters"]["otlp_http/loki"].pop("retry_on_failure"),
        "otlp_http/loki: retry_on_failure.enabled",
    ),
    (
        "prod",
        "no persistent queue",
        lambda c: c["exporters"]["otlp_grpc/tempo"]["sending_queue"].pop("storage"),
        "production needs sending_queue.storage",
    ),
    (
        "prod",
        "storage not declared",
        lambda c: c["exporters"]["otlp_grpc/tempo"]["sending_queue"].update({"storage": "file_storage/ghost"}),
        "not a declared file_storage",
    ),
    (
        "prod",
        "storage not started",
        lambda c: c["service"].update({"extensions": ["health_check"]}),
        "'file_storage' is not in service.extensions",
    ),
    (
        "prod",
        "debug in prod",
        lambda c: (
            c["exporters"].update({"debug": {"verbosity": "detailed"}}),
            _traces(c)["exporters"].append("debug"),
        ),
        "verbosity detailed in production",
    ),
    (
        "prod",
        "zpages in prod",
        lambda c: (
            c["extensions"].update({"zpages": {"endpoint": "127.0.0.1:55679"}}),
            c["service"]["extensions"].append("zpages"),
        ),
        "no zpages/pprof",
    ),
    (
        "prod",
        "pprof in prod",
        lambda c: (
            c["extensions"].update({"pprof": {"endpoint": "127.0.0.1:1777"}}),
            c["service"]["extensions"].append("pprof"),
        ),
        "no zpages/pprof",
    ),
    (
        "prod",
        "deprecated exporter name",
        lambda c: (
            c["exporters"].update({"otlp/tempo": c["exporters"].pop("otlp_grpc/tempo")}),
            _traces(c).update({"exporters": ["otlp/tempo"]}),
        ),
        "deprecated type",
    ),
    (
        "prod",
        "no redaction",
        lambda c: _set_processors(c, ["memory_limiter", "resource"]),
        "pipeline traces: no redaction",
    ),
    (
        "prod",
        "redaction fail-closed",
        lambda c: c["processors"]["redaction"].update({"allow_all_keys": False}),
        "allow_all_keys must be true",
    ),
    (
        "prod",
        "redaction lacks a pattern",
        lambda c: c["processors"]["redaction"]["blocked_values"].pop(),
        "blocked_values lacks",
    ),
    (
        "prod",
        "tail_sampling outside the gateway",
        lambda c: (
            c["processors"].update({"tail_sampling": {}}),
            _set_processors(c, ["memory_limiter", "tail_sampling", "resource", "redaction"]),
        ),
        "tail_sampling belongs only in the gateway",
    ),
    (
        "agent",
        "load balancing by service",
        lambda c: c["exporters"]["load_balancing"].update({"routing_key": "service"}),
        "routing_key must be traceID",
    ),
    (
        "agent",
        "persistent queue missing on the agent",
        lambda c: c["exporters"]["load_balancing"]["sending_queue"].pop("storage"),
        "load_balancing: production needs sending_queue.storage",
    ),
    (
        "datadog",
        "sampling before the connector",
        lambda c: (
            c["processors"].update({"probabilistic_sampler": {"sampling_percentage": 10}}),
            _set_processors(c, ["memory_limiter", "probabilistic_sampler", "resource", "redaction"]),
        ),
        "runs before datadog/connector",
    ),
    (
        "datadog",
        "connector not fed",
        lambda c: _traces(c).update({"exporters": ["datadog"]}),
        "connector 'datadog/connector' must be",
    ),
]


@pytest.mark.parametrize(
    ("stack_name", "mutation", "expected"),
    [pytest.param(s, m, e, id=i) for s, i, m, e in NEGATIVE_CASES],
)
def test_lint_catches(stack_name: str, mutation: Mutation, expected: str) -> None:
    config = load_stack(stack_name, TEST_ENV)
    assert lint(config, options_for(stack_name)) == []
    mutated = copy.deepcopy(config)
    mutation(mutated)
    problems = lint(mutated, options_for(stack_name))
    assert any(expected in problem for problem in problems), problems
