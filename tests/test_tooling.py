"""Strict tooling is part of the suite: mypy --strict on the package, ruff on everything."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PATHS = ["otel_setup", "tests", "bench", "examples", "deploy"]


@pytest.mark.slow
def test_mypy_strict_on_the_package() -> None:
    result = subprocess.run([str(BIN / "mypy")], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-4000:]


def test_ruff_lint_and_format() -> None:
    lint = subprocess.run([str(BIN / "ruff"), "check", *PATHS], cwd=ROOT, capture_output=True, text=True, check=False)
    assert lint.returncode == 0, lint.stdout[-4000:]
    fmt = subprocess.run(
        [str(BIN / "ruff"), "format", "--check", *PATHS], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert fmt.returncode == 0, fmt.stdout[-4000:]


def test_every_package_directory_is_listed_for_the_build() -> None:
    """pyproject lists packages by hand (two are mapped from examples/): a new subpackage must be added there."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    on_disk = {".".join(path.parent.relative_to(ROOT).parts) for path in (ROOT / "otel_setup").rglob("__init__.py")}
    mapped = {name: ROOT / where for name, where in config["package-dir"].items()}
    assert all((where / "__init__.py").is_file() for where in mapped.values()), mapped
    assert set(config["packages"]) == on_disk | set(mapped)
