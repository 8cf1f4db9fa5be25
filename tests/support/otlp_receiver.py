"""In-process OTLP receiver used by the test suite as a stand-in for a Collector.

Tests that only inspect in-memory exporters prove that spans were *created*;
they do not prove that what leaves the process is what a real backend would
understand.  This receiver closes that gap while staying hermetic: it listens
on loopback only, speaks the real OTLP wire protocols (HTTP with protobuf or
JSON bodies, optionally gRPC), decodes payloads with the official
``opentelemetry-proto`` messages, and hands the results back to tests as plain
Python objects so assertions do not depend on protobuf APIs.

It also offers fault injection (hanging, error statuses with ``Retry-After``,
artificial delay) so reliability behaviour such as timeouts, retries and
prompt shutdown can be tested against a real socket instead of mocks.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import socket
import socketserver
import threading
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, NoReturn, Protocol, Self, TypeAlias, cast, get_args

# Typed via types-grpcio / types-protobuf when installed; still type-checks without them.
import grpc  # type: ignore[import-untyped, unused-ignore]
from google.protobuf import json_format  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.duration_pb2 import Duration  # type: ignore[import-untyped, unused-ignore]
from google.protobuf.message import DecodeError, Message  # type: ignore[import-untyped, unused-ignore]
from google.rpc.error_details_pb2 import RetryInfo  # type: ignore[import-untyped]  # no stubs published
from google.rpc.status_pb2 import Status  # type: ignore[import-untyped]
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Exemplar
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.proto.trace.v1.trace_pb2 import Status as SpanStatus

__all__ = [
    "FaultMode",
    "OtlpReceiver",
    "ReceivedLogRecord",
    "ReceivedPoint",
    "ReceivedRequest",
    "ReceivedSpan",
    "Signal",
    "decode_any_value",
]

Signal = Literal["traces", "metrics", "logs"]
"""OTLP signal names, matching the ``/v1/<signal>`` HTTP paths."""

FaultMode = Literal["ok", "hang", "status"]
"""``ok`` answers normally, ``hang`` never answers until ``stop()``, ``status`` answers with an error."""

_SIGNALS: tuple[Signal, ...] = get_args(Signal)
_FAULT_MODES: tuple[FaultMode, ...] = get_args(FaultMode)
_PATHS: dict[str, Signal] = {f"/v1/{signal}": signal for signal in _SIGNALS}

# Request/response message classes per signal; the receiver never needs more
# than "parse this request" and "build an empty response".
_REQUEST_TYPES: dict[Signal, type[Message]] = {
    "traces": trace_service_pb2.ExportTraceServiceRequest,
    "metrics": metrics_service_pb2.ExportMetricsServiceRequest,
    "logs": logs_service_pb2.ExportLogsServiceRequest,
}
_GRPC_METHODS: dict[Signal, str] = {
    "traces": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    "logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
}
_RESPONSE_TYPES: dict[Signal, type[Message]] = {
    "traces": trace_service_pb2.ExportTraceServiceResponse,
    "metrics": metrics_service_pb2.ExportMetricsServiceResponse,
    "logs": logs_service_pb2.ExportLogsServiceResponse,
}

# OTLP/JSON encodes these ids as hex, while protobuf's canonical JSON mapping
# expects base64 for ``bytes`` fields, so they are converted before parsing.
_HEX_ID_KEYS = frozenset({"traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id"})

# How an injected HTTP error status is expressed over gRPC, following the
# OTLP specification's mapping of retryable and non-retryable failures.
_HTTP_TO_GRPC: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.UNIMPLEMENTED,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

_LOOPBACK = "127.0.0.1"
_JOIN_TIMEOUT_S = 2.0

_GrpcServer: TypeAlias = grpc.Server


# --------------------------------------------------------------------------
# Decoded data, as plain Python objects
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as it arrived on the wire, flattened for easy assertions."""

    name: str
    kind: str
    """Span kind without the proto prefix: ``INTERNAL``, ``SERVER``, ``CLIENT``, ``PRODUCER``, ``CONSUMER``."""
    trace_id: str
    """32 lowercase hex characters."""
    span_id: str
    """16 lowercase hex characters."""
    parent_span_id: str
    """16 lowercase hex characters, or ``""`` for a root span."""
    attributes: dict[str, Any]
    status_code: str
    """``UNSET``, ``OK`` or ``ERROR``."""
    status_message: str
    events: list[dict[str, Any]]
    """Each event is ``{"name": str, "time_ns": int, "attributes": dict}``."""
    links: list[dict[str, Any]]
    """Each link is ``{"trace_id": str, "span_id": str, "attributes": dict}``."""
    resource: dict[str, Any]
    scope_name: str
    start_ns: int
    end_ns: int
    trace_state: str = ""
    """The W3C ``tracestate`` header value, ``""`` when empty."""


