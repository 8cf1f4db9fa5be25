"""The scale-out tiers with the real collector: agent (load_balancing) -> 2 gateways (tail_sampling).

Processes, all on 127.0.0.1:

* the example service under uvicorn with two workers, exporting to the agent (100 % head
  sampling, the scale-out profile of docs/scaling.md);
* this test's process as its caller: a plain OpenTelemetry SDK client span per request, the
  trace context sent in ``traceparent``, so every trace has spans from two processes;
* one agent on ``base.yaml + prod.yaml + agent.yaml`` and two gateways on
  ``base.yaml + prod.yaml + gateway.yaml``, each gateway exporting to its own loopback OTLP
  receiver, so the receiver a span arrives at names the gateway that decided its trace.

The only change to the shipped files besides addresses (tests/support/collector.py): the
agent's ``resolver`` is ``static`` with the two gateways' loopback ports instead of ``dns``,
because both gateways listen on 127.0.0.1 and DNS cannot return two ports. Routing, queues,
retries and the tail-sampling policies (``decision_wait`` included) are the shipped ones.

Trace ids come from a seeded generator: the same 200 ids every run, so the probabilistic
policy (a hash of the trace id) sees the same ids; which of them are errors or slow depends
on thread order, so the check on the baseline ratio is a bound that holds any fair 10 % draw.
"""

from __future__ import annotations

import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tests.assets.test_collector_pipeline import prepared_database
from tests.support.collector import STACKS, Collector, Ports, collector_binary, metric_value, running
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support.polling import wait_until
from tests.support.processes import free_port, server

pytestmark = pytest.mark.slow

APP_SERVICE = "gw2-app"
CLIENT_SERVICE = "gw2-frontend"
DECISION_WAIT = 10.0  # gateway.yaml's tail_sampling.decision_wait
BASELINE_PERCENT = 10  # gateway.yaml's probabilistic policy


class SeededIds(IdGenerator):
    """Random ids from a fixed seed: the same 200 trace ids every run."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)

    def generate_span_id(self) -> int:
        return self._random.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._random.getrandbits(128) or 1


@dataclass
class Sent:
    trace_id: str
    kind: str  # "error", "slow" or "normal"
    status: int | None


class Caller:
    """The second process of every trace: a client span, then the request with ``traceparent``."""

    def __init__(self, app: str, agent_http: str, seed: int) -> None:
        self.app = app
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": CLIENT_SERVICE}), id_generator=SeededIds(seed)
        )
        self.provider.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(endpoint=f"{agent_http}/v1/traces", timeout=5), schedule_delay_millis=200
            )
        )
        self.tracer = self.provider.get_tracer("tests.scale")

    def call(self, kind: str) -> Sent:
        path, params = {
            "error": ("/api/boom", {}),
            "slow": ("/api/slow", {"seconds": "1.2"}),
            "normal": ("/api/slow", {"seconds": "0"}),
        }[kind]
        with self.tracer.start_as_current_span(f"GET {path}", kind=SpanKind.CLIENT) as span:
            headers: dict[str, str] = {}
            TraceContextTextMapPropagator().inject(headers)
            try:
                # A connection per request: uvicorn closes one after an unhandled error (/api/boom).
                status: int | None = httpx.get(
                    self.app + path, params=params, headers=headers, timeout=15.0
                ).status_code
            except httpx.HTTPError:
                status = None
            span.set_attribute("http.response.status_code", status or 0)
            if status is None or status >= 500:
                span.set_status(StatusCode.ERROR)
            trace_id = f"{span.get_span_context().trace_id:032x}"
        return Sent(trace_id, kind, status)

    def close(self) -> None:
        self.provider.shutdown()


def kinds(count: int) -> list[str]:
    return ["error" if i % 10 == 3 else "slow" if i % 10 == 7 else "normal" for i in range(count)]


def expected_status(kind: str) -> int:
    return 500 if kind == "error" else 200


def by_trace(*backends: OtlpReceiver) -> dict[str, dict[int, list[ReceivedSpan]]]:
    """trace id -> backend index -> spans."""
    traces: dict[str, dict[int, list[ReceivedSpan]]] = defaultdict(lambda: defaultdict(list))
    for index, backend in enumerate(backends):
        for span in backend.spans():
            traces[span.trace_id][index].append(span)
    return traces


def whole(spans: list[ReceivedSpan]) -> bool:
    """Both processes' spans: the caller's client span and the app's server span under it."""
    clients = [s for s in spans if s.kind == "CLIENT" and s.resource.get("service.name") == CLIENT_SERVICE]
    servers = [s for s in spans if s.kind == "SERVER" and s.resource.get("service.name") == APP_SERVICE]
    return len(clients) == 1 and len(servers) == 1 and servers[0].parent_span_id == clients[0].span_id


