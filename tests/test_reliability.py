"""Outages, restarts and worker models never cost a request (issue 7).

Every timing assertion compares against a healthy baseline measured in the
same test on the same server process, so the figures hold on a slow CI
machine: p99 under fault <= 1.5 x healthy p99 + 2 ms. Servers are real
subprocesses (uvicorn, gunicorn) talking to loopback stand-ins for the
collector and for Sentry, each able to refuse, hang, delay or answer a
chosen status.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import otel_setup
from tests.support.load import run_blocks
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support.polling import wait_until
from tests.support.processes import BIN, ROOT, free_port, server, stop
from tests.support.sentry_ingest import SentryIngest

pytestmark = pytest.mark.slow

APP = "tests.apps.reliability_app:app"
REQUESTS = 300
BLOCKS = 3
MEASURED: dict[str, tuple[float, float]] = {}
BURST = "/items/{index}?children=15"  # 16 spans a request: 300 of them overflow the 2,048-span queue


# --- helpers -------------------------------------------------------------------------------------


def _env(receiver: OtlpReceiver, **extra: str) -> dict[str, str]:
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_TRACES_SAMPLER": "always_on",  # every request makes spans
        "OTEL_SERVICE_NAME": "reliability-app",
        "OTEL_METRICS_EXPORTER": "prometheus",
        "OTEL_SETUP_SHUTDOWN_TIMEOUT": "2",
        "OTEL_SETUP_REQUEST_LOG_LEVEL": "off",
    }
    env.update(extra)
    return env


@contextmanager
def _uvicorn(env: dict[str, str], log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    argv = [str(BIN / "uvicorn"), APP, "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    with server(argv, env=env, ready_url=f"http://127.0.0.1:{port}/health", log_path=log) as process:
        yield process, f"http://127.0.0.1:{port}"


def _load(client: httpx.Client, path: str, count: int, expect: int = 200) -> list[float]:
    """Sequential keep-alive requests; the latency of each, in seconds."""
    latencies = []
    # A request that raised makes uvicorn close its connection: a new one each time then.
    headers = {"Connection": "close"} if expect >= 500 else {}
    for index in range(count):
        started = time.perf_counter()
        response = client.get(path.format(index=index), headers=headers)
        latencies.append(time.perf_counter() - started)
        assert response.status_code == expect, (path, response.status_code, response.text[:200])
    return latencies


def _p99(latencies: list[float]) -> float:
    return statistics.quantiles(latencies, n=100)[98]


def _block_p99(blocks: list[list[float]]) -> float:
    """Median of the per-block p99s: one scheduler stall on a 2-core machine moves one block, not the figure."""
    return statistics.median(_p99(block) for block in blocks)


def _measure_pair(
    client: httpx.Client,
    path: str,
    fault: Callable[[], None],
    what: str,
    expect: int = 200,
    count: int = REQUESTS,
    heal: Callable[[], None] | None = None,
    misses: list[str] | None = None,
) -> tuple[float, float]:
    """Healthy runs, then ``fault()``, then the same runs under fault: p99 <= 1.5 x healthy + 2 ms.

    Each side is three blocks of ``REQUESTS`` requests from a client process
    of its own; the figure compared is the median of the three p99s. A faulted
    side that misses the bound is measured once more before it counts.
    """
    base_url = str(client.base_url)
    _load(client, path, 50, expect)  # warm-up: imports, connection, first batch
    if heal is not None:
        # A fault that can be switched off is measured in alternating blocks, so
        # drift of the shared machine hits both sides alike.
        healthy, faulted = [], []
        for _ in range(BLOCKS):
            heal()
            healthy += run_blocks(base_url, path, count, 1, expect)
            fault()
            faulted += run_blocks(base_url, path, count, 1, expect)
    else:
        healthy = run_blocks(base_url, path, count, BLOCKS, expect)
        fault()
        faulted = run_blocks(base_url, path, count, BLOCKS, expect)
    base = _block_p99(healthy)
    if _block_p99(faulted) > base * 1.5 + 0.002:
        faulted = run_blocks(base_url, path, count, BLOCKS, expect)
    under = _block_p99(faulted)
    MEASURED[what] = (base, under)
    print(f"{what}: healthy p99 {base * 1000:.2f} ms, under fault {under * 1000:.2f} ms")
    _latency_rule(what, base, under, misses)
    return base, under


def _latency_rule(what: str, base: float, under: float, misses: list[str] | None) -> None:
    """p99 under fault <= 1.5 x healthy + 2 ms; with ``misses``, a miss is collected, not raised.

    Collecting lets a test finish every functional assertion (drops counted,
    no retry of a 400, logs rate-limited) before it fails on latency, so one
    run reports everything that is wrong.
    """
    if under <= base * 1.5 + 0.002:
        return
    message = f"{what}: p99 {under * 1000:.2f} ms vs healthy {base * 1000:.2f} ms (limit 1.5 x + 2 ms)"
    if misses is None:
        raise AssertionError(message)
    misses.append(message)


def _report_latency_misses(misses: list[str]) -> None:
    if misses:
        pytest.fail("latency rule missed: " + "; ".join(misses))


def _metrics(client: httpx.Client) -> dict[str, list[tuple[dict[str, str], float]]]:
    families: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            families.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return families


def _total(client: httpx.Client, name: str, match: Callable[[dict[str, str]], bool] = lambda _: True) -> float:
    return sum(value for labels, value in _metrics(client).get(name, []) if match(labels))


def _failed(labels: dict[str, str]) -> bool:
    return bool(labels.get("error_type"))


def _queue_full(labels: dict[str, str]) -> bool:
    return labels.get("error_type") == "queue_full"


def _export_log_lines(log: Path) -> dict[str, int]:
    """JSON lines on stdout from the export path, per logger (one logger per signal)."""
    counts: dict[str, int] = {}
    for line in log.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        name = str(record.get("logger", "")) if isinstance(record, dict) else ""
        if name.startswith(("opentelemetry", "urllib3", "requests")):
            counts[name] = counts.get(name, 0) + 1
    return counts


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _no_feedback(receiver: OtlpReceiver) -> None:
    """The exporter's own POSTs make no span, and export-path logs are never exported."""
    ports = {receiver.port}
    assert not [s for s in receiver.spans() if s.attributes.get("server.port") in ports]
    exporter_paths = ("/v1/traces", "/v1/metrics", "/v1/logs")
    assert not [s for s in receiver.spans() if str(s.attributes.get("url.full", "")).endswith(exporter_paths)]
    noisy = [r for r in receiver.log_records() if r.scope_name.startswith(("opentelemetry", "urllib3", "requests"))]
    assert not noisy, [r.body for r in noisy][:3]


