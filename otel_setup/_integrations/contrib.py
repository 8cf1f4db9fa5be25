"""The contrib instrumentations a user installed, activated the way ``opentelemetry-instrument`` does.

Under the wrapper, the upstream loader activates every installed
``opentelemetry_instrumentor`` entry point; ``configure()`` does the same here,
so both ways in give the same telemetry. Entry points this package replaces
(``COVERED``) never run, and one the user listed in
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` is skipped, as upstream does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Final

__all__ = ["COVERED", "ContribState", "activate_installed"]

_log = logging.getLogger("otel_setup")

# Entry points whose job configure() does: FastAPI through the package's own
# middleware (which also replaces contrib's ASGI/Starlette ones), its own
# SQLAlchemy/Redis/httpx hooks, its own log handler, and the process metrics it
# registers with a process-only selection.
COVERED: Final = frozenset(
    {"fastapi", "asgi", "starlette", "sqlalchemy", "redis", "httpx", "logging", "system_metrics"}
)


@dataclass(frozen=True)
class ContribState:
    """One contrib entry point and what became of it."""

    name: str
    active: bool
    reason: str = ""

    def __str__(self) -> str:
        return "active" if self.active else f"off: {self.reason}"


def activate_installed(
    *,
    tracer_provider: Any,
    meter_provider: Any,
    disabled: Iterable[str],
) -> tuple[list[ContribState], Callable[[], None]]:
    """Instrument every installed contrib library not covered here; returns states and the undo."""
    from opentelemetry.instrumentation.dependencies import get_dist_dependency_conflicts

    skipped = frozenset(disabled)
    states: list[ContribState] = []
    done: list[Any] = []
    for entry_point in entry_points(group="opentelemetry_instrumentor"):
        name = entry_point.name
        if name in COVERED or any(state.name == name for state in states):
            continue
        if name in skipped:
            states.append(ContribState(name, False, "listed in OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"))
            continue
        distribution = entry_point.dist
        conflict = get_dist_dependency_conflicts(distribution) if distribution is not None else None
        if conflict is not None:
            # The instrumented library is absent or outside the instrumentation's range.
            continue
        try:
            instrumentor = entry_point.load()()
            if instrumentor.is_instrumented_by_opentelemetry:
                states.append(ContribState(name, True, ""))
                continue
            instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider, skip_dep_check=True)
        except ModuleNotFoundError:
            continue
        except Exception as error:  # noqa: BLE001 # a broken third-party instrumentation must not stop startup
            _log.warning("otel_setup: contrib instrumentation %s failed: %s", name, type(error).__name__)
            states.append(ContribState(name, False, f"failed ({type(error).__name__})"))
            continue
        if instrumentor.is_instrumented_by_opentelemetry:
            done.append(instrumentor)
            states.append(ContribState(name, True))
        else:
            states.append(ContribState(name, False, "the instrumentor declined"))

    def undo() -> None:
        for instrumentor in done:
            instrumentor.uninstrument()

    return states, undo
