"""Settings: precedence, standard variables, and one clear error per bad value."""

from __future__ import annotations

import pytest

import otel_setup
from otel_setup import OtelSetupConfigError
from otel_setup._core.settings import resolve


def test_precedence_is_argument_then_environment_then_default() -> None:
    assert resolve({}, {}).sampling_ratio == 0.1
    assert resolve({}, {"OTEL_TRACES_SAMPLER_ARG": "0.25"}).sampling_ratio == 0.25
    settings = resolve({"sampling_ratio": 0.5}, {"OTEL_TRACES_SAMPLER_ARG": "0.25"})
    assert settings.sampling_ratio == 0.5
    assert settings.sources["sampling_ratio"] == "argument"
    assert resolve({}, {"OTEL_TRACES_SAMPLER_ARG": "0.25"}).sources["sampling_ratio"] == "env:OTEL_TRACES_SAMPLER_ARG"


def test_sampler_arg_alone_changes_the_default_ratio() -> None:
    """The stock SDK ignores OTEL_TRACES_SAMPLER_ARG unless OTEL_TRACES_SAMPLER is set too."""
    from otel_setup._core.providers import build_sampler

    sampler = build_sampler(resolve({}, {"OTEL_TRACES_SAMPLER_ARG": "0.3"}))
    assert "ParentBased" in sampler.get_description()
    assert "0.3" in sampler.get_description()


def test_environment_comes_from_environment_variable() -> None:
    assert resolve({}, {"ENVIRONMENT": "staging"}).environment == "staging"
    assert resolve({}, {"ENVIRONMENT": "staging", "OTEL_SETUP_ENVIRONMENT": "prod"}).environment == "prod"