# --- flush: bounded and honest -------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["ok", "hang", "400"])
def test_force_flush_is_bounded_and_reports_delivery(otlp_receiver: OtlpReceiver, mode: str) -> None:
    """The SDK's flush ignores its timeout and answers True after a failed export; ours does neither."""
    telemetry = otel_setup.configure(
        otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=1.0, metrics_exporter=("prometheus",)
    )
    if mode == "hang":
        otlp_receiver.mode = "hang"
    elif mode == "400":
        otlp_receiver.set_fault("status", status_code=400)
    tracer = telemetry.tracer_provider.get_tracer("test")
    for index in range(10):
        tracer.start_span(f"work {index}").end()
    started = time.monotonic()
    delivered = telemetry.force_flush(timeout=1.0)
    elapsed = time.monotonic() - started
    assert elapsed < 1.5, f"flush took {elapsed:.2f}s"
    assert delivered is (mode == "ok")
    if mode == "ok":
        assert len(otlp_receiver.spans()) == 10
    if mode == "400":
        assert otlp_receiver.request_count("traces") == 1, "a 400 is permanent: one attempt, no retry"
    # A later flush with nothing failing is honest again.
    otlp_receiver.reset_faults()
    if mode == "400":
        tracer.start_span("after").end()
        assert telemetry.force_flush(timeout=1.0) is True


