"""Clients for the two upstream APIs, over ``httpx.AsyncClient``.

GW2 keys travel only in the ``Authorization`` header: a key in the query string
(``?access_token=``) would end up in URLs, access logs, exception messages and span attributes.
Upstream failures become :class:`UpstreamError`, which the app maps to a 4xx/5xx answer.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast
from urllib.parse import quote

import httpx

from .settings import settings

USER_AGENT = "gw2-app-example/1.0"


class UpstreamError(Exception):
    """An upstream answer translated for our own callers: status, a safe message, headers."""

    def __init__(self, status_code: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = headers or {}


class _Api:
    """Owns one ``httpx.AsyncClient``; reopened lazily after ``aclose`` so the app can restart."""

    def __init__(self, base_url: str, timeout: float) -> None:
        self._base_url = base_url
        self._timeout = timeout
        self._http = self._open()

    def _open(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self._base_url,
            timeout=self._timeout,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
        )

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http.is_closed:
            self._http = self._open()
        return self._http

    async def aclose(self) -> None:
        await self._http.aclose()


class GW2Client(_Api):
    """The few GW2 API v2 endpoints the service uses."""

    async def _get(self, path: str, key: str | None = None, **params: str) -> Any:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        try:
            response = await self.http.get(path, headers=headers, params=params or None)
        except httpx.TimeoutException as exc:
            raise UpstreamError(504, "GW2 API timed out") from exc
        except httpx.TransportError as exc:
            raise UpstreamError(502, "GW2 API unreachable") from exc
        if response.status_code in (200, 206):
            return response.json()
        raise self._error(response)

    @staticmethod
    def _error(response: httpx.Response) -> UpstreamError:
        try:
            text = str(response.json().get("text", ""))
        except (ValueError, AttributeError):
            text = ""
        status = response.status_code
        if status == 403 and text in ("invalid key", "endpoint requires authentication"):
            return UpstreamError(401, "the GW2 API key was rejected")
        if status == 403:
            return UpstreamError(403, f"GW2 API refused: {text or 'forbidden'}")
        if status == 404:
            return UpstreamError(404, "not found in the GW2 API")
        if status == 429:
            return UpstreamError(503, "GW2 API rate limit reached", {"Retry-After": "1"})
        return UpstreamError(502, f"GW2 API error ({status})")

    async def account(self, key: str) -> dict[str, Any]:
        return cast(dict[str, Any], await self._get("/v2/account", key))

    async def characters(self, key: str) -> list[str]:
        return cast(list[str], await self._get("/v2/characters", key))

    async def character(self, key: str, name: str) -> dict[str, Any]:
        return cast(dict[str, Any], await self._get(f"/v2/characters/{quote(name, safe='')}", key))

    async def item(self, item_id: int) -> dict[str, Any] | None:
        try:
            found = await self._get("/v2/items", ids=str(item_id))
        except UpstreamError as exc:
            if exc.status_code == 404:
                return None
            raise
        return cast(dict[str, Any], found[0]) if found else None


class AIClient(_Api):
    """Chat Completions on any OpenAI-compatible API, retried the way the OpenAI SDK does."""

    max_retries = 2
    max_retry_wait = 5.0

    def __init__(self, base_url: str, api_key: str | None, model: str, timeout: float) -> None:
        super().__init__(base_url, timeout)
        self.api_key = api_key
        self.model = model

    async def chat(self, messages: list[dict[str, str]], max_tokens: int = 300) -> dict[str, Any]:
        """One logical call: up to ``1 + max_retries`` HTTP attempts on 429 (rate) and 5xx."""
        if not self.api_key:
            raise UpstreamError(503, "AI features are not configured (AI_API_KEY)")
        payload = {"model": self.model, "messages": messages, "max_tokens": max_tokens}
        headers = {"Authorization": f"Bearer {self.api_key}"}
        attempt = 0
        while True:
            try:
                response = await self.http.post("/chat/completions", json=payload, headers=headers)
            except httpx.TimeoutException as exc:
                raise UpstreamError(504, "AI API timed out") from exc
            except httpx.TransportError as exc:
                raise UpstreamError(502, "AI API unreachable") from exc
            if response.status_code == 200:
                return cast(dict[str, Any], response.json())
            wait = self._retry_wait(response, attempt)
            if wait is None or attempt >= self.max_retries:
                raise self._error(response)
            attempt += 1
            await asyncio.sleep(wait)

    def _retry_wait(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying, or None when the failure is final."""
        status = response.status_code
        if status == 429 and self._error_code(response) == "insufficient_quota":
            return None
        if status != 429 and status < 500:
            return None
        try:
            wait = float(response.headers["retry-after-ms"]) / 1000
        except (KeyError, ValueError):
            wait = 0.25 * 2**attempt
        return wait if wait <= self.max_retry_wait else None

    @staticmethod
    def _error_code(response: httpx.Response) -> str | None:
        try:
            code = response.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            return None
        return code if isinstance(code, str) else None

    def _error(self, response: httpx.Response) -> UpstreamError:
        status, code = response.status_code, self._error_code(response)
        if code == "insufficient_quota":
            return UpstreamError(503, "AI quota exhausted")
        if status == 429:
            return UpstreamError(503, "AI API rate limit reached", {"Retry-After": "5"})
        if status in (401, 403):
            return UpstreamError(502, "AI API rejected the service's credentials")
        return UpstreamError(502, f"AI API error ({status})")


gw2 = GW2Client(settings.gw2_api_base, settings.http_timeout_seconds)
ai = AIClient(settings.ai_api_base, settings.ai_api_key, settings.ai_model, settings.http_timeout_seconds)
