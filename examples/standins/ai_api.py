"""A loopback stand-in for an OpenAI-compatible API (Chat Completions and Responses).

It answers with realistic bodies and headers so that GenAI telemetry can be tested without a
paid account: ``usage`` token counts derived deterministically from the input, the
``x-ratelimit-*`` headers with Go-style durations (``6m0s``, ``12ms``), and the upstream error
shapes. Special model names inject failures:

* ``quota-exceeded``: 429 ``insufficient_quota`` (also for every model with ``quota_exceeded=True``);
* ``rate-limited``: 429 ``rate_limit_exceeded`` with ``retry-after-ms`` (also when the per-key
  request budget is spent);
* ``broken``: 500 ``server_error``;
* ``slow``: answers after ``slow_seconds``.

Run it with ``python -m examples.standins.ai_api --port 8102`` from the repository root, or
build it in tests with :func:`create_app`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import re
import time
from collections.abc import Callable, Collection
from typing import Any, Literal

import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

#: A key the stand-in accepts; shaped like a real project key so redaction tests can plant it.
DEMO_API_KEY = "sk-proj-standin-demo-0123456789abcdef"
_KEY_SHAPE = re.compile(r"^sk-[A-Za-z0-9_-]{16,}$")
_TOKEN = re.compile(r"\w+|[^\w\s]")
_REPLIES = (
    "Run a power build with Berserker stats and keep Might stacked to 25.",
    "For fractals, bring Agony Resistance first; damage comes second until you reach 150.",
    "Swap to a Diviner set for boon duration if your group lacks Quickness.",
    "Practise the rotation on the golem before you change runes or sigils.",
    "Condition builds shine on long fights; Viper stats with Sigil of Bursting fit well.",
)
HeaderMode = Literal["present", "missing", "garbage", "negative"]


class ChatMessage(BaseModel):
    """One input message; content is text or a list of typed parts, as upstream accepts."""

    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class ChatRequest(BaseModel):
    """The subset of the Chat Completions request the stand-in reads; the rest is ignored."""

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stream: bool = False


class ResponsesRequest(BaseModel):
    """The subset of the Responses API request the stand-in reads."""

    model_config = ConfigDict(extra="allow")
    model: str
    input: str | list[ChatMessage]
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    stream: bool = False


class OpenAIError(Exception):
    """An error answered in the upstream shape ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status_code: int,
        message: str,
        type_: str,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
        self.headers = headers or {}


class Budget:
    """A continuously refilled allowance, the model behind ``x-ratelimit-*`` headers."""

    def __init__(self, limit: int, period_seconds: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.rate = limit / period_seconds
        self._clock = clock
        self._level = float(limit)
        self._updated = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self.limit, self._level + (now - self._updated) * self.rate)
        self._updated = now

    def spend(self, amount: float) -> bool:
        """Take ``amount`` if available; False leaves the budget untouched."""
        self._refill()
        if self._level < amount:
            return False
        self._level -= amount
        return True

    @property
    def remaining(self) -> int:
        self._refill()
        return max(0, int(self._level))

    def seconds_until(self, amount: float) -> float:
        """How long until ``amount`` is available again (0 when it already is)."""
        self._refill()
        return max(0.0, (amount - self._level) / self.rate)


