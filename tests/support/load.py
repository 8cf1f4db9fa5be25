"""Sequential keep-alive load from a process of its own.

Latency measured in the test process would include the loopback collector
stand-in decoding spans on the same interpreter lock, which inflates the
healthy baseline; a separate client process sees only the server.

Run as ``python -m tests.support.load BASE_URL PATH COUNT [BLOCKS]``; prints
a JSON object ``{"blocks": [[seconds, ...], ...], "statuses": {...}}``.
When 5xx answers are expected each request uses a new connection: uvicorn
closes a connection whose request raised, as servers do.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter

import httpx

from tests.support.processes import ROOT

__all__ = ["run_load"]


def run_load(base_url: str, path: str, count: int, expect: int = 200, timeout: float = 120.0) -> list[float]:
    """Run ``count`` requests in a child process; every answer must be ``expect``."""
    return run_blocks(base_url, path, count, 1, expect, timeout)[0]


def run_blocks(
    base_url: str, path: str, count: int, blocks: int, expect: int = 200, timeout: float = 120.0
) -> list[list[float]]:
    """``blocks`` runs of ``count`` requests, back to back on one connection."""
    completed = subprocess.run(
        [sys.executable, "-m", "tests.support.load", base_url, path, str(count), str(blocks), str(expect >= 500)],
        capture_output=True,
        check=True,
        timeout=timeout,
        cwd=str(ROOT),
    )
    result = json.loads(completed.stdout)
    statuses = {int(k): v for k, v in result["statuses"].items()}
    assert statuses == {expect: count * blocks}, (path, statuses)
    latencies: list[list[float]] = result["blocks"]
    return latencies


def _main(base_url: str, path: str, count: int, blocks: int, close: bool) -> None:
    headers = {"Connection": "close"} if close else {}
    runs: list[list[float]] = []
    statuses: Counter[int] = Counter()
    with httpx.Client(base_url=base_url, timeout=30.0) as client:
        for _ in range(blocks):
            latencies: list[float] = []
            for index in range(count):
                started = time.perf_counter()
                try:
                    status = client.get(path.format(index=index), headers=headers).status_code
                except httpx.HTTPError:
                    status = 0
                latencies.append(time.perf_counter() - started)
                statuses[status] += 1
            runs.append(latencies)
    json.dump({"blocks": runs, "statuses": statuses}, sys.stdout)


if __name__ == "__main__":
    _main(
        sys.argv[1],
        sys.argv[2],
        int(sys.argv[3]),
        int(sys.argv[4]) if len(sys.argv) > 4 else 1,
        len(sys.argv) > 5 and sys.argv[5] == "True",
    )
