"""Prove the test OTLP receiver against the real SDK exporters.

Every other wire-level test trusts this receiver to decode what an
OpenTelemetry Collector would see, so it is checked here end to end: real
exporters, real sockets, real protobuf, and the fault modes that reliability
tests depend on.
"""

from __future__ import annotations

import gzip
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence

import pytest
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support.otlp_receiver import OtlpReceiver, ReceivedPoint, ReceivedSpan

# Loads the fixture when this module runs without the suite's conftest;
# harmless when the conftest already registered the plugin.
pytest_plugins = ["tests.support.fixtures"]

RESOURCE = Resource.create({"service.name": "receiver-selftest", "deployment.environment.name": "test"})


def _send_parent_and_child(exporter: SpanExporter) -> None:
    """Emit a SERVER parent with a CLIENT child through a BatchSpanProcessor and flush it."""
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=50))
    tracer = provider.get_tracer("receiver.selftest", "1.0")
    try:
        with tracer.start_as_current_span("GET /items/{id}", kind=trace.SpanKind.SERVER) as parent:
            parent.set_attribute("http.request.method", "GET")
            parent.set_attribute("http.response.status_code", 200)
            with tracer.start_as_current_span("SELECT items", kind=trace.SpanKind.CLIENT) as child:
                child.set_attributes(
                    {
                        "db.system.name": "postgresql",
                        "db.cached": False,
                        "db.latency_ratio": 0.25,
                        "db.tables": ["items", "prices"],
                    }
                )
                child.add_event("retry", {"attempt": 2})
                child.set_status(trace.Status(trace.StatusCode.ERROR, "connection reset"))
        assert provider.force_flush(5_000)
    finally:
        provider.shutdown()


