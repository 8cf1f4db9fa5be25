"""Instructions per request, counted by valgrind: a figure the shared machine's noise cannot move.

    python -m bench.instructions --route realistic --modes bare,otel_setup --sampling 0,1

Each mode and sampling ratio runs twice under ``valgrind --tool=cachegrind
--cache-sim=no``: once with the warm-up only and once with ``--requests`` more;
the difference divided by ``--requests`` is the cost of one request, startup
and warm-up cancelling out. Sampling is fixed per run (0 and 1 by default) so
that the sampling lottery adds no noise; the defaults' figure is the 0 % one
plus a tenth of the difference. Instructions are not time (code run once per
request between the framework's retires fewer per cycle), but an A/B of two
builds or settings is exact. ``--against REV`` counts the otel_setup modes of
that revision's package too (extracted as ``python -m bench --against`` does),
for a before/after in one session. Needs the Debian package ``valgrind``; the
realistic route needs PostgreSQL, Redis and the stand-in, as ``--wrk`` does.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Sequence

from bench.apps import MODES, REALISTIC_PATH, build_realistic, build_trivial
from bench.driver import BASE_SCOPE, Driver
from bench.run import STANDIN_PORT, against_variants, checkout_package, child_env, launch, prepare_services, standin
from bench.run import variant as variant_of

_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def _serve(mode: str, route: str, requests: int) -> None:
    """Inside valgrind: build the app, run the requests, leave without shutdown work."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    if route == "realistic":
        app = build_realistic(MODES[mode])
        driver = Driver(app, dict(BASE_SCOPE, path=REALISTIC_PATH, raw_path=REALISTIC_PATH.encode()))
        driver.enter(app.router.lifespan_context(app))
    else:
        driver = Driver(build_trivial(MODES[mode]))
    driver.warm_up(requests)
    os._exit(0)


def _count(name: str, route: str, requests: int, sampling: str) -> int:
    mode, _ = variant_of(name)
    cwd, pythonpath = launch(name)
    command = [
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=no",
        "--cachegrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "bench.instructions",
        "--serve",
        mode.name,
        "--route",
        route,
        "--requests",
        str(requests),
    ]
    env = child_env(mode, pythonpath, OTEL_TRACES_SAMPLER_ARG=sampling)
    output = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=True).stderr
    match = _REFS.search(output)
    if match is None:
        raise RuntimeError(f"no instruction count in valgrind's output: {output[-2000:]}")
    return int(match.group(1).replace(",", ""))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--route", choices=("trivial", "realistic"), default="trivial")
    parser.add_argument("--modes", default="bare,otel_setup")
    parser.add_argument("--sampling", default="0,1", help="ratios for the otel_setup modes")
    parser.add_argument("--warmup", type=int, default=None, help="default: 2000 trivial, 200 realistic")
    parser.add_argument("--requests", type=int, default=None, help="default: 5000 trivial, 600 realistic")
    parser.add_argument("--against", action="append", default=[], metavar="REV", help="also count REV's package")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        _serve(args.serve, args.route, args.requests)
    warmup = args.warmup or (2000 if args.route == "trivial" else 200)
    requests = args.requests or (5000 if args.route == "trivial" else 600)
    with contextlib.ExitStack() as stack:
        if args.route == "realistic":
            stack.enter_context(standin(STANDIN_PORT))
            prepare_services()
        rows: list[tuple[str, float]] = []
        for revision in args.against:
            checkout_package(revision)
        for mode in against_variants(args.modes.split(","), args.against):
            ratios = args.sampling.split(",") if mode.startswith("otel_setup") else ["0"]
            for ratio in ratios:
                base = _count(mode, args.route, warmup, ratio)
                more = _count(mode, args.route, warmup + requests, ratio)
                label = mode if not mode.startswith("otel_setup") else f"{mode}, sampling {ratio}"
                rows.append((label, (more - base) / requests))
                print(f"  {label}: {rows[-1][1]:,.0f} instructions per request", flush=True)
    bare = next((per for label, per in rows if label == "bare"), None)
    print(f"\n| {args.route} route | instructions per request | vs bare |\n|---|---|---|")
    for label, per in rows:
        print(f"| {label} | {per:,.0f} | {f'{per / bare:.3f}x' if bare else '-'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
