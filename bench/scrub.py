"""``python -m bench.scrub``: the export thread's redaction cost per span.

The scrubbing exporter runs on the batch processor's thread, not on the
request, but it must keep up with the span rate and must not steal the CPU a
request needs. This measures ``scrub_span`` over a realistic mix (a server
span with headers and query, a SQL span, a Redis span, an httpx client span,
a failed request with an exception event, and a log-heavy span with free
text) with a fresh redactor (every value seen for the first time: the worst
case) and with a warm one (the repeated short values cached), and the same
mix with no redaction at all as the floor. Best of several rounds.
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from otel_setup._security.redaction import Redactor
from otel_setup._security.scrubbing import scrub_span


def _error_text() -> str:
    try:
        raise RuntimeError("upstream answered 502 for https://api.guildwars2.com/v2/account?lang=en")
    except RuntimeError as error:
        return "".join(traceback.format_exception(type(error), error, error.__traceback__))


def build_spans(copies: int) -> list[ReadableSpan]:
    """``copies`` times the mix, each copy with its own ids and numbers (so values differ)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("bench")
    stack = _error_text()
    for i in range(copies):
        with tracer.start_as_current_span("GET /api/characters/{name}", kind=SpanKind.SERVER) as server:
            server.set_attributes(
                {
                    "http.request.method": "GET",
                    "http.route": "/api/characters/{name}",
                    "url.path": f"/api/characters/Hero{i}",
                    "url.query": f"lang=en&page={i % 7}",
                    "url.scheme": "http",
                    "server.address": "127.0.0.1",
                    "server.port": 8000,
                    "client.address": f"10.0.{i % 250}.{i % 200}",
                    "network.protocol.version": "1.1",
                    "user_agent.original": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0",
                    "http.response.status_code": 200,
                    "http.request.header.x-request-id": (f"req-{i:08d}",),
                }
            )
            with tracer.start_as_current_span("SELECT app", kind=SpanKind.CLIENT) as db:
                db.set_attributes(
                    {
                        "db.system.name": "postgresql",
                        "db.namespace": "app",
                        "db.query.text": (
                            "SELECT characters.id, characters.name FROM characters WHERE characters.name = %(name_1)s"
                        ),
                        "db.operation.name": "SELECT",
                        "server.address": "db.internal",
                        "server.port": 5432,
                    }
                )
            with tracer.start_as_current_span("GET", kind=SpanKind.CLIENT) as cache:
                cache.set_attributes(
                    {"db.system.name": "redis", "db.query.text": f"GET gw2:char:Hero{i}", "db.operation.name": "GET"}
                )
            with tracer.start_as_current_span("GET", kind=SpanKind.CLIENT) as client:
                client.set_attributes(
                    {
                        "http.request.method": "GET",
                        "url.full": f"https://api.guildwars2.com/v2/characters/Hero{i}?v=latest&lang=en",
                        "server.address": "api.guildwars2.com",
                        "http.response.status_code": 200,
                    }
                )
            with tracer.start_as_current_span("POST /api/ask", kind=SpanKind.SERVER) as failed:
                failed.set_attribute("http.route", "/api/ask")
                failed.add_event(
                    "exception",
                    {
                        "exception.type": "RuntimeError",
                        "exception.message": f"request {i} failed: upstream answered 502",
                        "exception.stacktrace": stack,
                        "exception.escaped": True,
                    },
                )
            with tracer.start_as_current_span("build profile") as work:
                work.add_event(
                    "log",
                    {
                        "message": f"profile built for Hero{i} with 12 items, guild [TAG] rank Officer",
                        "detail": json.dumps({"items": i % 12, "world": "Desolation", "profession": "Necromancer"}),
                    },
                )
    provider.shutdown()
    return list(exporter.get_finished_spans())


def _best(rounds: int, run: Callable[[], None]) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def measure(spans: Sequence[ReadableSpan], rounds: int) -> dict[str, Any]:
    def floor() -> None:
        for span in spans:
            _ = (span.name, span.attributes, span.events, span.links, span.status)

    def cold() -> None:
        redactor = Redactor()
        for span in spans:
            scrub_span(span, redactor)

    warm_redactor = Redactor()
    for span in spans:
        scrub_span(span, warm_redactor)

    def warm() -> None:
        for span in spans:
            scrub_span(span, warm_redactor)

    n = len(spans)
    return {
        "spans": n,
        "floor_us_per_span": round(_best(rounds, floor) / n * 1e6, 2),
        "cold_us_per_span": round(_best(rounds, cold) / n * 1e6, 2),
        "warm_us_per_span": round(_best(rounds, warm) / n * 1e6, 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--copies", type=int, default=300, help="copies of the six-span mix")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    spans = build_spans(args.copies)
    print(json.dumps(measure(spans, args.rounds)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
