"""One integration contract: the registry drives configure(), the distro, doctor and the docs.

Also the typed status every integration reports, and a user's own upstream instrumented
through the public known-HTTP-API protocol, end to end against a loopback stand-in.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

import otel_setup
from examples.weather_api import WeatherApi, create_standin
from otel_setup import IntegrationStatus, OtelSetupConfigError
from otel_setup._core.configure import reset
from otel_setup._core.integration import InstrumentContext, Integration
from otel_setup._integrations import registry
from tests.support.otlp_receiver import OtlpReceiver
from tests.test_gw2 import points, serve

ROOT = Path(__file__).resolve().parents[1]
INTEGRATIONS_DOC = (ROOT / "docs" / "integrations.md").read_text()


def test_every_registered_integration_is_in_configure_the_distro_doctor_and_the_docs() -> None:
    from otel_setup._core.doctor import diagnose
    from otel_setup.distro import COVERED

    names = registry.names()
    assert len(set(names)) == len(names)
    telemetry = otel_setup.configure(contrib_instrumentations=False)
    assert list(telemetry.instrumentations) == list(names)
    assert all(isinstance(status, IntegrationStatus) for status in telemetry.instrumentations.values())
    reset()

    assert frozenset().union(*(i.replaces for i in registry.INTEGRATIONS)) == COVERED
    assert {"fastapi", "asgi", "starlette", "httpx", "system_metrics"} <= COVERED

    report = diagnose()
    assert set(names) <= set(report.instrumentations)
    for integration in registry.INTEGRATIONS:
        if integration.library is not None:
            assert report.instrumentations[integration.name]["supported"] == integration.library[1]

    start = INTEGRATIONS_DOC.index("\n", INTEGRATIONS_DOC.index("<!-- integrations:start")) + 1
    table = INTEGRATIONS_DOC[start : INTEGRATIONS_DOC.index("<!-- integrations:end -->")]
    assert table == registry.markdown_table(), "regenerate with: python -m otel_setup._integrations.registry"
    for name in names:
        assert f"| `{name}` |" in table


class _Fake(Integration):
    name = "fake"
    summary = "A test double."
    calls: ClassVar[list[str]] = []

    def instrument(self, context: InstrumentContext) -> IntegrationStatus:
        self.calls.append(f"instrument {context.settings.service_name}")
        return IntegrationStatus.on()

    def uninstrument(self) -> None:
        self.calls.append("uninstrument")


def test_adding_an_integration_to_the_list_is_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    """Instrumented in order, reported by name, in the startup line and doctor, uninstrumented at shutdown."""
    fake = _Fake()
    _Fake.calls.clear()
    monkeypatch.setattr(registry, "INTEGRATIONS", (*registry.INTEGRATIONS, fake))
    telemetry = otel_setup.configure(service_name="fake-test", contrib_instrumentations=False)
    assert _Fake.calls == ["instrument fake-test"]
    assert telemetry.instrumentations["fake"] == IntegrationStatus(True, "")
    from otel_setup._core.configure import wiring

    assert wiring(telemetry)["integrations"]["fake"] == "active"
    telemetry.shutdown()
    assert _Fake.calls == ["instrument fake-test", "uninstrument"]
    reset()

    _Fake.calls.clear()
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "fake")
    telemetry = otel_setup.configure(contrib_instrumentations=False)
    assert telemetry.instrumentations["fake"] == IntegrationStatus.off(
        "listed in OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"
    )
    telemetry.shutdown()
    assert _Fake.calls == [], "an integration that never ran is not uninstrumented"


def test_status_values_are_typed_with_a_readable_text() -> None:
    on, noted, off = IntegrationStatus.on(), IntegrationStatus.on("a note"), IntegrationStatus.off("why")
    assert (on.active, on.state, str(on)) == (True, "active", "active")
    assert str(noted) == "active (a note)" and noted.reason == "a note"
    assert (off.active, off.state, off.reason, str(off)) == (False, "off", "why", "off: why")
    assert off == "off: why" and on == "active" and on != off  # the earlier string states still compare
    assert hash(off) == hash("off: why")
    telemetry = otel_setup.configure(sentry_dsn="", disabled_instrumentations="redis")
    assert telemetry.instrumentations["sentry"] == IntegrationStatus.off("SENTRY_DSN not set")
    assert not telemetry.instrumentations["redis"].active
    assert json.loads(json.dumps({k: str(v) for k, v in telemetry.instrumentations.items()}))["redis"] == (
        "off: listed in OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"
    )


def test_a_wrong_integration_keyword_names_it() -> None:
    with pytest.raises(OtelSetupConfigError, match=r"redis='yes'.*None, False or RedisOptions"):
        otel_setup.configure(redis="yes")  # type: ignore[typeddict-item]
    with pytest.raises(OtelSetupConfigError, match="known_apis"):
        otel_setup.configure(known_apis=[object()])
    with pytest.raises(OtelSetupConfigError, match="known_apis"):
        otel_setup.configure(known_apis=[_Named("gw2")])  # a built-in's name


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name

    def handler(self, tracer_provider: Any, meter_provider: Any) -> Any:
        raise AssertionError("never instrumented")


def test_a_users_known_api_gets_template_spans_and_metrics(otlp_receiver: OtlpReceiver) -> None:
    """The docs' weather example: spans and metrics by endpoint template, never the city."""
    with serve(create_standin(quota=3)) as base:
        telemetry = otel_setup.configure(
            otlp_endpoint=otlp_receiver.endpoint, sampling_ratio=1.0, known_apis=[WeatherApi(base)]
        )
        assert telemetry.instrumentations["weather"] == IntegrationStatus.on()

        async def calls() -> list[int]:
            async with httpx.AsyncClient(base_url=base) as client:
                return [
                    (await client.get("/v1/forecast/Berlin")).status_code,
                    (await client.get("/v1/forecast/Atlantis?units=metric")).status_code,
                    (await client.get("/v1/forecast/Lisbon")).status_code,
                    (await client.get("/v1/forecast/Lisbon")).status_code,  # over the quota of 3
                ]

        assert asyncio.run(calls()) == [200, 404, 200, 429]
        telemetry.force_flush(5.0)
        assert otlp_receiver.wait_for(
            lambda r: (
                len([s for s in r.spans() if s.kind == "CLIENT"]) >= 4 and len(points(r, "weather.api.requests")) >= 3
            )
        )

    spans = [s for s in otlp_receiver.spans() if s.kind == "CLIENT"]
    assert [s.name for s in spans] == ["GET /v1/forecast/{city}"] * 4
    assert all(s.scope_name == "otel_setup.weather" for s in spans)
    port = int(base.rsplit(":", 1)[1])
    assert spans[0].attributes == {
        "http.request.method": "GET",
        "server.address": "127.0.0.1",
        "server.port": port,
        "url.template": "/v1/forecast/{city}",
        "url.scheme": "http",
        "url.full": f"{base}/v1/forecast/{{city}}",
        "http.response.status_code": 200,
        "network.protocol.version": "1.1",
    }
    assert spans[1].attributes["url.full"] == f"{base}/v1/forecast/{{city}}?units=metric"
    assert spans[1].status_code == "ERROR" and spans[1].attributes["error.type"] == "404"
    assert spans[3].attributes["weather.error.reason"] == "daily_quota"
    seen = repr([(s.name, s.attributes) for s in spans]) + repr([p.attributes for p in otlp_receiver.metric_points()])
    for city in ("Berlin", "Atlantis", "Lisbon"):
        assert city not in seen, f"{city} leaked into telemetry"

    counts = {
        (
            p.attributes["url.template"],
            p.attributes["http.response.status_code"],
            p.attributes.get("weather.error.reason"),
        ): p.value
        for p in points(otlp_receiver, "weather.api.requests")
    }
    assert counts == {
        ("/v1/forecast/{city}", 200, None): 2,
        ("/v1/forecast/{city}", 404, None): 1,
        ("/v1/forecast/{city}", 429, "daily_quota"): 1,
    }
    durations = {
        p.attributes["http.response.status_code"]: p.count
        for p in points(otlp_receiver, "http.client.request.duration")
        if p.attributes.get("url.template") == "/v1/forecast/{city}"
    }
    assert durations == {200: 2, 404: 1, 429: 1}


def test_a_users_known_api_follows_the_disabled_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "weather")
    telemetry = otel_setup.configure(known_apis=[WeatherApi("http://127.0.0.1:9")])
    assert telemetry.instrumentations["weather"] == "off: listed in OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"
    assert telemetry.instrumentations["gw2"].active


def test_the_docs_quote_the_example_that_runs() -> None:
    source = (ROOT / "examples" / "weather_api.py").read_text()
    block = source[source.index("class WeatherApi") : source.index("# --- end of the known API ---")].rstrip()
    assert block in INTEGRATIONS_DOC
