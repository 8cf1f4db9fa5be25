"""Alertmanager: amtool's checks and routing tests, then inhibition and delivery on a real
Alertmanager (loopback, clustering off) posting to a loopback webhook."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from tests.assets._promql import REPO, alerting_rules, run, tool

CONFIG = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
RECEIVER_FOR = {"critical": "page", "warning": "ticket"}


def amtool() -> str:
    return tool("amtool", "prometheus-alertmanager")


def route(*labels: str) -> str:
    result = run(amtool(), "config", "routes", "test", f"--config.file={CONFIG}", *labels)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_amtool_check_config() -> None:
    result = run(amtool(), "check-config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_a_broken_config_is_rejected(tmp_path: Path) -> None:
    data = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    data["route"]["routes"][0]["receiver"] = "nope"
    broken = tmp_path / "alertmanager.yml"
    broken.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = run(amtool(), "check-config", str(broken))
    assert result.returncode == 1 and "undefined receiver" in result.stdout + result.stderr


def test_routing_by_severity() -> None:
    assert route("severity=critical", "alertname=HTTPHighErrorRate", "job=gw2-companion") == "page"
    assert route("severity=warning", "alertname=HTTPHighErrorRate", "job=gw2-companion") == "ticket"
    assert route("alertname=Unlabelled") == "webhook"


@pytest.mark.parametrize("rule", alerting_rules(), ids=lambda r: f"{r['alert']}-{r['labels']['severity']}")
def test_every_alert_reaches_its_receiver(rule: dict[str, Any]) -> None:
    severity = rule["labels"]["severity"]
    labels = [f"{key}={value}" for key, value in rule["labels"].items()]
    result = run(
        amtool(),
        "config",
        "routes",
        "test",
        f"--config.file={CONFIG}",
        f"--verify.receivers={RECEIVER_FOR[severity]}",
        f"alertname={rule['alert']}",
        *labels,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_secrets_come_from_files() -> None:
    data = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    assert "smtp_auth_password" not in data["global"] and data["global"]["smtp_auth_password_file"]
    for receiver in data["receivers"]:
        for config in receiver.get("pagerduty_configs", []):
            assert "routing_key" not in config and "service_key" not in config and config["routing_key_file"]
        for config in receiver.get("slack_configs", []):
            assert "api_url" not in config and config["api_url_file"]


def test_critical_inhibits_the_warning_of_the_same_family() -> None:
    rules = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))["inhibit_rules"]
    assert {
        "source_matchers": ['severity="critical"'],
        "target_matchers": ['severity="warning"'],
        "equal": ["alertname", "job", "slo"],
    } in rules


# -- A real Alertmanager ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Webhook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Webhook.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def loopback_config(webhook_url: str) -> dict[str, Any]:
    """The real routes and inhibitions; every receiver replaced by the loopback webhook, and
    short timings so the test sees a notification within seconds."""
    data = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    data["global"] = {"resolve_timeout": "1m"}
    data["receivers"] = [
        {"name": receiver["name"], "webhook_configs": [{"url": f"{webhook_url}/{receiver['name']}"}]}
        for receiver in data["receivers"]
    ]

    def fast(route: dict[str, Any]) -> None:
        route.update(group_wait="1s", group_interval="1s")
        for child in route.get("routes", []):
            fast(child)

    fast(data["route"])
    return data


def api(url: str, payload: Any = None) -> Any:
    request = urllib.request.Request(
        url,
        data=None if payload is None else json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="GET" if payload is None else "POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read().decode()
    return json.loads(text) if text else None


@pytest.mark.slow
def test_inhibition_and_delivery_on_a_real_alertmanager(tmp_path: Path) -> None:
    binary = tool("prometheus-alertmanager", "prometheus-alertmanager")
    Webhook.received = []
    server = HTTPServer(("127.0.0.1", 0), Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = tmp_path / "alertmanager.yml"
    config.write_text(yaml.safe_dump(loopback_config(f"http://127.0.0.1:{server.server_port}")), encoding="utf-8")
    assert run(amtool(), "check-config", str(config)).returncode == 0
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--web.external-url={base}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(f"{base}/-/ready", timeout=1)
                break
            except OSError:
                assert time.monotonic() < deadline, "Alertmanager did not become ready"
                time.sleep(0.1)
        alert = {"alertname": "HTTPHighErrorRate", "job": "gw2-companion"}
        api(
            f"{base}/api/v2/alerts",
            [
                {"labels": {**alert, "severity": "critical"}, "annotations": {"summary": "10% 5xx"}},
                {"labels": {**alert, "severity": "warning"}, "annotations": {"summary": "10% 5xx"}},
                {"labels": {**alert, "job": "other-service", "severity": "warning"}, "annotations": {"summary": "2%"}},
            ],
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            receivers = {body["receiver"] for body in Webhook.received}
            if {"page", "ticket"} <= receivers:
                break
            time.sleep(0.2)
        states = {
            (a["labels"]["job"], a["labels"]["severity"]): a["status"]["state"] for a in api(f"{base}/api/v2/alerts")
        }
        assert states == {
            ("gw2-companion", "critical"): "active",
            ("gw2-companion", "warning"): "suppressed",  # inhibited by its critical
            ("other-service", "warning"): "active",
        }
        delivered = {
            (b["receiver"], a["labels"]["job"], a["labels"]["severity"]) for b in Webhook.received for a in b["alerts"]
        }
        assert ("page", "gw2-companion", "critical") in delivered
        assert ("ticket", "other-service", "warning") in delivered
        assert ("ticket", "gw2-companion", "warning") not in delivered
    finally:
        process.terminate()
        process.wait(timeout=10)
        server.shutdown()