@dataclass(frozen=True)
class ReceivedPoint:
    """One metric data point, denormalised with its metric and resource."""

    name: str
    kind: str
    """``sum``, ``gauge``, ``histogram``, ``exponential_histogram`` or ``summary``."""
    attributes: dict[str, Any]
    value: float | None
    """The number of a ``sum`` or ``gauge`` point (an ``int`` for integer points); ``None`` for distributions."""
    count: int | None
    """Observation count of distribution points; ``None`` for ``sum``/``gauge``."""
    sum: float | None
    """Sum of observations of distribution points, when present."""
    bucket_counts: list[int]
    explicit_bounds: list[float]
    exemplars: list[dict[str, Any]]
    """Each exemplar is ``{"value", "time_ns", "trace_id", "span_id", "attributes"}``."""
    resource: dict[str, Any]
    scope_name: str
    unit: str
    is_monotonic: bool | None
    """Only meaningful for ``sum``; ``None`` otherwise."""
    temporality: str
    """``CUMULATIVE``, ``DELTA`` or ``""`` when the kind has no temporality (gauge, summary)."""
    description: str = ""
    start_ns: int = 0
    time_ns: int = 0
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class ReceivedLogRecord:
    """One log record as it arrived on the wire."""

    body: Any
    severity_text: str
    attributes: dict[str, Any]
    trace_id: str
    """32 hex characters, or ``""`` when the record is not correlated with a span."""
    span_id: str
    """16 hex characters, or ``""``."""
    resource: dict[str, Any]
    severity_number: int = 0
    scope_name: str = ""
    event_name: str = ""
    time_ns: int = 0
    observed_time_ns: int = 0


@dataclass(frozen=True)
class ReceivedRequest:
    """Transport-level facts about one export request, recorded on arrival.

    Every request is recorded, including those answered with an injected
    fault, so retry and timeout behaviour can be asserted from arrival times.
    """

    signal: Signal
    transport: Literal["http", "grpc"]
    path: str
    """HTTP path (``/v1/traces``) or full gRPC method name.

    e.g. ``/opentelemetry.proto.collector.trace.v1.TraceService/Export``.
    """
    headers: dict[str, str]
    """Header (or gRPC metadata) names lowercased; repeated headers joined with ``", "``."""
    raw_headers: list[tuple[str, str]]
    """Headers exactly as received, in order, with original casing."""
    arrived_at: float
    """``time.monotonic()`` when the request arrived (before the body was read)."""
    mode: FaultMode
    """Fault mode that was applied to this request."""
    content_type: str = ""
    content_encoding: str = ""
    body_size: int = 0
    """Size of the body as sent on the wire (compressed size when compressed)."""
    peer: str = ""
    """The client's ``host:port`` (HTTP): which connection the request came over."""


# --------------------------------------------------------------------------
# Protobuf -> Python decoding
# --------------------------------------------------------------------------


def decode_any_value(value: AnyValue) -> Any:
    """Convert an OTLP ``AnyValue`` into the equivalent Python value.

    Arrays become lists, kvlists become dicts, bytes stay bytes and an unset
    value becomes ``None``, mirroring what the SDK accepts as attribute values.
    """
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "bool_value":
        return value.bool_value
    if which == "int_value":
        return value.int_value
    if which == "double_value":
        return value.double_value
    if which == "array_value":
        return [decode_any_value(item) for item in value.array_value.values]
    if which == "kvlist_value":
        return _decode_attributes(value.kvlist_value.values)
    if which == "bytes_value":
        return bytes(value.bytes_value)
    return None


def _decode_attributes(attributes: Sequence[KeyValue]) -> dict[str, Any]:
    return {kv.key: decode_any_value(kv.value) for kv in attributes}


def _hex(raw: bytes) -> str:
    return raw.hex() if raw else ""


def _enum_suffix(full_name: str, prefix: str) -> str:
    return full_name.removeprefix(prefix)