def test_signal_endpoints_follow_the_otlp_rules() -> None:
    settings = resolve({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"})
    assert settings.signal_endpoint("traces") == "http://collector:4318/v1/traces"
    settings = resolve(
        {},
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://other:9999/custom",
        },
    )
    assert settings.signal_endpoint("metrics") == "http://other:9999/custom"
    grpc = resolve({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert grpc.signal_endpoint("traces") == "http://collector:4317"
    assert resolve({}, {}).signal_endpoint("traces") is None


@pytest.mark.parametrize(
    ("variable", "value", "allowed"),
    [
        ("OTEL_TRACES_SAMPLER_ARG", "abc", "a number between 0 and 1"),
        ("OTEL_TRACES_SAMPLER_ARG", "1.5", "a number between 0 and 1"),
        ("OTEL_TRACES_SAMPLER_ARG", "nan", "a number between 0 and 1"),
        ("OTEL_TRACES_SAMPLER", "sometimes", "one of always_on, always_off, traceidratio"),
        ("OTEL_TRACES_EXPORTER", "zipkin", "one of otlp, console, none"),
        ("OTEL_METRICS_EXPORTER", "prometheus,statsd", "a comma-separated list of prometheus, otlp, console, none"),
        ("OTEL_LOGS_EXPORTER", "loki", "one of otlp, console, none"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "one of http/protobuf, grpc"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318", "an http:// or https:// URL with a host"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://:4318", "an http:// or https:// URL with a host"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector:99999/v1/traces", "an http:// or https:// URL"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "-1", "a number of seconds greater than 0"),
        ("OTEL_SDK_DISABLED", "maybe", "true or false"),
        ("OTEL_SETUP_METRICS_PORT", "http", "a TCP port between 1 and 65535"),
        ("OTEL_SETUP_HEALTH_PATH", "health", "a path starting with '/'"),
        ("OTEL_SETUP_EXCLUDED_URLS", "/ok,([", "valid regular expressions"),
        ("OTEL_SETUP_TRUSTED_TRACEPARENT", "sometimes", "all, none, or a comma list of origins"),
        ("OTEL_SETUP_REQUEST_LOG_LEVEL", "loud", "one of debug, info, warning, error, off"),
        ("OTEL_SETUP_SENTRY_SAMPLE_RATE", "2", "a number between 0 and 1"),
    ],
)
def test_bad_environment_value_names_variable_value_and_allowed(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, allowed: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(OtelSetupConfigError) as caught:
        otel_setup.configure()
    error = caught.value
    assert error.name == variable
    assert error.value == value
    assert allowed in error.allowed
    assert str(error).startswith(f"{variable}={value!r} is not valid: expected ")
    assert otel_setup._core.configure.active() is None, "nothing may be installed after a configuration error"


@pytest.mark.parametrize(
    ("argument", "value", "allowed"),
    [
        ("sampling_ratio", 1.5, "a number between 0 and 1"),
        ("sampling_ratio", "abc", "a number between 0 and 1"),
        ("otlp_protocol", "udp", "one of http/protobuf, grpc"),
        ("otlp_endpoint", "ftp://x", "an http:// or https:// URL"),
        ("fastapi", "yes", "None, False or FastAPIOptions(...)"),
        ("readiness_checks", {"db": 3}, "a mapping of name to a zero-argument callable"),
    ],
)
def test_bad_keyword_value_names_argument(argument: str, value: object, allowed: str) -> None:
    with pytest.raises(OtelSetupConfigError) as caught:
        otel_setup.configure(**{argument: value})  # type: ignore[arg-type]
    assert caught.value.name == argument
    assert caught.value.value == value
    assert allowed in caught.value.allowed


def test_unknown_keyword_is_a_config_error_listing_the_known_ones() -> None:
    with pytest.raises(OtelSetupConfigError) as caught:
        otel_setup.configure(sampling_rate=0.2)  # type: ignore[call-arg]
    assert caught.value.name == "sampling_rate"
    assert caught.value.value == 0.2
    assert "sampling_ratio" in caught.value.allowed


def test_secrets_are_not_printed_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "Authorization Bearer-s3cr3t-value")
    with pytest.raises(OtelSetupConfigError) as caught:
        otel_setup.configure()
    assert "s3cr3t" not in str(caught.value)
    assert caught.value.name == "OTEL_EXPORTER_OTLP_HEADERS"
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_HEADERS")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://user:hunter2@collector:4318")
    with pytest.raises(OtelSetupConfigError) as caught:
        otel_setup.configure()
    assert "hunter2" not in str(caught.value)


def test_headers_and_resource_attributes_parse_key_value_lists() -> None:
    settings = resolve(
        {},
        {
            "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=abc%3D,tenant=t1",
            "OTEL_RESOURCE_ATTRIBUTES": "service.version=1.2.3,deployment.environment.name=prod",
        },
    )
    assert settings.otlp_headers == {"x-api-key": "abc=", "tenant": "t1"}
    assert settings.resource_attributes["service.version"] == "1.2.3"
    assert settings.masked()["otlp_headers"] == {"x-api-key": "<hidden>", "tenant": "<hidden>"}


def test_configuration_is_read_when_configure_runs_not_at_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "read-late")
    telemetry = otel_setup.configure()
    assert telemetry.resource.attributes["service.name"] == "read-late"


def test_resource_attributes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.version=9.9,deployment.environment=legacy,team=raid")
    monkeypatch.setenv("ENVIRONMENT", "staging")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gw2-companion")
    attributes = otel_setup.configure().resource.attributes
    assert attributes["service.name"] == "gw2-companion"
    assert attributes["service.version"] == "9.9"
    assert attributes["deployment.environment.name"] == "staging"
    assert attributes["team"] == "raid"
    assert "deployment.environment" not in attributes
    assert len(str(attributes["service.instance.id"])) == 36


def test_every_setting_is_a_typed_keyword() -> None:
    """Each setting can be passed to configure() with its type known to mypy."""
    from otel_setup._core.options import ConfigureOptions
    from otel_setup._core.settings import SETTINGS

    assert {s.name for s in SETTINGS} <= set(ConfigureOptions.__annotations__)
