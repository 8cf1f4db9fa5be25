"""The one polling helper: wait for an observable condition instead of sleeping a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], object], timeout: float = 10.0, step: float = 0.05) -> bool:
    """Poll ``condition`` every ``step`` seconds; whether it held within ``timeout`` (checked once more at the end)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return bool(condition())
