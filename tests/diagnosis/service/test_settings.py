"""DiagnosisSettings.from_env: defaults, the OTLP log-event switch, and errors that name the variable."""

from __future__ import annotations

import pytest

from eagleeye_otel.diagnosis import DiagnosisSettings
from eagleeye_otel.errors import ConfigError


def test_defaults() -> None:
    settings = DiagnosisSettings.from_env({})
    assert settings.input_subject == "eagle_eye.hardware.>"
    assert settings.subject("ip-10-0-0-7.ec2.internal") == "eagle_eye.diagnosis.ip-10-0-0-7_ec2_internal"
    assert (settings.http_host, settings.http_port) == ("0.0.0.0", 9467)
    assert settings.refresh_interval == 5.0
    assert settings.logs_protocol is None
    assert settings.pipeline.exporters == ("prometheus",)
    assert (settings.pipeline.prometheus_host, settings.pipeline.prometheus_port) == ("0.0.0.0", 9466)
    assert DiagnosisSettings() == settings


def test_subjects_ports_and_metric_exporters_from_the_environment() -> None:
    settings = DiagnosisSettings.from_env(
        {
            "EAGLEEYE_HARDWARE_SUBJECT_PREFIX": "fleet.hw",
            "EAGLEEYE_DIAGNOSIS_SUBJECT_PREFIX": "fleet.findings",
            "EAGLEEYE_DIAGNOSIS_HTTP": "[::1]:0",
            "EAGLEEYE_DIAGNOSIS_REFRESH_INTERVAL": "2.5",
            "OTEL_EXPORTER_PROMETHEUS_PORT": "19466",
            "OTEL_METRICS_EXPORTER": "prometheus,console",
        }
    )
    assert settings.input_subject == "fleet.hw.>"
    assert settings.subject("n1") == "fleet.findings.n1"
    assert (settings.http_host, settings.http_port) == ("::1", 0)
    assert settings.refresh_interval == 2.5
    assert settings.pipeline.prometheus_port == 19466
    assert settings.pipeline.exporters == ("prometheus", "console")
    assert DiagnosisSettings.from_env({"EAGLEEYE_DIAGNOSIS_INPUT_SUBJECT": "a.*.hw.>"}).input_subject == "a.*.hw.>"
    assert DiagnosisSettings.from_env({"EAGLEEYE_DIAGNOSIS_HTTP": "OFF"}).http_port is None


@pytest.mark.parametrize(
    ("env", "protocol"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, "grpc"),
        (
            {
                "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "http://c:4318/v1/logs",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            },
            "http/protobuf",
        ),
        ({"OTEL_LOGS_EXPORTER": "otlp"}, "grpc"),
        ({"OTEL_LOGS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "http/protobuf"}, "http/protobuf"),
        ({"OTEL_LOGS_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, None),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, None),
    ],
)
def test_log_events_go_over_otlp_when_asked_or_when_an_endpoint_is_set(
    env: dict[str, str], protocol: str | None
) -> None:
    assert DiagnosisSettings.from_env(env).logs_protocol == protocol


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"EAGLEEYE_DIAGNOSIS_INPUT_SUBJECT": "eagle_eye.>.x"}, "EAGLEEYE_DIAGNOSIS_INPUT_SUBJECT"),
        ({"EAGLEEYE_DIAGNOSIS_INPUT_SUBJECT": "eagle eye.>"}, "EAGLEEYE_DIAGNOSIS_INPUT_SUBJECT"),
        ({"EAGLEEYE_DIAGNOSIS_SUBJECT_PREFIX": "eagle_eye.*"}, "EAGLEEYE_DIAGNOSIS_SUBJECT_PREFIX"),
        ({"EAGLEEYE_DIAGNOSIS_HTTP": "9467"}, "EAGLEEYE_DIAGNOSIS_HTTP"),
        ({"EAGLEEYE_DIAGNOSIS_HTTP": "host:http"}, "EAGLEEYE_DIAGNOSIS_HTTP"),
        ({"EAGLEEYE_DIAGNOSIS_HTTP": "host:70000"}, "EAGLEEYE_DIAGNOSIS_HTTP"),
        ({"EAGLEEYE_DIAGNOSIS_REFRESH_INTERVAL": "often"}, "EAGLEEYE_DIAGNOSIS_REFRESH_INTERVAL"),
        ({"EAGLEEYE_DIAGNOSIS_REFRESH_INTERVAL": "0"}, "EAGLEEYE_DIAGNOSIS_REFRESH_INTERVAL"),
        ({"OTEL_LOGS_EXPORTER": "console"}, "OTEL_LOGS_EXPORTER"),
        ({"OTEL_LOGS_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        ({"OTEL_EXPORTER_PROMETHEUS_PORT": "0"}, "OTEL_EXPORTER_PROMETHEUS_PORT"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as caught:
        DiagnosisSettings.from_env(env)
    assert caught.value.setting == setting
