"""Make contrib instrumentations emit the stable HTTP and database conventions.

Contrib reads ``OTEL_SEMCONV_STABILITY_OPT_IN`` from the environment once and
defaults to the old conventions, whose server metrics carry ``Host``-derived
attributes (one series per forged Host header); ``otel_setup._compat`` makes
the choice for it.

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
    """Returns False when contrib had already chosen old conventions (an instrumentor ran first)."""
    from otel_setup._compat import choose_stable_semconv

    chosen = choose_stable_semconv()
    if chosen is False:
        _log.warning(
            "otel_setup: an instrumentation initialised before configure() chose old HTTP "
            "conventions; set OTEL_SEMCONV_STABILITY_OPT_IN=http,database or call configure() first"
        )
    return chosen is not False
