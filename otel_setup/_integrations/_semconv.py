"""Make contrib instrumentations emit the stable HTTP and database conventions.

Contrib reads ``OTEL_SEMCONV_STABILITY_OPT_IN`` from the environment once and
defaults to the old conventions, whose server metrics carry ``Host``-derived
attributes (one series per forged Host header). Rather than write to
``os.environ``, the resolved choice is handed to contrib's switch directly.

Attribute lists that more than one integration records live here too.
"""

from __future__ import annotations

import logging
from typing import Final

__all__ = ["DB_OPERATION_ATTRIBUTES", "use_stable_semconv"]

DB_OPERATION_ATTRIBUTES: Final = (
    "db.system.name",
    "db.namespace",
    "server.address",
    "server.port",
    "db.operation.name",
    "db.collection.name",
    "error.type",
)
"""``db.client.operation.duration``'s attributes in the order its recorders pass their values."""

_log = logging.getLogger("otel_setup")


def use_stable_semconv() -> bool:
    """Returns False when contrib had already chosen (an instrumentor ran first)."""
    try:
        from opentelemetry.instrumentation._semconv import (
            _OpenTelemetrySemanticConventionStability as Stability,
        )
        from opentelemetry.instrumentation._semconv import (
            _OpenTelemetryStabilitySignalType as Signal,
        )
        from opentelemetry.instrumentation._semconv import _StabilityMode as Mode
    except ImportError:
        return False
    with Stability._lock:
        if Stability._initialized:
            current = Stability._OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING.get(Signal.HTTP)
            if current not in (Mode.HTTP, Mode.HTTP_DUP):
                _log.warning(
                    "otel_setup: an instrumentation initialised before configure() chose old HTTP "
                    "conventions; set OTEL_SEMCONV_STABILITY_OPT_IN=http,database or call configure() first"
                )
            return False
        Stability._OTEL_SEMCONV_STABILITY_SIGNAL_MAPPING = {
            Signal.HTTP: Mode.HTTP,
            Signal.DATABASE: Mode.DATABASE,
            Signal.GEN_AI: Mode.DEFAULT,
        }
        Stability._initialized = True
    return True
