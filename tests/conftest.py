"""Shared fixtures: a clean environment and a clean OpenTelemetry state per test."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from tests.support.otlp_receiver import OtlpReceiver

pytest_plugins = ["tests.support.fixtures"]

POSTGRES_URL = os.environ.get("OTEL_SETUP_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("OTEL_SETUP_TEST_REDIS", "redis://127.0.0.1:6379/0")

# Variables that would change what configure() does; a developer's shell must
# not leak into the tests.
_LEAKY_PREFIXES = ("OTEL_", "SENTRY_")
_COMPAT = "OTEL_SETUP_COMPAT"
_LEAKY_NAMES = ("ENVIRONMENT", "DATABASE_URL", "REDIS_URL", "GW2_API_BASE", "AI_API_BASE", "AI_API_KEY")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name == _COMPAT:
            continue  # the suite's mode (scripts/test runs the telemetry files again with `public`)
        if name.startswith(_LEAKY_PREFIXES) or name in _LEAKY_NAMES:
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def clean_otel() -> Iterator[None]:
    """Every test starts without a configured package and leaves none behind."""
    from otel_setup._core.configure import reset

    reset()
    _reopen_globals()
    yield
    reset()
    _reopen_globals()


def _reopen_globals() -> None:
    """``reset()`` reopens OpenTelemetry's set-once globals, except under ``OTEL_SETUP_COMPAT=public``

    (no public way exists); the suite still needs a clean process per test.
    """
    from otel_setup import _compat

    _compat.use_public_api(False)
    _compat.reset_global_providers()


@pytest.fixture
def otlp_receiver(otlp_receiver: OtlpReceiver) -> Iterator[OtlpReceiver]:
    """The plugin's receiver, outliving the test's telemetry so the final flush lands."""
    from otel_setup._core.configure import reset

    yield otlp_receiver
    reset()


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def postgres_url() -> str:
    assert _answers("127.0.0.1", 5432), "PostgreSQL must answer on 127.0.0.1:5432 (.ci/run starts it)"
    return POSTGRES_URL


@pytest.fixture(scope="session")
def redis_url() -> str:
    assert _answers("127.0.0.1", 6379), "Redis must answer on 127.0.0.1:6379 (.ci/run starts it)"
    return REDIS_URL
