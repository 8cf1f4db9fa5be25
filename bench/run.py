"""The overhead benchmark: ``python -m bench`` (or ``python bench/run.py``).

Three parts, each selectable:

- ``--inproc``: CPU time per request through the ASGI stack, trivial route, every
  mode in its own long-lived worker process, short rounds interleaved across
  modes (rotating the order each round) so drift hits all modes alike; medians.
- ``--wrk``: uvicorn (pinned to CPU 1) under wrk (pinned to CPU 0) on a route
  doing one PostgreSQL query, one Redis GET and one httpx call to a loopback
  stand-in; a fresh server per mode and round, rounds interleaved; median
  requests per second and the server's CPU per request.
- ``--memory``: RSS over 200,000 in-process requests with the OTLP endpoint
  pointing at a closed port (collector down).

Without a part flag all of them run; the in-process and wrk tables include the
production mode (``otel_setup_prod``: defaults exporting OTLP to a live loopback
receiver). ``--against REV`` adds the otel_setup modes of another revision of the
package as extra workers in the same interleaved rounds (the package of REV is
extracted into ``.cache/bench/<rev>``; the harness stays this tree's) and prints
after/before ratios. Results are printed as Markdown tables and saved as JSON
under ``bench/results/`` (gitignored).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # ``python bench/run.py`` as well as ``python -m bench``
    sys.path.insert(0, str(ROOT))

from bench.apps import MODES, REDIS_KEY, Mode  # noqa: E402

RESULTS = ROOT / "bench" / "results"
STANDIN_PORT = 18081
SINK_PORT = 18082
APP_PORT = 18080
PACKAGES = (
    "fastapi",
    "starlette",
    "uvicorn",
    "opentelemetry-sdk",
    "opentelemetry-instrumentation-fastapi",
    "opentelemetry-exporter-prometheus",
    "prometheus-fastapi-instrumentator",
    "otel_setup",
    "SQLAlchemy",
    "asyncpg",
    "redis",
    "httpx",
)


# --- revisions -------------------------------------------------------------------

REVISIONS = ROOT / ".cache" / "bench"
_packages: dict[str, Path] = {}
"""Revision name as given on the command line -> the directory holding its ``otel_setup``."""


def checkout_package(revision: str) -> Path:
    """``otel_setup/`` of ``revision``, extracted once into ``.cache/bench/<commit>``."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{revision}^{{commit}}"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    target = REVISIONS / commit[:12]
    if not (target / "otel_setup" / "__init__.py").is_file():
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", commit, "otel_setup"], cwd=ROOT, check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    _packages[revision] = target
    return target


def variant(name: str) -> tuple[Mode, Path | None]:
    """``mode`` or ``mode@rev``: the mode, and the directory of the package it imports (None: this tree's)."""
    mode, _, revision = name.partition("@")
    return MODES[mode], (_packages[revision] if revision else None)


def label(name: str) -> str:
    mode, package = variant(name)
    return mode.label if package is None else f"{mode.label} @ `{name.partition('@')[2]}`"


def against_variants(modes: Sequence[str], revisions: Sequence[str]) -> list[str]:
    """Every otel_setup mode of ``modes`` once more per revision, right after its own entry."""
    out: list[str] = []
    for name in modes:
        out.append(name)
        if name.startswith("otel_setup"):
            out += [f"{name}@{revision}" for revision in revisions]
    return out


def launch(name: str) -> tuple[Path, str]:
    """Working directory and PYTHONPATH head of a child running ``name``.

    ``python -m`` and uvicorn put the working directory first on ``sys.path``, so a
    revision's child runs from the directory holding that revision's package and
    finds ``bench`` (this tree's harness) through PYTHONPATH behind it.
    """
    _, package = variant(name)
    if package is None:
        return ROOT, str(ROOT)
    return package, os.pathsep.join([str(package), str(ROOT)])


# --- processes -----------------------------------------------------------------


