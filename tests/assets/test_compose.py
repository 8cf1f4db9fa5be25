"""docker-compose.yml: schema, compose's own validation, and the stack's house rules.

The compose-spec JSON schema is vendored (tests/assets/schemas) so this runs
without npm or network. ``docker-compose config -q`` (Debian's 1.29.2) runs
when the binary exists; it rejects newer spec fields, which keeps the file
usable with both compose generations.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
SCHEMA = Path(__file__).parent / "schemas" / "compose.schema.json"

# Secrets the file requires from the shell (never stored in .env).
TEST_SECRETS = {"GRAFANA_ADMIN_PASSWORD": "not-admin-test", "POSTGRES_PASSWORD": "test-password"}
# Paths other parts of the project provide; the stack mounts them.
OWNED_ELSEWHERE = (
    "deploy/prometheus/rules",
    "deploy/alertmanager/alertmanager.yml",
    "deploy/grafana/provisioning",
    "deploy/grafana/dashboards",
    "deploy/tempo/tempo.yaml",
)
# Images that ship one static binary and no shell or HTTP client, so compose
# cannot probe them; Prometheus watches them instead.
NO_HEALTHCHECK_POSSIBLE = frozenset({"collector", "tempo", "loki"})
COLLECTOR_ENVS = ("dev", "staging", "prod", "datadog")

_VARIABLE = re.compile(r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})")


def dotenv() -> dict[str, str]:
    values: dict[str, str] = {}
    for raw_line in (REPO / ".env").read_text(encoding="utf-8").splitlines():
        line = raw_line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose-style ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` and ``$$``."""
    if isinstance(value, Mapping):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        current = env.get(name)
        if op in (":-", "-"):
            return current if current or (op == "-" and current is not None) else arg
        if op in (":?", "?"):
            if not current:
                raise KeyError(f"{name}: {arg}")
            return current
        return current or ""

    return _VARIABLE.sub(replace, value)


def load_compose(extra: Mapping[str, str] | None = None) -> dict[str, Any]:
    env = {**dotenv(), **TEST_SECRETS, **(extra or {})}
    compose: dict[str, Any] = interpolate(yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8")), env)
    return compose


def services() -> dict[str, dict[str, Any]]:
    all_services: dict[str, dict[str, Any]] = load_compose()["services"]
    return all_services


def test_matches_the_compose_spec_schema() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(load_compose())]
    assert errors == []


def test_schema_check_catches_mistakes() -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    broken = load_compose()
    broken["services"]["app"]["depnds_on"] = broken["services"]["app"].pop("depends_on")
    broken["services"]["redis"]["ports"] = 6379
    assert len(list(jsonschema.Draft7Validator(schema).iter_errors(broken))) >= 2