def go_duration(seconds: float) -> str:
    """Format like Go's ``time.Duration``, which is what upstream's reset headers use."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    total_ms = round(seconds * 1000)
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def count_tokens(text: str) -> int:
    """A deterministic tokenizer: words and punctuation marks each count as one token."""
    return len(_TOKEN.findall(text))


def _text_of(message: ChatMessage) -> str:
    if isinstance(message.content, str):
        return message.content
    parts = message.content or []
    return " ".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))


def prompt_usage(messages: list[ChatMessage]) -> tuple[int, int]:
    """Prompt and cached token counts.

    Each message costs its tokens plus 3 (plus 1 for a ``name``), and 3 more prime the reply,
    as in OpenAI's own counting recipe. The leading system/developer messages count as the
    cached prefix, with upstream's rules: at least 1024 tokens, in steps of 128.
    """
    prompt = 3
    prefix, in_prefix = 0, True
    for message in messages:
        cost = 3 + count_tokens(_text_of(message)) + (1 if message.name else 0)
        prompt += cost
        if in_prefix and message.role in ("system", "developer"):
            prefix += cost
        else:
            in_prefix = False
    cached = (prefix // 128) * 128 if prefix >= 1024 else 0
    return prompt, cached


def completion_for(messages: list[ChatMessage], max_tokens: int | None) -> tuple[str, int, bool]:
    """A canned reply chosen by a hash of the prompt; True when ``max_tokens`` cut it short."""
    digest = hashlib.sha256("\n".join(_text_of(m) for m in messages).encode()).digest()
    text = _REPLIES[digest[0] % len(_REPLIES)]
    tokens = list(_TOKEN.finditer(text))
    if max_tokens is not None and len(tokens) > max_tokens:
        return text[: tokens[max_tokens - 1].end()], max_tokens, True
    return text, len(tokens), False


def create_app(
    *,
    api_keys: Collection[str] | None = None,
    quota_exceeded: bool = False,
    request_limit: int = 500,
    token_limit: int = 200_000,
    period_seconds: float = 60.0,
    rate_limit_headers: HeaderMode = "present",
    slow_seconds: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
) -> FastAPI:
    """Build a stand-in app.

    ``api_keys=None`` accepts any ``sk-...`` key. ``rate_limit_headers`` reproduces what some
    providers send instead of proper headers: nothing, garbage, or ``-1``.
    """
    accepted = None if api_keys is None else frozenset(api_keys)
    budgets: dict[str, tuple[Budget, Budget]] = {}

    def api_key(request: Request) -> str:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise OpenAIError(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                "invalid_request_error",
            )
        if not _KEY_SHAPE.match(key) or (accepted is not None and key not in accepted):
            raise OpenAIError(
                401,
                "Incorrect API key provided. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                code="invalid_api_key",
            )
        return key

    def budgets_for(key: str) -> tuple[Budget, Budget]:
        if key not in budgets:
            budgets[key] = (Budget(request_limit, period_seconds, clock), Budget(token_limit, period_seconds, clock))
        return budgets[key]

    def limit_headers(requests: Budget, tokens: Budget) -> dict[str, str]:
        if rate_limit_headers == "missing":
            return {}
        if rate_limit_headers == "garbage":
            values = ["lots", "n/a", "soon", "many", "?", "later"]
        elif rate_limit_headers == "negative":
            values = ["-1", "-1", "0s", "-1", "-1", "0s"]
        else:
            values = [
                str(requests.limit),
                str(requests.remaining),
                go_duration(requests.seconds_until(requests.limit)),
                str(tokens.limit),
                str(tokens.remaining),
                go_duration(tokens.seconds_until(tokens.limit)),
            ]
        names = [
            f"x-ratelimit-{kind}-{unit}" for unit in ("requests", "tokens") for kind in ("limit", "remaining", "reset")
        ]
        return dict(zip(names, values, strict=True))

    async def admit(key: str, model: str, estimated_tokens: int) -> dict[str, str]:
        """Apply the failure switches and budgets; return the rate-limit headers to send."""
        if quota_exceeded or model == "quota-exceeded":
            raise OpenAIError(
                429,
                "You exceeded your current quota, please check your plan and billing details. "
                "For more information on this error, read the docs: "
                "https://platform.openai.com/docs/guides/error-codes/api-errors.",
                "insufficient_quota",
                code="insufficient_quota",
            )
        requests, tokens = budgets_for(key)
        if model == "rate-limited" or not requests.spend(1):
            wait = requests.seconds_until(1) or 0.02
            raise OpenAIError(
                429,
                f"Rate limit reached for {model} in organization org-standin on requests per "
                f"min (RPM): Limit {requests.limit}, Used {requests.limit}, Requested 1. "
                f"Please try again in {go_duration(wait)}. "
                "Visit https://platform.openai.com/account/rate-limits to learn more.",
                "requests",
                code="rate_limit_exceeded",
                headers={
                    "retry-after-ms": str(math.ceil(wait * 1000)),
                    "retry-after": str(math.ceil(wait)),
                    **limit_headers(requests, tokens),
                },
            )
        tokens.spend(min(estimated_tokens, tokens.remaining))
        if model == "broken":
            raise OpenAIError(
                500,
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
            )
        if model == "slow":
            await asyncio.sleep(slow_seconds)
        return limit_headers(requests, tokens)

    def reply(body: dict[str, Any], headers: dict[str, str], started: float) -> JSONResponse:
        request_id = "req_" + hashlib.sha256(repr(body).encode()).hexdigest()[:24]
        elapsed_ms = max(1, round((time.perf_counter() - started) * 1000))
        return JSONResponse(
            body,
            headers={
                **headers,
                "x-request-id": request_id,
                "openai-organization": "org-standin",
                "openai-processing-ms": str(elapsed_ms),
                "openai-version": "2020-10-01",
            },
        )

    def no_streaming(stream: bool) -> None:
        if stream:
            raise OpenAIError(
                400, "Streaming is not supported by this stand-in.", "invalid_request_error", param="stream"
            )

    app = FastAPI(title="OpenAI-compatible API (loopback stand-in)")

    @app.exception_handler(OpenAIError)
    async def openai_error(_: Request, exc: OpenAIError) -> JSONResponse:
        return JSONResponse(exc.body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(part) for part in first.get("loc", ()) if part != "body"]
        error = OpenAIError(
            400, str(first.get("msg", "Invalid request.")), "invalid_request_error", param=".".join(loc) or None
        )
        return JSONResponse(error.body, status_code=400)

    @app.post("/v1/chat/completions")
    async def chat_completions(chat: ChatRequest, key: str = Depends(api_key)) -> JSONResponse:
        started = time.perf_counter()
        no_streaming(chat.stream)
        prompt_tokens, cached_tokens = prompt_usage(chat.messages)
        limit = chat.max_completion_tokens or chat.max_tokens
        headers = await admit(key, chat.model, prompt_tokens + (limit or 64))
        text, completion_tokens, truncated = completion_for(chat.messages, limit)
        digest = hashlib.sha256(chat.model_dump_json().encode()).hexdigest()
        body = {
            "id": f"chatcmpl-{digest[:29]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": chat.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
                    "logprobs": None,
                    "finish_reason": "length" if truncated else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 0,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
            "service_tier": "default",
            "system_fingerprint": f"fp_{digest[29:39]}",
        }
        return reply(body, headers, started)

    @app.post("/v1/responses")
    async def responses(req: ResponsesRequest, key: str = Depends(api_key)) -> JSONResponse:
        started = time.perf_counter()
        no_streaming(req.stream)
        messages = [ChatMessage(role="user", content=req.input)] if isinstance(req.input, str) else list(req.input)
        if req.instructions:
            messages.insert(0, ChatMessage(role="developer", content=req.instructions))
        input_tokens, cached_tokens = prompt_usage(messages)
        headers = await admit(key, req.model, input_tokens + (req.max_output_tokens or 64))
        text, output_tokens, truncated = completion_for(messages, req.max_output_tokens)
        digest = hashlib.sha256(req.model_dump_json().encode()).hexdigest()
        body = {
            "id": f"resp_{digest[:32]}",
            "object": "response",
            "created_at": int(time.time()),
            "status": "incomplete" if truncated else "completed",
            "incomplete_details": {"reason": "max_output_tokens"} if truncated else None,
            "error": None,
            "model": req.model,
            "output": [
                {
                    "type": "message",
                    "id": f"msg_{digest[32:64]}",
                    "status": "incomplete" if truncated else "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            ],
            "usage": {
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": cached_tokens},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input_tokens + output_tokens,
            },
        }
        return reply(body, headers, started)

    return app


def main(argv: list[str] | None = None) -> None:
    """Serve the stand-in on loopback only; it is never meant to face a network."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8102)
    parser.add_argument(
        "--quota-exceeded", action="store_true", help="answer every request with 429 insufficient_quota"
    )
    parser.add_argument("--request-limit", type=int, default=500, help="requests per minute")
    parser.add_argument(
        "--rate-limit-headers", default="present", choices=["present", "missing", "garbage", "negative"]
    )
    parser.add_argument("--slow-seconds", type=float, default=2.0)
    args = parser.parse_args(argv)
    app = create_app(
        quota_exceeded=args.quota_exceeded,
        request_limit=args.request_limit,
        rate_limit_headers=args.rate_limit_headers,
        slow_seconds=args.slow_seconds,
    )
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
