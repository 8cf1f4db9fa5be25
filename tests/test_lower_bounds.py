"""``scripts/lower-bounds`` runs the oldest releases pyproject.toml allows, and says so."""

from __future__ import annotations

import os
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _oldest_in_script() -> dict[str, str]:
    text = (ROOT / "scripts" / "lower-bounds").read_text()
    block = text[text.index("OLDEST=(") : text.index(")", text.index("OLDEST=("))]
    return dict(re.findall(r'"([a-z0-9_-]+)==([0-9.]+)"', block))


def _lower_bounds() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["sentry"]]
    return {name: version for name, version in (re.findall(r"^([a-z0-9_-]+)>=([0-9.]+)", r)[0] for r in requirements)}


def test_the_script_pins_exactly_the_lower_bounds() -> None:
    oldest = _oldest_in_script()
    assert set(oldest) == {"sentry-sdk", "structlog", "prometheus-client", "wrapt"}
    bounds = _lower_bounds()
    assert {name: _release(bounds[name]) for name in oldest} == {name: _release(v) for name, v in oldest.items()}


def _release(version: str) -> tuple[int, ...]:
    parts = tuple(int(part) for part in version.split("."))
    return parts + (0,) * (3 - len(parts))


def test_the_run_uses_the_releases_it_names() -> None:
    expected = os.environ.get("LOWER_BOUNDS_EXPECT")
    if not expected:  # the main venv: the newest allowed releases, from the venv itself
        assert metadata.distribution("structlog").locate_file("").as_posix().startswith(sys.prefix)
        return
    pins = dict(pin.split("==") for pin in expected.split())
    assert {name: metadata.version(name) for name in pins} == pins
    import sentry_sdk
    import structlog

    assert "lower-bounds" in sentry_sdk.__file__ and "lower-bounds" in structlog.__file__


def test_integrations_claim_the_ranges_pyproject_allows() -> None:
    """``doctor`` and docs/integrations.md show each integration's range: the one pyproject.toml installs."""
    from otel_setup._integrations.registry import INTEGRATIONS

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["sentry"]]
    allowed = {m[0]: m[1] for m in (re.findall(r"^([a-z0-9_-]+)(>=.*)$", r) for r in requirements) for m in m}
    claimed = {i.library[0]: i.library[1] for i in INTEGRATIONS if i.library and i.library[0] in allowed}
    assert set(claimed) == {"fastapi", "structlog", "sentry-sdk"}
    assert claimed == {name: allowed[name] for name in claimed}
