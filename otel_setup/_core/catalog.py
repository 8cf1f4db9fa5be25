"""Every metric the package emits, declared once: name, instrument, unit, attributes, meaning.

The tables of ``docs/metrics.md`` are rendered from :data:`CATALOG`
(``python -m otel_setup._core.catalog docs/metrics.md`` rewrites them in place), and
the tests hold both ends: the document must equal the rendering, and the
example service's ``/metrics`` must show exactly the Prometheus names of the
entries it can produce. A new instrument without an entry, or an entry nothing
records, fails the suite instead of surprising a dashboard.

The Prometheus name is derived, not typed: dots become underscores and the
unit ``s`` appends ``_seconds`` (units in braces are dropped), as the OTel
Prometheus exporter and the collector's ``prometheus`` exporter both do;
counters get ``_total`` and histograms ``_bucket``/``_sum``/``_count``.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

__all__ = ["CATALOG", "SECTIONS", "MetricSpec", "buckets", "markdown_table", "render_document", "spec"]

Kind = Literal["histogram", "counter", "up-down counter", "gauge", "observable gauge"]


@dataclass(frozen=True)
class MetricSpec:
    """One metric as a user of the data sees it."""

    name: str
    kind: Kind
    unit: str
    attributes: str
    """Markdown: the attribute keys and their bounded values."""
    meaning: str
    section: str
    buckets: tuple[float, ...] | None = None
    """A histogram's explicit bucket boundaries: the one layout every scope recording it uses."""

    @property
    def prometheus(self) -> str:
        """The family name in Prometheus, without the ``_total``/``_bucket``... suffixes."""
        base = re.sub(r"[^a-zA-Z0-9_:]", "_", self.name)
        return base + _UNIT_SUFFIXES.get(self.unit, "")

    @property
    def prometheus_series(self) -> str:
        """The series names as written in the document's last column."""
        if self.kind == "histogram":
            return f"{self.prometheus}_{{bucket,sum,count}}"
        if self.kind == "counter":
            return f"{self.prometheus}_total"
        return self.prometheus


# UCUM unit -> the suffix both Prometheus exporters append
_UNIT_SUFFIXES: Final = {"s": "_seconds", "By": "_bytes"}

# section key -> heading in docs/metrics.md (order of the document)
SECTIONS: Final = {
    "http-server": "HTTP server (FastAPI)",
    "http-client": "HTTP client (httpx, including GW2 and AI calls)",
    "database": "Database and cache",
    "gw2": "GW2 API",
    "genai": "GenAI (OpenAI-compatible APIs)",
    "cache": "Cache",
    "users": "Active users",
    "pipeline": "The pipeline itself",
    "process": "Process and runtime",
}

# Request-duration buckets: the semantic-conventions advisory set plus 0.2 s
# and 2 s, so the "p95 < 200 ms" objective and the 2 s alert threshold fall
# exactly on a bucket boundary instead of being interpolated.
SERVER_DURATION_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.2,
    0.25,
    0.5,
    0.75,
    1.0,
    2.0,
    2.5,
    5.0,
    7.5,
    10.0,
)
# The semantic-conventions advisory set.
CLIENT_DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
# The semantic-conventions advisory set plus 0.5 ms and 2.5 ms: SQL and Redis share this one
# family, and a cache command usually answers in under a millisecond.
DB_DURATION_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
# The GenAI semantic conventions' advisory sets (tokens: 1 ... 67,108,864).
GENAI_DURATION_BUCKETS: Final = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
GENAI_TOKEN_BUCKETS: Final[tuple[float, ...]] = tuple(4**n for n in range(14))

_GENAI_LABELS: Final = (
    "`gen_ai.operation.name` (`chat`), `gen_ai.provider.name`, `gen_ai.request.model`, `gen_ai.response.model`, "
    "`server.address`, `server.port`"
)