def _decode_spans(request: trace_service_pb2.ExportTraceServiceRequest) -> list[ReceivedSpan]:
    spans: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        resource = _decode_attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        name=span.name,
                        kind=_enum_suffix(Span.SpanKind.Name(span.kind), "SPAN_KIND_"),
                        trace_id=_hex(span.trace_id),
                        span_id=_hex(span.span_id),
                        parent_span_id=_hex(span.parent_span_id),
                        attributes=_decode_attributes(span.attributes),
                        status_code=_enum_suffix(SpanStatus.StatusCode.Name(span.status.code), "STATUS_CODE_"),
                        status_message=span.status.message,
                        events=[
                            {
                                "name": event.name,
                                "time_ns": event.time_unix_nano,
                                "attributes": _decode_attributes(event.attributes),
                            }
                            for event in span.events
                        ],
                        links=[
                            {
                                "trace_id": _hex(link.trace_id),
                                "span_id": _hex(link.span_id),
                                "attributes": _decode_attributes(link.attributes),
                            }
                            for link in span.links
                        ],
                        resource=dict(resource),
                        scope_name=scope_spans.scope.name,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        trace_state=span.trace_state,
                    )
                )
    return spans


def _number(point: Any) -> float | None:
    which = point.WhichOneof("value")
    if which == "as_int":
        return int(point.as_int)
    if which == "as_double":
        return float(point.as_double)
    return None


def _decode_exemplars(exemplars: Sequence[Exemplar]) -> list[dict[str, Any]]:
    return [
        {
            "value": _number(exemplar),
            "time_ns": exemplar.time_unix_nano,
            "trace_id": _hex(exemplar.trace_id),
            "span_id": _hex(exemplar.span_id),
            "attributes": _decode_attributes(exemplar.filtered_attributes),
        }
        for exemplar in exemplars
    ]


def _temporality(value: int) -> str:
    if value == AggregationTemporality.AGGREGATION_TEMPORALITY_UNSPECIFIED:
        return ""
    return _enum_suffix(AggregationTemporality.Name(value), "AGGREGATION_TEMPORALITY_")


def _optional_float(message: Any, field_name: str) -> float | None:
    return float(getattr(message, field_name)) if message.HasField(field_name) else None