def found(backends: list[OtlpReceiver], sent: list[Sent]) -> Counter[tuple[tuple[str, str], ...]]:
    """What arrived of each trace in ``sent``, as (service, kind) pairs: why a wait failed."""
    traces = by_trace(*backends)
    return Counter(
        tuple(sorted((str(x.resource.get("service.name")), x.kind) for p in traces[s.trace_id].values() for x in p))
        for s in sent
    )


def gateway_env(backend: OtlpReceiver, storage: Path) -> dict[str, str]:
    return {
        "DEPLOYMENT_ENVIRONMENT": "test",
        "TEMPO_OTLP_GRPC_ENDPOINT": backend.grpc_endpoint.removeprefix("http://"),
        "LOKI_OTLP_HTTP_ENDPOINT": backend.endpoint,
        "OTELCOL_STORAGE_DIR": str(storage),
    }


def agent_settings(gateways: list[Ports], logs: OtlpReceiver, storage: Path) -> tuple[dict[str, str], dict[str, Any]]:
    env = {
        "DEPLOYMENT_ENVIRONMENT": "test",
        "LOKI_OTLP_HTTP_ENDPOINT": logs.endpoint,
        "OTELCOL_STORAGE_DIR": str(storage),
    }
    extra = {
        "exporters": {
            "load_balancing": {
                "resolver": {"dns": None, "static": {"hostnames": [p.grpc_endpoint for p in gateways]}},
            }
        }
    }
    return env, extra


@contextmanager
def app_server(tmp_path: Path, agent: Collector) -> Iterator[str]:
    port = free_port()
    with server(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "examples.gw2_app.main:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
            "--log-level",
            "warning",
        ],
        env={
            "OTEL_SERVICE_NAME": APP_SERVICE,
            "OTEL_EXPORTER_OTLP_ENDPOINT": agent.ports.http_url,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_TRACES_EXPORTER": "otlp",
            # The caller is an internal service: its traceparent becomes the server span's parent.
            "OTEL_SETUP_TRUSTED_TRACEPARENT": "127.0.0.0/8",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "1.0",
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_LOGS_EXPORTER": "otlp",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "DATABASE_URL": prepared_database(tmp_path),
            "GW2_API_BASE": "http://127.0.0.1:9",  # never called by the routes used here
            "AI_API_BASE": "http://127.0.0.1:9/v1",
        },
        ready_url=f"http://127.0.0.1:{port}/health",
        log_path=tmp_path / "app.log",
    ):
        yield f"http://127.0.0.1:{port}"


