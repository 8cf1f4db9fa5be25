"""Run the example service against both stand-ins, all on 127.0.0.1, with one command.

    python -m examples.run_demo_stack            # serve until Ctrl-C
    python -m examples.run_demo_stack --smoke    # call every route once, check, and stop

The stand-ins get free ports unless given; the service listens on ``--port`` (8000). Telemetry
settings come from the environment as usual: set ``OTEL_EXPORTER_OTLP_ENDPOINT`` to send
traces to a collector; ``/metrics`` is served either way.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

import httpx

from examples.standins.ai_api import DEMO_API_KEY
from examples.standins.gw2_api import DEMO_KEY

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A port the OS considers free on loopback right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def start(args: list[str], env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a child in its own session so Ctrl-C reaches only us and we stop it in order."""
    return subprocess.Popen([sys.executable, *args], cwd=REPO_ROOT, env=env, start_new_session=True)


def wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url} did not start: the process exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGINT lets uvicorn run the lifespan shutdown (and flush telemetry); kill stragglers."""
    for process in reversed(processes):
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    for process in reversed(processes):
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def smoke(base: str) -> int:
    """Call each route once and compare with the expected status; 0 when all match."""
    key = {"X-GW2-Key": DEMO_KEY}
    calls: list[tuple[str, str, dict[str, object], int]] = [
        ("GET", "/api/account", {"headers": key}, 200),
        ("GET", "/api/account", {"headers": key}, 200),
        ("GET", "/api/account", {"headers": {"X-GW2-Key": "not-a-key"}}, 401),
        ("GET", "/api/characters/Aurora Lightbringer", {"headers": key}, 200),
        ("GET", "/api/characters/Nobody", {"headers": key}, 404),
        ("GET", "/api/characters/Flaky", {"headers": key}, 502),
        ("GET", "/api/items/19721", {}, 200),
        ("GET", "/api/items/30689", {}, 200),
        ("GET", "/api/items/1", {}, 404),
        ("POST", "/api/ai/build-advice", {"json": {"profession": "Guardian"}}, 200),
        ("GET", "/api/slow", {"params": {"seconds": 0.2}}, 200),
        ("GET", "/api/boom", {}, 500),
        ("GET", "/healthcare", {}, 200),
        ("GET", "/health", {}, 200),
        ("GET", "/ready", {}, 200),
        ("GET", "/metrics", {}, 200),
    ]
    failures = 0
    for method, path, kwargs, expected in calls:
        # A fresh connection per call: uvicorn closes the connection after an unhandled error.
        with httpx.Client(base_url=base, timeout=15.0) as client:
            status = client.request(method, path, **kwargs).status_code  # type: ignore[arg-type]
        mark = "ok " if status == expected else "BAD"
        failures += status != expected
        print(f"  {mark} {method:4} {path:36} {status} (expected {expected})")
    metrics = httpx.get(f"{base}/metrics", timeout=15.0).text
    if "http_server_request_duration_seconds" not in metrics:
        print("  BAD /metrics has no http_server_request_duration_seconds")
        failures += 1
    verdict = "all as expected" if not failures else f"{failures} unexpected"
    print(f"smoke: {len(calls)} calls, {verdict}")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the example service with its stand-ins.")
    parser.add_argument("--port", type=int, default=8000, help="the example service's port")
    parser.add_argument("--gw2-port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--ai-port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--smoke", action="store_true", help="call every route once, then stop")
    args = parser.parse_args(argv)
    gw2_port = args.gw2_port or free_port()
    ai_port = args.ai_port or free_port()
    base = f"http://{HOST}:{args.port}"

    env = {
        **os.environ,
        "GW2_API_BASE": f"http://{HOST}:{gw2_port}",
        "AI_API_BASE": f"http://{HOST}:{ai_port}/v1",
        "AI_API_KEY": os.environ.get("AI_API_KEY", DEMO_API_KEY),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    env.setdefault("OTEL_SERVICE_NAME", "gw2-app")
    env.setdefault("ENVIRONMENT", "development")

    def terminate(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)  # also when started with SIGINT ignored (`&`)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        processes.append(start(["-m", "examples.standins.gw2_api", "--port", str(gw2_port)], env))
        processes.append(start(["-m", "examples.standins.ai_api", "--port", str(ai_port)], env))
        processes.append(
            start(["-m", "uvicorn", "examples.gw2_app.main:app", "--host", HOST, "--port", str(args.port)], env)
        )
        wait_until_up(f"http://{HOST}:{gw2_port}/v2/items", processes[0])
        wait_until_up(f"http://{HOST}:{ai_port}/docs", processes[1])
        wait_until_up(f"{base}/health", processes[2])
        print(banner(base, env, gw2_port, ai_port), flush=True)
        if args.smoke:
            return smoke(base)
        while all(p.poll() is None for p in processes):
            time.sleep(0.5)
        print("a process exited; stopping the stack", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping…", flush=True)
        return 0
    finally:
        stop(processes)


def banner(base: str, env: Mapping[str, str], gw2_port: int, ai_port: int) -> str:
    otlp = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    traces = f"OTLP to {otlp}" if otlp else "off (set OTEL_EXPORTER_OTLP_ENDPOINT to export)"
    return "\n".join(
        [
            "",
            f"example service  {base}   (API docs: {base}/docs)",
            f"  metrics        {base}/metrics",
            f"  liveness       {base}/health",
            f"  readiness      {base}/ready",
            f"  traces         {traces}",
            f"GW2 stand-in     http://{HOST}:{gw2_port}   (demo key: send X-GW2-Key: {DEMO_KEY})",
            f"AI stand-in      http://{HOST}:{ai_port}/v1",
            "",
            f"try: curl -H 'X-GW2-Key: {DEMO_KEY}' {base}/api/account",
            "Ctrl-C stops everything.",
            "",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
