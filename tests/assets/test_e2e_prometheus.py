"""End to end: the example service under load, a real Prometheus, a real Alertmanager, a webhook.

Everything listens on 127.0.0.1 and is stopped by the test:

* the GW2 and AI stand-ins, served from this process (as ``otel-setup demo`` does), the AI one
  behind a switch that makes its quota run out for one call;
* the example service (``examples.gw2_app.main:app``) under uvicorn, Prometheus output only;
* Prometheus, scraping the service's ``/metrics`` every second and evaluating the repository's
  rule files every second;
* Alertmanager, with the repository's routing tree and inhibition rules and every receiver
  pointed at a webhook served from this process.

What it proves: every panel query of ``deploy/grafana/dashboards/*.json`` returns data from
the Prometheus HTTP API, except the ones listed in :data:`NO_DATA_HERE` (which must then be
empty, so the list cannot go stale), and an error burst makes the critical ``HTTPHighErrorRate``
alert fire and reach the webhook through Alertmanager's ``page`` route.

Two deliberate changes to the shipped configuration, both made on temporary copies:

* ``HTTPHighErrorRate`` (critical) gets ``for: 0s`` instead of ``2m``. Its expression, labels
  and annotations are the shipped ones; waiting out ``2m`` would exceed the time budget of the
  test, and ``promtool test rules`` (tests/assets/test_rules.py) already proves the ``for:``.
  The 5-minute rate window is kept: with less than 5 minutes of samples ``rate()`` uses what
  there is, which is the whole run.
* Alertmanager's ``group_wait`` / ``group_interval`` become 1 s and each receiver's PagerDuty,
  Slack and e-mail settings become one webhook URL per receiver (``/page``, ``/ticket``,
  ``/webhook``), so the path the alert arrives on names the route it took.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.assets._promql import REPO, metric_names, rule_files, run
from tests.support.processes import free_port, server

pytestmark = pytest.mark.slow

UVICORN = (
    sys.executable,
    "-m",
    "uvicorn",
    "examples.gw2_app.main:app",
    "--host",
    "127.0.0.1",
    "--log-level",
    "warning",
)
JOB = "gw2-app"  # the scrape job; the collector path sets job = service.name, the same value
DASHBOARDS = sorted((REPO / "deploy" / "grafana" / "dashboards").glob("*.json"))
ALERTMANAGER_CONFIG = REPO / "deploy" / "alertmanager" / "alertmanager.yml"
# Grafana computes $__rate_interval from the scrape interval and the panel width (a few
# seconds here); one minute keeps the one-off events of the run (the 429s, the quota error,
# the database error) inside every window when the panels are read, 20-40 s after them.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__range": "5m",
    "${job:regex}": JOB,
    "$job": JOB,
}
# Panels (dashboard file, panel title) that cannot have data in this setup, and why.
NO_DATA_HERE: dict[tuple[str, str], str] = {
    **{
        ("telemetry-pipeline.json", title): "no OpenTelemetry Collector runs here: otelcol_* / its scrape job"
        for title in (
            "Collector up",
            "Collector memory (RSS)",
            "Accepted by the collector",
            "Export failures (send + enqueue)",
            "Refused by receivers (memory limiter)",
            "Sending queue fill",
            "Spans sent and dropped",
        )
    },
    ("telemetry-pipeline.json", "Overflow series (cardinality cap hit)"): (
        "only exists when the SDK's cardinality limit overflows; the example's labels are bounded"
    ),
}
TIME_BUDGET = 85.0  # seconds for the whole test, start-up and teardown included


# --- small loopback servers ------------------------------------------------------------


class Webhook:
    """Alertmanager's webhook receiver: keeps every POSTed JSON body with the path it came to."""

    def __init__(self) -> None:
        received: list[tuple[str, dict[str, Any]]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                del format, args  # quiet: the test reads the bodies, not an access log

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append((self.path, json.loads(body or b"{}")))
                self.send_response(200)
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="e2e-webhook", daemon=True)

    @contextmanager
    def running(self) -> Iterator[Webhook]:
        self._thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5.0)

    def firing(self, alertname: str) -> list[tuple[str, dict[str, Any]]]:
        """(path, alert) for every firing ``alertname`` notification received so far."""
        return [
            (path, alert)
            for path, body in list(self.received)
            for alert in body.get("alerts", [])
            if alert.get("status") == "firing" and alert.get("labels", {}).get("alertname") == alertname
        ]