def test_trace_id_routing_tail_sampling_and_a_gateway_lost_mid_run(tmp_path: Path) -> None:
    started = time.monotonic()
    binary = collector_binary()
    with ExitStack() as stack:
        backends = [stack.enter_context(OtlpReceiver(grpc=True)) for _ in range(2)]
        logs_backend = stack.enter_context(OtlpReceiver())
        gateway_ports = [Ports(), Ports()]
        gateways = [
            stack.enter_context(
                running(
                    binary,
                    STACKS["gateway"],
                    directory=tmp_path,
                    env=gateway_env(backends[i], tmp_path / f"gateway{i}-queue"),
                    ports=gateway_ports[i],
                    name=f"gateway{i}",
                )
            )
            for i in range(2)
        ]
        env, extra = agent_settings(gateway_ports, logs_backend, tmp_path / "agent-queue")
        agent = stack.enter_context(
            running(binary, STACKS["agent"], directory=tmp_path, env=env, extra=extra, name="agent")
        )
        app = stack.enter_context(app_server(tmp_path, agent))
        caller = Caller(app, agent.ports.http_url, seed=19)
        stack.callback(caller.close)

        def logs() -> str:
            return "\n".join(
                f"--- {name}\n{(tmp_path / name).read_text(errors='replace')[-2000:]}"
                for name in ("app.log", "agent.log", "gateway0.log", "gateway1.log")
            )

        # Phase 1: 200 traces, both gateways up.
        with ThreadPoolExecutor(8) as pool:
            sent = list(pool.map(caller.call, kinds(200)))
        assert [s.status for s in sent] == [expected_status(s.kind) for s in sent], Counter(
            (s.kind, s.status) for s in sent
        )
        caller.provider.force_flush()
        errors_and_slow = [s for s in sent if s.kind != "normal"]
        assert wait_until(
            lambda: all(
                whole([x for spans in by_trace(*backends)[s.trace_id].values() for x in spans]) for s in errors_and_slow
            ),
            DECISION_WAIT + 20,
        ), f"error/slow traces missing or partial: {found(backends, errors_and_slow)}\n{logs()}"
        time.sleep(2.0)  # the normal traces were decided in the same second as the last error
        traces = by_trace(*backends)
        # Every span of a trace is on one gateway.
        split = {trace_id: sorted(parts) for trace_id, parts in traces.items() if len(parts) > 1}
        assert split == {}, f"traces split across gateways: {split}"
        per_gateway = Counter(next(iter(parts)) for parts in traces.values())
        assert per_gateway[0] > 0 and per_gateway[1] > 0, per_gateway
        # Errors and slow traces kept whole; the rest at the baseline ratio, whole as well.
        for s in errors_and_slow:
            (spans,) = traces[s.trace_id].values()
            assert whole(spans), (s, [(x.name, x.kind) for x in spans])
        normal = [s for s in sent if s.kind == "normal"]
        kept = [s for s in normal if s.trace_id in traces]
        assert all(whole(next(iter(traces[s.trace_id].values()))) for s in kept)
        # 160 normal traces at 10 %: 16 expected; the bounds hold any fair draw (beyond 4 sigma).
        assert 4 <= len(kept) <= 32, f"{len(kept)} of {len(normal)} normal traces kept"
        # Anything else is the app's own (start-up queries, the readiness probe), never the caller's.
        others = [traces[t] for t in set(traces) - {s.trace_id for s in sent}]
        assert all(x.resource["service.name"] == APP_SERVICE for t in others for p in t.values() for x in p)
        print(
            f"phase 1: {len(sent)} traces, per gateway {dict(per_gateway)}, "
            f"{len(errors_and_slow)} error/slow kept whole, {len(kept)}/{len(normal)} normal kept"
        )

        # Phase 2: a gateway stops in the middle of 60 more traces; the app does not notice.
        for backend in backends:
            backend.clear()
        # All errors this time, so every trace is kept and each one can be accounted for.
        second = ["error"] * 60
        timed: list[tuple[Sent, float]] = []
        with ThreadPoolExecutor(4) as pool:

            def call_timed(kind: str) -> tuple[Sent, float]:
                t0 = time.monotonic()
                return caller.call(kind), time.monotonic() - t0

            timed += pool.map(call_timed, second[:20])
            gateways[1].stop()
            timed += pool.map(call_timed, second[20:])
        sent_until = time.monotonic()
        results = [s for s, _ in timed]
        assert [s.status for s in results] == [expected_status(s.kind) for s in results], Counter(
            (s.kind, s.status) for s in results
        )
        # Not slowed down either: the slow route sleeps 1.2 s, the others answer at once.
        quick = sorted(duration for s, duration in timed if s.kind != "slow")
        assert quick[-1] < 1.0, f"requests slowed down: {quick[-5:]}"
        caller.provider.force_flush()
        after_stop = [s for s in results[20:] if s.kind == "error"]
        # Every trace of the run has had its decision_wait (plus the exporters' 1 s flush).
        time.sleep(max(0.0, sent_until + DECISION_WAIT + 3.0 - time.monotonic()))
        delivered = by_trace(*backends)
        undelivered = [s for s in after_stop if s.trace_id not in delivered]
        # Nothing sent after the stop is dropped: what did not arrive waits in the agent's queue.
        # (With the static ring of this test the batches holding the stopped gateway's share
        # are retried whole and hold the queue's consumers, so the live gateway's share waits
        # too; the DNS resolver of agent.yaml drops a gone pod from the ring instead.)
        queued = metric_value(agent.metrics(), "otelcol_exporter_queue_size", exporter="load_balancing")
        assert undelivered, "the stopped gateway's share cannot have arrived"
        assert queued >= 2 * len(undelivered), (queued, len(undelivered))
        assert metric_value(agent.metrics(), "otelcol_exporter_enqueue_failed_spans", exporter="load_balancing") == 0
        # The live gateway, resent the batches it already had, still exports within the backend's
        # 4 MiB gRPC limit (byte-sized batches): it fails nothing.
        live = gateways[0].metrics()
        assert metric_value(live, "otelcol_exporter_sent_spans", exporter="otlp_grpc/tempo") > 0
        assert metric_value(live, "otelcol_exporter_send_failed_spans", exporter="otlp_grpc/tempo") == 0
        # Error traces from before the stop that never arrived: undecided in the stopped gateway's
        # decision_wait buffer (memory only, docs/scaling.md) or still in the agent's queue.
        before_stop = [s for s in results[:20] if s.kind == "error"]
        lost = [s for s in before_stop if s.trace_id not in delivered]
        print(
            f"phase 2: gateway 1 stopped after 20 of 60 requests, none failed or slowed; of {len(after_stop)} "
            f"error traces after the stop {len(after_stop) - len(undelivered)} delivered, {len(undelivered)} "
            f"in the agent's queue ({queued:.0f} spans); {len(lost)} of {len(before_stop)} from before "
            f"the stop not delivered; {time.monotonic() - started:.1f} s"
        )


