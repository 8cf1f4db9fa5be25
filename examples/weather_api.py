"""A user's own upstream as a known HTTP API: forecast calls named by endpoint, never by city.

``WeatherApi`` is the worked example of docs/integrations.md; ``create_standin()`` is a
loopback weather service for tests and the demo (``/v1/forecast/<city>``, 404 for an
unknown city, 429 with a ``{"reason": ...}`` body once its quota is spent).
"""

from __future__ import annotations

import json

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from otel_setup import EndpointApi

# --- the known API (docs/integrations.md quotes this block) ---


class WeatherApi(EndpointApi):
    """``/v1/forecast/Berlin`` -> ``/v1/forecast/{city}``; anything else is ``/v1/_OTHER``."""

    name = "weather"
    requests_description = "Requests to the weather API by endpoint template and outcome."
    error_body_statuses = frozenset({429})

    def template(self, path: str) -> str:
        segments = path.strip("/").split("/")
        if segments[:2] == ["v1", "forecast"] and len(segments) == 3:
            return "/v1/forecast/{city}"
        if segments == ["v1", "cities"]:
            return "/v1/cities"
        return "/v1/_OTHER"

    def error_reason(self, status: int, body: bytes) -> str | None:
        try:
            reason = json.loads(body).get("reason")
        except (ValueError, AttributeError):
            return "other"
        return reason if reason in ("daily_quota", "burst") else "other"


# --- end of the known API ---

CITIES = {"Berlin": 4.5, "Lisbon": 17.0}


def create_standin(quota: int = 1000) -> FastAPI:
    """The upstream: a few cities, a call quota."""
    app = FastAPI()
    calls = {"made": 0}

    @app.get("/v1/forecast/{city}")
    async def forecast(city: str) -> JSONResponse:
        calls["made"] += 1
        if calls["made"] > quota:
            return JSONResponse({"reason": "daily_quota"}, status_code=429)
        if city not in CITIES:
            return JSONResponse({"error": "unknown city"}, status_code=404)
        return JSONResponse({"city": city, "celsius": CITIES[city]})

    return app
