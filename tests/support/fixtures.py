"""Pytest fixtures exposing :class:`OtlpReceiver` to the test suite.

Loaded as a plugin (``pytest_plugins = ["tests.support.fixtures"]``) so every
test module can request ``otlp_receiver`` without importing it.  The receiver
is function-scoped: each test gets fresh ports, empty recordings and no
leftover fault settings, so tests cannot leak state into one another.

gRPC is off by default to keep the common case cheap; opt in per test with
``@pytest.mark.otlp_receiver(grpc=True)`` (which also affects fixtures that
depend on ``otlp_receiver``), or request ``otlp_grpc_receiver`` directly.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.otlp_receiver import OtlpReceiver

_MARKER = "otlp_receiver"


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker so ``--strict-markers`` runs accept it."""
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(grpc=False): options for the otlp_receiver fixture (grpc=True also serves OTLP/gRPC)",
    )


@pytest.fixture
def otlp_receiver(request: pytest.FixtureRequest) -> Iterator[OtlpReceiver]:
    """A started loopback OTLP receiver, stopped (promptly) after the test."""
    marker = request.node.get_closest_marker(_MARKER)
    enable_grpc = bool(marker.kwargs.get("grpc", False)) if marker is not None else False
    with OtlpReceiver(grpc=enable_grpc) as receiver:
        yield receiver


@pytest.fixture
def otlp_grpc_receiver() -> Iterator[OtlpReceiver]:
    """Like ``otlp_receiver`` but always serving OTLP/gRPC as well as OTLP/HTTP."""
    with OtlpReceiver(grpc=True) as receiver:
        yield receiver
