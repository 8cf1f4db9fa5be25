"""Soak: sustained load while the collector flaps between ok, hung and refused.

Not part of CI. It answers what the short reliability tests cannot: does
memory stay flat and does latency stay put over many outage cycles?

    python -m bench.soak --minutes 10 --flap-seconds 20

Each minute it prints the server's RSS and the latency percentiles of that
minute; at the end, RSS growth from the first to the last minute and the
overall percentiles. Everything runs on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.otlp_receiver import OtlpReceiver
from tests.support.processes import BIN, free_port, server

APP = "tests.apps.reliability_app:app"


class FlappingCollector:
    """A collector address that cycles ok -> hang -> refused.

    "Refused" needs a port nobody listens on, and a stopped receiver cannot
    restart, so each cycle is a fresh receiver behind a tiny TCP relay whose
    listening port stays the same for the app.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self._receiver: OtlpReceiver | None = None
        self._mode = "ok"
        self._lock = threading.Lock()
        self._listener: Any = None
        self.spans_received = 0

    def set_mode(self, mode: str) -> None:
        with self._lock:
            self._mode = mode
            if self._receiver is not None:
                self.spans_received += len(self._receiver.spans())
                self._receiver.stop()
                self._receiver = None
            if mode in ("ok", "hang"):
                self._receiver = OtlpReceiver().start()
                if mode == "hang":
                    self._receiver.mode = "hang"

    def start(self) -> None:
        import socket

        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", self.port))
        self._listener.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()
        self.set_mode("ok")

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                receiver = self._receiver
            if receiver is None:  # refused: reset the connection at once
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", receiver.port))
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    def stop(self) -> None:
        self.set_mode("refused")
        self._listener.close()


def _pipe(source: Any, target: Any) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            target.sendall(data)
    for sock in (source, target):
        with contextlib.suppress(OSError):
            sock.close()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _percentiles(latencies: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(latencies, n=1000)
    return {
        "p50_ms": cuts[499] * 1000,
        "p99_ms": cuts[989] * 1000,
        "p999_ms": cuts[998] * 1000,
        "max_ms": max(latencies) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--flap-seconds", type=float, default=20.0, help="time in each collector state")
    parser.add_argument("--children", type=int, default=3, help="extra spans per request")
    parser.add_argument("--log", default="/tmp/otel_setup_soak.log")
    args = parser.parse_args()

    collector = FlappingCollector()
    collector.start()
    port = free_port()
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}",
        "OTEL_TRACES_SAMPLER": "always_on",
        "OTEL_METRICS_EXPORTER": "prometheus,otlp",
        "OTEL_METRIC_EXPORT_INTERVAL": "5000",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_SETUP_REQUEST_LOG_LEVEL": "off",
    }
    argv = [str(BIN / "uvicorn"), APP, "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    states = itertools.cycle(["ok", "hang", "refused"])
    minutes: list[dict[str, Any]] = []
    everything: list[float] = []
    with server(argv, env=env, ready_url=f"http://127.0.0.1:{port}/health", log_path=Path(args.log)) as process:
        path = f"/items/{{index}}?children={args.children}"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for index in range(200):  # warm-up
                client.get(path.format(index=index))
            rss_start = _rss_mb(process.pid)
            end = time.monotonic() + args.minutes * 60
            next_flap = time.monotonic()
            next_report = time.monotonic() + 60
            window: list[float] = []
            errors = 0
            index = 0
            while time.monotonic() < end:
                if time.monotonic() >= next_flap:
                    collector.set_mode(next(states))
                    next_flap += args.flap_seconds
                started = time.perf_counter()
                status = client.get(path.format(index=index)).status_code
                window.append(time.perf_counter() - started)
                errors += status != 200
                index += 1
                if time.monotonic() >= next_report or time.monotonic() >= end:
                    rss = round(_rss_mb(process.pid), 1)
                    row = {"minute": len(minutes) + 1, "requests": len(window), "rss_mb": rss}
                    row.update({k: round(v, 2) for k, v in _percentiles(window).items()})
                    minutes.append(row)
                    print(json.dumps(row), flush=True)
                    everything += window
                    window = []
                    next_report += 60
            metrics = client.get("/metrics").text
    collector.stop()
    dropped = [
        line
        for line in metrics.splitlines()
        if line.startswith(("otel_sdk_processor_span_processed_total", "otel_sdk_exporter_span_exported_total"))
    ]
    summary = {
        "requests": len(everything),
        "failed_requests": errors,
        "rss_start_mb": round(rss_start, 1),
        "rss_end_mb": minutes[-1]["rss_mb"] if minutes else None,
        "rss_growth_mb": round(minutes[-1]["rss_mb"] - rss_start, 1) if minutes else None,
        **{k: round(v, 2) for k, v in _percentiles(everything).items()},
        "spans_received": collector.spans_received,
    }
    print(json.dumps(summary, indent=2))
    print("\n".join(dropped))


if __name__ == "__main__":
    main()