def _docker_compose(*args: str, extra: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose (Debian package docker-compose) is not installed")
    env = {key: value for key, value in os.environ.items() if key not in dotenv()}
    env.update(TEST_SECRETS)
    env.update(extra or {})
    return subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("collector_env", COLLECTOR_ENVS)
def test_docker_compose_accepts_the_file(collector_env: str) -> None:
    result = _docker_compose("config", "-q", extra={"COLLECTOR_ENV": collector_env})
    assert result.returncode == 0, result.stderr


def test_docker_compose_requires_the_secrets() -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose (Debian package docker-compose) is not installed")
    env = {key: value for key, value in os.environ.items() if key not in TEST_SECRETS}
    result = subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "PASSWORD" in result.stderr


def test_only_the_collector_changes_with_collector_env() -> None:
    # Switching to Datadog (or any environment) is a collector change only.
    rendered: dict[str, dict[str, Any]] = {}
    for collector_env in COLLECTOR_ENVS:
        result = _docker_compose("config", extra={"COLLECTOR_ENV": collector_env})
        assert result.returncode == 0, result.stderr
        rendered[collector_env] = yaml.safe_load(result.stdout)["services"]
    baseline = rendered["dev"]
    for collector_env, current in rendered.items():
        changed = {name for name in baseline if baseline[name] != current[name]}
        assert changed <= {"collector"}, collector_env
        overlay = f"--config=/etc/otelcol/{collector_env}.yaml"
        assert overlay in current["collector"]["command"]


def test_ports_are_bound_to_loopback() -> None:
    for name, service in services().items():
        for port in service.get("ports", []):
            if isinstance(port, Mapping):
                assert port.get("host_ip") == "127.0.0.1", (name, port)
            else:
                assert str(port).startswith("127.0.0.1:"), (name, port)


def test_images_are_pinned() -> None:
    for name, service in services().items():
        if "build" in service:
            continue
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, (name, image)
        assert tag and tag != "latest" and re.search(r"\d", tag), (name, image)


def test_image_versions_live_in_dotenv() -> None:
    raw = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["services"]
    defined = dotenv()
    for name, service in raw.items():
        if "build" in service:
            continue
        match = re.fullmatch(r"[^:]+:\$\{([A-Z_]+)\}", service["image"])
        assert match, f"{name}: pin the tag through a variable in .env"
        assert match.group(1) in defined, (name, match.group(1))


def test_every_variable_has_a_value_default_or_error() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    defined = dotenv()
    for match in _VARIABLE.finditer(text):
        name = match.group("name")
        if name is None:
            continue
        assert name in defined or match.group("op"), f"${{{name}}} needs a value in .env, a default or an error"
    for secret in TEST_SECRETS:
        assert secret not in defined, f"{secret} must come from the environment, not .env"


def _bind_sources(service: Mapping[str, Any]) -> list[str]:
    sources: list[str] = []
    for volume in service.get("volumes", []):
        source = volume.get("source", "") if isinstance(volume, Mapping) else str(volume).split(":", 1)[0]
        if source.startswith((".", "/")):
            sources.append(source)
    return sources


def test_bind_mounts_exist_or_are_provided_elsewhere() -> None:
    for name, service in services().items():
        for source in _bind_sources(service):
            relative = os.path.normpath(source).removeprefix("./")
            if relative in OWNED_ELSEWHERE:
                continue
            assert (REPO / relative).exists(), f"{name}: {source} does not exist"


def test_bind_mounts_are_read_only_configs() -> None:
    for name, service in services().items():
        for volume in service.get("volumes", []):
            if isinstance(volume, str) and volume.startswith("./"):
                assert volume.endswith(":ro"), (name, volume)


def test_health_checks_and_startup_order() -> None:
    all_services = services()
    for name, service in all_services.items():
        if name in NO_HEALTHCHECK_POSSIBLE:
            assert "healthcheck" not in service, f"{name}: its image cannot run a health check command"
            continue
        check = service.get("healthcheck")
        assert check and check["test"][0] == "CMD", name
        depends_on = service.get("depends_on") or {}
        if isinstance(depends_on, Mapping):
            for dependency, condition in depends_on.items():
                if condition.get("condition") == "service_healthy":
                    assert "healthcheck" in all_services[dependency], (name, dependency)


def test_grafana_password_is_not_the_default() -> None:
    grafana = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["services"]["grafana"]
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"].startswith("${GRAFANA_ADMIN_PASSWORD:?")


def test_collector_mounts_all_configs() -> None:
    collector = services()["collector"]
    assert "./collector:/etc/otelcol:ro" in collector["volumes"]


def test_prometheus_scrapes_the_collector_exporter() -> None:
    config = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    collector = jobs["otel-collector"]
    assert collector["honor_labels"] is True
    assert collector["static_configs"][0]["targets"] == ["collector:8889"]
    assert config["rule_files"] == ["rules/*.yml"]
    exporter = yaml.safe_load((REPO / "collector" / "base.yaml").read_text(encoding="utf-8"))["exporters"]["prometheus"]
    assert exporter["endpoint"].endswith(":8889")


def test_promtool_accepts_the_prometheus_config(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool (Debian package prometheus) is not installed")
    # Check a copy: the rules directory is filled by another part of the project.
    source = REPO / "deploy" / "prometheus"
    shutil.copy(source / "prometheus.yml", tmp_path / "prometheus.yml")
    if (source / "rules").is_dir():
        shutil.copytree(source / "rules", tmp_path / "rules")
    result = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _dockerfile_stages(path: Path) -> dict[str, tuple[str, list[str]]]:
    """Stage name -> (its FROM image or stage, its instructions)."""
    stages: dict[str, tuple[str, list[str]]] = {}
    current: list[str] = []
    for raw_line in path.read_text(encoding="utf-8").replace("\\\n", " ").splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if match:
            current = []
            stages[match.group(2) or match.group(1)] = (match.group(1), current)
        else:
            current.append(line)
    return stages


def test_the_collector_image_is_built_per_environment_from_the_tested_manifest() -> None:
    """dev/staging/prod run collector/builder.yaml's distribution; datadog the upstream image of that release."""
    manifest = yaml.safe_load((REPO / "collector" / "builder.yaml").read_text(encoding="utf-8"))
    release = manifest["dist"]["version"]
    assert dotenv()["OTELCOL_VERSION"] == release
    dockerfile = REPO / "collector" / "Dockerfile"
    text = dockerfile.read_text(encoding="utf-8")
    assert f"ARG OTELCOL_VERSION={release}\n" in text
    stages = _dockerfile_stages(dockerfile)
    build_steps = " ".join(stages["build"][1])
    assert "COPY collector/builder.yaml builder.yaml" in build_steps
    assert 'go install "go.opentelemetry.io/collector/cmd/builder@v${OTELCOL_VERSION}"' in build_steps
    assert "builder --config builder.yaml --skip-strict-versioning=false" in build_steps
    assert f"{manifest['dist']['output_path'].lstrip('./')}/{manifest['dist']['name']}" in build_steps
    assert "COPY --from=build /otelcol /otelcol" in stages["otel-setup"][1]
    for collector_env in COLLECTOR_ENVS:
        base, _ = stages[collector_env]
        if collector_env == "datadog":
            assert base == "otel/opentelemetry-collector-contrib:${OTELCOL_VERSION}"
        else:
            assert base == "otel-setup", collector_env
        result = _docker_compose("config", extra={"COLLECTOR_ENV": collector_env})
        assert result.returncode == 0, result.stderr
        build = yaml.safe_load(result.stdout)["services"]["collector"]["build"]
        assert build["target"] == collector_env
        assert Path(build["context"]).resolve() == REPO
        assert build["dockerfile"] == "collector/Dockerfile"
        assert build["args"] == {"OTELCOL_VERSION": release}
