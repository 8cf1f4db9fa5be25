"""The example service's own settings, read once from the environment at import."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_DEFAULT_SQLITE = Path(tempfile.gettempdir()) / "gw2_app.db"


@dataclass(frozen=True)
class Settings:
    """Where the service's dependencies live; every default works offline except the APIs."""

    database_url: str
    redis_url: str | None
    gw2_api_base: str
    ai_api_base: str
    ai_api_key: str | None
    ai_model: str
    cache_ttl_seconds: int
    http_timeout_seconds: float
    frontend_origins: tuple[str, ...]
    """Browser origins of the frontend (``FRONTEND_ORIGINS``, comma separated): CORS allows them."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        """Read the variables; an unset ``REDIS_URL`` selects an in-process Redis."""
        return cls(
            database_url=env.get("DATABASE_URL", f"sqlite:///{_DEFAULT_SQLITE}"),
            redis_url=env.get("REDIS_URL") or None,
            gw2_api_base=env.get("GW2_API_BASE", "https://api.guildwars2.com").rstrip("/"),
            ai_api_base=env.get("AI_API_BASE", "https://api.openai.com/v1").rstrip("/"),
            ai_api_key=env.get("AI_API_KEY") or None,
            ai_model=env.get("AI_MODEL", "gpt-4o-mini"),
            cache_ttl_seconds=int(env.get("CACHE_TTL_SECONDS", "60")),
            http_timeout_seconds=float(env.get("HTTP_TIMEOUT_SECONDS", "10")),
            frontend_origins=tuple(
                origin.strip().rstrip("/") for origin in env.get("FRONTEND_ORIGINS", "").split(",") if origin.strip()
            ),
        )


settings = Settings.from_env()