def _decode_metrics(request: metrics_service_pb2.ExportMetricsServiceRequest) -> list[ReceivedPoint]:
    points: list[ReceivedPoint] = []
    for resource_metrics in request.resource_metrics:
        resource = _decode_attributes(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            scope_name = scope_metrics.scope.name
            for metric in scope_metrics.metrics:
                common: dict[str, Any] = {
                    "name": metric.name,
                    "unit": metric.unit,
                    "description": metric.description,
                    "scope_name": scope_name,
                }
                kind = metric.WhichOneof("data")
                if kind in ("sum", "gauge"):
                    data = metric.sum if kind == "sum" else metric.gauge
                    for dp in data.data_points:
                        points.append(
                            ReceivedPoint(
                                kind=kind,
                                attributes=_decode_attributes(dp.attributes),
                                value=_number(dp),
                                count=None,
                                sum=None,
                                bucket_counts=[],
                                explicit_bounds=[],
                                exemplars=_decode_exemplars(dp.exemplars),
                                resource=dict(resource),
                                is_monotonic=metric.sum.is_monotonic if kind == "sum" else None,
                                temporality=(_temporality(metric.sum.aggregation_temporality) if kind == "sum" else ""),
                                start_ns=dp.start_time_unix_nano,
                                time_ns=dp.time_unix_nano,
                                **common,
                            )
                        )
                elif kind == "histogram":
                    for hdp in metric.histogram.data_points:
                        points.append(
                            ReceivedPoint(
                                kind=kind,
                                attributes=_decode_attributes(hdp.attributes),
                                value=None,
                                count=int(hdp.count),
                                sum=_optional_float(hdp, "sum"),
                                bucket_counts=[int(c) for c in hdp.bucket_counts],
                                explicit_bounds=[float(b) for b in hdp.explicit_bounds],
                                exemplars=_decode_exemplars(hdp.exemplars),
                                resource=dict(resource),
                                is_monotonic=None,
                                temporality=_temporality(metric.histogram.aggregation_temporality),
                                start_ns=hdp.start_time_unix_nano,
                                time_ns=hdp.time_unix_nano,
                                min=_optional_float(hdp, "min"),
                                max=_optional_float(hdp, "max"),
                                **common,
                            )
                        )
                elif kind == "exponential_histogram":
                    for edp in metric.exponential_histogram.data_points:
                        points.append(
                            ReceivedPoint(
                                kind=kind,
                                attributes=_decode_attributes(edp.attributes),
                                value=None,
                                count=int(edp.count),
                                sum=_optional_float(edp, "sum"),
                                bucket_counts=[],
                                explicit_bounds=[],
                                exemplars=_decode_exemplars(edp.exemplars),
                                resource=dict(resource),
                                is_monotonic=None,
                                temporality=_temporality(metric.exponential_histogram.aggregation_temporality),
                                start_ns=edp.start_time_unix_nano,
                                time_ns=edp.time_unix_nano,
                                min=_optional_float(edp, "min"),
                                max=_optional_float(edp, "max"),
                                **common,
                            )
                        )
                elif kind == "summary":
                    for sdp in metric.summary.data_points:
                        points.append(
                            ReceivedPoint(
                                kind=kind,
                                attributes=_decode_attributes(sdp.attributes),
                                value=None,
                                count=int(sdp.count),
                                sum=float(sdp.sum),
                                bucket_counts=[],
                                explicit_bounds=[],
                                exemplars=[],
                                resource=dict(resource),
                                is_monotonic=None,
                                temporality="",
                                start_ns=sdp.start_time_unix_nano,
                                time_ns=sdp.time_unix_nano,
                                **common,
                            )
                        )
    return points


def _decode_logs(request: logs_service_pb2.ExportLogsServiceRequest) -> list[ReceivedLogRecord]:
    records: list[ReceivedLogRecord] = []
    for resource_logs in request.resource_logs:
        resource = _decode_attributes(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                records.append(
                    ReceivedLogRecord(
                        body=decode_any_value(record.body),
                        severity_text=record.severity_text,
                        attributes=_decode_attributes(record.attributes),
                        trace_id=_hex(record.trace_id),
                        span_id=_hex(record.span_id),
                        resource=dict(resource),
                        severity_number=int(record.severity_number),
                        scope_name=scope_logs.scope.name,
                        event_name=record.event_name,
                        time_ns=record.time_unix_nano,
                        observed_time_ns=record.observed_time_unix_nano,
                    )
                )
    return records


def _hex_ids_to_base64(node: Any) -> Any:
    """Rewrite OTLP/JSON hex ids into the base64 form ``json_format`` expects."""
    if isinstance(node, dict):
        converted: dict[str, Any] = {}
        for key, value in node.items():
            if key in _HEX_ID_KEYS and isinstance(value, str) and value:
                try:
                    converted[key] = base64.b64encode(bytes.fromhex(value)).decode("ascii")
                except ValueError:
                    converted[key] = value  # Not hex: let json_format judge it.
            else:
                converted[key] = _hex_ids_to_base64(value)
        return converted
    if isinstance(node, list):
        return [_hex_ids_to_base64(item) for item in node]
    return node


def _decompress(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity", "none"):
        return body
    if encoding in ("gzip", "x-gzip"):
        return gzip.decompress(body)
    if encoding == "deflate":
        try:
            return zlib.decompress(body)
        except zlib.error:
            return zlib.decompress(body, -zlib.MAX_WBITS)  # raw deflate stream
    raise _UnsupportedEncodingError(encoding)


class _UnsupportedEncodingError(ValueError):
    pass


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


# --------------------------------------------------------------------------
# HTTP transport
# --------------------------------------------------------------------------


class _HttpServer(ThreadingHTTPServer):
    """Threaded server that does not wait for handler threads on close.

    The receiver joins its own handler threads with a bound in ``stop()``;
    the stock behaviour would block indefinitely on keep-alive connections
    that the client never closes.
    """

    daemon_threads = True
    block_on_close = False

    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver
        super().__init__((_LOOPBACK, 0), _HttpHandler)

    def server_bind(self) -> None:
        # Skip HTTPServer.server_bind's reverse DNS lookup (getfqdn), which
        # can be slow on hosts without working name resolution.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)


class _HttpHandler(BaseHTTPRequestHandler):
    """Routes OTLP/HTTP requests to the owning receiver."""

    protocol_version = "HTTP/1.1"  # keep-alive, like a real collector
    server: _HttpServer

    def setup(self) -> None:
        super().setup()
        self.server.receiver._track_connection(self.connection, threading.current_thread())

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.receiver._untrack_connection(self.connection, threading.current_thread())

    def do_POST(self) -> None:  # name fixed by BaseHTTPRequestHandler
        self.server.receiver._handle_http(self)

    def do_GET(self) -> None:
        self.send_plain(405, "only POST is supported")

    def do_PUT(self) -> None:
        self.send_plain(405, "only POST is supported")

    def send_plain(self, status: int, text: str) -> None:
        """Send a small text response; used for protocol errors, not for OTLP replies."""
        self.send_body(status, text.encode("utf-8"), "text/plain; charset=utf-8")

    def send_body(self, status: int, body: bytes, content_type: str, extra: Mapping[str, str] | None = None) -> None:
        """Send a complete response, tolerating a client that has already gone away."""
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def read_body(self) -> bytes:
        """Read the request body, supporting both Content-Length and chunked encoding."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # Consume optional trailers up to the terminating blank line.
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def log_message(self, format: str, *args: Any) -> None:  # signature fixed by base class
        """Silence per-request logging; tests assert on recorded requests instead."""


# --------------------------------------------------------------------------
# gRPC transport
# --------------------------------------------------------------------------


class _GrpcContext(Protocol):
    """The subset of ``grpc.ServicerContext`` the receiver uses."""

    def invocation_metadata(self) -> Sequence[tuple[str, str | bytes]]: ...

    def set_trailing_metadata(self, trailing_metadata: Sequence[tuple[str, str | bytes]]) -> None: ...

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn: ...


class _TraceServicer(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(self, request: Message, context: _GrpcContext) -> Message:  # name fixed by the generated servicer
        return self._receiver._handle_grpc("traces", request, context)


class _MetricsServicer(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(self, request: Message, context: _GrpcContext) -> Message:
        return self._receiver._handle_grpc("metrics", request, context)


class _LogsServicer(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(self, request: Message, context: _GrpcContext) -> Message:
        return self._receiver._handle_grpc("logs", request, context)


# --------------------------------------------------------------------------
# The receiver
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fault:
    mode: FaultMode
    status_code: int
    retry_after: str | None
    delay: float


@dataclass
class _Store:
    spans: list[ReceivedSpan] = field(default_factory=list)
    points: list[ReceivedPoint] = field(default_factory=list)
    logs: list[ReceivedLogRecord] = field(default_factory=list)
    requests: list[ReceivedRequest] = field(default_factory=list)
    messages: dict[Signal, list[Message]] = field(default_factory=lambda: {s: [] for s in _SIGNALS})
    errors: list[str] = field(default_factory=list)


class OtlpReceiver:
    """A loopback OTLP endpoint that records everything it accepts.

    Use it as a context manager (or call :meth:`start` / :meth:`stop`)::

        with OtlpReceiver(grpc=True) as receiver:
            exporter = OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces")
            ...
            assert receiver.wait_for(lambda r: len(r.spans()) >= 2)

    Only accepted payloads (answered ``200``/``OK``) appear in :meth:`spans`,
    :meth:`metric_points` and :meth:`log_records`, just as a real collector
    would only ingest what it acknowledged.  Every request, faulted or not,
    appears in :meth:`requests`.

    Fault injection is controlled by the public attributes ``mode``,
    ``status_code``, ``retry_after``, ``delay`` and ``fault_count`` (or
    atomically with :meth:`set_fault`) and may be changed while running:

    * ``mode = "hang"``: read the request, then never answer until
      :meth:`stop`; the client sees its own timeout.
    * ``mode = "status"``: answer ``status_code`` (default 503) with an
      optional ``Retry-After`` header (over gRPC: the mapped status code and
      a ``RetryInfo`` trailer).
    * ``delay``: seconds to wait before answering, in any mode.
    * ``fault_count``: when not ``None``, the fault applies to that many more
      requests and the receiver then reverts to ``"ok"``; this is how
      "fail once, then recover" scenarios are expressed.
    """

    def __init__(self, *, grpc: bool = False) -> None:
        """Create a receiver; nothing listens until :meth:`start`.

        Args:
            grpc: also serve OTLP/gRPC on a second ephemeral loopback port.
        """
        self._enable_grpc = grpc
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._store = _Store()
        self._started = False
        self._stopped = False
        self._http_server: _HttpServer | None = None
        self._http_thread: threading.Thread | None = None
        self._grpc_server: _GrpcServer | None = None
        self._grpc_executor: ThreadPoolExecutor | None = None
        self._grpc_port: int | None = None
        self._connections: dict[socket.socket, threading.Thread] = {}

        self._mode: FaultMode = "ok"
        self.status_code: int = 503
        self.retry_after: str | float | None = None
        self.delay: float = 0.0
        self.fault_count: int | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> Self:
        """Bind the ephemeral port(s) and start serving; idempotent."""
        with self._lock:
            if self._stopped:
                raise RuntimeError("an OtlpReceiver cannot be restarted after stop()")
            if self._started:
                return self
            self._started = True

        self._http_server = _HttpServer(self)
        self._http_thread = threading.Thread(
            target=self._http_server.serve_forever,
            kwargs={"poll_interval": 0.05},  # short poll so stop() is prompt
            name=f"otlp-receiver-http-{self.port}",
            daemon=True,
        )
        self._http_thread.start()

        if self._enable_grpc:
            self._grpc_executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="otlp-receiver-grpc")
            server = grpc.server(self._grpc_executor)
            trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceServicer(self), server)  # type: ignore[no-untyped-call]
            metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_MetricsServicer(self), server)  # type: ignore[no-untyped-call]
            logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_LogsServicer(self), server)  # type: ignore[no-untyped-call]
            self._grpc_port = int(server.add_insecure_port(f"{_LOOPBACK}:0"))
            server.start()
            self._grpc_server = server
        return self

    def stop(self) -> None:
        """Stop serving and release hung requests; idempotent and prompt.

        Hung and delayed handlers wait on an event that is set first, so
        shutdown never waits for a client's timeout.
        """
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            started = self._started
            self._changed.notify_all()
        self._stopping.set()
        if not started:
            return

        if self._grpc_server is not None:
            self._grpc_server.stop(grace=None).wait(_JOIN_TIMEOUT_S)
        if self._grpc_executor is not None:
            self._grpc_executor.shutdown(wait=False, cancel_futures=True)

        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
        if self._http_thread is not None:
            self._http_thread.join(_JOIN_TIMEOUT_S)

        # Keep-alive connections park their handler thread in a blocking
        # read; shutting the sockets down wakes those threads up.
        with self._lock:
            connections = list(self._connections.items())
        for conn, _thread in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + _JOIN_TIMEOUT_S
        for _conn, thread in connections:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------

    @property
    def port(self) -> int:
        """The OTLP/HTTP port (ephemeral)."""
        if self._http_server is None:
            raise RuntimeError("OtlpReceiver is not started")
        return self._http_server.server_port

    @property
    def endpoint(self) -> str:
        """Base OTLP/HTTP URL, e.g. ``http://127.0.0.1:40123`` (append ``/v1/traces`` etc.)."""
        return f"http://{_LOOPBACK}:{self.port}"

    @property
    def grpc_port(self) -> int:
        """The OTLP/gRPC port; raises if the receiver was created without ``grpc=True``."""
        if self._grpc_port is None:
            raise RuntimeError("OtlpReceiver was not started with grpc=True")
        return self._grpc_port

    @property
    def grpc_endpoint(self) -> str:
        """OTLP/gRPC endpoint, e.g. ``http://127.0.0.1:40124`` (the ``http`` scheme means insecure)."""
        return f"http://{_LOOPBACK}:{self.grpc_port}"

    # -- fault injection ---------------------------------------------------

    @property
    def mode(self) -> FaultMode:
        """Current fault mode: ``"ok"``, ``"hang"`` or ``"status"``."""
        return self._mode

    @mode.setter
    def mode(self, value: FaultMode) -> None:
        # Validated here so a typo fails in the test, not inside a handler thread.
        if value not in _FAULT_MODES:
            raise ValueError(f"unknown fault mode {value!r}; expected one of {_FAULT_MODES}")
        with self._lock:
            self._mode = value

    def set_fault(
        self,
        mode: FaultMode,
        *,
        status_code: int = 503,
        retry_after: str | float | None = None,
        delay: float = 0.0,
        count: int | None = None,
    ) -> None:
        """Set all fault parameters at once, so no request sees a half-applied change."""
        with self._lock:
            self.mode = mode
            self.status_code = status_code
            self.retry_after = retry_after
            self.delay = delay
            self.fault_count = count

    def reset_faults(self) -> None:
        """Return to normal operation (``mode="ok"``, no delay)."""
        self.set_fault("ok")

    def _next_fault(self) -> _Fault:
        """Snapshot the fault settings for one request and consume ``fault_count``."""
        with self._lock:
            mode = self._mode
            if mode != "ok" and self.fault_count is not None:
                if self.fault_count <= 0:
                    mode = self._mode = "ok"
                    self.fault_count = None
                else:
                    self.fault_count -= 1
            retry_after = None if self.retry_after is None else _format_retry_after(self.retry_after)
            return _Fault(mode=mode, status_code=self.status_code, retry_after=retry_after, delay=self.delay)

    # -- accessors ---------------------------------------------------------

    def spans(self) -> list[ReceivedSpan]:
        """All accepted spans, in arrival order."""
        with self._lock:
            return list(self._store.spans)

    def metric_points(self) -> list[ReceivedPoint]:
        """All accepted metric data points, in arrival order."""
        with self._lock:
            return list(self._store.points)

    def log_records(self) -> list[ReceivedLogRecord]:
        """All accepted log records, in arrival order."""
        with self._lock:
            return list(self._store.logs)

    def requests(self, signal: Signal | None = None) -> list[ReceivedRequest]:
        """Every request that arrived (optionally for one signal), including faulted ones."""
        with self._lock:
            return [r for r in self._store.requests if signal is None or r.signal == signal]

    def request_count(self, signal: Signal | None = None) -> int:
        """Number of requests that arrived, optionally for one signal."""
        return len(self.requests(signal))

    def arrival_times(self, signal: Signal | None = None) -> list[float]:
        """``time.monotonic()`` arrival time of each request, in arrival order."""
        return [r.arrived_at for r in self.requests(signal)]

    def export_requests(self, signal: Signal) -> list[Message]:
        """The accepted ``Export*ServiceRequest`` messages, for assertions the flat views cannot express."""
        with self._lock:
            return list(self._store.messages[signal])

    def errors(self) -> list[str]:
        """Requests rejected as malformed (bad path, encoding or payload); should stay empty."""
        with self._lock:
            return list(self._store.errors)

    def clear(self) -> None:
        """Forget all recorded data, requests and errors; fault settings are kept."""
        with self._lock:
            self._store = _Store()
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[OtlpReceiver], bool], timeout: float = 10.0) -> bool:
        """Wait until ``predicate(self)`` is true; return whether it became true in time.

        Exporters deliver asynchronously, so tests wait for an observable
        condition instead of sleeping a fixed amount.  The predicate is
        evaluated outside the receiver's lock, so it may call any accessor.
        """
        deadline = time.monotonic() + timeout
        while True:
            if predicate(self):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._changed:
                # Woken on every recorded request; the short cap covers a
                # notification that lands between the check and the wait.
                self._changed.wait(min(remaining, 0.05))

    # -- recording ---------------------------------------------------------

    def _record_request(self, request: ReceivedRequest) -> None:
        with self._lock:
            self._store.requests.append(request)
            self._changed.notify_all()

    def _record_error(self, message: str) -> None:
        with self._lock:
            self._store.errors.append(message)
            self._changed.notify_all()

    def _accept(self, signal: Signal, message: Message) -> None:
        """Decode an accepted export request and make it visible to tests."""
        spans: list[ReceivedSpan] = []
        points: list[ReceivedPoint] = []
        logs: list[ReceivedLogRecord] = []
        if signal == "traces":
            spans = _decode_spans(cast(trace_service_pb2.ExportTraceServiceRequest, message))
        elif signal == "metrics":
            points = _decode_metrics(cast(metrics_service_pb2.ExportMetricsServiceRequest, message))
        else:
            logs = _decode_logs(cast(logs_service_pb2.ExportLogsServiceRequest, message))
        with self._lock:
            self._store.messages[signal].append(message)
            self._store.spans.extend(spans)
            self._store.points.extend(points)
            self._store.logs.extend(logs)
            self._changed.notify_all()

    # -- connection tracking (HTTP) -----------------------------------------

    def _track_connection(self, conn: socket.socket, thread: threading.Thread) -> None:
        with self._lock:
            self._connections[conn] = thread

    def _untrack_connection(self, conn: socket.socket, thread: threading.Thread) -> None:
        with self._lock:
            self._connections.pop(conn, None)

    # -- request handling ----------------------------------------------------

    def _handle_http(self, handler: _HttpHandler) -> None:
        arrived_at = time.monotonic()
        path = handler.path.split("?", 1)[0]
        signal = _PATHS.get(path)
        raw_headers = [(name, value) for name, value in handler.headers.items()]
        content_type = handler.headers.get("Content-Type", "")
        content_encoding = handler.headers.get("Content-Encoding", "")

        try:
            body = handler.read_body()
        except (OSError, ValueError) as exc:
            self._record_error(f"{path}: could not read body: {exc}")
            handler.close_connection = True
            return

        if signal is None:
            self._record_error(f"unknown path {handler.path!r}")
            handler.send_plain(404, f"unknown OTLP path {path}")
            return

        fault = self._next_fault()
        self._record_request(
            ReceivedRequest(
                signal=signal,
                transport="http",
                path=path,
                headers=_merge_headers(raw_headers),
                raw_headers=raw_headers,
                arrived_at=arrived_at,
                mode=fault.mode,
                content_type=content_type,
                peer=f"{handler.client_address[0]}:{handler.client_address[1]}",
                content_encoding=content_encoding,
                body_size=len(body),
            )
        )

        if not self._apply_delay_and_hang(fault):
            # Stopped while delaying or hanging: drop the connection unanswered.
            handler.close_connection = True
            return

        is_json = _media_type(content_type) == "application/json"
        response_type = "application/json" if is_json else "application/x-protobuf"

        if fault.mode == "status":
            status = Status(code=_grpc_code_number(fault.status_code), message=f"injected HTTP {fault.status_code}")
            payload = json_format.MessageToJson(status).encode() if is_json else status.SerializeToString()
            extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
            handler.send_body(fault.status_code, payload, response_type, extra)
            return

        media_type = _media_type(content_type)
        if media_type not in ("", "application/x-protobuf", "application/protobuf", "application/json"):
            self._record_error(f"{path}: unsupported content type {content_type!r}")
            handler.send_plain(415, f"unsupported content type {content_type!r}")
            return

        try:
            message = self._parse(signal, _decompress(body, content_encoding), is_json)
        except _UnsupportedEncodingError:
            self._record_error(f"{path}: unsupported content encoding {content_encoding!r}")
            handler.send_plain(415, f"unsupported content encoding {content_encoding!r}")
            return
        except (DecodeError, json_format.ParseError, ValueError, OSError, EOFError, zlib.error) as exc:
            self._record_error(f"{path}: undecodable body: {exc}")
            bad = Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=str(exc))
            payload = json_format.MessageToJson(bad).encode() if is_json else bad.SerializeToString()
            handler.send_body(400, payload, response_type)
            return

        self._accept(signal, message)
        response = _RESPONSE_TYPES[signal]()
        payload = b"{}" if is_json else response.SerializeToString()
        handler.send_body(200, payload, response_type)

    @staticmethod
    def _parse(signal: Signal, data: bytes, is_json: bool) -> Message:
        message = _REQUEST_TYPES[signal]()
        if is_json:
            document = _hex_ids_to_base64(json.loads(data.decode("utf-8")))
            json_format.ParseDict(document, message, ignore_unknown_fields=True)
        else:
            message.ParseFromString(data)
        return message

    def _handle_grpc(self, signal: Signal, request: Message, context: _GrpcContext) -> Message:
        arrived_at = time.monotonic()
        raw_headers = [
            (key, value.decode("latin-1") if isinstance(value, bytes) else value)
            for key, value in context.invocation_metadata()
        ]
        fault = self._next_fault()
        self._record_request(
            ReceivedRequest(
                signal=signal,
                transport="grpc",
                path=_GRPC_METHODS[signal],
                headers=_merge_headers(raw_headers),
                raw_headers=raw_headers,
                arrived_at=arrived_at,
                mode=fault.mode,
                content_type="application/grpc",
                body_size=request.ByteSize(),
            )
        )
        if not self._apply_delay_and_hang(fault):
            context.abort(grpc.StatusCode.UNAVAILABLE, "receiver stopped")
        if fault.mode == "status":
            if fault.retry_after is not None:
                seconds = _retry_after_seconds(fault.retry_after)
                if seconds is not None:
                    info = RetryInfo(retry_delay=_duration(seconds))
                    context.set_trailing_metadata((("google.rpc.retryinfo-bin", info.SerializeToString()),))
            code = _HTTP_TO_GRPC.get(fault.status_code, grpc.StatusCode.UNKNOWN)
            context.abort(code, f"injected HTTP {fault.status_code}")
        self._accept(signal, request)
        return _RESPONSE_TYPES[signal]()

    def _apply_delay_and_hang(self, fault: _Fault) -> bool:
        """Block as the fault requires; return False when stopped meanwhile."""
        if fault.delay > 0 and self._stopping.wait(fault.delay):
            return False
        if fault.mode == "hang":
            self._stopping.wait()
            return False
        return not self._stopping.is_set()


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


def _merge_headers(raw: Sequence[tuple[str, str]]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for name, value in raw:
        key = name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return merged


def _format_retry_after(value: str | float) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _retry_after_seconds(value: str) -> float | None:
    try:
        seconds = float(value)
    except ValueError:
        return None  # HTTP-date form has no gRPC equivalent here
    return max(seconds, 0.0)


def _duration(seconds: float) -> Duration:
    whole = int(seconds)
    return Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))


def _grpc_code_number(http_status: int) -> int:
    code = _HTTP_TO_GRPC.get(http_status, grpc.StatusCode.UNKNOWN)
    return int(code.value[0])
