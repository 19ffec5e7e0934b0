"""PipelineSettings: the standard OTEL_* variables, their precedence and the errors that name them."""

from __future__ import annotations

import os
from unittest.mock import patch

import pytest

from eagleeye_otel.errors import ConfigError
from eagleeye_otel.sdk import DEFAULT_PROMETHEUS_PORT, PipelineSettings

_OTEL = (
    "OTEL_METRICS_EXPORTER",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    "OTEL_EXPORTER_PROMETHEUS_HOST",
    "OTEL_EXPORTER_PROMETHEUS_PORT",
    "OTEL_METRIC_EXPORT_INTERVAL",
    "OTEL_METRIC_EXPORT_TIMEOUT",
)


def test_defaults_serve_prometheus_on_9464() -> None:
    settings = PipelineSettings.from_env({})
    assert settings == PipelineSettings(
        exporters=("prometheus",),
        prometheus_host="localhost",
        prometheus_port=9464,
        export_interval_millis=60_000.0,
        export_timeout_millis=30_000.0,
    )
    assert DEFAULT_PROMETHEUS_PORT == 9464


def test_reads_os_environ_by_default() -> None:
    clean = {k: v for k, v in os.environ.items() if k not in _OTEL}
    env = {"OTEL_METRICS_EXPORTER": "console", "OTEL_EXPORTER_PROMETHEUS_PORT": "9999"}
    with patch.dict(os.environ, {**clean, **env}, clear=True):
        settings = PipelineSettings.from_env()
    assert settings.exporters == ("console",)
    assert settings.prometheus_port == 9999


def test_default_exporters_apply_only_when_unset_or_empty() -> None:
    assert PipelineSettings.from_env({}, default_exporters=()).exporters == ()
    assert PipelineSettings.from_env({"OTEL_METRICS_EXPORTER": "  "}, default_exporters=("console",)).exporters == (
        "console",
    )
    assert PipelineSettings.from_env({"OTEL_METRICS_EXPORTER": "console"}, default_exporters=()).exporters == (
        "console",
    )


@pytest.mark.parametrize("value", ["none", "NONE", " none "])
def test_none_exports_nothing(value: str) -> None:
    assert PipelineSettings.from_env({"OTEL_METRICS_EXPORTER": value}).exporters == ()


def test_comma_list_is_stripped_and_kept_in_order() -> None:
    settings = PipelineSettings.from_env({"OTEL_METRICS_EXPORTER": " prometheus , eagle_eye_nats,console"})
    assert settings.exporters == ("prometheus", "eagle_eye_nats", "console")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "otlp_proto_grpc"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "otlp_proto_grpc"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "otlp_proto_http"),
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf"},
            "otlp_proto_http",
        ),
    ],
)
def test_otlp_follows_the_protocol_the_metrics_variable_first(env: dict[str, str], expected: str) -> None:
    assert PipelineSettings.from_env({"OTEL_METRICS_EXPORTER": "otlp", **env}).exporters == (expected,)


def test_explicit_otlp_exporters_are_kept() -> None:
    env = {"OTEL_METRICS_EXPORTER": "otlp_proto_http", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    assert PipelineSettings.from_env(env).exporters == ("otlp_proto_http",)


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"OTEL_METRICS_EXPORTER": "prometheus,none"}, "OTEL_METRICS_EXPORTER"),
        ({"OTEL_METRICS_EXPORTER": "prometheus,,console"}, "OTEL_METRICS_EXPORTER"),
        ({"OTEL_METRICS_EXPORTER": "console,console"}, "OTEL_METRICS_EXPORTER"),
        ({"OTEL_METRICS_EXPORTER": "otlp,otlp_proto_grpc"}, "OTEL_METRICS_EXPORTER"),
        ({"OTEL_METRICS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        (
            {"OTEL_METRICS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "udp"},
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        ),
        ({"OTEL_EXPORTER_PROMETHEUS_PORT": "http"}, "OTEL_EXPORTER_PROMETHEUS_PORT"),
        ({"OTEL_EXPORTER_PROMETHEUS_PORT": "0"}, "OTEL_EXPORTER_PROMETHEUS_PORT"),
        ({"OTEL_EXPORTER_PROMETHEUS_PORT": "65536"}, "OTEL_EXPORTER_PROMETHEUS_PORT"),
        ({"OTEL_METRIC_EXPORT_INTERVAL": "1s"}, "OTEL_METRIC_EXPORT_INTERVAL"),
        ({"OTEL_METRIC_EXPORT_INTERVAL": "0"}, "OTEL_METRIC_EXPORT_INTERVAL"),
        ({"OTEL_METRIC_EXPORT_INTERVAL": "inf"}, "OTEL_METRIC_EXPORT_INTERVAL"),
        ({"OTEL_METRIC_EXPORT_TIMEOUT": "-5"}, "OTEL_METRIC_EXPORT_TIMEOUT"),
    ],
)
def test_bad_values_raise_config_error_naming_the_variable(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as caught:
        PipelineSettings.from_env(env)
    assert caught.value.setting == setting
    assert setting in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_the_protocol_is_not_checked_unless_otlp_is_chosen() -> None:
    env = {"OTEL_METRICS_EXPORTER": "prometheus", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}
    assert PipelineSettings.from_env(env).exporters == ("prometheus",)


def test_host_interval_and_timeout() -> None:
    env = {
        "OTEL_EXPORTER_PROMETHEUS_HOST": "0.0.0.0",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
        "OTEL_METRIC_EXPORT_TIMEOUT": "250.5",
    }
    settings = PipelineSettings.from_env(env)
    assert (settings.prometheus_host, settings.export_interval_millis, settings.export_timeout_millis) == (
        "0.0.0.0",
        500.0,
        250.5,
    )