# --- collector faults ----------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["refused", "hang", "slow", "400"])
def test_collector_fault_costs_no_request(otlp_receiver: OtlpReceiver, tmp_path: Path, fault: str) -> None:
    timeout = "5" if fault == "slow" else "2"
    env = _env(
        otlp_receiver,
        OTEL_EXPORTER_OTLP_TIMEOUT=timeout,
        OTEL_METRICS_EXPORTER="prometheus,otlp",
        OTEL_METRIC_EXPORT_INTERVAL="1000",
        OTEL_LOGS_EXPORTER="otlp",
    )
    log = tmp_path / "server.log"
    state: dict[str, float] = {}

    def apply() -> None:
        if fault == "refused":
            otlp_receiver.stop()  # nothing listens on the port any more
        elif fault == "hang":
            otlp_receiver.mode = "hang"
        elif fault == "slow":
            otlp_receiver.set_fault("ok", delay=3.0)
        else:
            otlp_receiver.set_fault("status", status_code=400)
        state["started"] = time.monotonic()
        state["requests"] = otlp_receiver.request_count("traces")

    with _uvicorn(env, log) as (process, base), httpx.Client(base_url=base, timeout=10) as client:
        rss_before = _rss_mb(process.pid)
        misses: list[str] = []
        # A status fault switches off and on at once: its blocks alternate with healthy ones, so
        # drift of the shared machine hits both sides alike (as for the 503 case).
        heal = otlp_receiver.reset_faults if fault == "400" else None
        _measure_pair(client, "/items/{index}", apply, f"collector {fault}", heal=heal, misses=misses)
        _load(client, BURST, 300)  # 4,800 spans in about a second
        rss_after = _rss_mb(process.pid)
        assert rss_after - rss_before < 50, f"RSS grew {rss_after - rss_before:.1f} MB"

        # What was lost is counted where alert rules can see it.
        if fault in ("refused", "hang", "400"):
            assert wait_until(
                lambda: (
                    _total(client, "otel_sdk_exporter_span_exported_total", _failed)
                    + _total(client, "otel_sdk_processor_span_processed_total", _queue_full)
                    > 0
                ),
                timeout=float(timeout) * 2 + 2,
            ), _metrics(client).get("otel_sdk_exporter_span_exported_total")
        if fault in ("refused", "hang"):
            # 4,800 spans in about a second against a dead collector: the queue overflowed.
            assert _total(client, "otel_sdk_processor_span_processed_total", _queue_full) > 0
        if fault == "slow":
            # Slow is not broken: batches keep arriving, each after the 3 s delay.
            assert otlp_receiver.wait_for(
                lambda r: r.request_count("traces") > state["requests"] and len(r.spans()) > 0,
                timeout=8,
            )
            assert _total(client, "otel_sdk_exporter_span_exported_total", _failed) == 0
        if fault == "400":
            # A permanent error: exactly one attempt per batch. One batch is
            # isolated here: 3 requests, then the 1 s schedule sends them.
            assert wait_until(lambda: _total(client, "otel_sdk_processor_span_queue_size") == 0, timeout=10)
            time.sleep(1.5)
            before = otlp_receiver.request_count("traces")
            failed_before = _total(client, "otel_sdk_exporter_span_exported_total", _failed)
            _load(client, "/items/{index}", 3)
            assert wait_until(
                lambda: _total(client, "otel_sdk_exporter_span_exported_total", _failed) >= failed_before + 3,
                timeout=5,
            )
            time.sleep(2.5)  # a retry would have come by now (first backoff is about 1 s)
            assert otlp_receiver.request_count("traces") - before == 1
            assert _total(client, "otel_sdk_exporter_span_exported_total", _failed) == failed_before + 3

        # Export failures are logged, but a few lines a minute per signal at most.
        time.sleep(1.0)
        lines = _export_log_lines(log)
        outage = time.monotonic() - state["started"]
        assert outage < 60
        if fault in ("refused", "400"):
            assert lines, "the outage should be visible in the logs at all"
        assert all(count <= 3 for count in lines.values()), lines
        assert health_is_fast(client)
    _no_feedback(otlp_receiver)
    _report_latency_misses(misses)


def health_is_fast(client: httpx.Client) -> bool:
    started = time.perf_counter()
    ok = client.get("/health").status_code == 200
    return ok and time.perf_counter() - started < 0.1