class QuotaSwitch:
    """The AI stand-in, answering ``insufficient_quota`` while ``exhausted`` is set."""

    def __init__(self) -> None:
        from examples.standins import ai_api

        self.exhausted = threading.Event()
        self._normal = ai_api.create_app()
        self._empty = ai_api.create_app(quota_exceeded=True)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        app = self._empty if self.exhausted.is_set() else self._normal
        await app(scope, receive, send)


@contextmanager
def standins(gw2_keys: dict[str, Any]) -> Iterator[tuple[int, Any, int, QuotaSwitch]]:
    """GW2 and AI stand-ins on threads of this process: (gw2 port, gw2 state, ai port, quota switch)."""
    from examples.standins import gw2_api
    from otel_setup._demo import _Standin

    # The steady load stays under 30 GW2 calls a second; Load.gw2_rate_limited empties the
    # bucket on purpose, so 429s are rare and deliberate.
    gw2_app = gw2_api.create_app(burst=60, refill_per_second=30.0, keys=gw2_keys, slow_seconds=1.0)
    gw2 = _Standin(gw2_app).start()
    quota = QuotaSwitch()
    try:
        ai = _Standin(quota).start()
    except BaseException:
        gw2.stop()
        raise
    try:
        yield gw2.port, gw2_app.state.standin, ai.port, quota
    finally:
        ai.stop()
        gw2.stop()


def demo_keys() -> dict[str, Any]:
    """The stand-in's two keys plus three more accounts, so active users has something to count."""
    from examples.standins.gw2_api import DEMO_KEY, default_keys

    keys = default_keys()
    full = keys[DEMO_KEY]
    for index in range(3):
        account = {**full.account, "id": f"00000000-0000-4000-8000-00000000000{index}", "name": f"Extra.{index}"}
        keys[DEMO_KEY[:-1] + str(index)] = replace(full, name=f"extra {index}", account=account)
    return keys


# --- load ----------------------------------------------------------------------------------


