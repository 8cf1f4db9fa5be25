"""The package's metrics behave like SDK metrics: a user's readers and Views, temporality, exemplar filter.

With the default setup the request path records into pre-aggregated
instruments that the package's own readers collect, cumulative or (for the
OTLP reader, when asked) delta. A reader or View of the user's or another
exemplar filter hands the recording to the SDK's instruments, and these tests hold every such setting to what the SDK
itself would produce: every package metric and every point in the user's
reader, Views applied to the package's instruments, DELTA points on the OTLP
wire, exemplars as the filter says.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from opentelemetry.sdk.metrics import Histogram
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader, Metric
from opentelemetry.sdk.metrics.view import DropAggregation, ExplicitBucketHistogramAggregation, View
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

import otel_setup
from otel_setup._hotpath.metrics import FastHistogram, SdkHistogram
from otel_setup._integrations import fastapi as fastapi_integration
from tests.support.asgi import get_all
from tests.support.otlp_receiver import OtlpReceiver
from tests.support.polling import wait_until

DURATION = "http.server.request.duration"
ACTIVE = "http.server.active_requests"
DB_DURATION = "db.client.operation.duration"


def make_app(engine: Any = None) -> FastAPI:
    app = FastAPI(title="metrics-shop")

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        if engine is not None:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1")).scalar()
        return {"item_id": item_id}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom")

    return app


def metrics_of(reader: InMemoryMetricReader) -> dict[str, list[Metric]]:
    data = reader.get_metrics_data()
    found: dict[str, list[Metric]] = {}
    assert data is not None
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                found.setdefault(metric.name, []).append(metric)
    return found


def points(metric: Metric) -> list[Any]:
    return list(metric.data.data_points)


def prometheus(app: FastAPI) -> dict[str, list[tuple[dict[str, str], float]]]:
    (response,) = get_all(app, ["/metrics"])
    assert response.status_code == 200
    families: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            families.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return families


def test_a_users_reader_sees_every_package_metric_with_every_point(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    reader = InMemoryMetricReader()
    app = make_app(engine)
    telemetry = otel_setup.configure(
        app, metric_readers=[reader], sampling_ratio=1.0, sqlalchemy=otel_setup.SQLAlchemyOptions(engines=[engine])
    )
    statuses = [r.status_code for r in get_all(app, ["/items/1", "/items/2", "/items/3", "/boom"])]
    assert statuses == [200, 200, 200, 500]

    duration_instrument, _ = fastapi_integration._server_instruments[telemetry._providers.local_metrics]
    assert isinstance(duration_instrument, SdkHistogram)
    found = metrics_of(reader)
    (duration,) = found[DURATION]
    assert duration.unit == "s"
    by_route = {
        (p.attributes["http.route"], p.attributes["http.response.status_code"]): p.count for p in points(duration)
    }
    assert by_route == {("/items/{item_id}", 200): 3, ("/boom", 500): 1}
    assert (
        next(p for p in points(duration) if p.attributes["http.route"] == "/boom").attributes["error.type"]
        == "RuntimeError"
    )
    assert duration.data.aggregation_temporality is AggregationTemporality.CUMULATIVE
    (active,) = found[ACTIVE]
    assert [(p.attributes, p.value) for p in points(active)] == [
        ({"http.request.method": "GET", "url.scheme": "http"}, 0)
    ]
    (db,) = found[DB_DURATION]
    assert sum(p.count for p in points(db)) >= 3  # the three SELECTs (and any pool pre-ping)
    assert {p.attributes["db.system.name"] for p in points(db)} == {"postgresql"}
    # The package's own Prometheus reader is just as complete.
    families = prometheus(app)
    counts = {labels["http_route"]: value for labels, value in families["http_server_request_duration_seconds_count"]}
    assert counts == {"/items/{item_id}": 3.0, "/boom": 1.0}
    engine.dispose()


def test_views_apply_to_the_package_instruments() -> None:
    reader = InMemoryMetricReader()
    app = make_app()
    otel_setup.configure(
        app,
        metric_readers=[reader],
        views=[
            View(instrument_name=DURATION, name="request.latency", attribute_keys={"http.request.method"}),
            View(instrument_name=ACTIVE, name="requests.in_flight"),
            View(instrument_name="otel_setup.trace.buffer.dropped", aggregation=DropAggregation()),
        ],
    )
    get_all(app, ["/items/1", "/items/2"])
    found = metrics_of(reader)
    assert DURATION not in found and ACTIVE not in found
    latency = found["request.latency"]
    assert len(latency) == 1
    (point,) = points(latency[0])
    assert point.attributes == {"http.request.method": "GET"}
    assert point.count == 2
    assert "requests.in_flight" in found
    assert "otel_setup.trace.buffer.dropped" not in found
    # Views are the provider's: the Prometheus reader shows the same families.
    families = prometheus(app)
    assert "request_latency_seconds_count" in families or "request_latency_count" in families
    assert "http_server_request_duration_seconds_count" not in families
    assert not any(name.startswith("otel_setup_trace_buffer_dropped") for name in families)


def test_a_view_changes_the_bucket_layout() -> None:
    reader = InMemoryMetricReader()
    app = make_app()
    otel_setup.configure(
        app,
        metric_readers=[reader],
        views=[View(instrument_name=DURATION, aggregation=ExplicitBucketHistogramAggregation([0.5, 1.0]))],
    )
    get_all(app, ["/items/1"])
    (duration,) = metrics_of(reader)[DURATION]
    (point,) = points(duration)
    assert list(point.explicit_bounds) == [0.5, 1.0]
    assert list(point.bucket_counts) == [1, 0, 0]


def test_delta_temporality_over_otlp(otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta")
    app = make_app()
    telemetry = otel_setup.configure(
        app, otlp_endpoint=otlp_receiver.endpoint, metrics_exporter=["prometheus", "otlp"], keep="errors"
    )

    # Delta is the pre-aggregated instruments' own, not a reason to record through the SDK's.
    duration, _ = fastapi_integration._server_instruments[telemetry._providers.local_metrics]
    assert isinstance(duration, FastHistogram)

    def server_points() -> list[Any]:
        return [p for p in otlp_receiver.metric_points() if p.name == DURATION]

    get_all(app, ["/items/1", "/items/2"])
    assert telemetry.force_flush(5.0)
    assert wait_until(lambda: len(server_points()) >= 1, timeout=5)
    get_all(app, ["/items/3"])
    assert telemetry.force_flush(5.0)
    assert wait_until(lambda: len(server_points()) >= 2, timeout=5)
    first, second = server_points()[:2]
    assert (first.temporality, second.temporality) == ("DELTA", "DELTA")
    assert (first.count, second.count) == (2, 1)
    assert second.start_ns >= first.time_ns  # each point covers its own interval
    assert first.min is not None and second.min is not None and first.max is not None
    assert first.min <= first.max and second.sum == pytest.approx(second.min)  # one request: its own min and sum
    # Prometheus, scraped meanwhile from the same instruments, stays cumulative.
    families = prometheus(app)
    assert [value for _, value in families["http_server_request_duration_seconds_count"]] == [3.0]
    get_all(app, ["/items/4"])
    assert telemetry.force_flush(5.0)
    assert wait_until(lambda: len(server_points()) >= 3, timeout=5)
    assert server_points()[2].count == 1
    dropped = [p for p in otlp_receiver.metric_points() if p.name == "otel_setup.trace.buffer.dropped"]
    assert dropped and {p.temporality for p in dropped} == {"DELTA"}
    active = [p for p in otlp_receiver.metric_points() if p.name == ACTIVE]
    assert active and {p.temporality for p in active} == {"CUMULATIVE"}  # up-down counters stay cumulative


def test_a_readers_own_temporality_preference_is_honoured() -> None:
    reader = InMemoryMetricReader(preferred_temporality={Histogram: AggregationTemporality.DELTA})
    app = make_app()
    otel_setup.configure(app, metric_readers=[reader])
    get_all(app, ["/items/1", "/items/2"])
    (first,) = metrics_of(reader)[DURATION]
    get_all(app, ["/items/3"])
    (second,) = metrics_of(reader)[DURATION]
    assert first.data.aggregation_temporality is AggregationTemporality.DELTA
    assert [p.count for p in points(first)] == [2]
    assert [p.count for p in points(second)] == [1]


@pytest.mark.parametrize(("value", "expected"), [("always_off", False), ("trace_based", True), ("always_on", True)])
def test_the_exemplar_filter_is_honoured(
    otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    """The SDK's histogram reservoir keeps the last exemplar per bucket: one or two here, each an exported span."""
    monkeypatch.setenv("OTEL_METRICS_EXEMPLAR_FILTER", value)
    reader = InMemoryMetricReader()
    app = make_app()
    telemetry = otel_setup.configure(
        app, metric_readers=[reader], otlp_endpoint=otlp_receiver.endpoint, sampler="always_on"
    )
    get_all(app, ["/items/1", "/items/2"])
    (duration,) = metrics_of(reader)[DURATION]
    exemplars = [e for p in points(duration) for e in p.exemplars]
    assert bool(exemplars) is expected, exemplars
    if expected:
        assert telemetry.force_flush(5.0)
        assert otlp_receiver.wait_for(lambda r: len([s for s in r.spans() if s.kind == "SERVER"]) == 2)
        exported = {(s.trace_id, s.span_id) for s in otlp_receiver.spans() if s.kind == "SERVER"}
        assert {(f"{e.trace_id:032x}", f"{e.span_id:016x}") for e in exemplars} <= exported


