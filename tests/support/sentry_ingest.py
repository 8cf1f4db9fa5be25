"""A loopback Sentry ingest endpoint that decodes the real SDK's envelopes.

It answers ``POST /api/<project>/envelope/`` like Sentry does, and can be told
to rate-limit (429 with ``Retry-After`` and ``X-Sentry-Rate-Limits``) or to
hang, so the error path can be tested against a real socket.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
import zlib
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.polling import wait_until

__all__ = ["SentryIngest"]


def parse_envelope(body: bytes) -> list[tuple[dict[str, Any], Any]]:
    """(item header, payload) pairs; JSON payloads decoded."""
    lines = body.split(b"\n")
    items: list[tuple[dict[str, Any], Any]] = []
    index = 1  # line 0 is the envelope header
    while index < len(lines):
        if not lines[index].strip():
            index += 1
            continue
        header = json.loads(lines[index])
        length = header.get("length")
        if length is not None:
            rest = b"\n".join(lines[index + 1 :])
            payload_bytes = rest[:length]
            consumed = payload_bytes.count(b"\n") + 1
            index += 1 + consumed
        else:
            payload_bytes = lines[index + 1] if index + 1 < len(lines) else b""
            index += 2
        try:
            payload: Any = json.loads(payload_bytes)
        except ValueError:
            payload = payload_bytes
        items.append((header, payload))
    return items


class SentryIngest:
    def __init__(self) -> None:
        self.envelopes: list[list[tuple[dict[str, Any], Any]]] = []
        self.raw_bodies: list[bytes] = []
        self.arrivals: list[float] = []
        self.mode = "ok"  # ok | ratelimit | hang
        self.retry_after = 60
        self._lock = threading.Lock()
        self._stop = threading.Event()
        ingest = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                with ingest._lock:
                    ingest.arrivals.append(time.monotonic())
                    ingest.raw_bodies.append(body)
                    ingest.envelopes.append(parse_envelope(body))
                    mode = ingest.mode
                if mode == "hang":
                    ingest._stop.wait()
                    return
                if mode == "ratelimit":
                    self.send_response(429)
                    self.send_header("Retry-After", str(ingest.retry_after))
                    self.send_header("X-Sentry-Rate-Limits", f"{ingest.retry_after}::organization")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                answer = b'{"id":"00000000000000000000000000000000"}'
                self.send_response(200)
                # As Sentry's ingest does, so browser SDKs can read the answer.
                self.send_header("Access-Control-Allow-Origin", "*")
                self.send_header("Access-Control-Expose-Headers", "x-sentry-error, x-sentry-rate-limits, retry-after")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                try:
                    self.end_headers()
                    self.wfile.write(answer)
                except (BrokenPipeError, ConnectionResetError):
                    return  # a browser page closed before reading the answer; the envelope is recorded

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def dsn(self) -> str:
        return f"http://publickey0123456789@127.0.0.1:{self._server.server_address[1]}/42"

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                payload
                for envelope in self.envelopes
                for header, payload in envelope
                if header.get("type") == "event" and isinstance(payload, dict)
            ]

    def wait_for(self, predicate: Callable[[SentryIngest], bool], timeout: float = 10.0) -> bool:
        return wait_until(lambda: predicate(self), timeout, step=0.02)

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
