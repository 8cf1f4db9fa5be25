"""The real OpenTelemetry Collector for tests: the binary scripts/collector builds, run on loopback.

The binary comes from ``collector/builder.yaml`` (official builder, one release). Tests start it
with the shipped stack files exactly as deployments do (``--config base.yaml --config <env>.yaml``)
plus one last layer written by the test, :func:`loopback_overlay`, which moves every listening
socket to a free port on 127.0.0.1. That layer goes through the collector's own merge, so what
runs is the shipped configuration with only its addresses changed.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
COLLECTOR_DIR = ROOT / "collector"
MANIFEST = COLLECTOR_DIR / "builder.yaml"

# How each stack is started: compose passes base + <env>; the Kubernetes tiers pass
# base + prod + <tier> (tests/assets/test_collector_configs.py checks the manifests).
STACKS: dict[str, tuple[str, ...]] = {
    "dev": ("base.yaml", "dev.yaml"),
    "staging": ("base.yaml", "staging.yaml"),
    "prod": ("base.yaml", "prod.yaml"),
    "datadog": ("base.yaml", "datadog.yaml"),
    "agent": ("base.yaml", "prod.yaml", "agent.yaml"),
    "gateway": ("base.yaml", "prod.yaml", "gateway.yaml"),
}

# Every ${env:...} the stack files read, given explicitly (defaults included), so validation
# never depends on the environment of the machine running it.
FULL_ENV: dict[str, str] = {
    "DEPLOYMENT_ENVIRONMENT": "test",
    "TEMPO_OTLP_GRPC_ENDPOINT": "tempo.example.internal:4317",
    "LOKI_OTLP_HTTP_ENDPOINT": "http://loki.example.internal:3100/otlp",
    "OTELCOL_STORAGE_DIR": "/var/lib/otelcol/file_storage",
    "GATEWAY_HEADLESS_SERVICE": "otel-gateway-headless.observability.svc.cluster.local",
    "DD_API_KEY": "0123456789abcdef0123456789abcdef",
    "DD_SITE": "datadoghq.eu",
}


@functools.cache
def _built_binary() -> Path:
    completed = subprocess.run(
        [str(ROOT / "scripts" / "collector"), str(MANIFEST)],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"scripts/collector failed ({completed.returncode}):\n{completed.stderr[-4000:]}")
    return Path(completed.stdout.strip().splitlines()[-1])


def collector_binary() -> Path:
    """The collector built from collector/builder.yaml; skips only where Go is missing.

    ``OTEL_SETUP_COLLECTOR`` (set by scripts/test after it built the binary) saves the
    subprocess; otherwise scripts/collector is run, which returns the cached binary at once.
    """
    given = os.environ.get("OTEL_SETUP_COLLECTOR")
    if given and Path(given).is_file():
        return Path(given)
    if shutil.which("go") is None:
        pytest.skip("go is not installed: scripts/collector builds the collector from collector/builder.yaml with Go")
    try:
        return _built_binary()
    except RuntimeError as error:
        pytest.fail(str(error))


def components(binary: Path) -> dict[str, set[str]]:
    """Component types compiled into ``binary``, per kind, from ``otelcol components``."""
    completed = subprocess.run([str(binary), "components"], capture_output=True, text=True, timeout=60, check=True)
    listing = yaml.safe_load(completed.stdout)
    found: dict[str, set[str]] = {}
    for kind in ("receivers", "processors", "exporters", "connectors", "extensions"):
        found[kind] = {str(item["name"]) for item in listing.get(kind) or []}
    return found


def validate(binary: Path, files: Sequence[Path], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """``otelcol validate --config a --config b ...`` with exactly ``env`` (plus PATH/HOME)."""
    argv = [str(binary), "validate"]
    for path in files:
        argv += ["--config", str(path)]
    base = {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, env={**base, **env}, check=False)


@dataclass
class Ports:
    """Free loopback ports for one collector's listeners."""

    grpc: int = field(default_factory=free_port)
    http: int = field(default_factory=free_port)
    prometheus: int = field(default_factory=free_port)
    health: int = field(default_factory=free_port)
    telemetry: int = field(default_factory=free_port)

    @property
    def grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http}"