def test_retry_after_is_honoured_and_retries_stop_at_the_export_timeout(
    otlp_receiver: OtlpReceiver, tmp_path: Path
) -> None:
    with OtlpReceiver() as log_receiver:
        env = _env(
            otlp_receiver,
            OTEL_EXPORTER_OTLP_TIMEOUT="5",
            OTEL_LOGS_EXPORTER="otlp",
            # Export-path logs would go to a healthy receiver of their own, if they were exported at all.
            OTEL_EXPORTER_OTLP_LOGS_ENDPOINT=f"{log_receiver.endpoint}/v1/logs",
            OTEL_SETUP_REQUEST_LOG_LEVEL="info",
            # Small batches: a healthy exporter then serialises a batch in every
            # measured block, as a service under steady load does. With 512-span
            # batches the one serialisation of a run lands in whichever block the
            # span count happens to reach 512 in, healthy or faulted, and decides the p99.
            OTEL_BSP_MAX_EXPORT_BATCH_SIZE="64",
            OTEL_BLRP_MAX_EXPORT_BATCH_SIZE="64",
        )
        log = tmp_path / "server.log"
        with _uvicorn(env, log) as (_process, base), httpx.Client(base_url=base, timeout=10) as client:
            # 1. 503 with Retry-After: 2 once, then OK: the retry waits >= 2 s and delivers.
            _load(client, "/items/{index}", 5)
            assert otlp_receiver.wait_for(lambda r: len(r.spans()) == 5, timeout=5)
            first = otlp_receiver.request_count("traces")
            otlp_receiver.set_fault("status", status_code=503, retry_after=2, count=1)
            _load(client, "/items/{index}", 5)
            assert otlp_receiver.wait_for(lambda r: len(r.spans()) == 10, timeout=8)
            arrivals = otlp_receiver.arrival_times("traces")[first:]
            assert len(arrivals) == 2, arrivals
            assert arrivals[1] - arrivals[0] >= 2.0, f"retried after {arrivals[1] - arrivals[0]:.2f}s"
            assert _total(client, "otel_sdk_exporter_span_exported_total", _failed) == 0

            # 2. 503 with Retry-After: 2 for good: attempts at 0, 2, 4 s, then the
            #    next wait would pass the 5 s export timeout, so the batch is dropped and counted.
            otlp_receiver.set_fault("status", status_code=503, retry_after=2)
            first = otlp_receiver.request_count("traces")
            _load(client, "/items/{index}", 5)
            assert wait_until(lambda: _total(client, "otel_sdk_exporter_span_exported_total", _failed) == 5, timeout=10)
            arrivals = otlp_receiver.arrival_times("traces")[first:]
            assert len(arrivals) == 3, arrivals
            assert all(later - earlier >= 2.0 for earlier, later in itertools.pairwise(arrivals)), arrivals
            assert arrivals[-1] - arrivals[0] <= 5.0

            lines = _export_log_lines(log)
            assert any("trace_exporter" in name for name in lines), "retries are logged"
            assert all(count <= 3 for count in lines.values()), lines
            assert log_receiver.log_records(), "application logs were exported"
            _no_feedback(log_receiver)

            # 3. Requests stay as fast as when healthy while every export is being retried.
            otlp_receiver.reset_faults()
            misses: list[str] = []
            _measure_pair(
                client,
                "/items/{index}",
                lambda: otlp_receiver.set_fault("status", status_code=503, retry_after=1),
                "collector 503",
                heal=otlp_receiver.reset_faults,
                misses=misses,
            )
    _no_feedback(otlp_receiver)
    _report_latency_misses(misses)


