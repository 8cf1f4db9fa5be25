"""One benchmark mode in its own process, driven over stdin/stdout with JSON lines.

A worker builds its app once (global providers are per process), warms up,
then answers commands so the orchestrator can interleave short rounds across
modes that all stay alive. Commands:

- ``{"cmd": "run", "requests": N, "batches": B}`` -> per-batch CPU ns per request;
- ``{"cmd": "memory", "requests": N, "every": K}`` -> RSS samples in KiB;
- ``{"cmd": "quit"}``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from typing import Any, TextIO

from bench.apps import MODES, REALISTIC_PATH, build_realistic, build_trivial
from bench.driver import BASE_SCOPE, Driver


def rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("VmRSS not found")


def _reply(out: TextIO, payload: dict[str, Any]) -> None:
    out.write(json.dumps(payload) + "\n")
    out.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", required=True, choices=sorted(MODES))
    parser.add_argument("--warmup", type=int, default=3000)
    parser.add_argument("--route", choices=("trivial", "realistic"), default="trivial")
    args = parser.parse_args()
    # The protocol owns the real stdout. The app's own stdout (where otel_setup
    # writes its JSON request log, as a container would collect it) goes to
    # /dev/null: formatting and the write system call are still paid.
    out = os.fdopen(os.dup(1), "w")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - lives as long as the process

    mode = MODES[args.mode]
    if args.route == "realistic":
        app = build_realistic(mode)
        driver = Driver(app, dict(BASE_SCOPE, path=REALISTIC_PATH, raw_path=REALISTIC_PATH.encode()))
        driver.enter(app.router.lifespan_context(app))
    else:
        driver = Driver(build_trivial(mode))
    status = driver.status()
    driver.warm_up(args.warmup)
    gc.collect()
    package = sys.modules.get("otel_setup")
    _reply(
        out,
        {
            "ready": True,
            "mode": mode.name,
            "status": status,
            "pid": os.getpid(),
            "otel_setup": getattr(package, "__file__", None),
        },
    )

    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "run":
            batches = [driver.batch(command["requests"]) for _ in range(command["batches"])]
            _reply(out, {"thread_ns": [b.thread_ns for b in batches], "process_ns": [b.process_ns for b in batches]})
        elif command["cmd"] == "memory":
            samples = [rss_kib()]
            done = 0
            while done < command["requests"]:
                step = min(command["every"], command["requests"] - done)
                driver.warm_up(step)
                done += step
                samples.append(rss_kib())
            _reply(out, {"rss_kib": samples, "every": command["every"]})
        elif command["cmd"] == "quit":
            break
    driver.close()
    if mode.name.startswith("otel_setup"):
        import otel_setup

        telemetry = otel_setup._core.configure.active()
        if telemetry is not None:
            telemetry.shutdown(timeout=2.0)


if __name__ == "__main__":
    main()
