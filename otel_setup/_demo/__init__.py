"""``otel-setup demo``: the example service under load, then what its telemetry says.

Everything runs on ``127.0.0.1`` with no collector: the GW2 and AI stand-ins
are served from this process, the example service runs as a child process
(its own ``configure(app)``, its own stdout), and its spans are exported over
OTLP/HTTP to a receiver this process owns. The report is computed from the
service's ``/metrics``, the exported spans and the JSON lines it printed.

The example service and the stand-ins are written once, in the repository's
``examples/gw2_app`` and ``examples/standins``, where readers find them; the
build ships those directories as :mod:`otel_setup._demo.gw2_app` and
:mod:`otel_setup._demo.standins` (``package-dir`` in ``pyproject.toml``), so
the demo runs from an installed wheel as from a checkout.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

__all__ = ["DemoOptions", "run_demo"]

HOST = "127.0.0.1"
_NEEDED = ("uvicorn", "httpx", "sqlalchemy", "redis", "fakeredis")
_SERVICE = "otel_setup._demo.gw2_app"
_STANDINS = "otel_setup._demo.standins"


@dataclass(frozen=True)
class DemoOptions:
    duration: float = 20.0
    rps: float = 20.0
    sampling: float = 0.1
    keep_running: bool = False
    otlp_endpoint: str | None = None
    port: int = 0


def _standin(name: str) -> ModuleType:
    """A stand-in module, imported by name: its source lives under ``examples/``, outside type checking."""
    return importlib.import_module(f"{_STANDINS}.{name}")


def _missing() -> str | None:
    """Why the demo cannot run here, or None."""
    missing = [name for name in _NEEDED if importlib.util.find_spec(name) is None]
    if missing:
        return f"otel-setup demo needs {', '.join(missing)}: pip install 'otel_setup[examples]'"
    if importlib.util.find_spec(_SERVICE) is None or importlib.util.find_spec(_STANDINS) is None:
        # An editable install made before the example service was shipped in the package.
        return "otel-setup demo: this installation lacks the example service; reinstall otel_setup (pip install -e .)"
    return None


def _free_port(preferred: int = 0) -> int:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, preferred))
        except OSError:
            sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class _Standin:
    """A stand-in app served by uvicorn on a thread of this process."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = _free_port()
        config = uvicorn.Config(app, host=HOST, port=self.port, log_level="warning", log_config=None, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="otel-setup-demo-standin", daemon=True)

    def start(self) -> _Standin:
        self._thread.start()
        deadline = time.monotonic() + 10.0
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise SystemExit(f"a stand-in did not start on {HOST}:{self.port}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(5.0)


class _App:
    """The example service as a child process; its stdout lines are kept for the report."""

    def __init__(self, port: int, env: dict[str, str], cwd: str) -> None:
        self.port = port
        self.lines: list[str] = []
        self._process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", f"{_SERVICE}.main:app", "--host", HOST, "--port", str(port)],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # Ctrl-C reaches the demo, which stops the service in order
        )
        self._reader = threading.Thread(target=self._read, args=(self._process.stdout,), daemon=True)
        self._reader.start()

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _read(self, stream: TextIO | None) -> None:
        if stream is None:
            return
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def wait_until_up(self, timeout: float = 30.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._reader.join(1.0)
                tail = "\n".join(self.lines[-20:])
                raise SystemExit(f"the example service exited with {self._process.returncode}:\n{tail}")
            with suppress(httpx.TransportError):
                if httpx.get(f"{self.base}/health", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.1)
        raise SystemExit(f"the example service did not answer on {self.base} within {timeout:.0f} s")

    def stop(self) -> None:
        """SIGINT: uvicorn runs the lifespan shutdown, which flushes the telemetry."""
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
            try:
                self._process.wait(15.0)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._reader.join(2.0)


def _app_env(receiver: str, options: DemoOptions, gw2: int, ai: int, data_dir: str) -> dict[str, str]:
    """The parent's environment minus anything that would change the demo, plus its wiring."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OTEL_", "SENTRY_"))
        and name not in ("DATABASE_URL", "REDIS_URL", "GW2_API_BASE", "AI_API_BASE", "AI_API_KEY", "AI_MODEL")
    }
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            "DATABASE_URL": f"sqlite:///{Path(data_dir) / 'gw2_app.db'}",
            "GW2_API_BASE": f"http://{HOST}:{gw2}",
            "AI_API_BASE": f"http://{HOST}:{ai}/v1",
            "AI_API_KEY": _standin("ai_api").DEMO_API_KEY,
            "OTEL_SERVICE_NAME": "gw2-app",
            "ENVIRONMENT": "demo",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver,
            "OTEL_TRACES_SAMPLER_ARG": repr(options.sampling),
            # Pushed metrics only matter when a real collector receives a copy.
            "OTEL_METRICS_EXPORTER": "prometheus,otlp" if options.otlp_endpoint else "prometheus",
            "OTEL_METRIC_EXPORT_INTERVAL": "5000",
        }
    )
    return env


@contextmanager
def _stack(options: DemoOptions, data_dir: str) -> Iterator[tuple[_App, Any, _Standin, _Standin]]:
    from otel_setup._demo.receiver import DemoReceiver

    ai_api, gw2_api = _standin("ai_api"), _standin("gw2_api")
    receiver = DemoReceiver(forward_to=options.otlp_endpoint).start()
    # A small bucket, refilled faster than the steady GW2 call rate: only the
    # demo's deliberate burst runs into 429s.
    gw2 = _Standin(gw2_api.create_app(burst=12, refill_per_second=max(4.0, options.rps / 4), slow_seconds=1.0)).start()
    ai = _Standin(ai_api.create_app()).start()
    app: _App | None = None
    try:
        port = _free_port(options.port or 8000)
        app = _App(port, _app_env(receiver.endpoint, options, gw2.port, ai.port, data_dir), cwd=data_dir)
        app.wait_until_up()
        yield app, receiver, gw2, ai
    finally:
        if app is not None:
            app.stop()
        ai.stop()
        gw2.stop()
        receiver.stop()


def run_demo(options: DemoOptions, out: TextIO = sys.stdout) -> int:
    problem = _missing()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    from otel_setup._demo import report
    from otel_setup._demo.traffic import drive

    demo_key: str = _standin("gw2_api").DEMO_KEY
    with tempfile.TemporaryDirectory(prefix="otel-setup-demo-") as data_dir, _stack(options, data_dir) as stack:
        app, receiver, gw2, ai = stack
        print(
            f"example service on {app.base} (GW2 stand-in :{gw2.port}, AI stand-in :{ai.port}, "
            f"spans to {receiver.endpoint}); {options.rps:g} requests/s for {options.duration:g} s",
            file=sys.stderr,
        )
        started = time.monotonic()
        drive(app.base, demo_key, duration=options.duration, rps=options.rps)
        window = time.monotonic() - started
        import httpx

        scraped = httpx.get(f"{app.base}/metrics", timeout=10.0).text
        if options.keep_running:
            time.sleep(1.5)  # one batch interval of the span processor
        else:
            app.stop()  # the lifespan shutdown flushes the last spans
        findings = report.findings(
            report.parse_prometheus(scraped),
            receiver.spans(),
            [line for line in app.lines if line.startswith("{")],
            window_seconds=window,
            sampling_ratio=options.sampling,
        )
        out.write(report.render_report(findings))
        if receiver.forward_to:
            out.write(
                f"Forwarded to {receiver.forward_to}: {receiver.forwarded['ok']} payloads, "
                f"{receiver.forwarded['failed']} failed.\n"
            )
        out.flush()
        if options.keep_running:
            out.write(_urls(app.base, demo_key))
            out.flush()
            with suppress(KeyboardInterrupt):
                while True:
                    time.sleep(0.5)
            print("\nstopping…", file=sys.stderr)
    return 0


def _urls(base: str, key: str) -> str:
    return "\n".join(
        [
            "The service keeps running (Ctrl-C stops it):",
            f"  API docs    {base}/docs",
            f"  metrics     {base}/metrics",
            f"  liveness    {base}/health",
            f"  readiness   {base}/ready",
            f"  try         curl -H 'X-GW2-Key: {key}' {base}/api/account",
            "",
        ]
    )
