"""GenAI telemetry for OpenAI-compatible APIs called over httpx (raw, or through the openai SDK).

The GenAI instrumentations wrap SDK clients; a service that posts to
``/chat/completions`` with plain httpx gets nothing from them. This module
claims, on any host, ``POST .../chat/completions`` and ``POST .../responses``
(the two OpenAI-compatible shapes, which is also what the openai SDK sends
through httpx) and gives each HTTP call:

* a client span ``chat {model}`` with the GenAI semantic-convention attributes
  (operation, provider, request and response model, token usage, finish
  reasons, error type) and the HTTP client attributes;
* ``gen_ai.client.operation.duration`` and ``gen_ai.client.token.usage``
  (semconv, by ``gen_ai.token.type``), ``http.client.request.duration``;
* ``otel_setup.genai.cost.usd``, from an offline, versioned price table shipped
  with the package (``genai_prices.json``) and merged with the user's
  (``OTEL_SETUP_GENAI_PRICES``); a model not in the table is counted as
  ``unknown`` and costs nothing rather than a guessed price;
* ``otel_setup.genai.requests`` by outcome (``rate_limited`` and
  ``insufficient_quota`` on their own) and whether usage was reported;
* ``otel_setup.genai.ratelimit.*`` gauges from the ``x-ratelimit-*`` headers,
  parsed tolerantly: absent, ``-1`` or garbage values leave the gauge unset.

The usage is read from the response body as the caller reads it (the body is
passed through unchanged): Chat Completions (``prompt_tokens``) and Responses
(``input_tokens``) shapes, and streamed responses, whose tokens come from the
final usage event when present (``stream_options.include_usage``); without it
the span says ``otel_setup.genai.usage_reported=false``.

Prompt and completion content are never recorded: only the model, parameters,
token counts, finish reasons, timings and error types are read. Metric labels
carry the price-table entry of a model (or ``unknown``), so an arbitrary model
string from a request or a response cannot grow the label set; spans carry the
exact strings.

A :class:`~otel_setup.KnownHttpApi` (``known_api.py``). The price table is
``otel_setup._core.prices`` (a setting reads and checks it, so it cannot live in an
integration); reading the response and the rate-limit headers is ``genai_body.py``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Final

from opentelemetry.metrics import Counter, Histogram, MeterProvider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, TracerProvider

from otel_setup._core.catalog import buckets
from otel_setup._core.options import GenAICall, emit_call
from otel_setup._core.prices import PriceTable, load_price_table
from otel_setup._hotpath.keep import KeepingTracer
from otel_setup._integrations import calllog
from otel_setup._integrations.genai_body import BodyReader, Result, parse_rate_limits
from otel_setup._integrations.httpx import add_response_attributes, client_duration_histogram, request_attributes
from otel_setup._integrations.httpx_body import observe_body
from otel_setup.version import __version__

__all__ = ["GenAIApi", "GenAIHandler"]

_log = logging.getLogger("otel_setup")
_SCOPE_NAME: Final = "otel_setup.genai"
UNKNOWN: Final = "unknown"
_MAX_REQUEST_BODY: Final = 8 << 20
# Semantic-conventions advisory buckets.
_PROVIDERS: Final = {
    "api.openai.com": "openai",
    "api.groq.com": "groq",
    "api.deepseek.com": "deepseek",
    "api.mistral.ai": "mistral_ai",
    "api.x.ai": "x_ai",
    "api.perplexity.ai": "perplexity",
    "generativelanguage.googleapis.com": "gcp.gemini",
}
# Upstream error codes worth their own error.type; anything else is the status code.
_ERROR_CODES: Final = frozenset(
    {"insufficient_quota", "rate_limit_exceeded", "invalid_api_key", "context_length_exceeded", "model_not_found"}
)

# --- the call ------------------------------------------------------------------------------


@dataclass
class _Instruments:
    tracer: Tracer
    prices: PriceTable
    http_duration: Histogram
    duration: Histogram
    tokens: Histogram
    cost: Counter
    requests: Counter
    rate_limits: dict[str, Any]  # Meter.create_gauge's synchronous gauges (the API has no public type for them)


def _provider(host: str) -> str:
    found = _PROVIDERS.get(host)
    if found is not None:
        return found
    if host.endswith(".openai.azure.com"):
        return "azure.ai.openai"
    return "openai"  # an OpenAI-compatible endpoint (self-hosted, a gateway, a stand-in)


def _outcome(status: int | None, error_code: str | None) -> str:
    if status is None:
        return "transport_error"
    if status < 400:
        return "ok"
    if error_code == "insufficient_quota":
        return "insufficient_quota"
    if status == 429:
        return "rate_limited"
    if status in (401, 403):
        return "auth_error"
    return "server_error" if status >= 500 else "client_error"


class _GenAICall:
    def __init__(
        self,
        instruments: _Instruments,
        span: Span,
        http_attributes: dict[str, Any],
        metric_attributes: dict[str, Any],
        request_model: str | None,
        streamed: bool,
    ) -> None:
        self._instruments = instruments
        self._span = span
        self._http_attributes = http_attributes
        self._metric_attributes = metric_attributes
        self._request_model = request_model
        self._streamed = streamed
        self._start = perf_counter()

    def finish(self, response: Any) -> None:
        try:
            attributes = self._http_attributes
            status = add_response_attributes(attributes, response)
            self._instruments.http_duration.record(perf_counter() - self._start, attributes)
            if self._span.is_recording():
                self._span.set_attribute("http.response.status_code", status)
            self._record_rate_limits(response.headers)
            observe_body(response, BodyReader(self, status, response.headers))
        except Exception:  # noqa: BLE001 - never break a request for telemetry
            _log.debug("otel_setup: genai telemetry failed", exc_info=True)

    def fail(self, error: BaseException) -> None:
        try:
            self._http_attributes["error.type"] = type(error).__qualname__
            self._instruments.http_duration.record(perf_counter() - self._start, self._http_attributes)
            self.complete(None, Result(), error)
        except Exception:  # noqa: BLE001
            _log.debug("otel_setup: genai telemetry failed", exc_info=True)

    def _record_rate_limits(self, headers: Any) -> None:
        values = parse_rate_limits(headers)
        if not values:
            return
        base = {
            "gen_ai.provider.name": self._metric_attributes["gen_ai.provider.name"],
            "server.address": self._metric_attributes["server.address"],
        }
        for (measure, kind), value in values.items():
            self._instruments.rate_limits[measure].set(value, {**base, "otel_setup.genai.ratelimit.kind": kind})

    def complete(self, status: int | None, result: Result, error: BaseException | None) -> None:
        """The body is read (or the call failed): record everything once, end the span."""
        instruments = self._instruments
        duration = perf_counter() - self._start
        prices = instruments.prices
        price_model = prices.match(result.response_model) or prices.match(self._request_model)
        metric = dict(self._metric_attributes)
        if result.response_model:
            metric["gen_ai.response.model"] = prices.match(result.response_model) or UNKNOWN
        error_type = _error_type(status, result, error)
        if error_type is not None:
            metric["error.type"] = error_type
        instruments.duration.record(duration, metric)
        succeeded = status is not None and status < 400
        usage_reported = result.input_tokens is not None and result.output_tokens is not None
        cost = self._record_usage(result, metric, price_model) if succeeded and usage_reported else None
        counted: dict[str, Any] = {
            "gen_ai.provider.name": metric["gen_ai.provider.name"],
            "gen_ai.operation.name": metric["gen_ai.operation.name"],
            "otel_setup.genai.price_model": price_model or UNKNOWN,
            "otel_setup.genai.outcome": _outcome(status, result.error_code),
        }
        if succeeded and error is None:
            counted["otel_setup.genai.usage"] = "reported" if usage_reported else "missing"
        instruments.requests.add(1, counted)
        if self._span.is_recording():
            self._annotate(result, price_model, cost, usage_reported if succeeded else None, error_type, error)
        self._span.end()
        record = GenAICall(
            provider=str(metric["gen_ai.provider.name"]),
            operation=str(metric["gen_ai.operation.name"]),
            request_model=self._request_model,
            response_model=result.response_model,
            input_tokens=result.input_tokens,
            output_tokens=result.output_tokens,
            cached_input_tokens=result.cached_tokens,
            cost_usd=cost,
            price_model=price_model or UNKNOWN,
            status_code=status,
            error_type=error_type,
            streamed=self._streamed,
            usage_reported=usage_reported,
            duration_s=duration,
        )
        emit_call(record)
        if calllog.GENAI.enabled():
            calllog.GENAI.write("genai call", {**calllog.genai_fields(record), **calllog.span_ids(self._span)})

    def _record_usage(self, result: Result, metric: dict[str, Any], price_model: str | None) -> float | None:
        """Token histograms and, for a priced model, the cost counter; returns the cost."""
        instruments = self._instruments
        input_tokens, output_tokens = result.input_tokens or 0, result.output_tokens or 0
        token_attributes = {k: v for k, v in metric.items() if k != "error.type"}
        instruments.tokens.record(input_tokens, {**token_attributes, "gen_ai.token.type": "input"})
        instruments.tokens.record(output_tokens, {**token_attributes, "gen_ai.token.type": "output"})
        if price_model is None:
            return None
        input_cost, output_cost = instruments.prices.cost(
            price_model, input_tokens, result.cached_tokens or 0, output_tokens
        )
        cost_attributes = {
            "gen_ai.provider.name": metric["gen_ai.provider.name"],
            "otel_setup.genai.price_model": price_model,
        }
        instruments.cost.add(input_cost, {**cost_attributes, "gen_ai.token.type": "input"})
        instruments.cost.add(output_cost, {**cost_attributes, "gen_ai.token.type": "output"})
        return input_cost + output_cost

    def _annotate(
        self,
        result: Result,
        price_model: str | None,
        cost: float | None,
        usage_reported: bool | None,
        error_type: str | None,
        error: BaseException | None,
    ) -> None:
        span = self._span
        values: dict[str, Any] = {
            "gen_ai.response.model": result.response_model,
            "gen_ai.response.id": result.response_id,
            "gen_ai.response.finish_reasons": tuple(result.finish_reasons) or None,
            "gen_ai.usage.input_tokens": result.input_tokens,
            "gen_ai.usage.output_tokens": result.output_tokens,
            "gen_ai.usage.cache_read.input_tokens": result.cached_tokens,
            "otel_setup.genai.usage_reported": usage_reported,
            "otel_setup.genai.price_model": price_model or UNKNOWN,
            "otel_setup.genai.cost.usd": cost,
            "otel_setup.genai.price_table": self._instruments.prices.version if cost is not None else None,
            "error.type": error_type,
        }
        span.set_attributes({key: value for key, value in values.items() if value is not None})
        if error_type is not None:
            if error is not None:
                span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR))


def _error_type(status: int | None, result: Result, error: BaseException | None) -> str | None:
    """Exception class, a known upstream error code, or the status code; None on success."""
    if status is None:
        return type(error).__qualname__ if error is not None else "_OTHER"
    if status >= 400:
        return result.error_code if result.error_code in _ERROR_CODES else str(status)
    if error is not None:  # the body failed mid-way (a dropped stream)
        return type(error).__qualname__
    return None


def _request_body(request: Any) -> Mapping[str, Any]:
    """The JSON request, when it is in memory and of sane size; {} otherwise."""
    try:
        content = request.content
    except Exception:  # noqa: BLE001 - a streamed request body (httpx.RequestNotRead)
        return {}
    if not content or len(content) > _MAX_REQUEST_BODY:
        return {}
    try:
        body = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, Mapping) else {}


class GenAIHandler:
    """Claims ``POST`` requests whose path ends with an OpenAI-compatible endpoint."""

    def __init__(self, instruments: _Instruments) -> None:
        self._instruments = instruments

    def begin(self, request: Any) -> _GenAICall | None:
        if request.method != "POST":
            return None
        path = request.url.path
        if not (path.endswith("/chat/completions") or path.endswith("/responses")):
            return None
        body = _request_body(request)
        model = body.get("model")
        request_model = model[:256] if isinstance(model, str) and model else None
        streamed = body.get("stream") is True
        http_attributes = request_attributes(request)
        provider = _provider(http_attributes["server.address"])
        span_attributes: dict[str, Any] = {
            **http_attributes,
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
        }
        if request_model:
            span_attributes["gen_ai.request.model"] = request_model
        for key, attribute in (
            ("max_tokens", "gen_ai.request.max_tokens"),
            ("max_completion_tokens", "gen_ai.request.max_tokens"),
            ("max_output_tokens", "gen_ai.request.max_tokens"),
            ("temperature", "gen_ai.request.temperature"),
            ("top_p", "gen_ai.request.top_p"),
        ):
            value = body.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                span_attributes[attribute] = value
        if streamed:
            span_attributes["otel_setup.genai.streamed"] = True
        name = f"chat {request_model}" if request_model else "chat"
        span = self._instruments.tracer.start_span(name, kind=SpanKind.CLIENT, attributes=span_attributes)
        metric_attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": self._instruments.prices.match(request_model) or UNKNOWN,
            "server.address": http_attributes["server.address"],
            "server.port": http_attributes["server.port"],
        }
        return _GenAICall(self._instruments, span, http_attributes, metric_attributes, request_model, streamed)


class GenAIApi:
    """OpenAI-compatible calls on any host, as a :class:`~otel_setup.KnownHttpApi`."""

    name = "genai"

    def __init__(self, prices: PriceTable | None = None) -> None:
        self.prices = prices or load_price_table()

    def handler(self, tracer_provider: TracerProvider, meter_provider: MeterProvider) -> GenAIHandler:
        prices = self.prices
        meter = meter_provider.get_meter(_SCOPE_NAME, __version__)
        instruments = _Instruments(
            tracer=KeepingTracer(tracer_provider.get_tracer(_SCOPE_NAME, __version__), _SCOPE_NAME),
            prices=prices,
            http_duration=client_duration_histogram(meter_provider),
            duration=meter.create_histogram(
                "gen_ai.client.operation.duration",
                unit="s",
                description="GenAI operation duration.",
                explicit_bucket_boundaries_advisory=buckets("gen_ai.client.operation.duration"),
            ),
            tokens=meter.create_histogram(
                "gen_ai.client.token.usage",
                unit="{token}",
                description="Number of input and output tokens used.",
                explicit_bucket_boundaries_advisory=buckets("gen_ai.client.token.usage"),
            ),
            cost=meter.create_counter(
                "otel_setup.genai.cost.usd",
                unit="{USD}",
                description="Cost of GenAI calls in US dollars, from the price table "
                "(unknown models cost nothing here).",
            ),
            requests=meter.create_counter(
                "otel_setup.genai.requests",
                unit="{request}",
                description="GenAI HTTP calls by outcome (rate_limited, insufficient_quota, ...) "
                "and price-table model.",
            ),
            rate_limits={
                "limit": meter.create_gauge(
                    "otel_setup.genai.ratelimit.limit",
                    unit="{1}",
                    description="x-ratelimit-limit-* of the last response: requests or tokens allowed per window.",
                ),
                "remaining": meter.create_gauge(
                    "otel_setup.genai.ratelimit.remaining",
                    unit="{1}",
                    description="x-ratelimit-remaining-* of the last response.",
                ),
                "reset": meter.create_gauge(
                    "otel_setup.genai.ratelimit.reset",
                    unit="s",
                    description="x-ratelimit-reset-* of the last response: seconds until the budget is full again.",
                ),
            },
        )
        return GenAIHandler(instruments)