# --- Sentry faults -------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["refused", "hang", "rate_limited"])
def test_sentry_faults_keep_failing_requests_fast(otlp_receiver: OtlpReceiver, tmp_path: Path, fault: str) -> None:
    """Requests that raise, against a service whose Sentry is healthy and one whose Sentry is failing.

    Both servers run at once and their blocks alternate, so whatever drifts on
    the machine during the test (sockets in TIME_WAIT from the closed
    connections, the other tests' leftovers) weighs on both sides alike.
    """
    healthy_ingest = SentryIngest()
    ingest = SentryIngest()
    ingest.mode = {"refused": "ok", "hang": "hang", "rate_limited": "ratelimit"}[fault]
    dsn = ingest.dsn
    if fault == "refused":
        ingest.stop()  # nothing listens on the DSN's port
    try:
        plain_env = _env(otlp_receiver, OTEL_TRACES_EXPORTER="none")
        with (
            _uvicorn({**plain_env, "SENTRY_DSN": healthy_ingest.dsn}, tmp_path / "plain.log") as (_plain, plain_base),
            _uvicorn({**plain_env, "SENTRY_DSN": dsn}, tmp_path / "sentry.log") as (_faulted, faulted_base),
            httpx.Client(base_url=faulted_base) as client,
        ):
            # Requests that raise cost more than others (a traceback log line, a new connection): fewer of them.
            _load(client, "/boom", 20, expect=500)

            def interleaved() -> tuple[float, float]:
                healthy: list[list[float]] = []
                faulted: list[list[float]] = []
                for _ in range(BLOCKS):
                    healthy += run_blocks(plain_base, "/boom", 100, 1, expect=500)
                    faulted += run_blocks(faulted_base, "/boom", 100, 1, expect=500)
                return _block_p99(healthy), _block_p99(faulted)

            base, under = interleaved()
            if under > base * 1.5 + 0.002:
                base, under = interleaved()  # measured once more before it counts
            MEASURED[f"sentry {fault}"] = (base, under)
            print(f"sentry {fault}: healthy Sentry p99 {base * 1000:.2f} ms, failing {under * 1000:.2f} ms")
            assert healthy_ingest.events(), "the baseline did send its errors"
            misses: list[str] = []
            _latency_rule(f"sentry {fault}", base, under, misses)

            # The loss is counted: skipped while limited or full, or lost by the SDK itself.
            assert wait_until(lambda: bool(_metrics(client).get("otel_setup_sentry_events_dropped_total")), timeout=5)
            reasons = {
                labels["reason"]: value for labels, value in _metrics(client)["otel_setup_sentry_events_dropped_total"]
            }
            expected = {"refused": "network_error", "hang": "queue_full", "rate_limited": "rate_limited"}[fault]
            assert reasons.get(expected, 0) > 0, reasons
            _report_latency_misses(misses)
    finally:
        ingest.stop()
        healthy_ingest.stop()


# --- dependencies down ---------------------------------------------------------------------------