@dataclass
class Load:
    """Requests against the example service from a background thread, in phases.

    Steady: every route, mostly answered 2xx/4xx, with a short sleep per round. One-off events
    (queued with :meth:`once`) add the rarer outcomes the dashboards show: an unhandled
    exception, a database error, an upstream 502, GW2 429s and an AI quota error. ``burst``
    adds fifteen 500s per round.
    """

    base: str
    keys: list[str]
    quota: QuotaSwitch
    gw2: Any  # the GW2 stand-in's StandinState: its rate-limit buckets
    burst: threading.Event = field(default_factory=threading.Event)
    statuses: Counter[str] = field(default_factory=Counter)
    rounds: int = 0
    _events: deque[Callable[[], None]] = field(default_factory=deque)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    error: BaseException | None = None

    def once(self, event: Callable[[], None]) -> None:
        self._events.append(event)

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    def _count(self, response: httpx.Response | None) -> None:
        self.statuses["failed" if response is None else f"{response.status_code // 100}xx"] += 1

    def fresh(self, method: str, path: str, **options: Any) -> None:
        """On a connection of its own: uvicorn closes a connection after an unhandled error."""
        try:
            response = httpx.request(method, self.base + path, timeout=15.0, **options)
        except httpx.HTTPError:
            response = None
        self._count(response)

    def _round(self, client: httpx.Client) -> None:
        from examples.standins.gw2_api import DEMO_KEY

        key = {"X-GW2-Key": self.keys[self.rounds % len(self.keys)]}
        demo = {"X-GW2-Key": DEMO_KEY}
        steps: list[tuple[str, str, dict[str, Any]]] = [
            *[("GET", "/healthcare", {})] * 4,
            ("GET", f"/api/items/{(19721, 19976, 19684)[self.rounds % 3]}", {}),  # database, then cache
            ("GET", f"/api/items/{(24277, 30689)[self.rounds % 2]}", {}),  # GW2 once, then database
            ("GET", "/api/items/1", {}),  # GW2 every time: 404
            ("GET", "/api/account", {"headers": key}),  # a miss per key, then hits
            ("GET", "/api/characters/Aurora Lightbringer", {"headers": demo}),
            ("GET", "/api/characters/Nobody", {"headers": demo}),  # 404
            ("GET", "/api/account", {"headers": {"X-GW2-Key": "not-a-key"}}),  # GW2 403 invalid_key: 401
            ("GET", "/api/account", {}),  # 401: no key
            ("POST", "/api/ai/build-advice", {"json": {"profession": "Guardian"}}),
            ("GET", "/api/accounts/me/build-advice", {"headers": demo}),  # GW2, database, cache, AI
            ("GET", "/api/slow", {"params": {"seconds": 0.05}}),
        ]
        for method, path, options in steps:
            try:
                response: httpx.Response | None = client.request(method, path, **options)
            except httpx.HTTPError:
                response = None
            self._count(response)
        while self._events:
            self._events.popleft()()
        if self.burst.is_set():
            for _ in range(15):
                self.fresh("GET", "/api/boom")
        self.rounds += 1

    def _run(self) -> None:
        try:
            with httpx.Client(base_url=self.base, timeout=15.0) as client:
                while not self._stop.is_set():
                    self._round(client)
                    self._stop.wait(0.05)
        except BaseException as exc:  # reported by check(), on the test's thread
            self.error = exc

    def check(self) -> None:
        """Raise on the test's thread what broke the load thread."""
        if self.error is not None:
            raise AssertionError(f"the load thread failed: {self.error!r}") from self.error

    @contextmanager
    def running(self) -> Iterator[Load]:
        self._thread = threading.Thread(target=self._run, name="e2e-load", daemon=True)
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(30.0)

    # One-off events, run on the load thread between rounds.

    def rare_errors(self) -> None:
        self.fresh("GET", "/api/boom")  # an unhandled exception: 500
        self.fresh("GET", "/api/items/99999999999999999999")  # SQLite OverflowError: a database error, 500
        self.fresh("GET", "/api/characters/Flaky", headers={"X-GW2-Key": self.keys[0]})  # upstream 503: 502

    def gw2_rate_limited(self) -> None:
        """One GW2 call meets an empty rate-limit bucket: a 429 upstream, a 503 here.

        Nothing else calls the service meanwhile (one-off events run on the load thread), so
        exactly one upstream call sees the zero-capacity bucket.
        """
        from examples.standins.gw2_api import TokenBucket

        buckets = self.gw2.buckets
        saved = dict(buckets)
        for client in saved:
            buckets[client] = TokenBucket(0, 0, time.monotonic)
        try:
            self.fresh("GET", "/api/items/1")
        finally:
            buckets.update(saved)

    def quota_error(self) -> None:
        self.quota.exhausted.set()
        try:
            self.fresh("POST", "/api/ai/build-advice", json={"profession": "Mesmer"})
        finally:
            self.quota.exhausted.clear()


# --- Prometheus and Alertmanager configuration -----------------------------------------------