CATALOG: Final[tuple[MetricSpec, ...]] = (
    MetricSpec(
        "http.server.request.duration",
        "histogram",
        "s",
        "`http.request.method` (`_OTHER` for unknown), `http.route` (full template with router prefixes, mount "
        "paths and the application root; absent when no route matched), `http.response.status_code`, "
        "`url.scheme`, `network.protocol.version`, `error.type` (the exception's class when one escaped, else the "
        "status code of a 5xx)",
        "Time from request start to the last response byte (background tasks excluded; a server-sent event stream "
        "to its first event, see [fastapi.md](fastapi.md)); rate, errors and latency per route. Buckets carry "
        "exemplars (`trace_id`, `span_id`) of exported traces: OTLP points always, `/metrics` in OpenMetrics.",
        "http-server",
        SERVER_DURATION_BUCKETS,
    ),
    MetricSpec(
        "http.server.active_requests",
        "up-down counter",
        "{request}",
        "`http.request.method`, `url.scheme`",
        "Requests in flight right now (saturation).",
        "http-server",
    ),
    MetricSpec(
        "http.client.request.duration",
        "histogram",
        "s",
        "`http.request.method`, `http.response.status_code`, `server.address`, `server.port`, "
        "`network.protocol.version`, `error.type`; `url.template` on GW2 calls only (e.g. `/v2/characters/{name}`)",
        "Outgoing httpx calls, from sending the request to the end of the response headers.",
        "http-client",
        CLIENT_DURATION_BUCKETS,
    ),
    MetricSpec(
        "db.client.operation.duration",
        "histogram",
        "s",
        "`db.system.name` (`postgresql`, `sqlite`, `redis`, …), `db.operation.name` (`SELECT`, `GET`, …), "
        "`db.collection.name` (SQL only: the table of the first `FROM`/`INTO`/`UPDATE`; at most 200 names, then "
        "`_OTHER`), `db.namespace`, `server.address`, `server.port`, `error.type`",
        "Database query and Redis command time, including failed ones.",
        "database",
        DB_DURATION_BUCKETS,
    ),
    MetricSpec(
        "gw2.api.requests",
        "counter",
        "{request}",
        "`url.template`, `http.request.method`, `http.response.status_code` (absent when no response arrived), "
        "`error.type` (status code for 4xx/5xx, exception class for timeouts and connection errors), "
        "`gw2.error.reason` (403 only: `invalid_key`, `requires_authentication`, `requires_scope`, "
        "`membership_required`, `guild_leader_required`, `other`)",
        "GW2 API responses by endpoint template and outcome; 429 is rate limiting, 403 a rejected key or scope.",
        "gw2",
    ),
    MetricSpec(
        "gen_ai.client.operation.duration",
        "histogram",
        "s",
        f"{_GENAI_LABELS}, `error.type` (`insufficient_quota`, `rate_limit_exceeded`, `invalid_api_key`, "
        "`context_length_exceeded`, `model_not_found`, else the status code or exception class)",
        "AI call latency, to the end of the (streamed) body.",
        "genai",
        GENAI_DURATION_BUCKETS,
    ),
    MetricSpec(
        "gen_ai.client.token.usage",
        "histogram",
        "{token}",
        "as above without `error.type`, plus `gen_ai.token.type` (`input`, `output`)",
        "Tokens per successful call with reported usage; `_sum` is the tokens burnt.",
        "genai",
        GENAI_TOKEN_BUCKETS,
    ),
    MetricSpec(
        "otel_setup.genai.cost.usd",
        "counter",
        "{USD}",
        "`gen_ai.provider.name`, `otel_setup.genai.price_model` (price-table entry), `gen_ai.token.type`",
        "Spend in US dollars from the offline price table; unknown models add nothing.",
        "genai",
    ),
    MetricSpec(
        "otel_setup.genai.requests",
        "counter",
        "{request}",
        "`gen_ai.provider.name`, `gen_ai.operation.name`, `otel_setup.genai.price_model` (entry or `unknown`), "
        "`otel_setup.genai.outcome` (`ok`, `rate_limited`, `insufficient_quota`, `auth_error`, `client_error`, "
        "`server_error`, `transport_error`), `otel_setup.genai.usage` (`reported`, `missing`; successful calls only)",
        "AI calls by outcome: quota and rate-limit trouble, models missing from the price table, missing usage.",
        "genai",
    ),
    MetricSpec(
        "otel_setup.genai.ratelimit.limit",
        "gauge",
        "{1}",
        "`gen_ai.provider.name`, `server.address`, `otel_setup.genai.ratelimit.kind` (`requests`, `tokens`)",
        "`x-ratelimit-limit-*` of the last response.",
        "genai",
    ),
    MetricSpec(
        "otel_setup.genai.ratelimit.remaining",
        "gauge",
        "{1}",
        "as above",
        "`x-ratelimit-remaining-*` of the last response: budget left in the window.",
        "genai",
    ),
    MetricSpec(
        "otel_setup.genai.ratelimit.reset",
        "gauge",
        "s",
        "as above",
        "`x-ratelimit-reset-*` of the last response: seconds until the budget is full again.",
        "genai",
    ),
    MetricSpec(
        "otel_setup.cache.lookups",
        "counter",
        "{lookup}",
        "`cache.name` (longest `OTEL_SETUP_CACHE_KEY_PREFIXES` match without the trailing `:`, else `_OTHER`; "
        "unset: the key's first segment when it looks like a namespace), `cache.result` (`hit`, `miss`), "
        "`db.system.name` (`redis`), `db.operation.name`",
        "Redis reads as cache hits and misses; hit ratio = hit / all.",
        "cache",
    ),
    MetricSpec(
        "otel_setup.users.active",
        "observable gauge",
        "{user}",
        "`otel_setup.users.window` (`1m`, `5m`, `15m`: the sliding window counted)",
        "Distinct accounts seen in the window, from keyed digests held in process memory.",
        "users",
    ),
    MetricSpec(
        "otel.sdk.processor.span.processed",
        "counter",
        "{span}",
        "`otel.component.type` (`batching_span_processor`), `otel.component.name`, `error.type` (`queue_full` "
        "when the queue dropped a span, `already_shutdown`)",
        "Spans through the batch processor; `queue_full` ones were lost.",
        "pipeline",
    ),
    MetricSpec(
        "otel.sdk.processor.span.queue.size",
        "up-down counter",
        "{span}",
        "`otel.component.type`, `otel.component.name`",
        "Spans waiting for export.",
        "pipeline",
    ),
    MetricSpec(
        "otel.sdk.processor.span.queue.capacity",
        "up-down counter",
        "{span}",
        "as above",
        "Size of the span queue; drops start when size reaches it.",
        "pipeline",
    ),
    MetricSpec(
        "otel.sdk.processor.log.processed",
        "counter",
        "{log_record}",
        "as for spans (`batching_log_processor`)",
        "Log records through the batch processor; `queue_full` ones were lost.",
        "pipeline",
    ),
    MetricSpec(
        "otel.sdk.processor.log.queue.size",
        "up-down counter",
        "{log}",
        "`otel.component.type`, `otel.component.name`",
        "Log records waiting for export.",
        "pipeline",
    ),
    MetricSpec(
        "otel.sdk.processor.log.queue.capacity",
        "up-down counter",
        "{log_record}",
        "as above",
        "Size of the log queue.",
        "pipeline",
    ),
    MetricSpec(
        "otel.sdk.exporter.span.exported",
        "counter",
        "{span}",
        "`otel.component.type` (`otlp_http_span_exporter`, `otlp_grpc_span_exporter`), `error.type` "
        "(`export_failed`, `exception`) on failure",
        "Spans the exporter sent or failed to send.",
        "pipeline",
    ),
    MetricSpec(
        "otel.sdk.exporter.metric_data_point.exported",
        "counter",
        "{data_point}",
        "as above (`otlp_http_metric_exporter`, …)",
        "Metric data points pushed over OTLP, or failed.",
        "pipeline",
    ),
    MetricSpec(
        "otel.sdk.exporter.log.exported",
        "counter",
        "{log_record}",
        "as above (`otlp_http_log_exporter`, …)",
        "Log records the exporter sent or failed to send.",
        "pipeline",
    ),
    MetricSpec(
        "otel_setup.sentry.events.dropped",
        "counter",
        "{event}",
        "`reason`: `rate_limited` or `queue_full` (skipped by the package while Sentry's transport was "
        "unhealthy; `unhealthy` under `OTEL_SETUP_COMPAT=public`, which cannot tell the two apart), or "
        "sentry-sdk's own reason for an error event it lost (`network_error`, `ratelimit_backoff`, "
        "`queue_overflow`, …); deliberate drops (sampling, `before_send`) are not counted",
        "Error events that never reached Sentry.",
        "pipeline",
    ),
    MetricSpec(
        "process.cpu.time",
        "counter",
        "s",
        "`type`: `user` or `system`",
        "CPU time this process used; `rate()` of it is the cores it keeps busy.",
        "process",
    ),
    MetricSpec(
        "process.memory.usage",
        "gauge",
        "By",
        "—",
        "Resident memory of this process.",
        "process",
    ),
    MetricSpec(
        "process.memory.virtual",
        "gauge",
        "By",
        "—",
        "Virtual memory of this process.",
        "process",
    ),
    MetricSpec(
        "process.thread.count",
        "gauge",
        "",
        "—",
        "Threads of this process (the export and flusher threads included).",
        "process",
    ),
    MetricSpec(
        "process.open_file_descriptor.count",
        "gauge",
        "",
        "—",
        "Open file descriptors: sockets, files, pipes.",
        "process",
    ),
    MetricSpec(
        "cpython.gc.collections",
        "counter",
        "{collection}",
        "`cpython.gc.generation` (`0`, `1`, `2`; also as `generation`)",
        "Garbage collector runs per generation.",
        "process",
    ),
    MetricSpec(
        "cpython.gc.collected_objects",
        "counter",
        "{object}",
        "as above",
        "Objects the garbage collector freed.",
        "process",
    ),
    MetricSpec(
        "cpython.gc.uncollectable_objects",
        "counter",
        "{object}",
        "as above",
        "Objects the collector found but could not free (reference cycles with finalizers): a leak sign.",
        "process",
    ),
    MetricSpec(
        "otel_setup.trace.buffer.dropped",
        "counter",
        "{span}",
        "`reason`: `trace_full` (the request already buffered 128 calls) or `buffer_full` (1,024 calls buffered "
        "across the requests in flight)",
        "Calls of not-yet-sampled requests left out of the buffer that keeps failing and slow traces whole "
        "(`OTEL_SETUP_KEEP`); a kept trace then lacks those spans.",
        "pipeline",
    ),
)


