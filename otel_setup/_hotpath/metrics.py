"""Pre-aggregated instruments for the per-request hot path.

Recording one value through the SDK's instrument API costs about 10-15 µs on
this stack (a ``Measurement`` object, attribute cleaning, a dict copy, sorted
hashing of the attributes, the exemplar filter, a lock), which is paid three
times per request for the server duration and active-request metrics. These
instruments aggregate in place instead: the attribute values arrive as a tuple
in a fixed order, a dict lookup finds the series, ``bisect`` the bucket. Their
data joins the SDK's at collection time, through the readers built by
``_providers`` (Prometheus and OTLP alike), as cumulative points (delta ones
for an OTLP reader whose temporality preference asks) with the same
names, units, attributes and bucket boundaries the SDK would have produced,
and the same cardinality cap with its ``otel.metric.overflow`` series.
"""

from __future__ import annotations

import threading
import weakref
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from time import time_ns
from typing import Any, ClassVar, Final, TypeVar

from opentelemetry.context import Context
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

__all__ = [
    "FastCounter",
    "FastHistogram",
    "FastUpDownCounter",
    "InFlight",
    "LocalMetrics",
    "SdkCounter",
    "SdkHistogram",
    "SdkInFlight",
    "SdkSeries",
    "attach",
    "counter",
    "histogram",
    "merge_into",
]

CARDINALITY_LIMIT: Final = 2000
_OVERFLOW: Final = ("__overflow__",)


class _Series:
    __slots__ = ("bucket_counts", "count", "exemplars", "maximum", "minimum", "total")

    def __init__(self, buckets: int) -> None:
        self.bucket_counts = [0] * buckets
        self.count = 0
        self.total = 0.0
        self.minimum = float("inf")
        self.maximum = float("-inf")
        # The last exported request per bucket (value, time, trace id, span id), as the SDK's
        # aligned-histogram reservoir keeps them: every latency band links to a trace.
        self.exemplars: list[tuple[float, int, int, int] | None] = [None] * buckets

    def fold_into(self, other: _Series) -> None:
        """Add this series' observations to ``other`` (same bucket layout)."""
        other.bucket_counts = [a + b for a, b in zip(other.bucket_counts, self.bucket_counts, strict=True)]
        other.count += self.count
        other.total += self.total
        other.minimum = min(other.minimum, self.minimum)
        other.maximum = max(other.maximum, self.maximum)
        other.exemplars = [mine or theirs for mine, theirs in zip(self.exemplars, other.exemplars, strict=True)]

    def clear(self) -> None:
        buckets = len(self.bucket_counts)
        self.bucket_counts = [0] * buckets
        self.count = 0
        self.total = 0.0
        self.minimum = float("inf")
        self.maximum = float("-inf")
        self.exemplars = [None] * buckets


_S = TypeVar("_S")


def _new_series(table: dict[tuple[Any, ...], _S], key: tuple[Any, ...], make: Callable[[], _S]) -> _S:
    """The series for a key not in ``table``: a new one, or the shared overflow series past the cap.

    Called with the instrument's lock held, only when a lookup missed.
    """
    if len(table) >= CARDINALITY_LIMIT:
        overflow = table.get(_OVERFLOW)
        if overflow is not None:
            return overflow
        key = _OVERFLOW
    series = table[key] = make()
    return series


class _Instrument:
    """What every fast instrument exports under, the lock guarding its series, and its start time."""

    def __init__(self, name: str, unit: str, description: str, attribute_names: Sequence[str]) -> None:
        self.name = name
        self.unit = unit
        self.description = description
        self.attribute_names = tuple(attribute_names)
        self._lock = threading.Lock()
        self._start = time_ns()
        self._delta_start = self._start
        self.delta = False
        """Whether one reader (the OTLP one, when its exporter prefers DELTA) collects deltas too."""

    def _interval(self, now: int) -> int:
        """The start of the delta interval that ends ``now``; the next one starts there."""
        start, self._delta_start = self._delta_start, now
        return start