def write_rules(directory: Path) -> Path:
    """The repository's rule files, with the critical HTTPHighErrorRate at ``for: 0s``."""
    directory.mkdir()
    rewritten = 0
    for path in rule_files():
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        for group in data["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") == "HTTPHighErrorRate" and rule["labels"]["severity"] == "critical":
                    assert rule["for"] == "2m", "the shipped rule changed: revisit this test's rewrite"
                    rule["for"] = "0s"
                    rewritten += 1
        (directory / path.name).write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    assert rewritten == 1
    return directory


def write_prometheus_config(path: Path, rules: Path, app_port: int, alertmanager_port: int) -> Path:
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules / "*.yml")],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]},
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{app_port}"]}]}],
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def write_alertmanager_config(path: Path, webhook_port: int) -> Path:
    """The shipped routing tree and inhibition rules; fast timings; receivers to the webhook."""
    data = yaml.safe_load(ALERTMANAGER_CONFIG.read_text(encoding="utf-8"))
    data["global"] = {"resolve_timeout": data["global"]["resolve_timeout"]}  # no SMTP account here

    def fast(route: dict[str, Any]) -> None:
        route["group_wait"] = "1s"
        route["group_interval"] = "1s"
        for child in route.get("routes", []):
            fast(child)

    fast(data["route"])
    data["receivers"] = [
        {
            "name": receiver["name"],
            "webhook_configs": [{"url": f"http://127.0.0.1:{webhook_port}/{receiver['name']}", "send_resolved": True}],
        }
        for receiver in data["receivers"]
    ]
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


# --- Prometheus queries ---------------------------------------------------------------------


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=10.0)
    body = response.json()
    assert body.get("status") == "success", f"{expr}: {body}"
    data = body["data"]
    if data["resultType"] == "scalar":
        return [{"metric": {}, "value": data["result"]}]
    result: list[dict[str, Any]] = data["result"]
    return result


def finite(result: list[dict[str, Any]]) -> list[float]:
    return [v for v in (float(series["value"][1]) for series in result) if math.isfinite(v)]


def series_seen(prometheus: str, expr: str) -> list[dict[str, str]]:
    """A few label sets of the metrics ``expr`` reads: why a query came back empty."""
    labels = []
    for name in sorted(metric_names(expr)):
        for series in query(prometheus, f'topk(3, last_over_time({{__name__="{name}",job="{JOB}"}}[1m]))'):
            labels.append({k: v for k, v in series["metric"].items() if not k.startswith("otel_scope_")})
    return labels


def substitute(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr.replace("${1}", ""), f"unknown Grafana variable in {expr}"
    return expr


@dataclass(frozen=True)
class Target:
    dashboard: str
    panel: str
    ref: str
    expr: str

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel} / {self.ref}"


def panel_targets() -> list[Target]:
    out = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text(encoding="utf-8"))["panels"]:
            for target in panel.get("targets", []):
                if (target.get("datasource") or panel["datasource"])["type"] == "prometheus":
                    out.append(Target(path.name, panel["title"], target["refId"], substitute(target["expr"])))
    return out


def wait_for(condition: Callable[[], bool], deadline: float, step: float = 0.5, load: Load | None = None) -> bool:
    while time.monotonic() < deadline:
        if load is not None:
            load.check()
        if condition():
            return True
        time.sleep(step)
    return condition()


# --- the test ---------------------------------------------------------------------------------


def binaries() -> dict[str, str]:
    found = {name: shutil.which(name) for name in ("prometheus", "promtool", "prometheus-alertmanager")}
    missing = [name for name, path in found.items() if path is None]
    if missing:
        pytest.skip(
            f"{', '.join(missing)} not installed "
            "(Debian packages prometheus, prometheus-alertmanager); CI installs them"
        )
    return {name: str(path) for name, path in found.items()}


