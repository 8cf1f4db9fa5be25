"""One definition per metric name: every instrument the package creates agrees with the catalog.

Every SDK instrument (through the SDK's public ``Meter`` methods) and every pre-aggregated one
(as it joins the package's collection) is recorded while ``configure()`` builds everything
it can: an app, SQLAlchemy, Redis, httpx, GW2, GenAI, the process metrics, both batch processors
and the exporters' counters. Two instruments of one name with different units, kinds or bucket
layouts would be two families to Prometheus (the last scrape wins) and a conflict to the SDK.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import Meter

from otel_setup._core.catalog import CATALOG, spec
from otel_setup._hotpath import metrics as fast
from tests.support.otlp_receiver import OtlpReceiver

Definition = tuple[str, str, tuple[float, ...] | None]
"""(kind as the catalog names it, unit, bucket boundaries for histograms)"""

_SDK_KINDS = {
    "create_counter": "counter",
    "create_up_down_counter": "up-down counter",
    "create_histogram": "histogram",
    "create_gauge": "gauge",
    "create_observable_counter": "counter",
    "create_observable_up_down_counter": "up-down counter",
    "create_observable_gauge": "observable gauge",
}

# Entries whose instrument exists only under conditions this test does not create, and why.
ONLY_UNDER_CONDITIONS = {
    # Created only when SENTRY_DSN is set and sentry-sdk is installed.
    "otel_setup.sentry.events.dropped",
}


@pytest.fixture
def created(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, set[Definition]]]:
    """Every instrument created while the fixture is active, by name."""
    definitions: dict[str, set[Definition]] = {}

    def recording(method: str) -> Any:
        original = getattr(Meter, method)
        kind = _SDK_KINDS[method]

        signature = inspect.signature(original)

        def create(self: Meter, *args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(self, *args, **kwargs).arguments
            boundaries = bound.get("explicit_bucket_boundaries_advisory")
            layout = tuple(float(b) for b in boundaries) if boundaries is not None else None
            definitions.setdefault(bound["name"], set()).add((kind, bound.get("unit") or "", layout))
            return original(self, *args, **kwargs)

        return create

    for method in _SDK_KINDS:
        monkeypatch.setattr(Meter, method, recording(method))

    register = fast.LocalMetrics.register

    def registering(self: fast.LocalMetrics, scope: str, version: str, instrument: Any) -> None:
        if isinstance(instrument, fast.FastHistogram):
            kind, layout = "histogram", tuple(float(b) for b in instrument.boundaries)
        elif isinstance(instrument, fast.FastCounter):
            kind, layout = "counter", None
        else:
            kind, layout = "up-down counter", None
        definitions.setdefault(instrument.name, set()).add((kind, instrument.unit, layout))
        register(self, scope, version, instrument)

    monkeypatch.setattr(fast.LocalMetrics, "register", registering)
    yield definitions


def _configure_everything(monkeypatch: pytest.MonkeyPatch, tmp_path: Any, receiver: OtlpReceiver) -> None:
    pytest.importorskip("fakeredis")
    import fakeredis
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from sqlalchemy import create_engine, text

    import otel_setup

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_LOGS_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "prometheus,otlp")
    app = FastAPI()

    @app.get("/items/{item_id}")
    def item(item_id: int) -> dict[str, int]:
        return {"item_id": item_id}

    telemetry = otel_setup.configure(app, service_name="definitions")
    assert telemetry.enabled
    TestClient(app).get("/items/1")
    engine = create_engine(f"sqlite:///{tmp_path}/db.sqlite")
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    fakeredis.FakeRedis().get("k")
    telemetry.users.seen("account-1")


def test_every_instrument_has_the_one_definition_of_its_name(
    created: dict[str, set[Definition]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
    otlp_receiver: OtlpReceiver,
) -> None:
    _configure_everything(monkeypatch, tmp_path, otlp_receiver)
    catalog = {entry.name for entry in CATALOG}
    assert set(created) - catalog == set(), "instruments without a catalog entry"
    assert catalog - ONLY_UNDER_CONDITIONS - set(created) == set(), "catalog entries no instrument was created for"
    for name, definitions in sorted(created.items()):
        assert len(definitions) == 1, f"{name} is defined {len(definitions)} ways: {sorted(map(str, definitions))}"
        ((kind, unit, layout),) = definitions
        entry = spec(name)
        assert unit == entry.unit, name
        assert kind == entry.kind or {kind, entry.kind} <= {"gauge", "up-down counter"}, (name, kind, entry.kind)
        if entry.kind == "histogram":
            assert layout == tuple(float(b) for b in entry.buckets or ()), name
        else:
            assert layout is None, name


def test_database_duration_has_one_bucket_layout_for_sql_and_redis(
    created: dict[str, set[Definition]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
    otlp_receiver: OtlpReceiver,
) -> None:
    _configure_everything(monkeypatch, tmp_path, otlp_receiver)
    (definition,) = created["db.client.operation.duration"]
    assert definition == ("histogram", "s", (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0))
