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
from urllib.parse import urlsplit

from otel_setup._core.integration import ACTIVE, IntegrationStatus
from otel_setup._integrations.registry import covered

__all__ = ["COVERED", "ContribState", "activate_installed"]

_log = logging.getLogger("otel_setup")

# Entry points whose job configure() does, as each integration of the registry declares
# (``Integration.replaces``): FastAPI's middleware also replaces contrib's ASGI/Starlette
# ones, the log handler contrib's logging one, process metrics the system-metrics one.
COVERED: Final = covered()


@dataclass(frozen=True)
class ContribState:
    """One contrib entry point and what became of it."""

    name: str
    status: IntegrationStatus


def _guard_requests(allows: Callable[[str], bool]) -> Callable[[], None]:
    """``requests`` sends ``traceparent`` only where the host policy allows, like httpx here."""
    import requests
    from wrapt import wrap_function_wrapper

    from otel_setup._security.propagation import refuse_propagation

    def send(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        request = args[0] if args else kwargs.get("request")
        host = urlsplit(getattr(request, "url", "") or "").hostname or ""
        if allows(host):
            return wrapped(*args, **kwargs)
        with refuse_propagation():
            return wrapped(*args, **kwargs)

    wrap_function_wrapper(requests.sessions, "Session.send", send)
    return lambda: _unwrap(requests.sessions.Session, "send")


def _unwrap(owner: Any, name: str) -> None:
    wrapper = getattr(owner, name, None)
    original = getattr(wrapper, "__wrapped__", None)
    if original is not None:
        setattr(owner, name, original)


# HTTP client instrumentations that inject trace context, and their host guard.
GUARDED: Final[dict[str, Callable[[Callable[[str], bool]], Callable[[], None]]]] = {
    "requests": _guard_requests,
}
# Clients that inject on their own terms: listed as such in the states.
_UNGUARDED_CLIENTS: Final = frozenset({"urllib", "urllib3", "aiohttp-client", "aiohttp_client", "tornado", "httplib"})


def activate_installed(
    *,
    tracer_provider: Any,
    meter_provider: Any,
    disabled: Iterable[str],
    allows: Callable[[str], bool] | None = None,
) -> tuple[list[ContribState], Callable[[], None]]:
    """Instrument every installed contrib library not covered here; returns states and the undo.

    ``allows`` is the outbound host policy: the HTTP clients in ``GUARDED`` get a
    guard that keeps ``traceparent`` from hosts it refuses; ``None`` allows all.
    """
    from opentelemetry.instrumentation.dependencies import get_dist_dependency_conflicts

    skipped = frozenset(disabled)
    states: list[ContribState] = []
    done: list[Any] = []
    guards: list[Callable[[], None]] = []
    for entry_point in entry_points(group="opentelemetry_instrumentor"):
        name = entry_point.name
        if name in COVERED or any(state.name == name for state in states):
            continue
        if name in skipped:
            states.append(ContribState(name, IntegrationStatus.off("listed in OTEL_PYTHON_DISABLED_INSTRUMENTATIONS")))
            continue
        distribution = entry_point.dist
        conflict = get_dist_dependency_conflicts(distribution) if distribution is not None else None
        if conflict is not None:
            # The instrumented library is absent or outside the instrumentation's range.
            continue
        try:
            instrumentor = entry_point.load()()
            if instrumentor.is_instrumented_by_opentelemetry:
                states.append(ContribState(name, ACTIVE))
                continue
            instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider, skip_dep_check=True)
        except ModuleNotFoundError:
            continue
        except Exception as error:  # noqa: BLE001 # a broken third-party instrumentation must not stop startup
            _log.warning("otel_setup: contrib instrumentation %s failed: %s", name, type(error).__name__)
            states.append(ContribState(name, IntegrationStatus.off(f"failed ({type(error).__name__})")))
            continue
        if not instrumentor.is_instrumented_by_opentelemetry:
            states.append(ContribState(name, IntegrationStatus.off("the instrumentor declined")))
            continue
        done.append(instrumentor)
        guard = GUARDED.get(name)
        if guard is not None and allows is not None:
            guards.append(guard(allows))
        if name in _UNGUARDED_CLIENTS and allows is not None:
            _log.warning(
                "otel_setup: %s sends traceparent to every host (OTEL_SETUP_PROPAGATE_TO does not apply)", name
            )
            states.append(ContribState(name, IntegrationStatus.on("traceparent to every host")))
        else:
            states.append(ContribState(name, ACTIVE))

    def undo() -> None:
        for unguard in guards:
            unguard()
        for instrumentor in done:
            instrumentor.uninstrument()

    return states, undo