def _finished_spans(count: int = 1) -> Sequence[ReadableSpan]:
    """Produce finished spans without any network, for driving an exporter directly."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("receiver.selftest")
    for index in range(count):
        with tracer.start_as_current_span(f"op-{index}"):
            pass
    provider.shutdown()
    return memory.get_finished_spans()


def _assert_parent_and_child(spans: Sequence[ReceivedSpan]) -> None:
    by_name = {span.name: span for span in spans}
    parent, child = by_name["GET /items/{id}"], by_name["SELECT items"]

    assert parent.kind == "SERVER" and child.kind == "CLIENT"
    assert len(parent.trace_id) == 32 and len(parent.span_id) == 16
    assert parent.parent_span_id == ""
    assert child.trace_id == parent.trace_id
    assert child.parent_span_id == parent.span_id

    assert parent.attributes == {"http.request.method": "GET", "http.response.status_code": 200}
    assert child.attributes == {
        "db.system.name": "postgresql",
        "db.cached": False,
        "db.latency_ratio": 0.25,
        "db.tables": ["items", "prices"],
    }
    assert child.status_code == "ERROR" and child.status_message == "connection reset"
    assert parent.status_code == "UNSET"
    assert [event["name"] for event in child.events] == ["retry"]
    assert child.events[0]["attributes"] == {"attempt": 2}

    assert parent.resource["service.name"] == "receiver-selftest"
    assert parent.resource["deployment.environment.name"] == "test"
    assert parent.scope_name == "receiver.selftest"
    assert 0 < parent.start_ns <= child.start_ns <= child.end_ns <= parent.end_ns


def test_http_protobuf_traces_are_decoded(otlp_receiver: OtlpReceiver) -> None:
    exporter = OTLPSpanExporter(
        endpoint=f"{otlp_receiver.endpoint}/v1/traces",
        headers={"x-tenant": "acme"},
        compression=Compression.Gzip,
    )
    _send_parent_and_child(exporter)

    assert otlp_receiver.wait_for(lambda r: len(r.spans()) >= 2, timeout=5)
    _assert_parent_and_child(otlp_receiver.spans())

    (request,) = otlp_receiver.requests("traces")
    assert request.transport == "http" and request.path == "/v1/traces"
    assert request.headers["user-agent"].startswith("OTel-OTLP-Exporter-Python/")
    assert request.headers["x-tenant"] == "acme"
    assert request.content_type == "application/x-protobuf"
    assert request.content_encoding == "gzip"
    assert otlp_receiver.errors() == []


def test_grpc_traces_are_decoded(otlp_grpc_receiver: OtlpReceiver) -> None:
    otlp_receiver = otlp_grpc_receiver
    exporter = GrpcSpanExporter(endpoint=otlp_receiver.grpc_endpoint, headers={"x-tenant": "acme"}, timeout=5)
    _send_parent_and_child(exporter)

    assert otlp_receiver.wait_for(lambda r: len(r.spans()) >= 2, timeout=5)
    _assert_parent_and_child(otlp_receiver.spans())

    (request,) = otlp_receiver.requests("traces")
    assert request.transport == "grpc"
    assert request.headers["x-tenant"] == "acme"
    assert "OTel-OTLP-Exporter-Python/" in request.headers["user-agent"]


def test_http_metrics_are_decoded(otlp_receiver: OtlpReceiver) -> None:
    exporter = OTLPMetricExporter(endpoint=f"{otlp_receiver.endpoint}/v1/metrics")
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=60_000)
    provider = MeterProvider(resource=RESOURCE, metric_readers=[reader])
    meter = provider.get_meter("receiver.selftest")
    try:
        requests_counter = meter.create_counter("app.requests", unit="{request}")
        requests_counter.add(3, {"route": "/items"})
        requests_counter.add(2, {"route": "/items"})
        duration = meter.create_histogram("app.duration", unit="s")
        duration.record(0.004, {"route": "/items"})
        duration.record(0.3, {"route": "/items"})
        meter.create_gauge("app.queue_depth").set(7.5)
        assert provider.force_flush(5_000)
    finally:
        provider.shutdown()

    assert otlp_receiver.wait_for(lambda r: len(r.metric_points()) >= 3, timeout=5)
    points: dict[str, ReceivedPoint] = {p.name: p for p in otlp_receiver.metric_points()}

    counter = points["app.requests"]
    assert counter.kind == "sum" and counter.value == 5
    assert counter.is_monotonic is True and counter.temporality == "CUMULATIVE"
    assert counter.attributes == {"route": "/items"} and counter.unit == "{request}"
    assert counter.resource["service.name"] == "receiver-selftest"
    assert counter.scope_name == "receiver.selftest"

    histogram = points["app.duration"]
    assert histogram.kind == "histogram" and histogram.value is None
    assert histogram.count == 2 and histogram.sum == pytest.approx(0.304)
    assert sum(histogram.bucket_counts) == 2
    assert len(histogram.bucket_counts) == len(histogram.explicit_bounds) + 1
    assert histogram.min == pytest.approx(0.004) and histogram.max == pytest.approx(0.3)

    gauge = points["app.queue_depth"]
    assert gauge.kind == "gauge" and gauge.value == 7.5 and gauge.temporality == ""


def test_http_logs_are_decoded_with_trace_context(otlp_receiver: OtlpReceiver) -> None:
    logger_provider = LoggerProvider(resource=RESOURCE)
    logger_provider.add_log_record_processor(
        BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"{otlp_receiver.endpoint}/v1/logs"), schedule_delay_millis=50)
    )
    tracer_provider = TracerProvider(resource=RESOURCE)
    try:
        with tracer_provider.get_tracer("receiver.selftest").start_as_current_span("work") as span:
            logger_provider.get_logger("receiver.selftest").emit(
                body="order placed",
                severity_number=SeverityNumber.WARN,
                severity_text="WARN",
                attributes={"order.id": 42},
            )
            expected_trace_id = format(span.get_span_context().trace_id, "032x")
            expected_span_id = format(span.get_span_context().span_id, "016x")
        assert logger_provider.force_flush(5_000)
    finally:
        logger_provider.shutdown()
        tracer_provider.shutdown()

    assert otlp_receiver.wait_for(lambda r: len(r.log_records()) >= 1, timeout=5)
    (record,) = otlp_receiver.log_records()
    assert record.body == "order placed"
    assert record.severity_text == "WARN" and record.severity_number == SeverityNumber.WARN.value
    assert record.attributes == {"order.id": 42}
    assert (record.trace_id, record.span_id) == (expected_trace_id, expected_span_id)
    assert record.resource["service.name"] == "receiver-selftest"


def _nested_any_value_request() -> ExportTraceServiceRequest:
    nested = AnyValue(
        kvlist_value=KeyValueList(
            values=[
                KeyValue(key="flag", value=AnyValue(bool_value=True)),
                KeyValue(key="list", value=AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=1)]))),
            ]
        )
    )
    span = Span(
        trace_id=bytes(range(16)),
        span_id=bytes(range(8)),
        name="manual",
        kind=Span.SPAN_KIND_CONSUMER,
        attributes=[
            KeyValue(key="s", value=AnyValue(string_value="x")),
            KeyValue(key="d", value=AnyValue(double_value=1.5)),
            KeyValue(key="b", value=AnyValue(bytes_value=b"\x00\xff")),
            KeyValue(key="kv", value=nested),
            KeyValue(key="empty", value=AnyValue()),
        ],
    )
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])])


def _post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_any_value_variants_and_json_encoding(otlp_receiver: OtlpReceiver) -> None:
    message = _nested_any_value_request()
    url = f"{otlp_receiver.endpoint}/v1/traces"
    gzipped = gzip.compress(message.SerializeToString())
    assert _post(url, gzipped, {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}) == 200

    # OTLP/JSON carries ids as hex strings, unlike protobuf's default JSON mapping.
    document = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-client"}}]},
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b174",
                                "name": "json-span",
                                "kind": 2,
                                "attributes": [{"key": "n", "value": {"intValue": "7"}}],
                            }
                        ]
                    }
                ],
            }
        ]
    }
    assert _post(url, json.dumps(document).encode(), {"Content-Type": "application/json"}) == 200
    assert _post(url, b"\x0a\xff\xff", {"Content-Type": "application/x-protobuf"}) == 400
    assert _post(f"{otlp_receiver.endpoint}/v1/nope", b"", {"Content-Type": "application/x-protobuf"}) == 404

    manual, from_json = otlp_receiver.spans()
    assert manual.kind == "CONSUMER" and manual.trace_id == bytes(range(16)).hex()
    assert manual.attributes == {
        "s": "x",
        "d": 1.5,
        "b": b"\x00\xff",
        "kv": {"flag": True, "list": [1]},
        "empty": None,
    }
    assert from_json.trace_id == "5b8efff798038103d269b633813fc60c"
    assert from_json.span_id == "eee19b7ec3c1b174"
    assert from_json.kind == "SERVER" and from_json.attributes == {"n": 7}
    assert from_json.resource == {"service.name": "json-client"}
    assert len(otlp_receiver.errors()) == 2  # the undecodable body and the unknown path

    otlp_receiver.clear()
    assert otlp_receiver.spans() == [] and otlp_receiver.request_count() == 0
    assert otlp_receiver.wait_for(lambda r: r.request_count() > 0, timeout=0.1) is False


def test_hang_mode_times_out_client_and_stop_is_prompt() -> None:
    spans = _finished_spans()
    with OtlpReceiver() as receiver:
        receiver.mode = "hang"
        exporter = OTLPSpanExporter(endpoint=f"{receiver.endpoint}/v1/traces", timeout=1)
        started = time.monotonic()
        result = exporter.export(spans)
        elapsed = time.monotonic() - started
        exporter.shutdown()  # type: ignore[no-untyped-call]

        assert result is SpanExportResult.FAILURE
        assert 0.9 <= elapsed < 2.5
        assert receiver.request_count("traces") >= 1
        assert all(r.mode == "hang" for r in receiver.requests())
        assert receiver.spans() == []  # never acknowledged, so never ingested

        stopping = time.monotonic()
        receiver.stop()
        assert time.monotonic() - stopping < 1.0


@pytest.fixture
def span_batch() -> Iterator[Sequence[ReadableSpan]]:
    yield _finished_spans(2)


def test_status_mode_with_retry_after_is_retried(
    otlp_receiver: OtlpReceiver, span_batch: Sequence[ReadableSpan]
) -> None:
    # Fail once with 503 + Retry-After, then recover: the exporter must wait
    # the advertised time, retry, and get the batch through.
    otlp_receiver.set_fault("status", status_code=503, retry_after=1, count=1)
    exporter = OTLPSpanExporter(endpoint=f"{otlp_receiver.endpoint}/v1/traces", timeout=5)
    try:
        result = exporter.export(span_batch)
    finally:
        exporter.shutdown()  # type: ignore[no-untyped-call]

    assert result is SpanExportResult.SUCCESS
    requests = otlp_receiver.requests("traces")
    assert len(requests) >= 2
    assert [r.mode for r in requests[:2]] == ["status", "ok"]
    first, second = otlp_receiver.arrival_times("traces")[:2]
    assert second - first >= 0.9  # Retry-After: 1 was honoured
    assert sorted(s.name for s in otlp_receiver.spans()) == ["op-0", "op-1"]


def test_grpc_status_mode_maps_to_retryable_code(
    otlp_grpc_receiver: OtlpReceiver, span_batch: Sequence[ReadableSpan]
) -> None:
    otlp_receiver = otlp_grpc_receiver
    otlp_receiver.set_fault("status", status_code=503, retry_after=0.2, count=1)
    exporter = GrpcSpanExporter(endpoint=otlp_receiver.grpc_endpoint, timeout=5)
    try:
        result = exporter.export(span_batch)
    finally:
        exporter.shutdown()

    assert result is SpanExportResult.SUCCESS
    assert [r.mode for r in otlp_receiver.requests("traces")] == ["status", "ok"]
    first, second = otlp_receiver.arrival_times("traces")
    assert second - first >= 0.15  # RetryInfo trailer was honoured
    assert len(otlp_receiver.spans()) == 2
