"""The one exception type configuration problems surface as."""

from __future__ import annotations

__all__ = ["OtelSetupConfigError"]


class OtelSetupConfigError(ValueError):
    """A setting has a value the package cannot use.

    Raised by ``configure()`` before anything is installed, so a typo fails the
    deployment at startup instead of silently running without telemetry.
    ``name`` is the environment variable or keyword argument, ``value`` what was
    received (already masked when it may hold a secret) and ``allowed`` what
    would have been accepted.
    """

    def __init__(self, name: str, value: object, allowed: str) -> None:
        self.name = name
        self.value = value
        self.allowed = allowed
        super().__init__(f"{name}={value!r} is not valid: expected {allowed}")
