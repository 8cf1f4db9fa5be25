"""A loopback OTLP/HTTP receiver: the demo's own small collector.

The demo reports the spans the package *exported*, decoded from the real
protobuf payloads, rather than anything observed in the app's process; so what
it shows is what a collector would have received. Only traces are decoded;
every signal is accepted (answered ``200``) so the app's exporters never retry,
and, when a real collector is given, every payload is forwarded to it as is.
"""

from __future__ import annotations

import gzip
import http.client
import logging
import queue
import threading
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

__all__ = ["DemoReceiver", "ExportedSpan"]

_log = logging.getLogger("otel_setup.demo")
_SIGNALS = ("traces", "metrics", "logs")


@dataclass(frozen=True)
class ExportedSpan:
    """One span as it arrived on the wire."""

    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str
    start_ns: int
    end_ns: int
    status: str
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


def _value(value: Any) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_value(item) for item in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, which) if which else None


def decode_spans(body: bytes) -> list[ExportedSpan]:
    """Spans of one ``ExportTraceServiceRequest`` (protobuf bytes)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

    request: Any = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans: list[ExportedSpan] = []
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ExportedSpan(
                        name=span.name,
                        kind=Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        status=Status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),
                        attributes={kv.key: _value(kv.value) for kv in span.attributes},
                    )
                )
    return spans


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        signal = self.path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            if signal not in _SIGNALS:
                raise ValueError(f"unknown OTLP path {self.path}")
            self.server.owner.accept(signal, body, self.headers.get("Content-Type", "application/x-protobuf"))
        except Exception as error:  # noqa: BLE001 - a bad payload is reported, never fatal to the demo
            self.server.owner.errors.append(f"{self.path}: {error}")
            self.send_response(400)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: the demo's output is its report."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: DemoReceiver


class DemoReceiver:
    """OTLP/HTTP on ``127.0.0.1``; ``spans()`` returns what arrived so far.

    ``forward_to`` (a collector's OTLP/HTTP base URL) receives a copy of every
    payload, from a background thread, so a slow or absent collector never
    holds up the app's exporter.
    """

    def __init__(self, forward_to: str | None = None) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="otel-setup-demo-receiver", daemon=True)
        self._lock = threading.Lock()
        self._spans: list[ExportedSpan] = []
        self.errors: list[str] = []
        self.payloads: dict[str, int] = dict.fromkeys(_SIGNALS, 0)
        self.forward_to = forward_to.rstrip("/") if forward_to else None
        self.forwarded: dict[str, int] = {"ok": 0, "failed": 0}
        self._outbox: queue.Queue[tuple[str, bytes, str] | None] = queue.Queue(maxsize=1000)
        self._forwarder: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> DemoReceiver:
        self._thread.start()
        if self.forward_to:
            self._forwarder = threading.Thread(target=self._forward, name="otel-setup-demo-forward", daemon=True)
            self._forwarder.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._forwarder is not None:
            self._outbox.put(None)
            self._forwarder.join(5.0)

    def accept(self, signal: str, body: bytes, content_type: str) -> None:
        spans = decode_spans(body) if signal == "traces" and "json" not in content_type else []
        with self._lock:
            self.payloads[signal] += 1
            self._spans.extend(spans)
        if self.forward_to:
            try:
                self._outbox.put_nowait((signal, body, content_type))
            except queue.Full:
                self.forwarded["failed"] += 1

    def spans(self) -> list[ExportedSpan]:
        with self._lock:
            return list(self._spans)

    def _forward(self) -> None:
        assert self.forward_to is not None
        base = urlsplit(self.forward_to)
        while (item := self._outbox.get()) is not None:
            signal, body, content_type = item
            connection_class = http.client.HTTPSConnection if base.scheme == "https" else http.client.HTTPConnection
            connection = connection_class(base.hostname or "127.0.0.1", base.port, timeout=2.0)
            try:
                connection.request("POST", f"{base.path.rstrip('/')}/v1/{signal}", body, {"Content-Type": content_type})
                ok = connection.getresponse().status < 300
            except OSError:
                ok = False
            finally:
                connection.close()
            self.forwarded["ok" if ok else "failed"] += 1