def test_agent_queue_on_disk_holds_spans_through_a_gateway_outage(tmp_path: Path) -> None:
    """Gateway down, then the agent restarted too: the file_storage queue delivers every span."""
    binary = collector_binary()
    count = 40
    with ExitStack() as stack:
        backend = stack.enter_context(OtlpReceiver(grpc=True))
        logs_backend = stack.enter_context(OtlpReceiver())
        gateway_ports = Ports()
        env, extra = agent_settings([gateway_ports], logs_backend, tmp_path / "agent-queue")
        agent_ports = Ports()
        agent = stack.enter_context(
            running(binary, STACKS["agent"], directory=tmp_path, env=env, extra=extra, ports=agent_ports, name="agent")
        )
        # The gateway is down: every trace goes into the agent's queue on disk.
        provider = TracerProvider(resource=Resource.create({"service.name": "outage-probe"}))
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{agent.ports.http_url}/v1/traces", timeout=5))
        )
        tracer = provider.get_tracer("tests.outage")
        for index in range(count):
            with tracer.start_as_current_span(f"job {index}", kind=SpanKind.SERVER) as parent:
                with tracer.start_as_current_span("step", kind=SpanKind.INTERNAL):
                    pass
                parent.set_status(StatusCode.ERROR, "kept by the gateway's keep-errors policy")
        provider.shutdown()
        assert wait_until(
            lambda: metric_value(agent.metrics(), "otelcol_receiver_accepted_spans", receiver="otlp") >= 2 * count,
            10,
        ), agent.log()
        assert wait_until(
            lambda: metric_value(agent.metrics(), "otelcol_exporter_queue_size", exporter="load_balancing") > 0, 10
        ), agent.log()
        queued = metric_value(agent.metrics(), "otelcol_exporter_queue_size", exporter="load_balancing")
        # The agent restarts during the outage; the queue is read back from file_storage.
        agent.stop()
        assert any(path.is_file() and path.stat().st_size > 0 for path in (tmp_path / "agent-queue").rglob("*"))
        agent = stack.enter_context(
            running(
                binary, STACKS["agent"], directory=tmp_path, env=env, extra=extra, ports=agent_ports, name="agent-again"
            )
        )
        assert metric_value(agent.metrics(), "otelcol_exporter_queue_size", exporter="load_balancing") == queued
        assert backend.spans() == []
        # The gateway comes back: every span arrives, once.
        stack.enter_context(
            running(
                binary,
                STACKS["gateway"],
                directory=tmp_path,
                env=gateway_env(backend, tmp_path / "gateway-queue"),
                ports=gateway_ports,
                name="gateway",
            )
        )
        assert wait_until(lambda: len(backend.spans()) >= 2 * count, DECISION_WAIT + 45, step=1.0), (
            f"{len(backend.spans())} of {2 * count} spans\n{agent.log()}"
        )
        time.sleep(1.0)
        spans = backend.spans()
        assert len(spans) == 2 * count
        assert sorted(s.name for s in spans if s.kind == "SERVER") == sorted(f"job {i}" for i in range(count))
        assert len({s.trace_id for s in spans}) == count
        assert {s.resource["service.name"] for s in spans} == {"outage-probe"}
        print(f"{queued:.0f} spans held on disk through an agent restart; {len(spans)} delivered after the outage")
