"""Entry points for ``opentelemetry-instrument`` (zero-code setup).

``opentelemetry-instrument uvicorn app.main:app`` loads the distro, then the
configurator, then every installed instrumentor. The configurator runs the
same ``configure()`` as application code, and the distro skips the contrib
instrumentors this package already covers, so the wrapper and an explicit
``configure(app)`` together still give one provider and one middleware.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Final, NoReturn

# mypy cannot resolve this name through contrib's partial typing; it exists since 0.x.
from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]

from otel_setup._core.errors import OtelSetupConfigError
from otel_setup._integrations.registry import covered

__all__ = ["COVERED", "OtelSetupConfigurator", "OtelSetupDistro"]

_log = logging.getLogger("otel_setup")

COVERED: Final = covered()
"""Contrib entry points the registry's integrations replace: the wrapper never loads them."""


class OtelSetupDistro(BaseDistro):  # type: ignore[misc] # the base resolves to Any for mypy
    """Skips contrib instrumentors that ``configure()`` replaces or already ran."""

    def _configure(self, **kwargs: Any) -> None:
        """Settings are read by the configurator, from the same table as ``configure()``."""

    def load_instrumentor(self, entry_point: Any, **kwargs: Any) -> None:
        if entry_point.name in COVERED:
            _log.debug("otel_setup: %s is instrumented by otel_setup itself", entry_point.name)
            return
        instrumentor = entry_point.load()()
        if instrumentor.is_instrumented_by_opentelemetry:
            return  # configure() activated it already (OTEL_SETUP_CONTRIB_INSTRUMENTATIONS)
        instrumentor.instrument(**kwargs)


class OtelSetupConfigurator:
    """``configure()`` for the whole process, and every FastAPI app built afterwards.

    A bad setting stops the process here, as it would at ``configure()`` in
    code: the wrapper's loader logs and swallows exceptions, which would leave
    a service serving without telemetry or probes. ``SystemExit`` raised while
    ``sitecustomize`` runs is a fatal interpreter error with a traceback, so the
    error is written as one line and the process leaves with status 2.
    """

    def configure(self, **kwargs: Any) -> None:
        from otel_setup._core.configure import configure
        from otel_setup._core.settings import ON_CONFIG_ERROR_VARIABLE, config_error_policy
        from otel_setup._integrations.fastapi import patch_constructor

        try:
            policy = config_error_policy()
        except OtelSetupConfigError as error:
            _stop(error)
        try:
            telemetry = configure()
        except OtelSetupConfigError as error:
            if policy != "warn":
                _stop(error)
            _log.error("otel_setup: %s; serving WITHOUT telemetry or probes (%s=warn)", error, ON_CONFIG_ERROR_VARIABLE)
            return
        fastapi = telemetry.instrumentations.get("fastapi")
        if (fastapi is not None and fastapi.active) or not telemetry.enabled:
            patch_constructor(telemetry.instrument_app)


def _stop(error: OtelSetupConfigError) -> NoReturn:
    sys.stdout.flush()
    sys.stderr.write(f"{type(error).__name__}: {error}\n")
    sys.stderr.flush()
    os._exit(2)
