"""The one contract every integration follows, and the typed status it reports.

An integration is one object: its name (the key of ``Telemetry.instrumentations``
and of ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``), the type of its ``configure()``
keyword, the library range it is tested with, the contrib entry points it does
the job of, ``instrument(context) -> IntegrationStatus``, ``uninstrument()`` and
its readiness checks. ``configure()``, the distro, ``doctor`` and the docs table
read the one list of them (``otel_setup._integrations.registry``), so adding an
integration is adding an object to that list.

This module imports no integration and no instrumented library: it is what
every side (settings, distro, doctor) may import cheaply.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from otel_setup._core.errors import OtelSetupConfigError

if TYPE_CHECKING:
    from otel_setup._core.providers import Providers
    from otel_setup._core.settings import Settings
    from otel_setup._security.redaction import Redactor
    from otel_setup.health import ReadinessCheck

__all__ = ["InstrumentContext", "Integration", "IntegrationStatus", "TelemetryParts"]


@dataclass(frozen=True)
class IntegrationStatus:
    """Whether an integration runs, and why not (or a note on how it runs).

    ``str()`` gives the form the startup line and ``doctor`` print: ``active``,
    ``active (note)`` or ``off: reason``. For code written against the earlier
    plain-string states, a status also compares equal to that string.
    """

    active: bool
    reason: str = ""
    """Why it is off; for an active one, an optional note (empty for none)."""

    @classmethod
    def on(cls, note: str = "") -> IntegrationStatus:
        return cls(True, note)

    @classmethod
    def off(cls, reason: str) -> IntegrationStatus:
        return cls(False, reason)

    @property
    def state(self) -> str:
        """``active`` or ``off``."""
        return "active" if self.active else "off"

    def __str__(self) -> str:
        if self.active:
            return f"active ({self.reason})" if self.reason else "active"
        return f"off: {self.reason}"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, IntegrationStatus):
            return self.active == other.active and self.reason == other.reason
        if isinstance(other, str):
            return str(self) == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(str(self))


ACTIVE = IntegrationStatus.on()


@dataclass
class TelemetryParts:
    """What the integrations contribute to the handle; ``Telemetry`` is built once from it."""

    cleanups: list[Callable[[], None]] = field(default_factory=list)
    """Run at shutdown (quick undo steps such as uninstrumenting)."""
    resets: list[Callable[[], None]] = field(default_factory=list)
    """Run by ``reset()`` after shutdown (process-wide changes such as the log handler)."""
    flush_steps: list[Callable[[float], object]] = field(default_factory=list)
    shutdown_steps: list[Callable[[], object]] = field(default_factory=list)
    readiness_checks: dict[str, ReadinessCheck] = field(default_factory=dict)
    request_log: Callable[[str, str | None, int, float, int, int], None] | None = None
    write_waiting_lines: Callable[[], None] | None = None
    error_reporter: Callable[[BaseException | None, str, str | None, int], None] | None = None
    request_isolation: Callable[[Any], Any] | None = None


@dataclass
class InstrumentContext:
    """What one integration's ``instrument()`` receives: the resolved setup, never the globals."""

    settings: Settings
    providers: Providers
    redactor: Redactor
    options: Any
    """The integration's ``configure()`` keyword: None (default) or its options object."""
    statuses: Mapping[str, IntegrationStatus]
    """The integrations instrumented before this one (registry order)."""
    parts: TelemetryParts

    def on_shutdown(self, cleanup: Callable[[], None]) -> None:
        self.parts.cleanups.append(cleanup)

    def on_reset(self, step: Callable[[], None]) -> None:
        self.parts.resets.append(step)


class Integration:
    """One integration; subclasses set the class attributes and implement ``instrument``."""

    name: ClassVar[str]
    summary: ClassVar[str]
    """One line for the docs table: what it records."""
    options_type: ClassVar[type | None] = None
    """The type of its ``configure()`` keyword (``None`` | ``False`` | an instance); None: no keyword."""
    library: ClassVar[tuple[str, str] | None] = None
    """(distribution, version specifier) the package is tested with; ``doctor`` checks it."""
    module: ClassVar[str | None] = None
    """The module it needs, to tell "missing" from "instrumented twice"."""
    replaces: ClassVar[frozenset[str]] = frozenset()
    """Contrib ``opentelemetry_instrumentor`` entry points it does the job of: they never run."""
    follows_disabled_list: ClassVar[bool] = True
    """Whether ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` may name it."""

    def check_options(self, value: Any) -> None:
        """Reject a keyword value of the wrong type (``configure(redis="yes")``)."""
        kind = self.options_type
        if kind is not None and value is not None and value is not False and not isinstance(value, kind):
            raise OtelSetupConfigError(self.name, value, f"None, False or {kind.__name__}(...)")

    def validate(self, settings: Settings) -> None:
        """Raise :class:`OtelSetupConfigError` for a setting it cannot use, before anything is installed."""

    def precondition(self, settings: Settings) -> str | None:
        """Why it stays off whatever the keyword says (a setting switched it off); None to go on."""
        return None

    def wanted(self, settings: Settings, options: Any) -> IntegrationStatus | None:
        """None if it should run, else the status saying why it does not."""
        if options is False:
            return IntegrationStatus.off("disabled by argument")
        if self.follows_disabled_list and options is None and self.name in settings.disabled_instrumentations:
            return IntegrationStatus.off("listed in OTEL_PYTHON_DISABLED_INSTRUMENTATIONS")
        reason = self.precondition(settings)
        return None if reason is None else IntegrationStatus.off(reason)

    def instrument(self, context: InstrumentContext) -> IntegrationStatus:
        raise NotImplementedError

    def uninstrument(self) -> None:
        """Undo ``instrument()``; run at shutdown for every integration that became active."""

    def readiness_checks(self, options: Any) -> Mapping[str, ReadinessCheck]:
        """Checks ``/ready`` runs for what the options name (engines, clients)."""
        return {}