class FastHistogram(_Instrument):
    """A cumulative explicit-bucket histogram keyed by a tuple of attribute values."""

    def __init__(
        self, name: str, unit: str, description: str, boundaries: Sequence[float], attribute_names: Sequence[str]
    ) -> None:
        super().__init__(name, unit, description, attribute_names)
        self.boundaries = tuple(boundaries)
        self._series: dict[tuple[Any, ...], _Series] = {}
        # With a delta reader, ``_series`` holds what arrived since the last collection, folded at
        # each collection into the cumulative totals and into what the delta reader has not seen yet.
        self._cumulative: dict[tuple[Any, ...], _Series] = {}
        self._pending: dict[tuple[Any, ...], _Series] = {}

    def record(self, value: float, key: tuple[Any, ...], trace_id: int = 0, span_id: int = 0) -> None:
        """``key`` holds the values of ``attribute_names`` in order; ``None`` leaves one out."""
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = _new_series(self._series, key, lambda: _Series(len(self.boundaries) + 1))
            bucket = bisect_left(self.boundaries, value)
            series.bucket_counts[bucket] += 1
            series.count += 1
            series.total += value
            # Comparisons, not min()/max(): two builtin calls per request are measurable here.
            if value < series.minimum:  # noqa: PLR1730
                series.minimum = value
            if value > series.maximum:  # noqa: PLR1730
                series.maximum = value
            if trace_id:
                series.exemplars[bucket] = (value, time_ns(), trace_id, span_id)

    def _attributes(self, key: tuple[Any, ...]) -> dict[str, Any]:
        if key is _OVERFLOW or key == _OVERFLOW:
            return {"otel.metric.overflow": True}
        return _named(self.attribute_names, key)

    def collect(self, now: int, delta: bool = False) -> Metric | None:
        """Cumulative points, or with ``delta`` the points since the previous delta collection."""
        start = self._start
        with self._lock:
            if self.delta:
                self._fold()
                table = self._pending if delta else self._cumulative
                if delta:
                    start = self._interval(now)
            else:
                table = self._series
            snapshot = [
                (key, list(s.bucket_counts), s.count, s.total, s.minimum, s.maximum, [e for e in s.exemplars if e])
                for key, s in table.items()
                if s.count or not delta
            ]
            if delta:
                self._pending = {}
        if not snapshot:
            return None
        from opentelemetry.sdk.metrics import Exemplar

        points = [
            HistogramDataPoint(
                attributes=self._attributes(key),
                start_time_unix_nano=start,
                time_unix_nano=now,
                count=count,
                sum=total,
                bucket_counts=counts,
                explicit_bounds=list(self.boundaries),
                min=minimum,
                max=maximum,
                exemplars=[Exemplar({}, e[0], e[1], e[3], e[2]) for e in exemplars],
            )
            for key, counts, count, total, minimum, maximum, exemplars in snapshot
        ]
        return Metric(
            name=self.name,
            description=self.description,
            unit=self.unit,
            data=Histogram(data_points=points, aggregation_temporality=_TEMPORALITY[delta]),
        )

    def _fold(self) -> None:
        """Move what arrived since the last collection into both totals (lock held)."""
        width = len(self.boundaries) + 1
        for key, live in self._series.items():
            if not live.count:
                continue
            for table in (self._cumulative, self._pending):
                total = table.get(key)
                if total is None:
                    total = table[key] = _Series(width)
                live.fold_into(total)
            live.clear()


class FastUpDownCounter(_Instrument):
    """A cumulative non-monotonic sum keyed by a tuple of attribute values."""

    monotonic: ClassVar[bool] = False

    def __init__(self, name: str, unit: str, description: str, attribute_names: Sequence[str]) -> None:
        super().__init__(name, unit, description, attribute_names)
        self._values: dict[tuple[Any, ...], int] = {}
        self._reported: dict[tuple[Any, ...], int] = {}

    def add(self, amount: int, key: tuple[Any, ...]) -> None:
        with self._lock:
            if key not in self._values and len(self._values) >= CARDINALITY_LIMIT:
                key = _OVERFLOW
            self._values[key] = self._values.get(key, 0) + amount

    def collect(self, now: int, delta: bool = False) -> Metric | None:
        """Cumulative points; with ``delta``, a monotonic counter's increase since the last delta collection.

        Up-down counters stay cumulative under every temporality preset.
        """
        with self._lock:
            snapshot = list(self._values.items())
            if delta and self.monotonic:
                reported = self._reported
                self._reported = dict(snapshot)
                snapshot = [(key, value - reported.get(key, 0)) for key, value in snapshot]
                return _sum(self, snapshot, self._interval(now), now, monotonic=True, delta=True)
        return _sum(self, snapshot, self._start, now, monotonic=self.monotonic)


