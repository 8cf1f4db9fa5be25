"""Entry points for ``opentelemetry-instrument`` (zero-code setup).

``opentelemetry-instrument uvicorn app.main:app`` loads the distro, then the
configurator, then every installed instrumentor. The configurator runs the
same ``configure()`` as application code, and the distro skips the contrib
instrumentors this package already covers, so the wrapper and an explicit
``configure(app)`` together still give one provider and one middleware.
"""

from __future__ import annotations

import logging
from typing import Any, Final

# mypy cannot resolve this name through contrib's partial typing; it exists since 0.x.
from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]

__all__ = ["OtelSetupConfigurator", "OtelSetupDistro"]

_log = logging.getLogger("otel_setup")

# Contrib entry points whose job configure() does (FastAPI through the
# package's own middleware, which also replaces contrib's ASGI/Starlette ones;
# "logging" would add a second OTLP log handler next to the package's).
COVERED: Final = frozenset({"fastapi", "asgi", "starlette", "sqlalchemy", "redis", "httpx", "logging"})


class OtelSetupDistro(BaseDistro):  # type: ignore[misc] # the base resolves to Any for mypy
    """Skips contrib instrumentors that ``configure()`` replaces or already ran."""

    def _configure(self, **kwargs: Any) -> None:
        """Settings are read by the configurator, from the same table as ``configure()``."""

    def load_instrumentor(self, entry_point: Any, **kwargs: Any) -> None:
        if entry_point.name in COVERED:
            _log.debug("otel_setup: %s is instrumented by otel_setup itself", entry_point.name)
            return
        super().load_instrumentor(entry_point, **kwargs)


class OtelSetupConfigurator:
    """``configure()`` for the whole process, and every FastAPI app built afterwards."""

    def configure(self, **kwargs: Any) -> None:
        from otel_setup._configure import configure
        from otel_setup._integrations.fastapi import patch_constructor

        telemetry = configure()
        if telemetry.instrumentations.get("fastapi") == "active" or not telemetry.enabled:
            patch_constructor(telemetry.instrument_app)
