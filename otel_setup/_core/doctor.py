"""``otel-setup doctor``: how the package would wire this environment, and what is wrong.

It configures the package the way the service would (or imports the service's
app, which configures it), reads back the settings with their sources and the
state of every instrumentation, checks the installed library versions against
the ranges the package is tested with, and tries the OTLP and Sentry endpoints
with short timeouts. Then it resets the package: nothing keeps running.
"""

from __future__ import annotations

import http.client
import importlib
import importlib.metadata
import io
import json
import socket
import ssl
import sys
import time
from collections.abc import Mapping
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from otel_setup._core.errors import OtelSetupConfigError
from otel_setup._core.integration import IntegrationStatus
from otel_setup._integrations.registry import INTEGRATIONS

__all__ = ["SUPPORTED", "Report", "diagnose", "render_text"]

# Installed-version ranges the package is tested with (tests/test_compat.py and
# scripts/lower-bounds run the oldest ones, scripts/fastapi-matrix every claimed
# FastAPI), as each
# integration of the registry declares it. Outside them an integration may
# record nothing, or record it differently, without failing.
SUPPORTED: dict[str, tuple[str, str]] = {i.name: i.library for i in INTEGRATIONS if i.library is not None}
"""integration -> (distribution, specifier)"""

# integration -> the module it needs, to tell "missing" from "instrumented twice"
_MODULES: dict[str, str] = {i.name: i.module for i in INTEGRATIONS if i.module is not None}


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


@dataclass
class Check:
    """One endpoint probe."""

    name: str
    url: str
    ok: bool
    detail: str