class InFlight(_Instrument):
    """How many requests are in progress, per series: ``http.server.active_requests``.

    Each series is a list holding one entry per request in flight. ``append``
    when a request starts and ``pop`` when it ends are single C calls, atomic
    under the GIL, so the request path runs no Python frame and takes no lock
    for it; collection reads the lengths. The points are those of an
    UpDownCounter fed +1 and -1, series at zero included.
    """

    def __init__(self, name: str, unit: str, description: str, attribute_names: Sequence[str]) -> None:
        super().__init__(name, unit, description, attribute_names)
        self.series: dict[tuple[Any, ...], list[None]] = {}
        """Read by the request path; written only by :meth:`series_for`."""

    def series_for(self, key: tuple[Any, ...]) -> list[None]:
        """The list for ``key``, created on first use (the overflow series past the cardinality limit)."""
        with self._lock:
            series = self.series.get(key)
            return series if series is not None else _new_series(self.series, key, list)

    def collect(self, now: int, delta: bool = False) -> Metric | None:
        """Cumulative always: an up-down counter keeps its temporality under every preset."""
        with self._lock:
            snapshot = [(key, len(series)) for key, series in self.series.items()]
        return _sum(self, snapshot, self._start, now, monotonic=False)


_TEMPORALITY: Final = {False: AggregationTemporality.CUMULATIVE, True: AggregationTemporality.DELTA}


def _sum(
    instrument: _Instrument,
    snapshot: list[tuple[tuple[Any, ...], int]],
    start: int,
    now: int,
    *,
    monotonic: bool,
    delta: bool = False,
) -> Metric | None:
    if not snapshot:
        return None
    names = instrument.attribute_names
    points = [
        NumberDataPoint(
            attributes={"otel.metric.overflow": True} if key == _OVERFLOW else _named(names, key),
            start_time_unix_nano=start,
            time_unix_nano=now,
            value=value,
        )
        for key, value in snapshot
    ]
    return Metric(
        name=instrument.name,
        description=instrument.description,
        unit=instrument.unit,
        data=Sum(data_points=points, aggregation_temporality=_TEMPORALITY[delta], is_monotonic=monotonic),
    )


class SdkHistogram:
    """The :class:`FastHistogram` call shape over the SDK's histogram.

    Used when a metric setting asks for what the fast instruments do not do
    (a reader or View of the user's, another exemplar filter): the SDK then
    aggregates, and every reader, View and filter sees
    these measurements as it sees its own. The trace of an exported request is
    passed as the measurement's context, so the exemplar filter decides.
    """

    __slots__ = ("_histogram", "attribute_names")

    def __init__(self, histogram: Any, attribute_names: Sequence[str]) -> None:
        self._histogram = histogram
        self.attribute_names = tuple(attribute_names)

    def record(self, value: float, key: tuple[Any, ...], trace_id: int = 0, span_id: int = 0) -> None:
        self._histogram.record(value, _named(self.attribute_names, key), context=_exported(trace_id, span_id))


class SdkCounter:
    """The :class:`FastCounter` / :class:`FastUpDownCounter` call shape over the SDK's counter."""

    __slots__ = ("_counter", "attribute_names")

    def __init__(self, counter: Any, attribute_names: Sequence[str]) -> None:
        self._counter = counter
        self.attribute_names = tuple(attribute_names)

    def add(self, amount: int, key: tuple[Any, ...]) -> None:
        self._counter.add(amount, _named(self.attribute_names, key), context=_NO_TRACE)


class SdkSeries:
    """One in-flight series over the SDK's up-down counter: ``append`` adds one, ``pop`` takes one away."""

    __slots__ = ("_attributes", "_counter")

    def __init__(self, counter: Any, attributes: dict[str, Any]) -> None:
        self._counter = counter
        self._attributes = attributes

    def append(self, _: None) -> None:
        self._counter.add(1, self._attributes, context=_NO_TRACE)

    def pop(self) -> None:
        self._counter.add(-1, self._attributes, context=_NO_TRACE)


class SdkInFlight:
    """The :class:`InFlight` call shape over the SDK's up-down counter."""

    def __init__(self, counter: Any, attribute_names: Sequence[str]) -> None:
        self._counter = counter
        self.attribute_names = tuple(attribute_names)
        self.series: dict[tuple[Any, ...], SdkSeries] = {}
        self._lock = threading.Lock()

    def series_for(self, key: tuple[Any, ...]) -> SdkSeries:
        with self._lock:
            series = self.series.get(key)
            if series is None:
                series = self.series[key] = SdkSeries(self._counter, _named(self.attribute_names, key))
            return series