@contextmanager
def _blackhole() -> Iterator[int]:
    """A port that completes the TCP handshake (backlog) and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    try:
        yield int(listener.getsockname()[1])
    finally:
        listener.close()


def test_database_and_redis_down(otlp_receiver: OtlpReceiver, tmp_path: Path) -> None:
    closed = free_port()
    with _blackhole() as hung:
        env = _env(
            otlp_receiver,
            DATABASE_URL=f"postgresql+psycopg2://app@127.0.0.1:{closed}/app",  # refused
            REDIS_URL=f"redis://127.0.0.1:{hung}/0",  # accepts, never answers
            OTEL_SETUP_READY_TIMEOUT="1",
        )
        with (
            _uvicorn(env, tmp_path / "server.log") as (_process, base),
            httpx.Client(base_url=base, timeout=10) as client,
        ):
            _load(client, "/db", 5, expect=500)
            _load(client, "/cache", 2, expect=500)
            started = time.perf_counter()
            ready = client.get("/ready")
            ready_took = time.perf_counter() - started
            assert ready.status_code == 503
            assert ready_took <= 1.0 + 0.5, f"/ready took {ready_took:.2f}s"
            checks = ready.json()["checks"]
            assert checks["database"].startswith("error") and checks["redis"] == "timeout", checks
            assert "127.0.0.1" not in ready.text and "Traceback" not in ready.text
            assert health_is_fast(client)
            _load(client, "/items/{index}", 20)  # everything else keeps working
            metrics = _metrics(client)
            server_errors = sum(
                value
                for labels, value in metrics.get("http_server_request_duration_seconds_count", [])
                if labels.get("http_response_status_code") == "500"
            )
            assert server_errors == 7, "the 5xx are counted"
        # ...and telemetry kept flowing for all of it.
        assert otlp_receiver.wait_for(lambda r: len([s for s in r.spans() if s.kind == "SERVER"]) >= 27, timeout=5)
    server_spans = [s for s in otlp_receiver.spans() if s.kind == "SERVER"]
    failing = [s for s in server_spans if s.attributes.get("http.route") in ("/db", "/cache")]
    assert len(failing) == 7 and all(s.status_code == "ERROR" for s in failing)
    assert all(s.status_code != "ERROR" for s in server_spans if s.attributes.get("http.route") == "/items/{item_id}")
    client_errors = [s for s in otlp_receiver.spans() if s.kind == "CLIENT" and s.status_code == "ERROR"]
    assert client_errors, "the failing call itself has an ERROR span"


# --- worker models -------------------------------------------------------------------------------


def _spans_by_pid(receiver: OtlpReceiver) -> dict[int, set[str]]:
    by_pid: dict[int, set[str]] = {}
    for span in receiver.spans():
        by_pid.setdefault(int(span.resource["process.pid"]), set()).add(str(span.resource["service.instance.id"]))
    return by_pid


def _assert_workers(receiver: OtlpReceiver, pids: set[int], requests: int) -> None:
    """Every request's span arrived once, from the process that served it, under that process's own id."""
    spans: list[ReceivedSpan] = [s for s in receiver.spans() if s.kind == "SERVER"]
    assert len(spans) >= requests, f"{len(spans)} of {requests} server spans arrived"
    assert len({s.span_id for s in receiver.spans()}) == len(receiver.spans()), "duplicate span ids"
    by_pid = _spans_by_pid(receiver)
    assert set(by_pid) == pids, (by_pid, pids)
    instance_ids = [next(iter(ids)) for ids in by_pid.values()]
    assert all(len(ids) == 1 for ids in by_pid.values()), by_pid
    assert len(set(instance_ids)) == len(pids), "each worker has its own service.instance.id"


@pytest.mark.parametrize("preload", [False, True], ids=["fork-per-worker", "preload"])
def test_gunicorn_workers(otlp_receiver: OtlpReceiver, tmp_path: Path, preload: bool) -> None:
    port = free_port()
    argv = [
        str(BIN / "gunicorn"),
        "-k",
        "uvicorn.workers.UvicornWorker",
        "-w",
        "2",
        "-b",
        f"127.0.0.1:{port}",
        "--graceful-timeout",
        "5",
        *(["--preload"] if preload else []),
        APP,
    ]
    env = _env(otlp_receiver)
    with server(argv, env=env, ready_url=f"http://127.0.0.1:{port}/health", log_path=tmp_path / "log") as process:
        pids: set[int] = set()
        sent = 0
        while (len(pids) < 2 or sent < 100) and sent < 400:
            # A new connection each time, so the kernel spreads them over both workers.
            response = httpx.get(f"http://127.0.0.1:{port}/items/{sent}", headers={"Connection": "close"})
            pids.add(response.json()["pid"])
            sent += 1
        assert len(pids) == 2, "both workers served requests"
        took = stop(process)
    assert took < 5 + 2 + 1, f"gunicorn took {took:.1f}s to stop"
    assert otlp_receiver.wait_for(lambda r: len([s for s in r.spans() if s.kind == "SERVER"]) >= sent, timeout=5)
    _assert_workers(otlp_receiver, pids, sent)


def test_uvicorn_reload_child_processes(otlp_receiver: OtlpReceiver, tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    module = app_dir / "reload_app.py"
    shutil.copy(ROOT / "tests" / "apps" / "basic_app.py", module)
    port = free_port()
    argv = [
        str(BIN / "uvicorn"),
        "reload_app:app",
        "--app-dir",
        str(app_dir),
        "--reload",
        "--reload-dir",
        str(app_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    env = _env(otlp_receiver, CALL_CONFIGURE="1")
    url = f"http://127.0.0.1:{port}/items/1"
    with server(argv, env=env, ready_url=f"http://127.0.0.1:{port}/health", log_path=tmp_path / "log") as process:
        first = {httpx.get(url).json()["pid"] for _ in range(10)}
        module.write_text(module.read_text() + "\n# edited\n")
        assert wait_until(lambda: _pid_or_none(url) not in (None, *first), timeout=15), "the reloader restarted the app"
        second = {httpx.get(url).json()["pid"] for _ in range(10)}
        took = stop(process)
    assert took < 2 + 2 + 1, f"uvicorn --reload took {took:.1f}s to stop"
    assert otlp_receiver.wait_for(lambda r: len([s for s in r.spans() if s.kind == "SERVER"]) >= 20, timeout=5)
    assert len(first) == 1 and len(second) == 1
    # The reload wait loop's own requests are spans too, hence "at least".
    _assert_workers(otlp_receiver, first | second, 20)


def _pid_or_none(url: str) -> int | None:
    try:
        value: Any = httpx.get(url, timeout=1.0).json()["pid"]
    except (httpx.HTTPError, ValueError, KeyError):
        return None
    return int(value)


def test_fork_after_configure_gives_the_child_its_own_identity(otlp_receiver: OtlpReceiver, tmp_path: Path) -> None:
    """os.fork() after configure(): the child exports its own spans under its own instance id."""
    telemetry = otel_setup.configure(otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=1.0)
    tracer = telemetry.tracer_provider.get_tracer("test")
    for index in range(5):
        tracer.start_span(f"parent {index}").end()
    seen_by_child = tmp_path / "child-instance-id"
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            for index in range(10):
                tracer.start_span(f"child {index}").end()
            seen_by_child.write_text(str(telemetry.resource.attributes["service.instance.id"]))
            code = 0 if telemetry.force_flush(timeout=3.0) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert telemetry.force_flush(timeout=3.0)
    spans = otlp_receiver.spans()
    expected = [f"parent {i}" for i in range(5)] + [f"child {i}" for i in range(10)]
    assert sorted(s.name for s in spans) == sorted(expected)
    assert len({s.span_id for s in spans}) == 15, "no span exported twice"
    parent = {s.resource["service.instance.id"] for s in spans if s.name.startswith("parent")}
    forked = {s.resource["service.instance.id"] for s in spans if s.name.startswith("child")}
    assert len(parent) == 1 and len(forked) == 1 and parent != forked
    assert {s.resource["process.pid"] for s in spans if s.name.startswith("child")} == {child}
    assert forked == {seen_by_child.read_text()}, "the package's view of the child differs from its spans'"


def test_a_forked_child_never_writes_to_the_parents_connection(otlp_receiver: OtlpReceiver) -> None:
    """The parent's keep-alive socket to the collector is inherited; the child opens its own."""
    telemetry = otel_setup.configure(otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=1.0)
    tracer = telemetry.tracer_provider.get_tracer("test")
    tracer.start_span("parent").end()
    assert telemetry.force_flush(timeout=3.0)
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            tracer.start_span("child").end()
            code = 0 if telemetry.force_flush(timeout=3.0) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    tracer.start_span("parent again").end()
    assert telemetry.force_flush(timeout=3.0)
    assert [s.name for s in otlp_receiver.spans()] == ["parent", "child", "parent again"]
    parent, forked, again = [r.peer for r in otlp_receiver.requests("traces")]
    assert forked != parent, "the child exported over the socket it inherited from the parent"
    assert again == parent, "the parent's connection survived the child closing its copy"


