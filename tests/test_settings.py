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


@pytest.mark.parametrize(
    ("keyword", "closest"),
    [("sampling_rate", "sampling_ratio"), ("readiness_check", "readiness_checks"), ("redis_client", "redis")],
)
def test_unknown_keyword_says_did_you_mean_the_closest_names(keyword: str, closest: str) -> None:
    with pytest.raises(OtelSetupConfigError) as caught:
        otel_setup.configure(**{keyword: 1})  # type: ignore[arg-type]
    assert caught.value.name == keyword
    hint = caught.value.allowed.split("(did you mean ", 1)[1].split("?)", 1)[0]
    assert closest in hint.split(" or ")
    assert otel_setup._core.configure.active() is None


def test_unknown_keyword_lists_every_valid_keyword_and_nothing_else() -> None:
    """Settings and the code-only keywords (integration options, readiness checks, redact) alike."""
    from otel_setup._core.options import ConfigureOptions

    with pytest.raises(OtelSetupConfigError) as caught:
        otel_setup.configure(xyzzy=True)  # type: ignore[call-arg]
    assert "did you mean" not in caught.value.allowed
    listed = caught.value.allowed.split("one of: ", 1)[1].split(", ")
    assert listed == sorted(ConfigureOptions.__annotations__)
    assert {"fastapi", "sqlalchemy", "redis", "httpx", "logging", "readiness_checks", "redact"} <= set(listed)


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


def test_settings_are_frozen() -> None:
    import dataclasses

    settings = resolve({}, {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.sampling_ratio = 1.0  # type: ignore[misc]
    with pytest.raises((AttributeError, TypeError)):
        settings.not_a_setting = 1  # type: ignore[attr-defined]
    assert settings.sampling_ratio == 0.1


def test_the_table_is_the_settings_fields() -> None:
    """SETTINGS is derived from Settings' fields: same names, same order, one attribute each."""
    import dataclasses

    from otel_setup._core.settings import SETTINGS, Settings

    fields = [f.name for f in dataclasses.fields(Settings) if f.name != "sources"]
    assert [s.name for s in SETTINGS] == fields
    assert len(set(fields)) == len(fields)
    resolved = resolve({}, {})
    assert {name: getattr(resolved, name) for name in fields} == {s.name: s.default for s in SETTINGS}
    assert set(resolved.sources) == set(fields)
    assert not hasattr(Settings, "__getattr__"), "attributes are fields, each with its own type"


_SCALARS = (bool, int, float, str)


def _parts(form: object) -> list[object]:
    import types
    import typing

    if typing.get_origin(form) in (typing.Union, types.UnionType):
        return [part for arg in typing.get_args(form) for part in _parts(arg)]
    return [form]


def _shown(form: object) -> str:
    return " | ".join(
        str(part).replace("typing.", "").replace("collections.abc.", "")
        if not isinstance(part, type)
        else part.__name__
        for part in _parts(form)
    )


def _keyword_problems(setting: object, keyword: object, resolved: object) -> list[str]:
    """Why a ``ConfigureOptions`` type cannot carry the values its setting holds (empty: it can)."""
    import collections.abc
    import typing

    name = setting.name  # type: ignore[attr-defined]
    held = [part for part in _parts(resolved) if part is not type(None)]
    accepted = _parts(keyword)
    problems = []
    for part in accepted:
        if typing.get_origin(part) is typing.Literal:
            for value in typing.get_args(part):
                try:
                    setting.parse(value, name)  # type: ignore[attr-defined]
                except OtelSetupConfigError:
                    problems.append(f"accepts {value!r}, which the setting rejects")
        elif part in (bool, int, float) and part not in held and not (part is int and float in held):
            problems.append(f"accepts {part.__name__}, which the setting never holds")
    for part in held:
        if part in _SCALARS:
            literal = [
                p
                for p in accepted
                if typing.get_origin(p) is typing.Literal and all(type(v) is part for v in typing.get_args(p))
            ]
            if part not in accepted and not literal:
                problems.append(f"does not accept {part.__name__}")
        else:
            containers = (collections.abc.Sequence, collections.abc.Mapping)
            if not any(typing.get_origin(p) in containers for p in accepted):
                problems.append(f"has no Sequence or Mapping form for {_shown(part)}")
    return problems


def test_every_setting_is_a_keyword_of_a_compatible_type() -> None:
    """Each setting can be passed to configure() with a type mypy knows, and each keyword is handled."""
    import typing

    from otel_setup._core.configure import _split
    from otel_setup._core.options import ConfigureOptions
    from otel_setup._core.settings import SETTINGS, Settings

    keywords = typing.get_type_hints(ConfigureOptions)
    resolved = typing.get_type_hints(Settings)
    missing = [
        f"{s.name} (Settings.{s.name} is {_shown(resolved[s.name])})" for s in SETTINGS if s.name not in keywords
    ]
    assert not missing, "ConfigureOptions lacks a key for: " + "; ".join(missing)
    wrong = {
        s.name: problems for s in SETTINGS if (problems := _keyword_problems(s, keywords[s.name], resolved[s.name]))
    }
    assert not wrong, wrong
    table = {s.name for s in SETTINGS}
    for keyword in set(keywords) - table:
        *_, rest = _split({keyword: None})
        assert keyword not in rest, f"{keyword} is neither a setting nor taken by configure()"


def test_keyword_type_check_finds_a_mismatch() -> None:
    """The check above is not vacuous: a wrong keyword type is named."""
    from collections.abc import Sequence
    from typing import Literal

    from otel_setup._core.settings import SETTINGS

    by_name = {s.name: s for s in SETTINGS}
    assert _keyword_problems(by_name["sampling_ratio"], str, float) == ["does not accept float"]
    assert _keyword_problems(by_name["otlp_protocol"], Literal["http/protobuf", "udp"], str) == [
        "accepts 'udp', which the setting rejects"
    ]
    assert _keyword_problems(by_name["keep"], bool, tuple[str, ...]) == [
        "accepts bool, which the setting never holds",
        "has no Sequence or Mapping form for tuple[str, ...]",
    ]
    assert not _keyword_problems(by_name["keep"], Sequence[str] | str, tuple[str, ...])