def _named(names: tuple[str, ...], values: tuple[Any, ...]) -> dict[str, Any]:
    """Attribute values in ``names`` order as the SDK's attributes mapping; ``None`` leaves one out."""
    return {name: value for name, value in zip(names, values, strict=True) if value is not None}


def _exported(trace_id: int, span_id: int) -> Any:
    """The context an exemplar filter reads: the exported request's span, or no span at all."""
    if not trace_id:
        return _NO_TRACE
    sampled = SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return set_span_in_context(NonRecordingSpan(sampled), _NO_TRACE)


_NO_TRACE: Final = Context()


class LocalMetrics:
    """The fast instruments of one instrumentation scope, collected with the SDK's.

    After :meth:`use_sdk` the factories hand out the SDK's instruments behind
    the same call shapes instead, and nothing is registered here.
    """

    def __init__(self) -> None:
        self._scopes: list[tuple[InstrumentationScope, list[FastHistogram | FastUpDownCounter | InFlight]]] = []
        self._lock = threading.Lock()
        self.delta = False
        self.sdk: Any | None = None
        """The meter provider whose instruments are used instead, when a metric setting needs the SDK."""

    def use_sdk(self, meter_provider: Any) -> None:
        self.sdk = meter_provider

    def new_histogram(
        self,
        scope: tuple[str, str],
        name: str,
        unit: str,
        description: str,
        boundaries: Sequence[float],
        attribute_names: Sequence[str],
    ) -> FastHistogram | SdkHistogram:
        if self.sdk is not None:
            histogram = self.sdk.get_meter(*scope).create_histogram(
                name, unit=unit, description=description, explicit_bucket_boundaries_advisory=list(boundaries)
            )
            return SdkHistogram(histogram, attribute_names)
        fast = FastHistogram(name, unit, description, boundaries, attribute_names)
        self.register(scope[0], scope[1], fast)
        return fast

    def new_counter(
        self, scope: tuple[str, str], name: str, unit: str, description: str, attribute_names: Sequence[str]
    ) -> FastCounter | SdkCounter:
        if self.sdk is not None:
            counter = self.sdk.get_meter(*scope).create_counter(name, unit=unit, description=description)
            return SdkCounter(counter, attribute_names)
        fast = FastCounter(name, unit, description, attribute_names)
        self.register(scope[0], scope[1], fast)
        return fast

    def new_in_flight(
        self, scope: tuple[str, str], name: str, unit: str, description: str, attribute_names: Sequence[str]
    ) -> InFlight | SdkInFlight:
        if self.sdk is not None:
            counter = self.sdk.get_meter(*scope).create_up_down_counter(name, unit=unit, description=description)
            return SdkInFlight(counter, attribute_names)
        fast = InFlight(name, unit, description, attribute_names)
        self.register(scope[0], scope[1], fast)
        return fast

    def enable_delta(self) -> None:
        """One reader will collect deltas: histograms keep the totals that takes (collection time only)."""
        with self._lock:
            self.delta = True
            for _, instruments in self._scopes:
                for instrument in instruments:
                    instrument.delta = True

    def register(self, scope_name: str, version: str, instrument: FastHistogram | FastUpDownCounter | InFlight) -> None:
        instrument.delta = self.delta
        with self._lock:
            for scope, instruments in self._scopes:
                if scope.name == scope_name:
                    instruments.append(instrument)
                    return
            self._scopes.append((InstrumentationScope(scope_name, version), [instrument]))

    def scope_metrics(self, delta: bool = False) -> list[ScopeMetrics]:
        now = time_ns()
        with self._lock:
            scopes = [(scope, list(instruments)) for scope, instruments in self._scopes]
        result = []
        for scope, instruments in scopes:
            metrics = [m for m in (i.collect(now, delta) for i in instruments) if m is not None]
            if metrics:
                result.append(ScopeMetrics(scope=scope, metrics=metrics, schema_url=""))
        return result