def _install_credential_provider(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real entry point in ``opentelemetry_otlp_credential_provider``, as a distribution would ship it."""
    (root / "credential_probe.py").write_text(
        "import requests\n"
        "SESSIONS = []\n"
        "def session():\n"
        "    made = requests.Session()\n"
        "    made.headers['x-credential'] = 'from-provider'\n"
        "    SESSIONS.append(made)\n"
        "    return made\n"
    )
    info = root / "credential_probe-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: credential-probe\nVersion: 1.0\n")
    entry_points = "[opentelemetry_otlp_credential_provider]\nprobe = credential_probe:session\n"
    (info / "entry_points.txt").write_text(entry_points)
    monkeypatch.syspath_prepend(str(root))


def test_a_credential_provider_gives_every_exporter_its_session(
    otlp_receiver: OtlpReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_credential_provider(tmp_path, monkeypatch)
    monkeypatch.setenv("OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER", "probe")
    telemetry = otel_setup.configure(
        otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=1.0, metrics_exporter="otlp", logs_exporter="otlp"
    )
    telemetry.tracer_provider.get_tracer("test").start_span("through the provider").end()
    assert telemetry.force_flush(timeout=3.0)
    import credential_probe  # type: ignore[import-not-found] # written by the helper above

    assert len(credential_probe.SESSIONS) == 3, "one session per signal's exporter"
    seen = otlp_receiver.requests()
    assert {r.signal for r in seen} >= {"traces", "metrics"}
    assert all(r.headers.get("x-credential") == "from-provider" for r in seen)
    assert [s.name for s in otlp_receiver.spans()] == ["through the provider"]


def test_an_unknown_credential_provider_stops_startup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install_credential_provider(tmp_path, monkeypatch)
    monkeypatch.setenv("OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER", "prob")
    with pytest.raises(otel_setup.OtelSetupConfigError) as raised:
        otel_setup.configure(otlp_endpoint="http://127.0.0.1:9/")
    message = str(raised.value)
    assert "OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER" in message and "'prob'" in message
    assert "opentelemetry_otlp_credential_provider entry point (one of probe)" in message


def test_a_per_signal_credential_provider_applies_to_its_signal_only(
    otlp_receiver: OtlpReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_credential_provider(tmp_path, monkeypatch)
    monkeypatch.setenv("OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER", "probe")
    telemetry = otel_setup.configure(otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=1.0, metrics_exporter="otlp")
    telemetry.tracer_provider.get_tracer("test").start_span("traced").end()
    assert telemetry.force_flush(timeout=3.0)
    credentials = {(r.signal, r.headers.get("x-credential")) for r in otlp_receiver.requests()}
    assert credentials == {("traces", "from-provider"), ("metrics", None)}


@pytest.mark.parametrize("sdk_switch", ["unset", "true"])
def test_the_span_queue_is_reported_once(
    otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch, sdk_switch: str
) -> None:
    """Queue and exporter metrics on by default; with the SDK's own switch on too, still one set of series."""
    if sdk_switch == "true":
        monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    telemetry = otel_setup.configure(otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=1.0)
    telemetry.tracer_provider.get_tracer("test").start_span("counted").end()
    assert telemetry.force_flush(timeout=3.0)
    registry: Any = telemetry.prometheus_registry
    exported = [
        dict(sample.labels)
        for family in registry.collect()
        for sample in family.samples
        if sample.name == "otel_sdk_exporter_span_exported_total"
    ]
    assert [(labels["otel_scope_name"], labels["otel_component_type"]) for labels in exported] == [
        ("otel_setup.pipeline", "otlp_http_span_exporter")
    ], "one count of exported spans, the package's"
    samples = [
        (sample.name, dict(sample.labels))
        for family in registry.collect()
        for sample in family.samples
        if sample.name.startswith("otel_sdk_processor_span_queue_")
    ]
    from otel_setup import _compat

    if _compat.public_api_only() and sdk_switch == "unset":
        assert samples == [], "publicly, the SDK's switch alone turns them on"
        return
    names = sorted(name for name, _ in samples)
    assert names == ["otel_sdk_processor_span_queue_capacity", "otel_sdk_processor_span_queue_size"]
    assert {labels["otel_component_type"] for _, labels in samples} == {"batching_span_processor"}
    assert len({labels["otel_component_name"] for _, labels in samples}) == 1


def test_a_fork_during_a_metric_export_leaves_the_child_able_to_collect() -> None:
    """A fork while the periodic thread exports waits for the export: the child inherits no SDK lock held."""
    import signal
    import threading

    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult
    from opentelemetry.sdk.resources import Resource

    from otel_setup._core.providers import _PeriodicReader
    from otel_setup._hotpath.metrics import LocalMetrics

    exporting = threading.Event()

    class SlowExporter(MetricExporter):
        def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
            exporting.set()
            time.sleep(0.5)  # a collector answering slowly
            return MetricExportResult.SUCCESS

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            return None

    reader = _PeriodicReader(
        LocalMetrics(), Resource({"service.name": "t"}), SlowExporter(), export_interval_millis=60_000
    )
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    provider.get_meter("t").create_counter("c").add(1)
    collector = threading.Thread(target=reader.collect)
    collector.start()
    assert exporting.wait(5)
    started = time.monotonic()
    child = os.fork()  # the SDK's export lock is held by the collecting thread right now
    if child == 0:  # pragma: no cover - runs in the child
        signal.alarm(5)  # an inherited held lock would block here until the alarm kills the child
        reader.collect()
        os._exit(0)
    waited = time.monotonic() - started
    collector.join()
    _, status = os.waitpid(child, 0)
    provider.shutdown()
    assert os.waitstatus_to_exitcode(status) == 0, "the child's collection blocked on a lock held at fork"
    assert waited > 0.2, "the fork did not wait for the export in progress"
