"""The ``otel-setup`` command: ``demo`` shows the telemetry, ``doctor`` explains the wiring.

    otel-setup demo [--duration 20] [--rps 20] [--sampling 0.1] [--keep-running] [--otlp-endpoint URL]
    otel-setup doctor [module:attr] [--json] [--timeout 1.5]

Exit status: 0 when all is well, 1 when doctor found a problem (an endpoint
that does not answer, a library outside the supported range, an
instrumentation applied twice), 2 for a configuration error or bad usage.
Only the standard library's ``argparse``: the command must work wherever the
package installs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not greater than 0")
    return value


def _ratio(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otel-setup", description="See and check what otel_setup sets up.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{demo,doctor}")

    demo = commands.add_parser(
        "demo",
        help="run the example service under load and show what its telemetry says",
        description="Start the example GW2 service on 127.0.0.1 (SQLite, in-process Redis, local GW2 and AI "
        "stand-ins, no collector), send it a realistic mix of requests, then report from its /metrics, its "
        "exported spans and its log lines.",
    )
    demo.add_argument("--duration", type=_positive, default=20.0, help="seconds of traffic (default 20)")
    demo.add_argument("--rps", type=_positive, default=20.0, help="requests per second (default 20)")
    demo.add_argument("--sampling", type=_ratio, default=0.1, help="head-sampling ratio for traces (default 0.1)")
    demo.add_argument("--keep-running", action="store_true", help="leave the service up afterwards (Ctrl-C stops it)")
    demo.add_argument("--otlp-endpoint", metavar="URL", help="also send everything to this OTLP/HTTP collector")
    demo.add_argument("--port", type=int, default=0, help="the service's port (default 8000, or any free one)")

    doctor = commands.add_parser(
        "doctor",
        help="show settings, instrumentations and endpoint reachability; non-zero exit on problems",
        description="Configure otel_setup as the service would (or import APP, module:attribute, which "
        "configures it), print what was resolved and from where, which instrumentations are active and why "
        "not, and whether the OTLP and Sentry endpoints answer. Nothing is left running.",
    )
    doctor.add_argument("app", nargs="?", metavar="module:attr", help="the service's app, e.g. app.main:app")
    doctor.add_argument("--json", action="store_true", help="one JSON object on stdout")
    doctor.add_argument("--timeout", type=_positive, default=1.5, help="seconds per endpoint probe (default 1.5)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "doctor":
        from otel_setup._core.doctor import diagnose, render_text

        report = diagnose(args.app, timeout=args.timeout)
        if args.json:
            print(json.dumps(report.as_dict(), indent=2))
        else:
            sys.stdout.write(render_text(report))
            if report.config_error:
                print(f"otel-setup doctor: {report.config_error}", file=sys.stderr)
        return report.exit_code
    from otel_setup._demo import DemoOptions, run_demo

    return run_demo(
        DemoOptions(
            duration=args.duration,
            rps=args.rps,
            sampling=args.sampling,
            keep_running=args.keep_running,
            otlp_endpoint=args.otlp_endpoint,
            port=args.port,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
