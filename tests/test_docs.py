"""The README's configuration table is the settings table."""

from __future__ import annotations

from pathlib import Path

from otel_setup._settings import SETTINGS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_documented_with_its_variable_and_keyword() -> None:
    rows = [line for line in README.splitlines() if line.startswith("| `")]
    for setting in SETTINGS:
        row = next((r for r in rows if f"| `{setting.name}` |" in r), None)
        assert row is not None, f"README lacks a row for {setting.name}"
        for variable in setting.env:
            assert f"`{variable}`" in row, f"{variable} missing from the row of {setting.name}"
        assert setting.doc in row


def test_quickstart_commands_exist() -> None:
    root = Path(__file__).resolve().parents[1]
    assert "./scripts/demo" in README and (root / "scripts" / "demo").exists()
    assert "./scripts/test" in README and (root / "scripts" / "test").exists()
    assert "scripts/test" in (root / ".ci" / "run").read_text()