_BY_NAME: Final = {entry.name: entry for entry in CATALOG}


def spec(name: str) -> MetricSpec:
    """The catalog entry of ``name``; a name missing from the catalog is a programming error."""
    return _BY_NAME[name]


def buckets(name: str) -> tuple[float, ...]:
    """The bucket boundaries of histogram ``name``: every instrument of that name uses these."""
    layout = _BY_NAME[name].buckets
    if layout is None:
        raise KeyError(f"{name} has no bucket layout in the catalog")
    return layout


def markdown_table(section: str) -> str:
    """One section's table, as it appears in docs/metrics.md (names backticked, Prometheus last)."""
    rows = ["| OTel name | kind, unit | attributes | meaning | Prometheus |", "|---|---|---|---|---|"]
    for spec in CATALOG:
        if spec.section == section:
            rows.append(
                f"| `{spec.name}` | {spec.kind}, {spec.unit or 'no unit'} | {spec.attributes} | {spec.meaning} "
                f"| `{spec.prometheus_series}` |"
            )
    return "\n".join(rows) + "\n"


_BLOCK: Final = re.compile(r"(<!-- catalog:([a-z0-9-]+) -->\n)(.*?)(<!-- /catalog -->)", re.DOTALL)


def render_document(text: str) -> str:
    """``text`` with every ``<!-- catalog:<section> -->`` … ``<!-- /catalog -->`` block regenerated."""
    return _BLOCK.sub(lambda m: m.group(1) + markdown_table(m.group(2)) + m.group(4), text)


def document_sections(text: str) -> list[str]:
    """The sections whose tables the document holds, in order."""
    return [match.group(2) for match in _BLOCK.finditer(text)]


if __name__ == "__main__":
    if len(sys.argv) > 1:
        path = Path(sys.argv[1])
        path.write_text(render_document(path.read_text(encoding="utf-8")), encoding="utf-8")
    else:
        for key in SECTIONS:
            print(f"<!-- catalog:{key} -->\n{markdown_table(key)}<!-- /catalog -->\n")
