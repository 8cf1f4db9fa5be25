"""The one exception type configuration problems surface as."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["OtelSetupConfigError", "unknown_keyword"]


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


def unknown_keyword(name: str, value: object, valid: Iterable[str]) -> OtelSetupConfigError:
    """The error for a keyword nobody declared: the closest valid names first, then all of them."""
    names = sorted(valid)
    close = (
        difflib.get_close_matches(name, names, n=3, cutoff=0.6)
        or [known for known in names if name.startswith(known + "_") or known.startswith(name + "_")][:3]
    )
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    return OtelSetupConfigError(name, value, f"a keyword of configure(){hint}, one of: {', '.join(names)}")