def test_unsampled_requests_carry_no_exemplar_under_trace_based() -> None:
    reader = InMemoryMetricReader()
    app = make_app()
    otel_setup.configure(app, metric_readers=[reader], sampler="always_off", keep="none")
    get_all(app, ["/items/1", "/items/2"])
    (duration,) = metrics_of(reader)[DURATION]
    assert [p.count for p in points(duration)] == [2]
    assert [e for p in points(duration) for e in p.exemplars] == []


@pytest.mark.parametrize(
    ("keyword", "value"),
    [("metric_readers", ["not a reader"]), ("metric_readers", "reader"), ("views", [object()]), ("views", 3)],
)
def test_bad_readers_and_views_are_refused_by_name(keyword: str, value: Any) -> None:
    with pytest.raises(otel_setup.OtelSetupConfigError) as raised:
        otel_setup.configure(**{keyword: value})
    assert keyword in str(raised.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "weekly"), ("OTEL_METRICS_EXEMPLAR_FILTER", "sometimes")],
)
def test_bad_metric_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(otel_setup.OtelSetupConfigError) as raised:
        otel_setup.configure()
    message = str(raised.value)
    assert variable in message and value in message


def test_the_console_metric_exporter_shows_the_hot_path_instruments(capfd: pytest.CaptureFixture[str]) -> None:
    app = make_app()
    telemetry = otel_setup.configure(app, metrics_exporter="console", metric_export_interval=600_000)
    get_all(app, ["/items/1"])
    capfd.readouterr()
    assert telemetry.force_flush(5.0)
    printed = capfd.readouterr().out
    assert f'"name": "{DURATION}"' in printed
    assert f'"name": "{ACTIVE}"' in printed