@dataclass
class Report:
    """Everything doctor found; ``problems`` non-empty means a non-zero exit."""

    app: str | None
    version: str
    config_error: str | None = None
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    wiring: dict[str, Any] = field(default_factory=dict)
    """Resolved: what each signal does and where it goes, as the startup line says it."""
    exporters: dict[str, list[str]] = field(default_factory=dict)
    instrumentations: dict[str, dict[str, Any]] = field(default_factory=dict)
    endpoints: list[Check] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.config_error:
            return 2
        return 1 if self.problems else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": not self.problems and not self.config_error,
            "exit_code": self.exit_code,
            "version": self.version,
            "app": self.app,
            "config_error": self.config_error,
            "settings": self.settings,
            "wiring": self.wiring,
            "exporters": self.exporters,
            "instrumentations": self.instrumentations,
            "endpoints": [vars(check) for check in self.endpoints],
            "problems": self.problems,
            "notes": self.notes,
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, (frozenset, set)):
        return sorted(value)
    if isinstance(value, (tuple, list)):
        return [_jsonable(item) for item in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _installed(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _versions(report: Report) -> None:
    """Add each library's installed version and flag those outside the tested range."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    for name, (distribution, specifier) in SUPPORTED.items():
        entry = report.instrumentations.setdefault(name, {"state": "off", "reason": "not configured"})
        installed = _installed(distribution)
        entry.update({"library": distribution, "installed": installed, "supported": specifier})
        if installed is None:
            if entry["state"] != "active":
                entry["reason"] = f"{distribution} not installed (supported {specifier})"
            continue
        try:
            inside = Version(installed) in SpecifierSet(specifier)
        except InvalidVersion:
            inside = False
        if not inside:
            entry["reason"] = f"{distribution} {installed} is outside the supported range {specifier}"
            report.problems.append(f"{name}: {entry['reason']}")


def _instrumentation_states(report: Report, states: Mapping[str, IntegrationStatus]) -> None:
    for name, status in states.items():
        active = status.active
        reason = status.reason or None
        if (
            reason is not None
            and name in _MODULES
            and ("not installed or already instrumented" in reason or reason.startswith("package missing"))
        ):
            reason = (
                "already instrumented (by another instrumentation or distro)"
                if _importable(_MODULES[name])
                else f"package missing: {_MODULES[name]} cannot be imported"
            )
        report.instrumentations[name] = {"state": "active" if active else "off", "reason": reason}
        if reason and ("already instrumented" in reason or "version conflict" in reason):
            report.problems.append(f"{name}: {reason}")


def _distros(report: Report) -> None:
    """Another OpenTelemetry distro makes ``opentelemetry-instrument`` set things up twice."""
    from importlib.metadata import entry_points

    others = sorted({ep.name for ep in entry_points(group="opentelemetry_distro")} - {"otel_setup"})
    if others:
        report.notes.append(
            "other OpenTelemetry distros are installed (" + ", ".join(others) + "); under opentelemetry-instrument "
            "set OTEL_PYTHON_DISTRO=otel_setup OTEL_PYTHON_CONFIGURATOR=otel_setup"
        )


def _post_empty_export(url: str, headers: Mapping[str, str], timeout: float) -> tuple[bool, str]:
    """TCP connect, then POST an empty export request, as an exporter would."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    started = time.monotonic()
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as error:
        return False, f"no TCP connection to {host}:{port} ({error.strerror or error})"
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl.create_default_context())
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("POST", parts.path or "/", b"", {**headers, "Content-Type": "application/x-protobuf"})
        status = connection.getresponse().status
    except (OSError, http.client.HTTPException) as error:
        return False, f"TCP connects, but the OTLP request failed ({error})"
    finally:
        connection.close()
    elapsed = (time.monotonic() - started) * 1000
    if status < 300:
        return True, f"HTTP {status} in {elapsed:.0f} ms"
    if status in (401, 403):
        return False, f"HTTP {status}: the collector rejects the credentials (OTEL_EXPORTER_OTLP_HEADERS)"
    if status == 404:
        return False, f"HTTP 404: nothing serves {parts.path} there (per-signal URLs are used as is)"
    return False, f"HTTP {status}"


def _tcp(host: str, port: int, timeout: float) -> tuple[bool, str]:
    started = time.monotonic()
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as error:
        return False, f"no TCP connection to {host}:{port} ({error.strerror or error})"
    return True, f"TCP connect in {(time.monotonic() - started) * 1000:.0f} ms"


def _endpoints(report: Report, settings: Any, timeout: float) -> None:
    probed: set[str] = set()
    for signal in ("traces", "metrics", "logs"):
        if "otlp" not in report.exporters.get(signal, []):
            continue
        url = settings.signal_endpoint(signal) or (
            "http://localhost:4317"
            if settings.signal_protocol(signal) == "grpc"
            else f"http://localhost:4318/v1/{signal}"
        )
        if url in probed:
            continue
        probed.add(url)
        if settings.signal_protocol(signal) == "grpc":
            parts = urlsplit(url if "://" in url else f"http://{url}")
            ok, detail = _tcp(parts.hostname or "", parts.port or 4317, timeout)
        else:
            ok, detail = _post_empty_export(url, settings.otlp_headers, timeout)
        from otel_setup._core.settings import mask_url

        report.endpoints.append(Check(f"otlp {signal}", mask_url(url), ok, detail))
        if not ok:
            report.problems.append(f"OTLP {signal} endpoint {mask_url(url)}: {detail}")
    if not probed:
        report.notes.append("no OTLP endpoint set: spans are not exported; metrics are served on /metrics only")
    dsn = settings.sentry_dsn
    if dsn:
        parts = urlsplit(dsn)
        host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
        ok, detail = _tcp(host, port, timeout)
        report.endpoints.append(Check("sentry", f"{parts.scheme}://{host}:{port}", ok, detail))
        if not ok:
            report.problems.append(f"Sentry host {host}:{port}: {detail}")


def _load_app(spec: str) -> Any:
    """``module:attr`` with the current directory importable, as uvicorn does."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"expected module:attribute, got {spec!r}")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target


def diagnose(app: str | None = None, *, timeout: float = 1.5) -> Report:
    """Configure (or import ``app``), inspect, probe, reset. Never leaves telemetry running."""
    from otel_setup import configure
    from otel_setup._core.configure import active, reset
    from otel_setup._core.settings import SETTINGS, resolve
    from otel_setup.version import __version__

    report = Report(app=app, version=__version__)
    reset()
    captured = io.StringIO()  # the package's JSON log handler writes to stdout; keep --json clean
    try:
        with redirect_stdout(captured):
            try:
                settings = resolve({})
                telemetry = active()
                if app is not None:
                    target = _load_app(app)
                    telemetry = active()
                    if telemetry is None:
                        telemetry = configure(target if hasattr(target, "router") else None)
                    elif hasattr(target, "router"):
                        telemetry.instrument_app(target)
                else:
                    telemetry = configure()
                settings = telemetry.settings
            except OtelSetupConfigError as error:
                report.config_error = str(error)
                report.problems.append(str(error))
                return report
            except (ImportError, AttributeError, ValueError) as error:
                report.problems.append(f"cannot load {app}: {error}")
                return report
        masked = settings.masked()
        env_names = {setting.name: list(setting.env) for setting in SETTINGS}
        report.settings = {
            name: {
                "value": _jsonable(masked[name]),
                "source": settings.sources.get(name, "default"),
                "env": env_names[name],
            }
            for name in masked
        }
        report.exporters = {signal: list(names) for signal, names in telemetry.exporters.items()}
        _resolved(report, telemetry)
        _instrumentation_states(report, telemetry.instrumentations)
        _versions(report)
        _distros(report)
        _endpoints(report, settings, timeout)
        return report
    finally:
        _quiet_reset()


# setting -> the resource attribute its unset value resolves to
_RESOURCE_BACKED: dict[str, str] = {
    "service_name": "service.name",
    "service_version": "service.version",
    "environment": "deployment.environment.name",
}


def _resolved(report: Report, telemetry: Any) -> None:
    """Fill in what an unset setting became (the app's title, the default exporters)."""
    from otel_setup._core.configure import wiring

    report.wiring = _jsonable(wiring(telemetry))
    attributes = telemetry.resource.attributes
    for name, attribute in _RESOURCE_BACKED.items():
        entry = report.settings.get(name)
        if entry is not None and entry["value"] is None and attributes.get(attribute) is not None:
            entry["resolved"] = attributes[attribute]
    for signal in ("traces", "metrics", "logs"):
        entry = report.settings.get(f"{signal}_exporter")
        if entry is not None and entry["value"] is None:
            entry["resolved"] = "+".join(report.exporters.get(signal, ["none"]))


def _quiet_reset() -> None:
    """Reset without waiting on, or printing, a final export to an endpoint that may be down."""
    import logging

    from otel_setup._core.configure import active, reset

    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)  # the exporters' retry lines and the deadline warning
    try:
        telemetry = active()
        if telemetry is not None:
            telemetry.shutdown(timeout=0.5)
        reset()
    finally:
        logging.disable(previous)


def _wiring_lines(wiring: Mapping[str, Any]) -> list[str]:
    if not wiring:
        return []
    lines = ["", "Wiring:"]
    for key in ("service.name", "traces", "sampler", "metrics", "logs", "sentry"):
        value = wiring.get(key)
        lines.append(f"  {key:<12} {'; '.join(value) if isinstance(value, list) else value}")
    return lines


def render_text(report: Report) -> str:
    lines = [f"otel_setup {report.version}" + (f" — app {report.app}" if report.app else " — current environment")]
    if report.config_error:
        lines += ["", "Configuration error:", f"  {report.config_error}", ""]
        return "\n".join(lines) + "\n"
    if report.settings:
        lines += ["", "Settings (value, source):"]
        width = max(len(name) for name in report.settings)
        for name, entry in report.settings.items():
            value = entry.get("resolved", entry["value"])
            shown = "—" if value in (None, [], {}, "") else json.dumps(value) if not isinstance(value, str) else value
            source = "resolved (unset)" if "resolved" in entry else entry["source"]
            lines.append(f"  {name:<{width}}  {shown:<40}  {source}")
    lines += _wiring_lines(report.wiring)
    if report.exporters:
        lines += ["", "Exporters: " + ", ".join(f"{s}={'+'.join(n)}" for s, n in report.exporters.items())]
    if report.instrumentations:
        lines += ["", "Instrumentations:"]
        for name, entry in report.instrumentations.items():
            # One reason per state: the library's version only beside an active one.
            version = (
                f" ({entry['library']} {entry['installed']}, supported {entry['supported']})"
                if entry.get("library") and entry["state"] == "active"
                else ""
            )
            reason = f": {entry['reason']}" if entry.get("reason") else ""
            lines.append(f"  {name:<11} {entry['state']}{reason}{version}")
    if report.endpoints:
        lines += ["", "Endpoints:"]
        for check in report.endpoints:
            lines.append(f"  {check.name:<13} {'ok ' if check.ok else 'BAD'} {check.url}  {check.detail}")
    for note in report.notes:
        lines.append(f"note: {note}")
    lines.append("")
    if report.problems:
        lines.append(f"{len(report.problems)} problem(s):")
        lines += [f"  - {problem}" for problem in report.problems]
    else:
        lines.append("No problems found.")
    return "\n".join(lines) + "\n"
