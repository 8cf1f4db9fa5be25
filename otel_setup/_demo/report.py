"""What the telemetry says, computed only from what the package produced.

Inputs are the Prometheus text scraped from the app's ``/metrics``, the spans
the app exported over OTLP and the JSON lines it printed. Percentiles come
from histogram buckets exactly as PromQL's ``histogram_quantile`` computes
them, so the numbers match what a dashboard over the same series would show;
nothing here re-times a request.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from otel_setup._demo.receiver import ExportedSpan

__all__ = ["Sample", "histogram_quantile", "parse_prometheus", "render_report"]

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


def parse_prometheus(text: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition (``prometheus_client``'s parser)."""
    from prometheus_client.parser import text_string_to_metric_families

    return [
        Sample(sample.name, dict(sample.labels), float(sample.value))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """PromQL's ``histogram_quantile`` over cumulative ``(le, count)`` pairs.

    Linear interpolation inside the bucket that holds the rank; a rank in the
    ``+Inf`` bucket answers the highest finite bound, as Prometheus does.
    """
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def _select(samples: Sequence[Sample], name: str, **match: str) -> list[Sample]:
    return [s for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in match.items())]


def _buckets(
    samples: Sequence[Sample], base: str, keep: Iterable[str] = (), **match: str
) -> dict[Labels, list[tuple[float, float]]]:
    """Cumulative buckets summed over every label not in ``keep``."""
    keys = tuple(keep)
    summed: dict[Labels, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for sample in _select(samples, f"{base}_bucket", **match):
        group = tuple((k, sample.labels.get(k, "")) for k in keys)
        summed[group][float(sample.labels["le"])] += sample.value
    return {group: sorted(counts.items()) for group, counts in summed.items()}


def _total(samples: Sequence[Sample], name: str, **match: str) -> float:
    return sum(s.value for s in _select(samples, name, **match))


# Below this many requests a route's percentiles are marked: p99 of five requests is the slowest one.
FEW_REQUESTS = 20
# db.system.name values that are caches, shown apart from the databases
_CACHE_SYSTEMS = frozenset({"redis", "memcached", "valkey"})


def _ms(seconds: float | None) -> str:
    return "     -" if seconds is None else f"{seconds * 1000:6.1f}"


@dataclass
class RouteRow:
    method: str
    route: str
    count: float
    errors: float
    p50: float | None
    p95: float | None
    p99: float | None


def route_rows(samples: Sequence[Sample]) -> list[RouteRow]:
    """Per ``(method, route)``: requests, 5xx and latency percentiles of the server histogram."""
    base = "http_server_request_duration_seconds"
    rows = []
    for group, buckets in _buckets(samples, base, ("http_request_method", "http_route")).items():
        labels = dict(group)
        match = {"http_request_method": labels["http_request_method"], "http_route": labels["http_route"]}
        count = _total(samples, f"{base}_count", **match)
        errors = sum(
            s.value
            for s in _select(samples, f"{base}_count", **match)
            if s.labels.get("http_response_status_code", "").startswith("5")
        )
        rows.append(
            RouteRow(
                labels["http_request_method"],
                labels["http_route"] or "(no route)",
                count,
                errors,
                histogram_quantile(0.5, buckets),
                histogram_quantile(0.95, buckets),
                histogram_quantile(0.99, buckets),
            )
        )
    return sorted(rows, key=lambda row: -row.count)


@dataclass
class Findings:
    """The report's numbers, kept apart from their rendering so tests can compare them."""

    window_seconds: float
    routes: list[RouteRow]
    requests: float
    cache_hits: float
    cache_misses: float
    db_p95: dict[str, float | None]
    gw2_calls: float
    gw2_429: float
    ai_calls: float
    ai_tokens: dict[str, float]
    ai_cost_usd: float
    sampled_traces: int
    sampling_ratio: float
    trace: list[tuple[int, ExportedSpan]] = field(default_factory=list)
    trace_logs: list[str] = field(default_factory=list)


def findings(
    samples: Sequence[Sample],
    spans: Sequence[ExportedSpan],
    log_lines: Sequence[str],
    *,
    window_seconds: float,
    sampling_ratio: float,
) -> Findings:
    routes = route_rows(samples)
    db_p95 = {
        dict(group).get("db_system_name", "") or "?": histogram_quantile(0.95, buckets)
        for group, buckets in _buckets(samples, "db_client_operation_duration_seconds", ("db_system_name",)).items()
    }
    tokens: dict[str, float] = defaultdict(float)
    for sample in _select(samples, "gen_ai_client_token_usage_sum"):
        tokens[sample.labels.get("gen_ai_token_type", "?")] += sample.value
    roots = {s.trace_id for s in spans if s.kind == "SERVER" and not s.parent_span_id}
    chosen = choose_trace(spans, log_lines)
    return Findings(
        window_seconds=window_seconds,
        routes=routes,
        requests=sum(row.count for row in routes),
        cache_hits=_total(samples, "otel_setup_cache_lookups_total", cache_result="hit"),
        cache_misses=_total(samples, "otel_setup_cache_lookups_total", cache_result="miss"),
        db_p95=db_p95,
        gw2_calls=_total(samples, "gw2_api_requests_total"),
        gw2_429=_total(samples, "gw2_api_requests_total", http_response_status_code="429"),
        ai_calls=_total(samples, "otel_setup_genai_requests_total"),
        ai_tokens=dict(tokens),
        ai_cost_usd=_total(samples, "otel_setup_genai_cost_usd_total"),
        sampled_traces=len(roots),
        sampling_ratio=sampling_ratio,
        trace=tree(spans, chosen) if chosen else [],
        trace_logs=[line for line in log_lines if chosen and _trace_id(line) == chosen],
    )


def _trace_id(line: str) -> str | None:
    if '"trace_id"' not in line:
        return None
    try:
        value = json.loads(line).get("trace_id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def choose_trace(spans: Sequence[ExportedSpan], log_lines: Sequence[str]) -> str | None:
    """The most telling sampled trace: most log lines of its own, then most spans."""
    by_trace: dict[str, int] = defaultdict(int)
    for span in spans:
        by_trace[span.trace_id] += 1
    roots = {s.trace_id for s in spans if s.kind == "SERVER" and not s.parent_span_id}
    logs: dict[str, int] = defaultdict(int)
    for line in log_lines:
        trace_id = _trace_id(line)
        if trace_id in roots:
            logs[trace_id] += 1
    candidates = [t for t in roots if by_trace[t] > 0]
    if not candidates:
        return None
    return max(candidates, key=lambda t: (min(logs[t], 2), by_trace[t], t))


def tree(spans: Sequence[ExportedSpan], trace_id: str) -> list[tuple[int, ExportedSpan]]:
    """Depth-first ``(depth, span)`` of one trace, children in start order."""
    mine = [s for s in spans if s.trace_id == trace_id]
    ids = {s.span_id for s in mine}
    children: dict[str, list[ExportedSpan]] = defaultdict(list)
    for span in mine:
        children[span.parent_span_id if span.parent_span_id in ids else ""].append(span)
    ordered: list[tuple[int, ExportedSpan]] = []

    def walk(parent: str, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s.start_ns):
            ordered.append((depth, span))
            walk(span.span_id, depth + 1)

    walk("", 0)
    return ordered


def _span_note(span: ExportedSpan) -> str:
    attributes = span.attributes
    notes = []
    status = attributes.get("http.response.status_code")
    if status is not None:
        notes.append(str(status))
    for key, label in (("gen_ai.usage.input_tokens", "in"), ("gen_ai.usage.output_tokens", "out")):
        if key in attributes:
            notes.append(f"{label}={attributes[key]}")
    if "db.system.name" in attributes:
        notes.append(str(attributes["db.system.name"]))
    if span.status == "ERROR":
        notes.append("ERROR")
    return " ".join(notes)


def render_trace(rows: Sequence[tuple[int, ExportedSpan]]) -> list[str]:
    if not rows:
        return []
    start = rows[0][1].start_ns
    lines = []
    last_at_depth: dict[int, bool] = {}
    for index, (depth, span) in enumerate(rows):
        later = [d for d, _ in rows[index + 1 :]]
        is_last = not any(d == depth for d in _until_shallower(later, depth))
        last_at_depth[depth] = is_last
        prefix = "".join("   " if last_at_depth.get(level, True) else "│  " for level in range(1, depth))
        branch = "" if depth == 0 else ("└─ " if is_last else "├─ ")
        label = f"{prefix}{branch}{span.name}"
        offset = (span.start_ns - start) / 1e6
        lines.append(
            f"  {label:<58} {span.kind.lower():<8} +{offset:7.1f} ms {span.duration_ms:8.1f} ms  {_span_note(span)}"
        )
    return lines


def _until_shallower(depths: list[int], depth: int) -> list[int]:
    taken = []
    for d in depths:
        if d < depth:
            break
        taken.append(d)
    return taken


def render_report(result: Findings) -> str:
    """The text the demo prints."""
    window = max(result.window_seconds, 1e-9)
    out = [
        "",
        f"What the telemetry says ({result.requests:.0f} requests in {result.window_seconds:.0f} s; "
        "from /metrics and the exported spans)",
        "",
        "  Latency percentiles are interpolated inside histogram buckets, as PromQL's histogram_quantile does.",
        "",
        f"  {'route':<40} {'requests':>8} {'req/s':>6} {'5xx':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}",
    ]
    few = False
    for row in result.routes:
        error_rate = row.errors / row.count if row.count else 0.0
        mark = " *" if row.count < FEW_REQUESTS else ""
        few = few or bool(mark)
        out.append(
            f"  {row.method + ' ' + row.route:<40} {row.count:8.0f} {row.count / window:6.2f} {error_rate:7.1%} "
            f"{_ms(row.p50):>7} {_ms(row.p95):>7} {_ms(row.p99):>7}{mark}"
        )
    if few:
        out.append(f"  * fewer than {FEW_REQUESTS} requests: its percentiles say little")
    lookups = result.cache_hits + result.cache_misses
    ratio = f"{result.cache_hits / lookups:.0%}" if lookups else "-"
    out += [
        "",
        f"  cache            hit ratio {ratio} ({result.cache_hits:.0f} hits, {result.cache_misses:.0f} misses)",
    ]
    for system, p95 in sorted(result.db_p95.items()):
        kind = "cache" if system in _CACHE_SYSTEMS else "database"
        out.append(f"  {kind:<16} {system} p95 {_ms(p95).strip()} ms")
    tokens = ", ".join(f"{kind} {count:.0f}" for kind, count in sorted(result.ai_tokens.items())) or "none"
    out += [
        f"  GW2 API          {result.gw2_calls:.0f} calls, {result.gw2_429:.0f} answered 429 (rate limited)",
        f"  AI API           {result.ai_calls:.0f} calls, tokens {tokens}, cost ${result.ai_cost_usd:.6f}",
        f"  traces sampled   {result.sampled_traces} of {result.requests:.0f} requests "
        f"({result.sampled_traces / result.requests if result.requests else 0:.1%}; head sampling at "
        f"{result.sampling_ratio:g}; metrics count every request)",
        "",
    ]
    if result.trace:
        root = result.trace[0][1]
        out.append(f"One sampled trace: {root.trace_id} ({len(result.trace)} spans)")
        out += render_trace(result.trace)
        out.append("")
        out.append(f"Log lines with trace_id {root.trace_id}:")
        out += [f"  {line}" for line in result.trace_logs] or ["  (none)"]
    else:
        out.append("No trace was sampled; raise --sampling or --duration.")
    out.append("")
    return "\n".join(out)


def as_dict(result: Findings) -> dict[str, Any]:
    """A JSON-able summary (numbers only), for scripts and tests."""
    return {
        "window_seconds": result.window_seconds,
        "requests": result.requests,
        "routes": [vars(row) for row in result.routes],
        "cache": {"hits": result.cache_hits, "misses": result.cache_misses},
        "db_p95_seconds": result.db_p95,
        "gw2": {"calls": result.gw2_calls, "rate_limited": result.gw2_429},
        "ai": {"calls": result.ai_calls, "tokens": result.ai_tokens, "cost_usd": result.ai_cost_usd},
        "sampled_traces": result.sampled_traces,
        "trace_id": result.trace[0][1].trace_id if result.trace else None,
    }
