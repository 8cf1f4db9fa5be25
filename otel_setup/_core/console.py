"""A readable local view of traces: one tree per trace on stderr (``OTEL_TRACES_EXPORTER=console``).

The SDK's console exporter prints each span as a multi-line JSON document
into the same stream as the JSON logs, which neither a person nor a log
shipper can read. Here a trace is printed once its local root ends, as an
indented tree with durations and the attributes that say what each span did;
stdout keeps its one JSON object per line. Spans arrive already redacted (the
exporter sits behind the scrubbing one). Meant for development: nothing here
runs on the request path, and memory is bounded by a trace cap.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import IO, Final

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode

__all__ = ["TreeSpanExporter", "render_tree"]

# What a span did, in the order shown; the first present ones only.
_SHOWN: Final = (
    "http.response.status_code",
    "error.type",
    "db.system.name",
    "db.query.summary",
    "db.operation.name",
    "server.address",
    "gen_ai.request.model",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "otel_setup.kept",
)
_VALUE_WIDTH: Final = 60
_MAX_TRACES: Final = 1000
_KIND: Final = {
    SpanKind.SERVER: "server",
    SpanKind.CLIENT: "client",
    SpanKind.INTERNAL: "internal",
    SpanKind.PRODUCER: "producer",
    SpanKind.CONSUMER: "consumer",
}


def _ms(span: ReadableSpan) -> float:
    if span.start_time is None or span.end_time is None:
        return 0.0
    return (span.end_time - span.start_time) / 1e6


def _line(span: ReadableSpan) -> str:
    attributes = span.attributes or {}
    details = []
    for key in _SHOWN:
        if key == "server.address" and span.kind is SpanKind.SERVER:
            continue  # the service's own host, on every root
        if key in attributes:
            value = str(attributes[key])
            if len(value) > _VALUE_WIDTH:
                value = value[: _VALUE_WIDTH - 3] + "..."
            details.append(f"{key}={value}")
    failed = span.status.status_code is StatusCode.ERROR
    head = f"{span.name}  [{_KIND.get(span.kind, 'internal')}]  {_ms(span):.1f} ms"
    return head + ("  ERROR" if failed else "") + ("  " + " ".join(details) if details else "")


def render_tree(spans: Sequence[ReadableSpan]) -> str:
    """One trace's spans as an indented tree; spans whose parent is missing hang off the top."""
    ids = {span.context.span_id for span in spans if span.context is not None}
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in spans:
        parent = span.parent.span_id if span.parent is not None and span.parent.span_id in ids else None
        children.setdefault(parent, []).append(span)
    for siblings in children.values():
        siblings.sort(key=lambda item: item.start_time or 0)
    roots = children.get(None, [])
    trace_id = next((span.context.trace_id for span in spans if span.context is not None), 0)
    total = max((_ms(root) for root in roots), default=0.0)
    lines = [f"trace {trace_id:032x}  {len(spans)} span{'s' if len(spans) != 1 else ''}, {total:.1f} ms"]

    def walk(span: ReadableSpan, prefix: str, last: bool) -> None:
        lines.append(f"{prefix}{'`-- ' if last else '|-- '}{_line(span)}")
        below = children.get(span.context.span_id if span.context is not None else None, [])
        for index, child in enumerate(below):
            walk(child, prefix + ("    " if last else "|   "), index == len(below) - 1)

    for index, root in enumerate(roots):
        walk(root, "  ", index == len(roots) - 1)
    return "\n".join(lines) + "\n"


class TreeSpanExporter(SpanExporter):
    """Holds a trace's spans until its local root ends, then writes the tree."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream
        self._pending: OrderedDict[int, list[ReadableSpan]] = OrderedDict()
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        done: list[list[ReadableSpan]] = []
        with self._lock:
            for span in spans:
                if span.context is None:
                    continue
                trace_id = span.context.trace_id
                self._pending.setdefault(trace_id, []).append(span)
                if span.parent is None or span.parent.is_remote:
                    done.append(self._pending.pop(trace_id))
            while len(self._pending) > _MAX_TRACES:
                done.append(self._pending.popitem(last=False)[1])
        for trace in done:
            self._write(render_tree(trace))
        return SpanExportResult.SUCCESS

    def _write(self, text: str) -> None:
        stream = self._stream or sys.stderr
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed stream at exit: the view is best effort

    def shutdown(self) -> None:
        with self._lock:
            rest = list(self._pending.values())
            self._pending.clear()
        for trace in rest:
            self._write(render_tree(trace))

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True
