"""The README's configuration table is the settings table."""

from __future__ import annotations

from pathlib import Path

from otel_setup._settings import markdown_table

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_configuration_table_is_generated_from_the_settings() -> None:
    start = README.index("<!-- settings:start")
    start = README.index("\n", start) + 1
    end = README.index("<!-- settings:end -->")
    assert README[start:end] == markdown_table(), "regenerate with: python -m otel_setup._settings"


def test_quickstart_commands_exist() -> None:
    assert "./scripts/demo" in README and (ROOT / "scripts" / "demo").exists()
    assert "./scripts/test" in README and (ROOT / "scripts" / "test").exists()
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()
