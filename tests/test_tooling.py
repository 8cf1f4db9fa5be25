"""Strict tooling is part of the suite: mypy --strict on the package, ruff on everything."""

from __future__ import annotations

import subprocess
import sys
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
