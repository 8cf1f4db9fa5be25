"""The GenAI price table: the shipped prices, merged with the user's override.

It lives apart from the GenAI integration because the override is a setting:
it is read and checked when ``configure()`` resolves the settings, before
anything is installed, and the settings must not depend on an integration.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from otel_setup._core.errors import OtelSetupConfigError

__all__ = ["Price", "PriceTable", "load_price_table"]


@dataclass(frozen=True)
class Price:
    """USD per token."""

    input: float
    cached_input: float
    output: float


@dataclass
class PriceTable:
    """Model prices; :meth:`match` maps a model string to its entry without guessing."""

    version: str
    models: dict[str, Price]
    _matches: dict[str, str | None] = field(default_factory=dict, repr=False)

    def match(self, model: str | None) -> str | None:
        """The entry for ``model``: the same name, or the name plus a date/version suffix.

        ``gpt-4o-mini-2024-07-18`` is ``gpt-4o-mini``; ``gpt-4o-audio-preview`` is not
        ``gpt-4o`` (it is priced differently), so it is None.
        """
        if not model:
            return None
        try:
            return self._matches[model]
        except KeyError:
            pass
        found: str | None = model if model in self.models else None
        if found is None:
            candidates = [
                name
                for name in self.models
                if model.startswith(name + "-") and _is_version_suffix(model[len(name) + 1 :])
            ]
            found = max(candidates, key=len) if candidates else None
        if len(self._matches) < 1024:
            self._matches[model] = found
        return found

    def cost(self, key: str, input_tokens: int, cached_tokens: int, output_tokens: int) -> tuple[float, float]:
        """(input cost, output cost) in USD; cached input is part of ``input_tokens``."""
        price = self.models[key]
        cached = min(cached_tokens, input_tokens)
        return (
            (input_tokens - cached) * price.input + cached * price.cached_input,
            output_tokens * price.output,
        )


def _is_version_suffix(text: str) -> bool:
    if len(text) == 4:
        return text.isdigit()
    return len(text) == 10 and text[4] == "-" and text[7] == "-" and text.replace("-", "").isdigit()


def _read_table(raw: Any, name: str, shown: object) -> tuple[str, dict[str, Price]]:
    allowed = (
        'JSON like {"version": "...", "models": {"gpt-4o-mini": {"input": 0.15, "output": 0.6}}} (USD per 1M tokens)'
    )
    if not isinstance(raw, Mapping) or not isinstance(raw.get("models"), Mapping):
        raise OtelSetupConfigError(name, shown, allowed)
    per = raw.get("per", 1_000_000)
    if not isinstance(per, (int, float)) or isinstance(per, bool) or per <= 0:
        raise OtelSetupConfigError(name, shown, allowed)
    models: dict[str, Price] = {}
    for model, entry in raw["models"].items():
        if not isinstance(model, str) or not isinstance(entry, Mapping):
            raise OtelSetupConfigError(name, shown, allowed)
        numbers = {}
        for kind in ("input", "output", "cached_input"):
            value = entry.get(kind, entry.get("input") if kind == "cached_input" else None)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise OtelSetupConfigError(name, shown, f"{allowed}; {model!r} lacks a valid {kind!r}")
            numbers[kind] = float(value) / per
        models[model] = Price(**numbers)
    return str(raw.get("version", "custom")), models


def load_price_table(override: str | Mapping[str, Any] | None = None, name: str = "genai_prices") -> PriceTable:
    """The shipped table, with ``override`` (a JSON file path or a mapping) merged over it by model."""
    shipped = json.loads(resources.files("otel_setup").joinpath("genai_prices.json").read_text(encoding="utf-8"))
    version, models = _read_table(shipped, "genai_prices.json", "the shipped table")
    if override is not None:
        if isinstance(override, Mapping):
            raw: Any = override
            shown: object = "<mapping>"
        else:
            shown = override
            try:
                raw = json.loads(Path(override).read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                raise OtelSetupConfigError(
                    name, override, f"a readable JSON price file ({type(error).__name__})"
                ) from None
        own_version, own = _read_table(raw, name, shown)
        models.update(own)
        version = f"{version}+{own_version}"
    return PriceTable(version=version, models=models)
