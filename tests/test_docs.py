"""The configuration reference is the settings table; the README keeps the first screen."""

from __future__ import annotations

from pathlib import Path

from otel_setup._core.settings import markdown_table

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()


def test_configuration_table_is_generated_from_the_settings() -> None:
    start = CONFIGURATION.index("<!-- settings:start")
    start = CONFIGURATION.index("\n", start) + 1
    end = CONFIGURATION.index("<!-- settings:end -->")
    assert CONFIGURATION[start:end] == markdown_table(), "regenerate with: python -m otel_setup._core.settings"


def test_quickstart_commands_exist() -> None:
    assert "./scripts/demo" in README and (ROOT / "scripts" / "demo").exists()
    assert "./scripts/test" in README and (ROOT / "scripts" / "test").exists()
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()


def test_the_readme_first_screen_holds_what_it_is_the_two_commands_and_the_use() -> None:
    first_screen = README[: README.index("## What you get")]
    assert "Guild Wars 2" in first_screen and "./scripts/demo" in first_screen
    assert "otel_setup.configure(app)" in first_screen and "opentelemetry-instrument" in first_screen
    code = first_screen.split("## Use it in your app", 1)[1]
    assert len([line for line in code.splitlines() if line.strip()]) <= 20


def test_every_relative_link_in_the_docs_resolves() -> None:
    import re

    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", path.read_text()):
            assert (path.parent / target).exists(), f"{path.name}: {target}"
