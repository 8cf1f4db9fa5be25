"""Resource, sampler, providers and exporters, built from resolved settings.

Nothing here touches OpenTelemetry's global state or the environment: the
caller decides what becomes global, and every exporter receives its endpoint,
headers and timeout as arguments (the SDK would otherwise read them from the
environment on its own, with its 10 s timeout).
"""

from __future__ import annotations

# Imported before any provider exists, so its fork handler (which re-creates
# the lock the parent held across fork()) runs before the SDK's own: the
# MeterProvider's handler starts a thread pool in the child, and with the
# lock still held it waits forever (a gunicorn --preload worker never boots).
import concurrent.futures.thread  # noqa: F401 - imported for its fork handler
import json
import logging
import os
import re
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import ExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import Resource, ServiceInstanceIdResourceDetector
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.sdk.version import __version__ as sdk_version

from otel_setup._compat import enable_processor_metrics
from otel_setup._core.errors import OtelSetupConfigError
from otel_setup._core.selfmetrics import (
    CountingLogExporter,
    CountingMetricExporter,
    CountingSpanExporter,
    ExportCounters,
)
from otel_setup._core.settings import Settings
from otel_setup._hotpath.keep import Keeper, KeepingParentBased
from otel_setup._hotpath.metrics import LocalMetrics, attach, merge_into
from otel_setup._hotpath.sampling import PresetIdGenerator, RootSpans, unsampled_children_dropped
from otel_setup._security.redaction import DEFAULT_REDACTOR, SDK_LENGTH_FACTOR, Redactor
from otel_setup._security.scrubbing import ScrubbingLogExporter, ScrubbingSpanExporter, scrub_metrics
from otel_setup.version import __version__ as _version

__all__ = ["Providers", "build_providers", "build_resource", "build_sampler", "run_within"]

_log = logging.getLogger("otel_setup")


