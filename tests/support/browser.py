"""What the real-browser tests need around Debian's Chromium: the built page, its hosts, the browser.

* :func:`built_frontend` runs ``scripts/build-frontend`` (a no-op when nothing changed) and
  returns ``examples/frontend/dist``.
* :class:`StaticSite` serves that build on its own loopback origin, with ``/config.js``
  written from a dict the test sets: the deployment file the page reads before it starts.
* :class:`ThirdParty` is a host the page reads that is not the API (a public status feed);
  it records every request's headers and allows any CORS request, so a trace header sent
  there would arrive rather than be stopped by a failed preflight.
* :func:`launch_chromium` starts the system Chromium through Playwright (no downloaded build).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Playwright

ROOT = Path(__file__).resolve().parents[2]
FRONTEND = ROOT / "examples" / "frontend"

# Without the background-networking switches Chromium calls Google's services at start.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
]


def built_frontend() -> Path:
    result = subprocess.run(
        [str(ROOT / "scripts" / "build-frontend")], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, f"scripts/build-frontend failed:\n{result.stdout}\n{result.stderr}"
    dist = FRONTEND / "dist"
    assert (dist / "index.html").is_file(), f"no build in {dist}"
    return dist


def chromium_executable() -> str:
    path = shutil.which("chromium")
    assert path, "Debian's chromium is not installed (scripts/test installs it: apt-get install chromium)"
    return path


def launch_chromium(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=chromium_executable(), headless=True, args=CHROMIUM_ARGS)


class _Server:
    def __init__(self, handler: type[SimpleHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class StaticSite(_Server):
    """The built page on its own origin; ``config`` becomes ``/config.js`` on every request."""

    def __init__(self, dist: Path) -> None:
        self.config: dict[str, Any] = {}
        site = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(dist), **kwargs)

            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/config.js":
                    super().do_GET()
                    return
                body = f"window.GW2_CONFIG = {json.dumps(site.config)};\n".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/javascript")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        super().__init__(Handler)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    """Names lowercased."""


class ThirdParty(_Server):
    """A host that is not the API; answers ``{"status": "ok"}`` and records what reached it."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        lock = threading.Lock()
        third_party = self

        class Handler(SimpleHTTPRequestHandler):
            def _record(self) -> None:
                with lock:
                    third_party.requests.append(
                        RecordedRequest(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
                    )

            def do_OPTIONS(self) -> None:
                self._record()
                self.send_response(204)
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Access-Control-Allow-Methods", "GET, POST")
                self.send_header("Access-Control-Allow-Headers", "*")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                self._record()
                body = b'{"status": "ok"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Access-Control-Allow-Origin", "*")
                # Without Timing-Allow-Origin: the page's Resource Timing must not see this.
                self.send_header("Server-Timing", "feed;dur=1.5")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        super().__init__(Handler)

    def recorded(self) -> list[RecordedRequest]:
        return list(self.requests)


@contextmanager
def running(server: _Server) -> Iterator[Any]:
    try:
        yield server
    finally:
        server.stop()
