"""The metric catalog (otel_setup/_core/catalog.py) against docs/metrics.md and the running example.

The example service runs as a child process against the loopback GW2 and AI stand-ins, with its
spans, logs and metrics pushed to a local OTLP receiver (so the pipeline's own metrics exist),
through the demo's traffic mix. Its ``/metrics`` families must be exactly the catalog's
Prometheus names, minus the few entries the example cannot produce (listed below with why).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from otel_setup._core.catalog import CATALOG, SECTIONS, document_sections, markdown_table, render_document
from tests.assets._promql import catalog as promql_catalog

ROOT = Path(__file__).resolve().parents[1]
METRICS_MD = ROOT / "docs" / "metrics.md"

# Catalog entries the example never produces, and why.
NOT_FROM_THE_EXAMPLE = {
    # Only when SENTRY_DSN is set and sentry-sdk loses an event; the example has no Sentry.
    "otel_setup_sentry_events_dropped",
}


def test_document_tables_are_generated_from_the_catalog() -> None:
    text = METRICS_MD.read_text(encoding="utf-8")
    assert text == render_document(text), "regenerate with: python -m otel_setup._core.catalog docs/metrics.md"
    assert document_sections(text) == list(SECTIONS), "one catalog block per section, in order"
    assert set(SECTIONS) == {spec.section for spec in CATALOG}
    for key in SECTIONS:
        assert markdown_table(key).count("\n") > 2, f"section {key} has no metric"


def test_catalog_entries_are_unique_and_read_by_the_promql_tests() -> None:
    names = [spec.name for spec in CATALOG]
    assert len(names) == len(set(names))
    expected: set[str] = set()
    for spec in CATALOG:
        if spec.kind == "histogram":
            expected |= {f"{spec.prometheus}_{suffix}" for suffix in ("bucket", "sum", "count")}
        elif spec.kind == "counter":
            expected.add(f"{spec.prometheus}_total")
        else:
            expected.add(spec.prometheus)
    # The dashboards' and alert rules' tests read docs/metrics.md: the same names, nothing else.
    assert promql_catalog() == expected


def families(exposition: str) -> set[str]:
    """Family names of a Prometheus text exposition (its ``# TYPE`` lines), ``target_info`` dropped."""
    names = set()
    for line in exposition.splitlines():
        if not line.startswith("# TYPE "):
            continue
        family = line.split()[2].removesuffix("_total")  # counters' TYPE name carries it in this exporter
        if family != "target_info":
            names.add(family)
    return names


@pytest.fixture(scope="module")
def example_stack() -> Iterator[tuple[str, object]]:
    pytest.importorskip("fakeredis")
    pytest.importorskip("uvicorn")
    from examples.standins import ai_api, gw2_api
    from otel_setup._demo import DemoOptions, _App, _app_env, _free_port, _Standin
    from otel_setup._demo.receiver import DemoReceiver

    receiver = DemoReceiver().start()
    gw2 = _Standin(gw2_api.create_app(burst=12, refill_per_second=5.0, slow_seconds=1.0)).start()
    ai = _Standin(ai_api.create_app()).start()
    app = None
    with tempfile.TemporaryDirectory(prefix="otel-setup-catalog-") as data_dir:
        try:
            env = _app_env(receiver.endpoint, DemoOptions(sampling=1.0), gw2.port, ai.port, data_dir)
            # Push metrics and logs too, so their exporters' and processors' counters exist; export quickly.
            env.update(
                {
                    "OTEL_METRICS_EXPORTER": "prometheus,otlp",
                    "OTEL_METRIC_EXPORT_INTERVAL": "500",
                    "OTEL_LOGS_EXPORTER": "otlp",
                }
            )
            app = _App(_free_port(), env, cwd=data_dir)
            app.wait_until_up()
            yield app.base, receiver
        finally:
            if app is not None:
                app.stop()
            ai.stop()
            gw2.stop()
            receiver.stop()


def test_example_metrics_are_exactly_the_catalog(example_stack: tuple[str, object]) -> None:
    from examples.standins.gw2_api import DEMO_KEY
    from otel_setup._demo.traffic import drive

    base, _ = example_stack
    drive(base, DEMO_KEY, duration=4.0, rps=25.0)
    expected = {spec.prometheus for spec in CATALOG} - NOT_FROM_THE_EXAMPLE
    deadline = time.monotonic() + 20.0
    while True:  # the export threads count their first batches a moment after the traffic
        seen = families(httpx.get(f"{base}/metrics", timeout=10.0).text)
        if seen >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not seen - expected, f"emitted but not in otel_setup/_core/catalog.py: {sorted(seen - expected)}"
    assert not expected - seen, f"in the catalog but the example never produced: {sorted(expected - seen)}"