class _MergingReader(MetricReader):
    """A reader whose collections carry the hot-path instruments' points beside the SDK's.

    The SDK has no metric-producer seam: its public ``collect`` hands what the
    SDK collected to ``_receive_metrics`` (the method every reader
    implements), and skips it when no SDK instrument has data yet; the
    hot-path points then go out on their own. Redaction of user instruments'
    attributes happens here too (the hot-path ones have fixed, clean keys).
    """

    _local: LocalMetrics
    _resource: Resource
    _redactor: Redactor
    _delta: bool = False

    def _start_merging(self, local: LocalMetrics, resource: Resource, redactor: Redactor, fork_wait: float) -> None:
        self._local = local
        self._resource = resource
        self._redactor = redactor
        self._collecting = threading.RLock()
        self._held_for_fork = False
        self._merged = False
        if hasattr(os, "register_at_fork"):
            self._hold_across_fork(fork_wait)

    def _hold_across_fork(self, wait: float) -> None:
        """No fork in the middle of a collection.

        The child would inherit the SDK's export and storage locks held, and
        its metrics would block forever. A fork waits for a collection in
        progress (at most ``wait`` seconds, then goes ahead as it would
        without this reader).
        """
        reference = weakref.ref(self)

        def before() -> None:
            reader = reference()
            if reader is not None:
                reader._held_for_fork = reader._collecting.acquire(timeout=wait)

        def after_in_parent() -> None:
            reader = reference()
            if reader is not None and reader._held_for_fork:
                reader._held_for_fork = False
                reader._collecting.release()

        def after_in_child() -> None:
            reader = reference()
            if reader is not None:
                reader._held_for_fork = False
                reader._collecting = threading.RLock()

        os.register_at_fork(before=before, after_in_parent=after_in_parent, after_in_child=after_in_child)

    # ``collect`` is marked final for type checkers only.
    def collect(self, timeout_millis: float = 10_000) -> None:  # type: ignore[misc]
        with self._collecting:  # one merge per collection: the periodic thread and a flush may race
            self._merged = False
            super().collect(timeout_millis=timeout_millis)
            if not self._merged:
                self._receive_metrics(None, timeout_millis=timeout_millis)

    def _receive_metrics(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        self._merged = True
        merged = merge_into(metrics_data, self._local, self._resource, self._delta)
        if merged is not None:
            self._deliver(scrub_metrics(merged, self._redactor), timeout_millis)

    def _deliver(self, metrics_data: Any, timeout_millis: float) -> None:
        # safe-super: the concrete reader after this class in the MRO implements it
        super()._receive_metrics(metrics_data, timeout_millis=timeout_millis)  # type: ignore[safe-super]


class _PeriodicReader(_MergingReader, PeriodicExportingMetricReader):
    """OTLP push (or the console) of the SDK's metrics plus the hot-path instruments'."""

    def __init__(
        self,
        local: LocalMetrics,
        resource: Resource,
        exporter: Any,
        redactor: Redactor = DEFAULT_REDACTOR,
        *,
        delta: bool = False,
        **options: Any,
    ) -> None:
        """``delta``: the exporter prefers DELTA for histograms, and so for counters (every preset pairs them)."""
        super().__init__(exporter, **options)
        self._start_merging(local, resource, redactor, options.get("export_timeout_millis", 30_000) / 1000 + 1)
        self._delta = delta
        if delta:
            local.enable_delta()


def _prometheus_reader_class() -> Any:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from prometheus_client import CollectorRegistry

    class PrometheusReader(_MergingReader, PrometheusMetricReader):
        """Prometheus text of the SDK's metrics plus the hot-path instruments', with exemplars.

        Pull-based: collection happens when the exporter's collector is
        scraped (it calls ``collect``), never on a flush (the stock reader
        queues a copy per flush, and the next scrape then prints every family
        twice, which Prometheus rejects). The exporter translates into a
        registry of its own; the caller's registry holds a collector that adds
        the exemplars the exporter drops.
        """

        def __init__(
            self,
            local: LocalMetrics,
            resource: Resource,
            redactor: Redactor = DEFAULT_REDACTOR,
            *,
            registry: Any,
            **options: Any,
        ) -> None:
            translated = CollectorRegistry(auto_describe=False)
            super().__init__(registry=translated, **options)
            self._start_merging(local, resource, redactor, fork_wait=5.0)
            self._exemplars: dict[str, dict[frozenset[tuple[str, str]], list[Any]]] = {}
            registry.register(_ExemplarCollector(translated, lambda: self._exemplars))

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            """A flush: nothing to push for a pull exporter."""
            return True

        def _deliver(self, metrics_data: Any, timeout_millis: float) -> None:
            self._exemplars = exemplar_index(metrics_data)
            super()._deliver(align_shared_families(metrics_data), timeout_millis)

    return PrometheusReader


class _ExemplarCollector:
    """A prometheus_client collector: the exporter's families with each bucket's exemplar.

    OpenMetrics carries exemplars on the buckets; the plain text format
    ignores them.
    """

    def __init__(
        self, translated: Any, index: Callable[[], dict[str, dict[frozenset[tuple[str, str]], list[Any]]]]
    ) -> None:
        self._translated = translated
        self._index = index

    def describe(self) -> list[Any]:
        return []  # no scrape at registration; names are not checked against other collectors

    def collect(self) -> Any:
        return with_exemplars(self._translated.collect(), self._index)


def _label(key: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", key)


def _label_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def exemplar_index(metrics_data: Any) -> dict[str, dict[frozenset[tuple[str, str]], list[Any]]]:
    """Histogram exemplars by Prometheus family name and label set, as the exporter names them."""
    index: dict[str, dict[frozenset[tuple[str, str]], list[Any]]] = {}
    for resource_metrics in metrics_data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                points = getattr(metric.data, "data_points", ())
                if not any(getattr(point, "exemplars", None) for point in points):
                    continue
                family = _label(metric.name) + ("_seconds" if metric.unit == "s" else "")
                table = index.setdefault(family, {})
                for point in points:
                    if point.exemplars:
                        labels = frozenset((_label(k), _label_value(v)) for k, v in (point.attributes or {}).items())
                        table[labels] = list(point.exemplars)
    return index


def with_exemplars(families: Any, index: Callable[[], dict[str, dict[frozenset[tuple[str, str]], list[Any]]]]) -> Any:
    """``families`` with each bucket sample given the exemplar that fell into it (trace and span id).

    ``index`` is read per family: the scrape that fills it runs when the first family is asked for.
    """
    from prometheus_client.samples import Exemplar

    for family in families:
        table = index().get(family.name)
        if table and family.type == "histogram":
            names = {name for labels in table for name, _ in labels}
            lower: dict[frozenset[tuple[str, str]], float] = {}
            samples = []
            for original in family.samples:
                sample = original
                if sample.name.endswith("_bucket") and sample.exemplar is None:
                    key = frozenset((k, v) for k, v in sample.labels.items() if k in names)
                    upper = float(sample.labels["le"])
                    floor = lower.get(key, float("-inf"))
                    lower[key] = upper
                    for exemplar in table.get(key, ()):
                        if floor < exemplar.value <= upper:
                            ids = {"trace_id": f"{exemplar.trace_id:032x}", "span_id": f"{exemplar.span_id:016x}"}
                            timestamp = exemplar.time_unix_nano / 1e9
                            sample = sample._replace(exemplar=Exemplar(ids, exemplar.value, timestamp))
                            break
                samples.append(sample)
            family.samples = samples
        yield family


def align_shared_families(metrics_data: Any) -> Any:
    """Give a metric recorded by several scopes one label set, ``""`` where a point lacks a key.

    ``db.client.operation.duration`` comes from the SQLAlchemy and the Redis scopes. The
    Prometheus exporter prints both as one family whose label names it takes from the first
    scope, then zips every other scope's values onto those names: a key only one scope has
    (``db.collection.name``, an ``error.type`` seen on one side only) would shift the other
    scope's values onto the wrong labels. An empty value is an absent label to Prometheus.
    Runs per scrape, never on a request.
    """
    from dataclasses import replace

    for resource_metrics in metrics_data.resource_metrics:
        keys: dict[str, set[str]] = {}
        scopes: dict[str, int] = {}
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                scopes[metric.name] = scopes.get(metric.name, 0) + 1
                names = keys.setdefault(metric.name, set())
                for point in metric.data.data_points:
                    names.update(point.attributes or {})
        shared = {name for name, count in scopes.items() if count > 1}
        if not shared:
            continue
        for scope_metrics in resource_metrics.scope_metrics:
            metrics = scope_metrics.metrics
            for index, metric in enumerate(metrics):
                if metric.name not in shared:
                    continue
                union = keys[metric.name]
                points = [
                    point
                    if set(point.attributes or {}) == union
                    else replace(point, attributes={**dict.fromkeys(union, ""), **(point.attributes or {})})
                    for point in metric.data.data_points
                ]
                metrics[index] = replace(metric, data=replace(metric.data, data_points=points))
    return metrics_data


def _PrometheusReader(
    local: LocalMetrics, resource: Resource, redactor: Redactor = DEFAULT_REDACTOR, **options: Any
) -> MetricReader:
    reader: MetricReader = _prometheus_reader_class()(local, resource, redactor, **options)
    return reader


def build_resource(settings: Settings, *, default_name: str | None, default_version: str | None) -> Resource:
    """Resource from arguments, `OTEL_RESOURCE_ATTRIBUTES` and the app, with a per-process instance id."""
    attributes: dict[str, Any] = {
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": sdk_version,
        "telemetry.distro.name": "otel_setup",
    }
    attributes.update(settings.resource_attributes)
    legacy_environment = attributes.pop("deployment.environment", None)
    if settings.service_name:
        attributes["service.name"] = settings.service_name
    attributes.setdefault("service.name", default_name or "unknown_service")
    if settings.service_version:
        attributes["service.version"] = settings.service_version
    if default_version and "service.version" not in attributes:
        attributes["service.version"] = default_version
    if settings.environment:
        attributes["deployment.environment.name"] = settings.environment
    elif legacy_environment and "deployment.environment.name" not in attributes:
        attributes["deployment.environment.name"] = legacy_environment
    # Unique per process: N workers of one service must stay N series.
    attributes.setdefault("service.instance.id", ServiceInstanceIdResourceDetector().detect().attributes[_INSTANCE_ID])
    attributes["process.pid"] = os.getpid()
    return ProcessResource(attributes)


_INSTANCE_ID: Final = "service.instance.id"


class ProcessResource(Resource):
    """A resource whose ``service.instance.id`` and ``process.pid`` follow ``fork()``.

    The package's readers, doctor and ``Telemetry.resource`` hold this object;
    the SDK's providers merge the child's instance id into their own copy
    after a fork, from the attributes this one already shows.
    """

    def __init__(self, attributes: dict[str, Any], schema_url: str | None = None) -> None:
        super().__init__(attributes, schema_url)
        self._current: Resource | None = None

    @property
    def attributes(self) -> Any:
        current = self._current
        return super().attributes if current is None else current.attributes

    def become_this_process(self) -> None:
        """In a forked child: a fresh instance id and this process's pid."""
        attributes = dict(self.attributes)
        # The SDK's detector keeps one id per process, and each provider merges that one into its
        # own copy of this resource in the child: the package's view and the providers' agree.
        attributes.update(ServiceInstanceIdResourceDetector().detect().attributes)
        attributes["process.pid"] = os.getpid()
        self._current = Resource(attributes, self.schema_url)


def build_sampler(settings: Settings) -> Sampler:
    """The head sampler; the parent-based ones also sample the spans of traces kept after the fact."""
    name: str = settings.sampler
    ratio: float = settings.sampling_ratio
    parent_based = KeepingParentBased if settings.keep else ParentBased
    if name == "always_on":
        return ALWAYS_ON
    if name == "always_off":
        return ALWAYS_OFF
    if name == "traceidratio":
        return TraceIdRatioBased(ratio)
    if name == "parentbased_always_on":
        return parent_based(ALWAYS_ON)
    if name == "parentbased_always_off":
        return parent_based(ALWAYS_OFF)
    return parent_based(TraceIdRatioBased(ratio))


def _traces_exporter_name(settings: Settings) -> str:
    if settings.traces_exporter:
        return str(settings.traces_exporter)
    return "otlp" if settings.signal_endpoint("traces") else "none"


def _metrics_exporter_names(settings: Settings) -> tuple[str, ...]:
    if settings.metrics_exporter:
        return tuple(n for n in settings.metrics_exporter if n != "none")
    if settings.signal_endpoint("metrics"):
        return ("prometheus", "otlp")
    return ("prometheus",)


def _default_endpoint(settings: Settings, signal: str) -> str:
    """The standard local collector address, used only when OTLP was asked for explicitly."""
    if settings.signal_protocol(signal) == "grpc":
        return "http://localhost:4317"
    return f"http://localhost:4318/v1/{signal}"


# (module, class, semconv component name) of each signal's exporter, per protocol.
_OTLP_EXPORTERS: Final = {
    ("traces", "grpc"): ("opentelemetry.exporter.otlp.proto.grpc.trace_exporter", "OTLPSpanExporter", "span"),
    ("traces", "http/protobuf"): ("opentelemetry.exporter.otlp.proto.http.trace_exporter", "OTLPSpanExporter", "span"),
    ("metrics", "grpc"): ("opentelemetry.exporter.otlp.proto.grpc.metric_exporter", "OTLPMetricExporter", "metric"),
    ("metrics", "http/protobuf"): (
        "opentelemetry.exporter.otlp.proto.http.metric_exporter",
        "OTLPMetricExporter",
        "metric",
    ),
    ("logs", "grpc"): ("opentelemetry.exporter.otlp.proto.grpc._log_exporter", "OTLPLogExporter", "log"),
    ("logs", "http/protobuf"): ("opentelemetry.exporter.otlp.proto.http._log_exporter", "OTLPLogExporter", "log"),
}


def _otlp_exporter(settings: Settings, signal: str, sessions: list[Any] | None = None, **extra: Any) -> tuple[Any, str]:
    """One signal's OTLP exporter, configured explicitly, and its ``otel.component.type``."""
    import importlib

    protocol = settings.signal_protocol(signal)
    module, name, kind = _OTLP_EXPORTERS[(signal, protocol)]
    exporter_class = getattr(importlib.import_module(module), name)
    endpoint = settings.signal_endpoint(signal) or _default_endpoint(settings, signal)
    options: dict[str, Any] = {"endpoint": endpoint, "headers": dict(settings.otlp_headers)}
    options["timeout"] = settings.otlp_timeout
    # The counting wrappers are the one count of what was exported; with the SDK's internal-metrics
    # variable set, the exporter's own would be a second series of the same names.
    options["meter_provider"] = NoOpMeterProvider()
    options.update(extra)
    if protocol == "grpc":
        options["insecure"] = endpoint.startswith("http://")
    elif sessions is not None:
        # A session the package holds, so a forked worker can close its inherited
        # keep-alive sockets through requests' public API.
        session = _http_session(settings, signal)
        sessions.append(session)
        options["session"] = session
    wire = "grpc" if protocol == "grpc" else "http"
    return exporter_class(**options), f"otlp_{wire}_{kind}_exporter"


def _http_session(settings: Settings, signal: str) -> Any:
    """A new ``requests.Session``, or the one the signal's credential provider makes."""
    import requests

    name = settings.signal_credential_provider(signal)
    if name is None:
        return requests.Session()
    from importlib.metadata import entry_points

    from otel_setup._core.parsers import CREDENTIAL_PROVIDERS

    (point,) = tuple(entry_points(group=CREDENTIAL_PROVIDERS, name=name))[:1]
    session = point.load()()
    if not isinstance(session, requests.Session):
        raise OtelSetupConfigError(
            f"the {CREDENTIAL_PROVIDERS} entry point {name!r}", type(session).__name__, "a requests.Session"
        )
    return session


def _otlp_metric_reader(
    settings: Settings,
    counters: ExportCounters,
    local: LocalMetrics,
    resource: Resource,
    sessions: list[Any] | None = None,
    redactor: Redactor = DEFAULT_REDACTOR,
) -> MetricReader:
    from opentelemetry.sdk.metrics import Histogram

    temporality = _preferred_temporality(settings)
    exporter, component = _otlp_exporter(settings, "metrics", sessions, preferred_temporality=temporality)
    return _PeriodicReader(
        local,
        resource,
        CountingMetricExporter(exporter, counters, component, temporality),
        redactor,
        delta=temporality[Histogram] is AggregationTemporality.DELTA,
        export_interval_millis=settings.metric_export_interval,
        export_timeout_millis=settings.otlp_timeout * 1000,
    )


@dataclass
class Providers:
    """What ``configure()`` built; integrations receive these, never the globals."""

    resource: Resource
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    logger_provider: Any | None
    prometheus_registry: Any | None
    local_metrics: LocalMetrics = field(default_factory=LocalMetrics)
    root_spans: RootSpans | None = None
    keeper: Keeper | None = None
    exporters: dict[str, tuple[str, ...]] = field(default_factory=dict)
    counters: ExportCounters | None = None

    def shutdown_steps(self) -> list[Callable[[], object]]:
        steps: list[Callable[[], object]] = [self.tracer_provider.shutdown, self.meter_provider.shutdown]
        if self.logger_provider is not None:
            steps.append(self.logger_provider.shutdown)
        return steps

    def flush_steps(self, timeout_millis: int) -> list[Callable[[], object]]:
        steps: list[Callable[[], object]] = [
            lambda: self.tracer_provider.force_flush(timeout_millis),
            lambda: self.meter_provider.force_flush(timeout_millis),
        ]
        if self.logger_provider is not None:
            logger_provider = self.logger_provider
            steps.append(lambda: logger_provider.force_flush(timeout_millis))
        counters = self.counters
        if counters is not None:
            # The SDK's flush answers True after a refused export; an export
            # failure counted while the flush ran makes the answer False.
            failed_before = counters.failed_exports
            steps.append(lambda: counters.failed_exports == failed_before)
        return steps


def needs_sdk_metrics(settings: Settings, metric_readers: Sequence[MetricReader], views: Sequence[View]) -> bool:
    """Whether the package's instruments must be the SDK's rather than the pre-aggregated ones.

    The fast instruments produce exactly what the SDK would for the package's
    own readers: the instrument's own name, buckets and attributes,
    trace-based exemplars, cumulative points, and delta ones for the OTLP
    reader when its temporality preference asks. A reader or View of the
    user's, or another exemplar filter, is the SDK's job: the package then
    records through the SDK's instruments (slower on the request path, and
    complete for every reader).
    """
    return bool(metric_readers or views) or settings.exemplar_filter != "trace_based"


def _preferred_temporality(settings: Settings) -> dict[type, AggregationTemporality]:
    """The OTLP metric exporter's temporality per instrument kind, as the specification's presets define them."""
    from opentelemetry.sdk.metrics import (
        Counter,
        Histogram,
        ObservableCounter,
        ObservableGauge,
        ObservableUpDownCounter,
        UpDownCounter,
    )

    cumulative, delta = AggregationTemporality.CUMULATIVE, AggregationTemporality.DELTA
    preset = settings.metrics_temporality
    table: dict[type, AggregationTemporality] = dict.fromkeys(
        (Counter, Histogram, ObservableCounter, ObservableGauge, ObservableUpDownCounter, UpDownCounter), cumulative
    )
    if preset in ("delta", "lowmemory"):
        table[Counter] = table[Histogram] = delta
    if preset == "delta":
        table[ObservableCounter] = delta
    return table


def _exemplar_filter(settings: Settings) -> ExemplarFilter:
    from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, AlwaysOnExemplarFilter, TraceBasedExemplarFilter

    if settings.exemplar_filter == "always_on":
        return AlwaysOnExemplarFilter()
    if settings.exemplar_filter == "always_off":
        return AlwaysOffExemplarFilter()
    return TraceBasedExemplarFilter()


def _build_meter_provider(
    settings: Settings,
    resource: Resource,
    redactor: Redactor,
    local: LocalMetrics,
    counters: ExportCounters,
    sessions: list[Any],
    metric_exporters: tuple[str, ...],
    metric_readers: Sequence[MetricReader],
    views: Sequence[View],
) -> tuple[MeterProvider, Any | None]:
    """The package's readers and the user's on one provider; the Prometheus registry, when there is one."""
    readers: list[MetricReader] = []
    registry: Any | None = None
    if "prometheus" in metric_exporters:
        from prometheus_client import CollectorRegistry

        # A registry of our own: configure() in a test or a second app must
        # never collide with whatever else registered in prometheus_client's
        # global REGISTRY.
        registry = CollectorRegistry(auto_describe=True)
        readers.append(_PrometheusReader(local, resource, redactor, registry=registry))
    if "otlp" in metric_exporters:
        readers.append(_otlp_metric_reader(settings, counters, local, resource, sessions, redactor))
    if "console" in metric_exporters:
        # The same merging reader as OTLP's: the console shows the hot-path instruments too.
        readers.append(_PeriodicReader(local, resource, ConsoleMetricExporter(), redactor))
    readers.extend(metric_readers)
    meter_provider = MeterProvider(
        metric_readers=readers,
        resource=resource,
        shutdown_on_exit=False,
        views=tuple(views),
        exemplar_filter=_exemplar_filter(settings),
    )
    if needs_sdk_metrics(settings, metric_readers, views):
        local.use_sdk(meter_provider)
    else:
        attach(meter_provider, local)
    return meter_provider, registry


def build_providers(
    settings: Settings,
    resource: Resource,
    *,
    redactor: Redactor = DEFAULT_REDACTOR,
    metric_readers: Sequence[MetricReader] = (),
    views: Sequence[View] = (),
) -> Providers:
    # The SDK keeps longer values than the configured limit: the scrubbing
    # exporter redacts the whole value first and then cuts it to the limit, so
    # a cut never leaves a piece of a secret (redact first, then truncate).
    limit: int = settings.attribute_value_length_limit * SDK_LENGTH_FACTOR
    # Every limit is passed explicitly: SpanLimits reads the environment for
    # any it is not given.
    limits = SpanLimits(
        max_attributes=128,
        max_events=128,
        max_links=128,
        max_event_attributes=128,
        max_link_attributes=128,
        max_attribute_length=limit,
        max_span_attributes=128,
        max_span_attribute_length=limit,
    )
    # shutdown_on_exit=False: the SDK's atexit hook has no deadline (30 s
    # against a hung collector); Telemetry.shutdown() owns the exit path.
    counters = ExportCounters()
    local = LocalMetrics()
    # Before any provider registers its own fork handler, so the resource is
    # already the child's when the SDK's handlers copy it.
    sessions: list[Any] = []
    _refresh_in_forked_children(resource, sessions)
    # The meter provider comes first: the span and log processors report their
    # queues through it, and exporters count what they sent.
    metric_exporters = _metrics_exporter_names(settings)
    meter_provider, registry = _build_meter_provider(
        settings, resource, redactor, local, counters, sessions, metric_exporters, metric_readers, views
    )
    counters.bind(meter_provider)

    # shutdown_on_exit=False: the SDK's atexit hook has no deadline (30 s
    # against a hung collector); Telemetry.shutdown() owns the exit path.
    sampler = build_sampler(settings)
    ids = PresetIdGenerator()
    tracer_provider = TracerProvider(
        sampler=sampler, resource=resource, span_limits=limits, shutdown_on_exit=False, id_generator=ids
    )
    traces = _traces_exporter_name(settings)
    if traces == "otlp":
        span_exporter, component = _otlp_exporter(settings, "traces", sessions)
        span_processor = BatchSpanProcessor(
            # redaction: every span, from any instrumentation, scrubbed on the export thread
            CountingSpanExporter(ScrubbingSpanExporter(span_exporter, redactor), counters, component),
            max_queue_size=2048,
            schedule_delay_millis=1000,
            max_export_batch_size=512,
            export_timeout_millis=int(settings.otlp_timeout * 1000),
            meter_provider=meter_provider,
        )
        enable_processor_metrics(span_processor, meter_provider, "traces")
        tracer_provider.add_span_processor(span_processor)
    elif traces == "console":
        from otel_setup._core.console import TreeSpanExporter

        # A tree per trace on stderr: stdout keeps one JSON object per line.
        tracer_provider.add_span_processor(
            BatchSpanProcessor(ScrubbingSpanExporter(TreeSpanExporter(), redactor), schedule_delay_millis=500)
        )

    logger_provider: Any | None = None
    logs = settings.logs_exporter or "none"
    if logs != "none":
        from opentelemetry.sdk._logs import LoggerProvider, LogRecordLimits
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, ConsoleLogExporter

        # Both limits explicit (LogRecordLimits reads the environment for any it is not given).
        log_limits = LogRecordLimits(max_attributes=128, max_attribute_length=limit)
        logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False, log_record_limits=log_limits)
        if logs == "otlp":
            otlp_log_exporter, component = _otlp_exporter(settings, "logs", sessions)
            # redaction: log records (FastAPI's own included) scrubbed on the export thread
            log_exporter: Any = CountingLogExporter(
                ScrubbingLogExporter(otlp_log_exporter, redactor), counters, component
            )
        else:
            log_exporter = ScrubbingLogExporter(ConsoleLogExporter(), redactor)
        log_processor = BatchLogRecordProcessor(
            log_exporter, export_timeout_millis=int(settings.otlp_timeout * 1000), meter_provider=meter_provider
        )
        enable_processor_metrics(log_processor, meter_provider, "logs")
        logger_provider.add_log_record_processor(log_processor)

    keeper = _build_keeper(settings, tracer_provider, ids, local)
    return Providers(
        resource=resource,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        logger_provider=logger_provider,
        prometheus_registry=registry,
        local_metrics=local,
        root_spans=RootSpans(
            sampler,
            ids,
            ratio=settings.sampling_ratio if settings.sampler in ("traceidratio", "parentbased_traceidratio") else None,
            buffering=keeper is not None,
        ),
        keeper=keeper,
        exporters={"traces": (traces,), "metrics": metric_exporters or ("none",), "logs": (logs,)},
        counters=counters,
    )


def _build_keeper(
    settings: Settings, tracer_provider: TracerProvider, ids: PresetIdGenerator, local: LocalMetrics
) -> Keeper | None:
    """Keeping failing and slow traces whole, when asked and the sampler drops unsampled children."""
    if not settings.keep or not unsampled_children_dropped(tracer_provider):
        return None
    dropped = local.new_counter(
        ("otel_setup", _version),
        "otel_setup.trace.buffer.dropped",
        "{span}",
        "Spans of not-yet-sampled requests that the keep buffer refused (per-trace or total cap).",
        ("reason",),
    )
    for reason in ("trace_full", "buffer_full"):
        dropped.add(0, (reason,))  # both series from the start: rate() and alerts see a zero, not a gap
    return Keeper(
        tracer_provider,
        ids,
        errors="errors" in settings.keep,
        slow_seconds=settings.slow_request_ms / 1000.0 if "slow" in settings.keep else None,
        dropped=dropped,
    )


def _refresh_in_forked_children(resource: Resource, sessions: list[Any]) -> None:
    """Give a forked child (gunicorn ``--preload`` worker) its own identity and connections.

    ``configure()`` at import in a preloading master runs once, then every
    worker is a fork() of it: without this, all workers would report the
    master's ``service.instance.id`` and pid (one series for N processes) and
    share the master's pooled keep-alive sockets to the collector. The SDK's
    batch processors already restart their threads in the child.
    """
    if not hasattr(os, "register_at_fork"):
        return

    def after_in_child() -> None:
        try:
            if isinstance(resource, ProcessResource):
                resource.become_this_process()
            for session in sessions:
                # requests' documented close: the child's copies of the sockets go, the pool
                # stays usable and opens the child's own connections.
                session.close()
        except Exception:  # noqa: BLE001 - a fork must never fail because of telemetry
            _log.debug("otel_setup: refreshing telemetry after fork failed", exc_info=True)

    os.register_at_fork(after_in_child=after_in_child)


def run_within(steps: Sequence[Callable[[], object]], timeout: float, what: str) -> bool:
    """Run ``steps`` in a daemon thread; give up waiting after ``timeout`` seconds.

    The SDK's shutdown and flush calls take no deadline (and its flush ignores
    the one it is given), so a hung collector would hold the caller for 30 s.
    The thread is a daemon so an abandoned export never delays process exit.
    Returns True only when every step finished in time and none reported failure.
    """
    outcome: list[bool] = []

    def run() -> None:
        ok = True
        for step in steps:
            try:
                result = step()
            except Exception:  # noqa: BLE001 - telemetry teardown must not raise into the app
                _log.warning("otel_setup: %s step failed", what, exc_info=True)
                ok = False
            else:
                if result is False:
                    ok = False
        outcome.append(ok)

    worker = threading.Thread(target=run, name=f"otel-setup-{what}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        _log.warning("otel_setup: %s did not finish within %.1f s; continuing without waiting", what, timeout)
        return False
    return bool(outcome and outcome[0])