def loopback_overlay(ports: Ports, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The last ``--config`` layer: every listener of base.yaml on a free 127.0.0.1 port.

    Lists are replaced by the merge, so the two lists holding addresses (the self-scrape's
    targets and the telemetry readers) are restated whole, as an overlay in production would.
    """
    overlay: dict[str, Any] = {
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": f"127.0.0.1:{ports.grpc}"},
                    "http": {"endpoint": f"127.0.0.1:{ports.http}"},
                }
            },
            "prometheus/self": {
                "config": {
                    "scrape_configs": [
                        {
                            "job_name": "otel-collector",
                            "scrape_interval": "1s",
                            "static_configs": [{"targets": [f"127.0.0.1:{ports.telemetry}"]}],
                        }
                    ]
                }
            },
        },
        "exporters": {"prometheus": {"endpoint": f"127.0.0.1:{ports.prometheus}"}},
        "extensions": {"health_check": {"endpoint": f"127.0.0.1:{ports.health}"}},
        "service": {
            "telemetry": {
                "metrics": {
                    "readers": [{"pull": {"exporter": {"prometheus": {"host": "127.0.0.1", "port": ports.telemetry}}}}]
                }
            }
        },
    }
    if extra:
        overlay = _merge(overlay, extra)
    return overlay


def _merge(base: Any, overlay: Any) -> Any:
    if isinstance(base, dict) and isinstance(overlay, Mapping):
        merged = dict(base)
        for key, value in overlay.items():
            merged[key] = _merge(merged[key], value) if key in merged else value
        return merged
    return overlay


@dataclass
class Collector:
    """A running collector process: its ports, log file and process handle."""

    name: str
    ports: Ports
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self, tail: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]

    def metrics(self) -> str:
        """The collector's own metrics from its loopback telemetry reader.

        Names as the reader serves them: no ``_total`` suffix (``otelcol_receiver_accepted_spans``);
        the prometheus exporter adds it when they are republished through ``prometheus/self``.
        """
        return httpx.get(f"http://127.0.0.1:{self.ports.telemetry}/metrics", timeout=5.0).text

    def stop(self, timeout: float = 20.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def metric_value(exposition: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` in a Prometheus text exposition whose labels include ``labels``."""
    total = 0.0
    for line in exposition.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        series, _, label_text = head.partition("{")
        if series != name:
            continue
        if all(f'{key}="{wanted}"' in label_text for key, wanted in labels.items()):
            total += float(value)
    return total


@contextmanager
def running(
    binary: Path,
    stack: Sequence[str],
    *,
    directory: Path,
    env: Mapping[str, str],
    ports: Ports | None = None,
    extra: Mapping[str, Any] | None = None,
    name: str = "collector",
    timeout: float = 30.0,
) -> Iterator[Collector]:
    """Run ``binary`` on the shipped ``stack`` files plus the loopback overlay until the block ends."""
    ports = ports or Ports()
    directory.mkdir(parents=True, exist_ok=True)
    overlay = directory / f"{name}-loopback.yaml"
    overlay.write_text(yaml.safe_dump(loopback_overlay(ports, extra), sort_keys=False), encoding="utf-8")
    argv = [str(binary)]
    for file_name in stack:
        argv += ["--config", str(COLLECTOR_DIR / file_name)]
    argv += ["--config", str(overlay)]
    base = {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}
    log_path = directory / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, env={**base, **env}, stdout=log, stderr=subprocess.STDOUT)
    collector = Collector(name, ports, process, log_path)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise AssertionError(f"{name} exited with {process.returncode}:\n{collector.log()}")
            try:
                if httpx.get(f"http://127.0.0.1:{ports.health}/", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} not healthy after {timeout} s:\n{collector.log()}")
            time.sleep(0.1)
        yield collector
    finally:
        collector.stop()