def test_dashboards_have_data_and_an_error_burst_pages_through_alertmanager(tmp_path: Path) -> None:
    started = time.monotonic()
    deadline = started + TIME_BUDGET
    tools = binaries()
    from examples.standins.ai_api import DEMO_API_KEY

    keys = demo_keys()
    rules = write_rules(tmp_path / "rules")
    app_port, prometheus_port, alertmanager_port = free_port(), free_port(), free_port()
    prometheus = f"http://127.0.0.1:{prometheus_port}"
    alertmanager = f"http://127.0.0.1:{alertmanager_port}"
    app = f"http://127.0.0.1:{app_port}"
    prometheus_yml = write_prometheus_config(tmp_path / "prometheus.yml", rules, app_port, alertmanager_port)
    checked = run(tools["promtool"], "check", "config", str(prometheus_yml))
    assert checked.returncode == 0, checked.stdout + checked.stderr

    with ExitStack() as stack:
        webhook = stack.enter_context(Webhook().running())
        alertmanager_yml = write_alertmanager_config(tmp_path / "alertmanager.yml", webhook.port)
        gw2_port, gw2, ai_port, quota = stack.enter_context(standins(keys))
        stack.enter_context(
            server(
                [
                    tools["prometheus-alertmanager"],
                    f"--config.file={alertmanager_yml}",
                    f"--storage.path={tmp_path / 'alertmanager-data'}",
                    f"--web.listen-address=127.0.0.1:{alertmanager_port}",
                    f"--web.external-url={alertmanager}",
                    "--cluster.listen-address=",
                ],
                env={},
                ready_url=f"{alertmanager}/-/ready",
                log_path=tmp_path / "alertmanager.log",
            )
        )
        stack.enter_context(
            server(
                [
                    tools["prometheus"],
                    f"--config.file={prometheus_yml}",
                    f"--storage.tsdb.path={tmp_path / 'prometheus-data'}",
                    f"--web.listen-address=127.0.0.1:{prometheus_port}",
                    f"--web.external-url={prometheus}",
                ],
                env={},
                ready_url=f"{prometheus}/-/ready",
                log_path=tmp_path / "prometheus.log",
            )
        )
        stack.enter_context(
            server(
                [*UVICORN, "--port", str(app_port)],
                env={
                    "OTEL_SERVICE_NAME": JOB,
                    "OTEL_TRACES_EXPORTER": "none",
                    "OTEL_LOGS_EXPORTER": "none",
                    "OTEL_METRICS_EXPORTER": "prometheus",
                    "DATABASE_URL": f"sqlite:///{tmp_path / 'gw2_app.db'}",
                    "GW2_API_BASE": f"http://127.0.0.1:{gw2_port}",
                    "AI_API_BASE": f"http://127.0.0.1:{ai_port}/v1",
                    "AI_API_KEY": DEMO_API_KEY,
                },
                ready_url=f"{app}/health",
                log_path=tmp_path / "app.log",
            )
        )
        user_keys = [key for key, info in keys.items() if "account" in info.permissions]
        load = stack.enter_context(Load(app, user_keys, quota, gw2).running())

        def logs() -> str:
            return "\n".join(
                f"--- {name}\n{(tmp_path / name).read_text(errors='replace')[-2000:]}"
                for name in ("app.log", "prometheus.log", "alertmanager.log")
            )

        # 1. Healthy traffic first, so the one-off errors stay a small share of all requests.
        assert wait_for(lambda: load.requests >= 300, deadline, load=load), f"load stalled: {load.statuses}\n{logs()}"
        load.once(load.rare_errors)
        load.once(load.gw2_rate_limited)
        load.once(load.quota_error)
        rate = f'sum(rate(http_server_request_duration_seconds_count{{job="{JOB}"}}[1m]))'
        assert wait_for(lambda: bool(finite(query(prometheus, rate))), deadline, load=load), (
            f"no scraped traffic\n{logs()}"
        )
        rounds = load.rounds
        assert wait_for(lambda: load.rounds >= rounds + 8, deadline, load=load), load.statuses

        # 2. Healthy: a few 5xx, under the 5% page threshold; the rewritten alert is not firing.
        firing = f'ALERTS{{alertname="HTTPHighErrorRate",severity="critical",alertstate="firing",job="{JOB}"}}'
        ratio_expr = (
            f'sum(rate(http_server_request_duration_seconds_count{{job="{JOB}",http_response_status_code=~"5.."}}[5m]))'
            f' / sum(rate(http_server_request_duration_seconds_count{{job="{JOB}"}}[5m]))'
        )
        # (A 5xx series' first increment is invisible to rate(): the series starts at 1, not 0.
        # The one-off errors above created the series the burst then moves.)
        before = finite(query(prometheus, ratio_expr))
        assert load.statuses["5xx"] > 0, load.statuses
        assert before and before[0] < 0.05, f"5xx share before the burst: {before}, {load.statuses}"
        assert query(prometheus, firing) == []
        assert webhook.firing("HTTPHighErrorRate") == []

        # 3. The burst: the alert fires in Prometheus and reaches the webhook on the page route.
        # The burst goes on until the end, so the alert panels below have a firing alert to show.
        burst_at = time.monotonic()
        load.burst.set()
        assert wait_for(lambda: bool(webhook.firing("HTTPHighErrorRate")), deadline, load=load), (
            f"no HTTPHighErrorRate notification; Prometheus alerts: "
            f"{httpx.get(f'{prometheus}/api/v1/alerts', timeout=5).text}\nwebhook: {webhook.received}\n{logs()}"
        )
        delivered_after = time.monotonic() - burst_at
        load.once(load.gw2_rate_limited)  # a second 429, so its rate() is above zero
        path, alert = webhook.firing("HTTPHighErrorRate")[0]
        assert path == "/page", f"critical alerts page: arrived on {path}"
        assert alert["labels"] == {"alertname": "HTTPHighErrorRate", "severity": "critical", "job": JOB}
        assert alert["annotations"]["runbook_url"].endswith("/docs/runbook.md#httphigherrorrate")
        assert "of requests answer 5xx (critical above 5%)" in alert["annotations"]["summary"]
        assert query(prometheus, firing), "Prometheus shows the alert firing"
        print(f"HTTPHighErrorRate reached the webhook {delivered_after:.1f} s after the burst began")

        # 4. Every panel query returns data, except those that cannot here (which must be empty).
        targets = panel_targets()
        assert {(t.dashboard, t.panel) for t in targets} >= set(NO_DATA_HERE), "NO_DATA_HERE names a missing panel"
        expected = [t for t in targets if (t.dashboard, t.panel) not in NO_DATA_HERE]

        def missing() -> list[Target]:
            return [t for t in expected if not finite(query(prometheus, t.expr))]

        wait_for(lambda: not missing(), min(deadline, time.monotonic() + 20.0), step=1.0, load=load)
        empty = missing()
        assert empty == [], "panels without data:\n" + "\n".join(
            f"{t}: {t.expr}\n  series of its metrics: {series_seen(prometheus, t.expr)}" for t in empty
        )
        unexpected = [t for t in targets if (t.dashboard, t.panel) in NO_DATA_HERE and query(prometheus, t.expr)]
        assert unexpected == [], f"listed as impossible here but have data (update NO_DATA_HERE): {unexpected}"

        # The active-users panel counts each account once (one process here: the sum is exact).
        users = query(prometheus, f'sum(otel_setup_users_active{{job="{JOB}",otel_setup_users_window="5m"}})')
        assert finite(users) == [float(len(user_keys))]
        scraped = httpx.get(f"{app}/metrics", timeout=10.0).text
        assert not any(key in scraped or key[:16] in scraped for key in keys), "an API key reached /metrics"

        print(
            f"{len(expected)} panel queries with data, {len(targets) - len(expected)} listed as impossible here; "
            f"{load.requests} requests {dict(load.statuses)}; {time.monotonic() - started:.1f} s"
        )
    assert time.monotonic() - started < 90.0
