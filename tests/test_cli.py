"""The ``otel-setup`` command, run as a subprocess with its real output parsed."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from otel_setup._demo.report import histogram_quantile, parse_prometheus, route_rows
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.processes import ROOT, free_port

SECRET = "s3cret-token-0123456789"


def _run(
    args: list[str], env: dict[str, str] | None = None, timeout: float = 60.0, **extra: str
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SENTRY_"))}
    full_env.update(env or {})
    full_env.update(extra)
    return subprocess.run(
        [sys.executable, "-m", "otel_setup.cli", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _doctor_json(env: dict[str, str]) -> tuple[int, dict[str, object]]:
    result = _run(["doctor", "--json", "--timeout", "1"], env)
    return result.returncode, json.loads(result.stdout)


def test_doctor_json_reports_sources_masks_secrets_and_reaches_the_collector(otlp_receiver: OtlpReceiver) -> None:
    code, report = _doctor_json(
        {
            "OTEL_SERVICE_NAME": "gw2-api",
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint,
            "OTEL_EXPORTER_OTLP_HEADERS": f"authorization=Bearer {SECRET}",
            "OTEL_TRACES_SAMPLER_ARG": "0.25",
        }
    )
    assert code == 0, report["problems"]
    assert set(report) >= {
        "ok",
        "exit_code",
        "version",
        "app",
        "config_error",
        "settings",
        "exporters",
        "instrumentations",
        "endpoints",
        "problems",
        "notes",
    }
    assert report["ok"] is True and report["exit_code"] == 0 and report["problems"] == []
    settings = report["settings"]
    assert isinstance(settings, dict)
    assert settings["service_name"] == {
        "value": "gw2-api",
        "source": "env:OTEL_SERVICE_NAME",
        "env": ["OTEL_SERVICE_NAME"],
    }
    assert settings["sampling_ratio"]["source"] == "env:OTEL_TRACES_SAMPLER_ARG"
    assert settings["sampler"]["source"] == "default"
    assert settings["otlp_headers"]["value"] == {"authorization": "<hidden>"}
    assert SECRET not in json.dumps(report)
    assert report["exporters"] == {"traces": ["otlp"], "metrics": ["prometheus", "otlp"], "logs": ["none"]}
    instrumentations = report["instrumentations"]
    assert isinstance(instrumentations, dict)
    for name in ("fastapi", "sqlalchemy", "redis", "httpx"):
        assert instrumentations[name]["state"] == "active", instrumentations[name]
        assert instrumentations[name]["installed"]
    assert instrumentations["sentry"] == {
        "state": "off",
        "reason": "SENTRY_DSN not set",
        "library": "sentry-sdk",
        "installed": instrumentations["sentry"]["installed"],
        "supported": ">=2.47,<2.77",
    }
    endpoints = report["endpoints"]
    assert isinstance(endpoints, list)
    assert {e["name"] for e in endpoints} == {"otlp traces", "otlp metrics"}
    assert all(e["ok"] for e in endpoints), endpoints
    # The probe is a real (empty) OTLP export that the collector accepted.
    assert otlp_receiver.request_count("traces") >= 1


def test_doctor_bad_config_exits_2_with_the_config_error_text() -> None:
    result = _run(["doctor"], {"OTEL_TRACES_SAMPLER_ARG": "2"})
    expected = "OTEL_TRACES_SAMPLER_ARG='2' is not valid: expected a number between 0 and 1"
    assert result.returncode == 2
    assert expected in result.stdout and expected in result.stderr
    code, report = _doctor_json({"OTEL_TRACES_SAMPLER_ARG": "2"})
    assert code == 2 and report["config_error"] == expected and report["ok"] is False


def test_doctor_unreachable_endpoint_exits_non_zero() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    code, report = _doctor_json({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint + "/v1/traces"})
    assert code == 1
    endpoints = report["endpoints"]
    assert isinstance(endpoints, list)
    assert endpoints[0]["ok"] is False and "no TCP connection" in endpoints[0]["detail"]
    assert any(endpoint in problem for problem in report["problems"])  # type: ignore[union-attr]


def test_doctor_unreachable_sentry_host_exits_non_zero() -> None:
    code, report = _doctor_json({"SENTRY_DSN": f"http://public@127.0.0.1:{free_port()}/1"})
    assert code == 1
    assert report["instrumentations"]["sentry"]["state"] == "active"  # type: ignore[index]
    assert any("Sentry host" in problem for problem in report["problems"])  # type: ignore[union-attr]


def test_doctor_reports_a_missing_library_and_an_unsupported_version(tmp_path: Path) -> None:
    """A shadowing ``redis`` that cannot be imported; a structlog release older than supported."""
    (tmp_path / "redis").mkdir()
    (tmp_path / "redis" / "__init__.py").write_text("raise ImportError(\"No module named 'redis'\", name='redis')\n")
    (tmp_path / "structlog-20.1.0.dist-info").mkdir()
    (tmp_path / "structlog-20.1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: structlog\nVersion: 20.1.0\n"
    )
    code, report = _doctor_json({"PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])})
    assert code == 1
    instrumentations = report["instrumentations"]
    assert isinstance(instrumentations, dict)
    assert instrumentations["redis"]["state"] == "off"
    assert "missing" in instrumentations["redis"]["reason"]
    assert instrumentations["logging"]["installed"] == "20.1.0"
    assert "outside the supported range" in instrumentations["logging"]["reason"]


def test_doctor_with_an_app_reads_its_configure_arguments() -> None:
    result = _run(["doctor", "examples.gw2_app.main:app", "--json", "--timeout", "1"])
    report = json.loads(result.stdout)
    assert result.returncode == 0, report["problems"]
    assert report["settings"]["cache_key_prefixes"]["source"] == "argument"


def test_doctor_text_shows_resolved_values_and_one_reason_per_state() -> None:
    result = _run(["doctor", "examples.gw2_app.main:app", "--timeout", "1"])
    assert result.returncode == 0, result.stdout[-3000:]
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith("  ")}
    assert "GW2 companion (example)" in rows["service_name"] and "resolved (unset)" in rows["service_name"]
    assert "prometheus" in rows["metrics_exporter"]
    assert "service.name GW2 companion (example)" in result.stdout.replace("  ", " ")
    assert "none (no OTLP endpoint set: spans are not exported)" in result.stdout
    for line in result.stdout.splitlines():
        assert line.count("(") <= 2, f"one reason per state: {line}"
    _, report = _doctor_json({"OTEL_SERVICE_NAME": ""})
    assert report["wiring"]["traces"] == ["none (no OTLP endpoint set: spans are not exported)"]  # type: ignore[index]


def test_demo_report_separates_cache_from_database_and_marks_thin_percentiles() -> None:
    from otel_setup._demo.report import Findings, RouteRow, render_report

    result = Findings(
        window_seconds=4.0,
        routes=[RouteRow("GET", "/a", 100, 0, 0.01, 0.02, 0.03), RouteRow("GET", "/b", 3, 0, 0.01, 0.02, 0.03)],
        requests=103,
        cache_hits=1,
        cache_misses=1,
        db_p95={"redis": 0.001, "postgresql": 0.002},
        gw2_calls=0,
        gw2_429=0,
        ai_calls=0,
        ai_tokens={},
        ai_cost_usd=0.0,
        sampled_traces=0,
        sampling_ratio=0.1,
    )
    text = render_report(result)
    assert "  cache            redis p95 1.0 ms" in text
    assert "  database         postgresql p95 2.0 ms" in text
    [row_a] = [line for line in text.splitlines() if "GET /a " in line]
    [row_b] = [line for line in text.splitlines() if "GET /b " in line]
    assert not row_a.endswith("*") and row_b.endswith(" *")
    assert "* fewer than 20 requests: its percentiles say little" in text


def test_histogram_quantile_matches_promql() -> None:
    """Same interpolation as PromQL: 10 observations, 5 in (0, 0.1], 4 in (0.1, 0.2], 1 in (0.2, +Inf)."""
    buckets = [(0.1, 5.0), (0.2, 9.0), (float("inf"), 10.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.7, buckets) == pytest.approx(0.15)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.2)  # +Inf bucket: highest finite bound
    assert histogram_quantile(0.5, [(0.1, 0.0), (float("inf"), 0.0)]) is None


def test_route_rows_sum_over_status_codes() -> None:
    text = "\n".join(
        [
            "# TYPE http_server_request_duration_seconds histogram",
            *(
                f'http_server_request_duration_seconds_bucket{{http_request_method="GET",http_route="/a",'
                f'http_response_status_code="{code}",le="{le}"}} {count}'
                for code, series in (
                    ("200", ((0.1, 8), (1.0, 9), ("+Inf", 9))),
                    ("500", ((0.1, 0), (1.0, 1), ("+Inf", 1))),
                )
                for le, count in series
            ),
            *(
                f'http_server_request_duration_seconds_count{{http_request_method="GET",http_route="/a",'
                f'http_response_status_code="{code}"}} {count}'
                for code, count in (("200", 9), ("500", 1))
            ),
            "",
        ]
    )
    [row] = route_rows(parse_prometheus(text))
    assert (row.route, row.count, row.errors) == ("/a", 10.0, 1.0)
    assert row.p50 == pytest.approx(0.1 * 5 / 8)


def _assert_demo_report(result: subprocess.CompletedProcess[str]) -> None:
    """What ``otel-setup demo --sampling 0.5`` prints: routes, one trace tree, its logs, tokens, calls."""
    out = result.stdout
    assert result.returncode == 0, result.stderr[-3000:] + out[-3000:]
    assert "[" in result.stderr and "requests" in result.stderr  # the progress bar
    rows = re.findall(r"^  (GET|POST) (/\S+)\s+(\d+)\s+[\d.]+\s+[\d.]+%", out, re.MULTILINE)
    routes = {route for _, route, _ in rows}
    assert {"/api/items/{item_id}", "/api/account", "/api/ai/build-advice"} <= routes, out
    total = int(re.search(r"\((\d+) requests in", out).group(1))  # type: ignore[union-attr]
    assert sum(int(count) for _, _, count in rows) == total
    trace_id = re.search(r"^One sampled trace: ([0-9a-f]{32}) \((\d+) spans\)", out, re.MULTILINE)
    assert trace_id, out
    assert re.search(r"^  \S.* server ", out, re.MULTILINE)  # the root of the tree
    log_section = out.split(f"Log lines with trace_id {trace_id.group(1)}:", 1)[1]
    lines = [json.loads(line) for line in log_section.splitlines() if line.startswith("  {")]
    assert lines and all(line["trace_id"] == trace_id.group(1) for line in lines)
    tokens = re.search(r"tokens input (\d+), output (\d+)", out)
    assert tokens and int(tokens.group(1)) > 0 and int(tokens.group(2)) > 0, out
    assert re.search(r"GW2 API\s+[1-9]\d* calls", out)
    sampled = re.search(r"traces sampled\s+(\d+) of (\d+) requests", out)
    assert sampled and 0 < int(sampled.group(1)) < int(sampled.group(2))


@pytest.mark.slow
def test_demo_reports_routes_a_trace_tree_its_logs_and_ai_tokens() -> None:
    _assert_demo_report(_run(["demo", "--duration", "4", "--sampling", "0.5", "--port", str(free_port())], timeout=40))


def _build_wheel(out_dir: Path, tmp_path: Path) -> Path:
    """The wheel of the working tree (committed or not), built from a copy so the tree gains no build/."""
    source = tmp_path / "source"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "frontend", "*.egg-info")
    for name in ("pyproject.toml", "README.md", "NOTICE"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    for name in ("otel_setup", "examples"):
        shutil.copytree(ROOT / name, source / name, ignore=skip)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out_dir), str(source)],
        check=True,
        capture_output=True,
        timeout=180,
    )
    (wheel,) = out_dir.glob("otel_setup-*.whl")
    return wheel


def _wheel_venv(wheel: Path) -> Path:
    """A venv with the wheel's dependencies and ``[examples]``, reused while they stay the same.

    The cache is keyed on the wheel's declared requirements, not on its code: the
    package itself is force-reinstalled from this build every time.
    """
    with zipfile.ZipFile(wheel) as archive:
        (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        requires = sorted(
            line for line in archive.read(metadata).decode().splitlines() if line.startswith("Requires-Dist:")
        )
    key = hashlib.sha256("\n".join([sys.version, *requires]).encode()).hexdigest()[:16]
    venv = ROOT / ".cache" / "wheel-venv" / key
    python = venv / "bin" / "python"
    if not (venv / "complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"{wheel}[examples]"],
            check=True,
            capture_output=True,
            timeout=600,
        )
        (venv / "complete").touch()
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return venv


@pytest.mark.slow
def test_demo_runs_from_an_installed_wheel_outside_the_repository(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path / "dist", tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert {"otel_setup/_demo/gw2_app/main.py", "otel_setup/_demo/standins/gw2_api.py"} <= names
    assert not any(name.startswith(("examples/", "tests/", "bench/")) for name in names)
    venv = _wheel_venv(wheel)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SENTRY_", "PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import otel_setup._demo.gw2_app.main as m; print(m.__file__)"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert Path(where.splitlines()[-1]).is_relative_to(venv / "lib"), where
    result = subprocess.run(
        [str(venv / "bin" / "otel-setup"), "demo", "--duration", "4", "--sampling", "0.5", "--port", str(free_port())],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    _assert_demo_report(result)