def child_env(mode: Mode | None = None, pythonpath: str = str(ROOT), **extra: str) -> dict[str, str]:
    """The parent's environment minus anything that would change what telemetry does."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SENTRY_", "FASTAPI_OTEL"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, env.get("PYTHONPATH")]))
    env["PYTHONHASHSEED"] = "0"
    if mode is not None:
        env.update(mode.env)
    env.update(extra)
    return env


class Worker:
    """A :mod:`bench.worker` process for one mode, spoken to in JSON lines."""

    def __init__(self, name: str, *, warmup: int = 3000, route: str = "trivial", **env: str) -> None:
        self.name = name
        self.mode, self.package = variant(name)
        cwd, pythonpath = launch(name)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.worker", "--mode", self.mode.name, "--warmup", str(warmup), "--route", route],
            cwd=cwd,
            env=child_env(self.mode, pythonpath, **env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def _stdin(self) -> IO[str]:
        assert self.process.stdin is not None
        return self.process.stdin

    def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} exited with {self.process.wait()}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def ready(self) -> dict[str, Any]:
        reply = self.read()
        if reply.get("status") != 200:
            raise RuntimeError(f"mode {self.name}: the trivial route answered {reply.get('status')}")
        expected = (self.package or ROOT) / "otel_setup"
        if reply.get("otel_setup") and Path(reply["otel_setup"]).parent != expected:
            raise RuntimeError(f"mode {self.name} imported {reply['otel_setup']}, not the package in {expected}")
        return reply

    def send(self, **command: Any) -> None:
        self._stdin().write(json.dumps(command) + "\n")
        self._stdin().flush()

    def call(self, **command: Any) -> dict[str, Any]:
        self.send(**command)
        return self.read()

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.send(cmd="quit")
            self._stdin().close()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def standin(port: int, *, content_type: str = "application/json", body: str | None = None) -> Iterator[None]:
    """The asyncio responder from :mod:`bench.standin`, pinned to CPU 0 (wrk's side)."""
    command = [sys.executable, "-m", "bench.standin", "--port", str(port), "--content-type", content_type]
    if body is not None:
        command += ["--body", body]
    process = subprocess.Popen(_pinned("0") + command, cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"stand-in on port {port} did not start")
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)


def _pinned(cpus: str) -> list[str]:
    return ["taskset", "-c", cpus] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []


