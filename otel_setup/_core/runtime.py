"""Interpreter tuning that keeps background telemetry work out of request latency.

The span, log and metric exporters run on threads of their own and spend most
of their time in Python (encoding a span to OTLP protobuf costs about 100 µs
here). CPython lets a thread that waits for the interpreter lock take it only
after the switch interval, 5 ms by default: a request whose coroutine resumes
while an export is encoding waits up to 5 ms each time, which shows as a p99
of 10-12 ms against a p50 under 2 ms (docs/reliability.md). A 1 ms interval
bounds each wait to 1 ms; a CPU-bound thread is asked to let go more often,
which costs a few microseconds per switch and nothing when only one thread runs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Final

__all__ = ["CPYTHON_DEFAULT_INTERVAL", "lower_switch_interval"]

CPYTHON_DEFAULT_INTERVAL: Final = 0.005


def lower_switch_interval(milliseconds: float) -> Callable[[], None]:
    """Set the switch interval unless it is off (0) or someone already chose one; returns the undo."""
    current = sys.getswitchinterval()
    wanted = milliseconds / 1000.0
    # getswitchinterval() reports the microsecond-rounded value; compare loosely.
    if milliseconds <= 0 or abs(current - CPYTHON_DEFAULT_INTERVAL) > 1e-6:
        return _nothing
    sys.setswitchinterval(wanted)

    def restore() -> None:
        if abs(sys.getswitchinterval() - wanted) < 1e-6:
            sys.setswitchinterval(current)

    return restore


def _nothing() -> None:
    return None