def test_a_fast_histogram_serves_cumulative_and_delta_readers_from_one_state() -> None:
    histogram = FastHistogram("h", "s", "", (0.1, 1.0), ("route",))
    histogram.delta = True
    for value in (0.05, 0.5):
        histogram.record(value, ("/a",), trace_id=7, span_id=9)

    def point(delta: bool) -> Any:
        metric = histogram.collect(1_000, delta)
        assert metric is not None
        (only,) = metric.data.data_points
        return metric.data.aggregation_temporality, only

    temporality, cumulative = point(False)
    assert temporality is AggregationTemporality.CUMULATIVE
    assert (cumulative.count, list(cumulative.bucket_counts), cumulative.min, cumulative.max) == (
        2,
        [1, 1, 0],
        0.05,
        0.5,
    )
    temporality, delta = point(True)
    assert temporality is AggregationTemporality.DELTA
    assert (delta.count, list(delta.bucket_counts), delta.min, delta.max) == (2, [1, 1, 0], 0.05, 0.5)
    assert [e.trace_id for e in delta.exemplars] == [7, 7]
    histogram.record(2.0, ("/a",))
    _, delta = point(True)
    assert (delta.count, list(delta.bucket_counts), delta.min, delta.max, delta.sum) == (1, [0, 0, 1], 2.0, 2.0, 2.0)
    assert delta.exemplars == []
    assert histogram.collect(2_000, True) is None  # nothing new: no delta point
    _, cumulative = point(False)
    assert (cumulative.count, list(cumulative.bucket_counts), cumulative.min, cumulative.max) == (
        3,
        [1, 1, 1],
        0.05,
        2.0,
    )
