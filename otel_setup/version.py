"""The package version, kept apart so integrations can import it without cycles."""

from __future__ import annotations

__version__ = "0.1.0"
