"""The interpreter's switch interval: lowered while telemetry runs, never against the user's choice."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

import otel_setup
from otel_setup._core.configure import reset


@pytest.fixture(autouse=True)
def default_interval() -> Iterator[None]:
    sys.setswitchinterval(0.005)
    yield
    sys.setswitchinterval(0.005)


def test_configure_lowers_the_default_interval_and_reset_restores_it() -> None:
    otel_setup.configure(metrics_exporter="none")
    assert sys.getswitchinterval() == pytest.approx(0.001)
    reset()
    assert sys.getswitchinterval() == pytest.approx(0.005)


def test_a_value_the_user_chose_is_left_alone() -> None:
    sys.setswitchinterval(0.002)
    otel_setup.configure(metrics_exporter="none")
    assert sys.getswitchinterval() == pytest.approx(0.002)


def test_zero_turns_the_tuning_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SETUP_SWITCH_INTERVAL_MS", "0")
    otel_setup.configure(metrics_exporter="none")
    assert sys.getswitchinterval() == pytest.approx(0.005)


def test_the_keyword_sets_another_interval() -> None:
    otel_setup.configure(metrics_exporter="none", switch_interval_ms=0.5)
    assert sys.getswitchinterval() == pytest.approx(0.0005)


@pytest.mark.parametrize("value", ["10", "-1", "fast", "0.01"])
def test_out_of_range_fails_at_startup_naming_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("OTEL_SETUP_SWITCH_INTERVAL_MS", value)
    with pytest.raises(otel_setup.OtelSetupConfigError) as raised:
        otel_setup.configure(metrics_exporter="none")
    message = str(raised.value)
    assert "OTEL_SETUP_SWITCH_INTERVAL_MS" in message and value in message and "between 0.1 and 5" in message
    assert sys.getswitchinterval() == pytest.approx(0.005)
