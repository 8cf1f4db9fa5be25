"""Head sampling is a pure function of the trace id: tests compute the exact set it exports."""

from __future__ import annotations

import json
from typing import Any

from opentelemetry.sdk.trace.sampling import TraceIdRatioBased


def head_sampled(trace_id: str, ratio: float = 0.1) -> bool:
    """The SDK's ratio rule on the trace id's low 64 bits."""
    return (int(trace_id, 16) & ((1 << 64) - 1)) < TraceIdRatioBased.get_bound_for_rate(ratio)


def request_lines(text: str) -> list[dict[str, Any]]:
    """The package's JSON request-log records in captured stdout; every request has one, sampled or not."""
    lines = []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") in ("request", "slow request"):
                lines.append(record)
    return lines
