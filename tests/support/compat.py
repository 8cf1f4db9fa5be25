"""Older library releases side by side with the main environment, for compatibility tests.

``pip install --target`` puts a release into a directory that is put first on
``PYTHONPATH`` of a subprocess; the main venv supplies everything else. The
directory is cached under ``.cache/compat`` (CI fills it once per run).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "compat"


def site_with(requirements: Sequence[str]) -> Path:
    key = hashlib.sha256("\n".join(sorted(requirements)).encode()).hexdigest()[:12]
    target = CACHE / key
    marker = target / ".complete"
    if not marker.exists():
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), *requirements],
            check=True,
            capture_output=True,
        )
        marker.write_text("\n".join(requirements))
    return target


def run_with(site: Path, code: str, timeout: float = 120.0, env: dict[str, str] | None = None) -> dict[str, object]:
    """Run ``code`` (which prints one JSON object last) with ``site`` shadowing the venv."""
    extra = env or {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(extra)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT)])
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))