def merge_into(
    metrics_data: MetricsData | None, local: LocalMetrics, resource: Resource, delta: bool = False
) -> MetricsData | None:
    """The SDK's collection plus the fast instruments, under the same resource."""
    extra = local.scope_metrics(delta)
    if not extra:
        return metrics_data
    if metrics_data is None or not metrics_data.resource_metrics:
        return MetricsData(resource_metrics=[ResourceMetrics(resource=resource, scope_metrics=extra, schema_url="")])
    first, *rest = metrics_data.resource_metrics
    merged = ResourceMetrics(
        resource=first.resource, scope_metrics=[*first.scope_metrics, *extra], schema_url=first.schema_url
    )
    return MetricsData(resource_metrics=[merged, *rest])


class FastCounter(FastUpDownCounter):
    """A cumulative monotonic sum keyed by a tuple of attribute values."""

    monotonic: ClassVar[bool] = True


class _DictHistogram:
    """The SDK's ``Histogram.record(value, attributes)`` call shape over a :class:`FastHistogram`."""

    __slots__ = ("_names", "fast")

    def __init__(self, histogram: FastHistogram) -> None:
        self.fast = histogram
        self._names = histogram.attribute_names

    def record(self, amount: float, attributes: Mapping[str, Any] | None = None) -> None:
        self.fast.record(amount, tuple(map((attributes or {}).get, self._names)))


class _DictCounter:
    """The SDK's ``Counter.add(amount, attributes)`` call shape over a :class:`FastCounter`."""

    __slots__ = ("_names", "fast")

    def __init__(self, counter: FastUpDownCounter) -> None:
        self.fast = counter
        self._names = counter.attribute_names

    def add(self, amount: int, attributes: Mapping[str, Any] | None = None) -> None:
        self.fast.add(amount, tuple(map((attributes or {}).get, self._names)))


def values_recorder(histogram: Any, attribute_names: Sequence[str]) -> Callable[[float, tuple[Any, ...]], None]:
    """``record(value, values)``: attribute values in ``attribute_names`` order, ``None`` for absent ones.

    For a hook that can prepare its attribute values once (per statement, per
    client) instead of building a mapping per call. Works over the SDK's
    histogram too, for a meter provider that is not the package's.
    """
    return _by_values(histogram, "record", attribute_names)


def values_adder(counter: Any, attribute_names: Sequence[str]) -> Callable[[int, tuple[Any, ...]], None]:
    """``add(amount, values)``, the counter twin of :func:`values_recorder`."""
    return _by_values(counter, "add", attribute_names)


def _by_values(instrument: Any, method: str, attribute_names: Sequence[str]) -> Callable[[Any, tuple[Any, ...]], None]:
    if isinstance(instrument, (_DictHistogram, _DictCounter)):
        fast: Callable[[Any, tuple[Any, ...]], None] = getattr(instrument.fast, method)
        return fast
    call = getattr(instrument, method)
    names = tuple(attribute_names)

    def by_values(amount: Any, values: tuple[Any, ...]) -> None:
        call(amount, _named(names, values))

    return by_values


_LOCALS: weakref.WeakKeyDictionary[Any, LocalMetrics] = weakref.WeakKeyDictionary()


def attach(meter_provider: Any, local: LocalMetrics) -> None:
    """Let integrations that receive only the meter provider find its pre-aggregated side."""
    _LOCALS[meter_provider] = local


def histogram(
    meter_provider: Any,
    scope: tuple[str, str],
    name: str,
    unit: str,
    description: str,
    boundaries: Sequence[float],
    attribute_names: Sequence[str],
) -> Any:
    """A histogram with the SDK's call shape: pre-aggregated when the provider is the package's.

    ``attribute_names`` must list every key callers pass; other keys are not recorded.
    """
    local = _LOCALS.get(meter_provider)
    if local is None:
        return meter_provider.get_meter(*scope).create_histogram(
            name, unit=unit, description=description, explicit_bucket_boundaries_advisory=list(boundaries)
        )
    fast = FastHistogram(name, unit, description, boundaries, attribute_names)
    local.register(scope[0], scope[1], fast)
    return _DictHistogram(fast)


def counter(
    meter_provider: Any, scope: tuple[str, str], name: str, unit: str, description: str, attribute_names: Sequence[str]
) -> Any:
    """A monotonic counter with the SDK's call shape: pre-aggregated when the provider is the package's."""
    local = _LOCALS.get(meter_provider)
    if local is None:
        return meter_provider.get_meter(*scope).create_counter(name, unit=unit, description=description)
    fast = FastCounter(name, unit, description, attribute_names)
    local.register(scope[0], scope[1], fast)
    return _DictCounter(fast)