def closed_port() -> int:
    """A loopback port nothing listens on: connections are refused at once, as with a collector that is down."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- statistics ----------------------------------------------------------------


def summarise(per_round: dict[str, list[float]], baseline: str = "bare") -> dict[str, dict[str, float]]:
    """Median of the per-round medians, its spread, the ratio to the baseline's median, and the paired ratio.

    The paired ratio is the median over rounds of (mode / baseline) within the
    same round: rounds are interleaved, so a drift of the shared machine moves
    both sides of a pair and cancels, where it widens the spread of each side.
    """
    base_values = per_round.get(baseline) or []
    base = statistics.median(base_values) if base_values else float("nan")
    summary: dict[str, dict[str, float]] = {}
    for name, values in per_round.items():
        median = statistics.median(values)
        paired = (
            statistics.median(v / b for v, b in zip(values, base_values, strict=True))
            if len(values) == len(base_values)
            else float("nan")
        )
        summary[name] = {
            "median": median,
            "min": min(values),
            "max": max(values),
            "ratio": median / base,
            "paired_ratio": paired,
        }
    return summary


# --- in-process ------------------------------------------------------------------


def run_inproc(
    modes: Sequence[str], rounds: int, requests: int, batches: int, route: str = "trivial"
) -> dict[str, Any]:
    needs_sink = any(variant(m)[0].needs_sink for m in modes)
    per_round: dict[str, list[float]] = {m: [] for m in modes}
    background: dict[str, list[float]] = {m: [] for m in modes}
    whole: dict[str, list[float]] = {m: [] for m in modes}
    with contextlib.ExitStack() as stack:
        if needs_sink:
            stack.enter_context(standin(SINK_PORT, content_type="application/x-protobuf", body=""))
        workers: dict[str, Worker] = {}
        for name in modes:
            extra = {"BENCH_OTLP_ENDPOINT": f"http://127.0.0.1:{SINK_PORT}"} if variant(name)[0].needs_sink else {}
            warmup = 3000 if route == "trivial" else 300
            workers[name] = Worker(name, warmup=warmup, route=route, **extra)
            stack.callback(workers[name].close)
        for worker in workers.values():
            worker.ready()
        for index in range(rounds):
            order = list(modes[index % len(modes) :]) + list(modes[: index % len(modes)])
            for name in order:
                reply = workers[name].call(cmd="run", requests=requests, batches=batches)
                per_round[name].append(statistics.median(reply["thread_ns"]) / 1000)
                others = [p - t for p, t in zip(reply["process_ns"], reply["thread_ns"], strict=True)]
                background[name].append(statistics.median(others) / 1000)
                # Whole process over the round (the mean, not the median): the export thread wakes about
                # once a second, so a median batch would mostly miss it.
                whole[name].append(statistics.fmean(reply["process_ns"]) / 1000)
            print(
                f"  round {index + 1}/{rounds}: " + ", ".join(f"{m} {per_round[m][-1]:.0f}" for m in modes), flush=True
            )
    summary = summarise(per_round)
    # The whole process: serving thread plus what the export threads spent meanwhile, so a
    # mode that exports pays for its encoding and sending too.
    whole_summary = summarise(whole)
    for name in modes:
        summary[name]["background_us"] = statistics.median(background[name])
        summary[name]["process_us"] = whole_summary[name]["median"]
        summary[name]["process_ratio"] = whole_summary[name]["ratio"]
        summary[name]["process_paired_ratio"] = whole_summary[name]["paired_ratio"]
        summary[name]["process_paired_min"] = (
            min(t / b for t, b in zip(whole[name], whole["bare"], strict=True)) if "bare" in whole else float("nan")
        )
        summary[name]["process_paired_max"] = (
            max(t / b for t, b in zip(whole[name], whole["bare"], strict=True)) if "bare" in whole else float("nan")
        )
    return {
        "rounds": rounds,
        "requests_per_batch": requests,
        "batches": batches,
        "route": route,
        "unit": "CPU microseconds per request (serving thread)",
        "per_round": per_round,
        "background_per_round": background,
        "process_per_round": whole,
        "summary": summary,
    }


# --- uvicorn + wrk -----------------------------------------------------------------


def prepare_services() -> None:
    """The row the database query reads and the key the Redis GET finds."""
    import psycopg2
    import redis

    connection = psycopg2.connect(host="127.0.0.1", port=5432, dbname="test", user="postgres")
    with contextlib.closing(connection) as db, db, db.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS bench_items (id integer PRIMARY KEY, name text, count integer)")
        cursor.execute("INSERT INTO bench_items VALUES (19721, 'Mithril Ore', 250) ON CONFLICT (id) DO NOTHING")
    client = redis.Redis(host="127.0.0.1", port=6379)
    client.set(REDIS_KEY, b"250")
    client.close()


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wrk(url: str, seconds: float, connections: int) -> dict[str, float]:
    command = [*_pinned("0"), "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", url]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))}  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    result["non_2xx"] = float(errors.group(1)) if errors else 0.0
    for percentile in ("50", "99"):
        match = re.search(rf"\s{percentile}%\s+([\d.]+)(us|ms|s)", output)
        if match:
            scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[match.group(2)]
            result[f"p{percentile}_ms"] = float(match.group(1)) * scale
    requests = re.search(r"(\d+) requests in", output)
    result["requests"] = float(requests.group(1)) if requests else 0.0
    return result


def _serve_once(name: str, seconds: float, warmup: float, connections: int) -> dict[str, float]:
    mode, _ = variant(name)
    cwd, pythonpath = launch(name)
    extra = {"BENCH_MODE": mode.name}
    if mode.needs_sink:
        extra["BENCH_OTLP_ENDPOINT"] = f"http://127.0.0.1:{SINK_PORT}"
    command = [
        *_pinned("1"),
        sys.executable,
        "-m",
        "uvicorn",
        "bench.apps:create_app",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(APP_PORT),
    ]
    # uvicorn's defaults (access log on) for every mode, as a service runs;
    # otel_setup replaces the access log with its own request log. stdout is
    # discarded (the write is still paid); stderr is kept for diagnosis.
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / f"uvicorn-{name}.log", "ab") as errors:
        process = subprocess.Popen(
            command, cwd=cwd, env=child_env(mode, pythonpath, **extra), stdout=subprocess.DEVNULL, stderr=errors
        )
    url = f"http://127.0.0.1:{APP_PORT}/items/19721"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"uvicorn for {name} did not come up")
            time.sleep(0.2)
        _wrk(url, warmup, connections)
        cpu_before = _cpu_seconds(process.pid)
        result = _wrk(url, seconds, connections)
        cpu = _cpu_seconds(process.pid) - cpu_before
        result["server_cpu_us_per_request"] = cpu / max(result["requests"], 1.0) * 1e6
        return result
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_wrk(modes: Sequence[str], rounds: int, seconds: float, warmup: float, connections: int) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install -y wrk)")
    prepare_services()
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    with standin(STANDIN_PORT), standin(SINK_PORT, content_type="application/x-protobuf", body=""):
        for index in range(rounds):
            order = list(modes[index % len(modes) :]) + list(modes[: index % len(modes)])
            for name in order:
                runs[name].append(_serve_once(name, seconds, warmup, connections))
            print(
                f"  round {index + 1}/{rounds}: " + ", ".join(f"{m} {runs[m][-1]['rps']:.0f}" for m in modes),
                flush=True,
            )
    summary = summarise({m: [r["rps"] for r in runs[m]] for m in modes})
    for name in modes:
        for key in ("p50_ms", "p99_ms", "server_cpu_us_per_request"):
            values = [r[key] for r in runs[name] if key in r]
            if values:
                summary[name][key] = statistics.median(values)
        summary[name]["non_2xx"] = sum(r["non_2xx"] for r in runs[name])
    return {
        "rounds": rounds,
        "seconds": seconds,
        "connections": connections,
        "unit": "requests per second",
        "runs": runs,
        "summary": summary,
    }


# --- memory ------------------------------------------------------------------------


def run_memory(modes: Sequence[str], requests: int, every: int) -> dict[str, Any]:
    port = closed_port()
    results: dict[str, Any] = {"requests": requests, "endpoint": f"http://127.0.0.1:{port} (closed)"}
    for name in modes:
        worker = Worker(name, BENCH_OTLP_ENDPOINT=f"http://127.0.0.1:{port}")
        try:
            worker.ready()
            reply = worker.call(cmd="memory", requests=requests, every=every)
        finally:
            worker.close()
        samples = reply["rss_kib"]
        results[name] = {
            "rss_kib": samples,
            "start_mib": samples[0] / 1024,
            "end_mib": samples[-1] / 1024,
            "growth_mib": (samples[-1] - samples[0]) / 1024,
            "max_growth_mib": (max(samples) - samples[0]) / 1024,
        }
        print(f"  {name}: {samples[0] / 1024:.1f} MiB -> {samples[-1] / 1024:.1f} MiB", flush=True)
    return results


# --- report --------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        for line in subprocess.run(["lscpu"], check=True, capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    revision = "unknown"
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        revision = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout.strip()
    return {
        "revision": revision,
        "cpu": model,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
    }


def print_inproc(result: dict[str, Any]) -> None:
    print(
        "\n| mode | CPU µs/request (median) | rounds min-max | vs bare | same-round ratio (median) "
        "| background threads µs/req | whole process µs/req | process CPU same-round ratio (min-max) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, row in result["summary"].items():
        print(
            f"| {label(name)} | {row['median']:.1f} | {row['min']:.0f}-{row['max']:.0f} | {row['ratio']:.2f}x "
            f"| {row['paired_ratio']:.2f}x | {row['background_us']:.1f} | {row['process_us']:.1f} "
            f"| {row['process_paired_ratio']:.2f}x ({row['process_paired_min']:.2f}-{row['process_paired_max']:.2f}) |"
        )


def print_wrk(result: dict[str, Any]) -> None:
    print(
        "\n| mode | req/s (median) | rounds min-max | vs bare | vs bare, same round (median) | p50 ms | p99 ms "
        "| server CPU µs/req | CPU vs bare, same round |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    cpu_rounds = {
        name: [r.get("server_cpu_us_per_request", float("nan")) for r in runs] for name, runs in result["runs"].items()
    }
    cpu_paired = summarise(cpu_rounds)
    for name, row in result["summary"].items():
        cpu = row.get("server_cpu_us_per_request", float("nan"))
        print(
            f"| {label(name)} | {row['median']:.0f} | {row['min']:.0f}-{row['max']:.0f} "
            f"| {100 * row['ratio']:.1f}% | {100 * row['paired_ratio']:.1f}% | {row.get('p50_ms', float('nan')):.2f} "
            f"| {row.get('p99_ms', float('nan')):.2f} | {cpu:.0f} | {cpu_paired[name]['paired_ratio']:.2f}x |"
        )


def print_against(result: dict[str, Any], revisions: Sequence[str]) -> None:
    """This tree against each revision, mode by mode: medians and the same-round ratio."""
    per_round = result.get("process_per_round") or {}
    serving = result.get("per_round") or {k: [r["rps"] for r in v] for k, v in result.get("runs", {}).items()}
    rows = []
    for name in [m for m in serving if "@" not in m]:
        for revision in revisions:
            other = f"{name}@{revision}"
            if other not in serving:
                continue
            pair = summarise({other: serving[other], name: serving[name]}, baseline=other)[name]
            row = f"| {MODES[name].label} | `{revision}` | {pair['ratio']:.3f} | {pair['paired_ratio']:.3f} |"
            if per_round:
                whole = summarise({other: per_round[other], name: per_round[name]}, baseline=other)[name]
                row += f" {whole['ratio']:.3f} | {whole['paired_ratio']:.3f} |"
            rows.append(row)
    if not rows:
        return
    unit = "CPU per request" if per_round else "req/s"
    header = f"\n| mode | against | this tree / revision, {unit} (medians) | same round (median) |"
    rule = "|---|---|---|---|"
    if per_round:
        header += " whole process (medians) | whole process, same round |"
        rule += "---|---|"
    print(header)
    print(rule)
    print("\n".join(rows))


def print_memory(result: dict[str, Any]) -> None:
    print(
        f"\n| mode | RSS start MiB | RSS end MiB | growth over {result['requests']:,} requests MiB | max growth MiB |"
    )
    print("|---|---|---|---|---|")
    for name, row in result.items():
        if isinstance(row, dict):
            print(
                f"| {label(name)} | {row['start_mib']:.1f} | {row['end_mib']:.1f} | {row['growth_mib']:+.1f} "
                f"| {row['max_growth_mib']:+.1f} |"
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--inproc", action="store_true", help="in-process ASGI driver")
    parser.add_argument("--wrk", action="store_true", help="uvicorn + wrk on the realistic route")
    parser.add_argument(
        "--inproc-realistic", action="store_true", help="in-process driver on the realistic route (real I/O)"
    )
    parser.add_argument("--memory", action="store_true", help="RSS growth with the collector down")
    parser.add_argument(
        "--production",
        action="store_true",
        help="production mode: bare against otel_setup defaults exporting OTLP to a live loopback receiver "
        "(in process, trivial route, and uvicorn + wrk, realistic route); ratios include the export threads' CPU",
    )
    parser.add_argument("--modes", default=",".join(MODES), help="comma list; bare is always included")
    parser.add_argument(
        "--against",
        action="append",
        default=[],
        metavar="REV",
        help="also run this git revision's otel_setup modes, interleaved in the same rounds (repeatable)",
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=2000, help="requests per batch (in-process)")
    parser.add_argument("--batches", type=int, default=5, help="batches per round (in-process)")
    parser.add_argument("--wrk-rounds", type=int, default=3)
    parser.add_argument("--wrk-seconds", type=float, default=10.0)
    parser.add_argument("--wrk-warmup", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--memory-modes", default="otel_setup,otel_setup_100")
    parser.add_argument("--memory-requests", type=int, default=200_000)
    args = parser.parse_args(argv)
    if args.production:
        args.modes = "bare,otel_setup_prod"
        if not (args.inproc or args.wrk):
            args.inproc = args.wrk = True
    if not (args.inproc or args.wrk or args.memory or args.inproc_realistic):
        args.inproc = args.inproc_realistic = args.wrk = args.memory = True
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown modes {unknown}; known: {', '.join(MODES)}")
    if "bare" not in modes:
        modes.insert(0, "bare")
    for revision in args.against:
        checkout_package(revision)
    modes = against_variants(modes, args.against)

    report: dict[str, Any] = {"started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": machine()}
    report["against"] = {revision: str(path) for revision, path in _packages.items()}
    print(json.dumps(report["machine"], indent=2))
    if args.inproc:
        print(f"\nin-process: {len(modes)} modes x {args.rounds} rounds x {args.batches} x {args.requests} requests")
        report["inproc"] = run_inproc(modes, args.rounds, args.requests, args.batches)
        print_inproc(report["inproc"])
        print_against(report["inproc"], args.against)
    if args.inproc_realistic:
        rounds, batches, requests = args.rounds, args.batches, max(args.requests // 10, 50)
        print(f"\nin-process, realistic route: {len(modes)} modes x {rounds} rounds x {batches} x {requests} requests")
        with standin(STANDIN_PORT):
            prepare_services()
            report["inproc_realistic"] = run_inproc(modes, rounds, requests, batches, route="realistic")
        print_inproc(report["inproc_realistic"])
        print_against(report["inproc_realistic"], args.against)
    if args.wrk:
        print(f"\nuvicorn + wrk: {len(modes)} modes x {args.wrk_rounds} rounds x {args.wrk_seconds:g} s")
        report["wrk"] = run_wrk(modes, args.wrk_rounds, args.wrk_seconds, args.wrk_warmup, args.connections)
        print_wrk(report["wrk"])
        print_against(report["wrk"], args.against)
    if args.memory:
        print(f"\nmemory: {args.memory_requests:,} requests, OTLP endpoint refused")
        report["memory"] = run_memory(args.memory_modes.split(","), args.memory_requests, args.memory_requests // 10)
        print_memory(report["memory"])

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for path in (RESULTS / f"{stamp}.json", RESULTS / "latest.json"):
        path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nsaved {RESULTS / f'{stamp}.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
