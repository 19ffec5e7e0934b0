"""Fuzzing the settings readers (hypothesis): with arbitrary strings in every variable they read,
``Settings.from_env``, ``HardwareSettings.from_env``, ``DiagnosisSettings.from_env`` and ``PipelineSettings.from_env``
either succeed or raise ``ConfigError`` naming the variable at fault, never another exception, and no error or
settings ``repr`` ever shows a password or token, whether given as a variable, in a file, or inside the NATS URL."""

from __future__ import annotations

import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from opentelemetry.environment_variables import OTEL_LOGS_EXPORTER, OTEL_METRICS_EXPORTER
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_PROMETHEUS_HOST,
    OTEL_EXPORTER_PROMETHEUS_PORT,
    OTEL_METRIC_EXPORT_INTERVAL,
    OTEL_METRIC_EXPORT_TIMEOUT,
)

from eagleeye_otel import environment_variables as ev
from eagleeye_otel.diagnosis import DiagnosisSettings
from eagleeye_otel.errors import ConfigError
from eagleeye_otel.sdk import PipelineSettings
from eagleeye_otel.settings import HardwareSettings, Settings

SECRET = "Zq7SECRETxK2"
"""Planted in every password and token; must never come back in an error or a repr."""

SECRET_VARIABLES = (ev.EAGLEEYE_NATS_PASSWORD, ev.EAGLEEYE_NATS_TOKEN)
VARIABLES = sorted(
    {
        *(getattr(ev, name) for name in dir(ev) if name.startswith("EAGLEEYE_")),
        "NODE_NAME",
        "POD_NAME",
        "HOSTNAME",
        "NVIDIA_VISIBLE_DEVICES",
        "CUDA_VISIBLE_DEVICES",
        OTEL_METRICS_EXPORTER,
        OTEL_LOGS_EXPORTER,
        OTEL_EXPORTER_OTLP_ENDPOINT,
        OTEL_EXPORTER_OTLP_PROTOCOL,
        OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
        OTEL_EXPORTER_PROMETHEUS_HOST,
        OTEL_EXPORTER_PROMETHEUS_PORT,
        OTEL_METRIC_EXPORT_INTERVAL,
        OTEL_METRIC_EXPORT_TIMEOUT,
    }
)
READERS: dict[str, Callable[[dict[str, str]], Any]] = {
    "Settings": Settings.from_env,
    "HardwareSettings": HardwareSettings.from_env,
    "DiagnosisSettings": DiagnosisSettings.from_env,
    "PipelineSettings": PipelineSettings.from_env,
}

_text = st.text(max_size=40)
_plausible = st.sampled_from(
    [
        "", " ", "0", "1", "-1", "1e309", "nan", "inf", "65536", "true", "off", "auto", "none", "otlp", "grpc",
        "prometheus,otlp", "eagle_eye.x", "eagle_eye.>", "a..b", "*", ">", "/", "/dev/null", "/etc/hostname",
        "127.0.0.1:0", "[::1]:80", "http://[::1", "GPU-1,GPU-2", "vllm.inter_token_latency", "x" * 300,
    ]
)  # fmt: skip
_value = st.one_of(_text, _plausible, st.text(alphabet=string.printable, max_size=60))
_host = st.one_of(st.sampled_from(["nats", "127.0.0.1:4222", "[::1]:4222", "h:0", "h:99999", "h:x", "[::1"]), _text)
_url = st.builds(
    lambda scheme, user, host, tail: f"{scheme}{user}:{SECRET}@{host}{tail}",
    st.sampled_from(["nats://", "tls://", "http://", "", "ws://"]),
    st.one_of(st.sampled_from(["u", "", "a@b", "a:b"]), _text),
    _host,
    st.one_of(st.just(""), st.sampled_from([",nats://b", "/path", "?q", "#f", ",", ", tls://u:x@c"]), _text),
)


@st.composite
def environments(draw: st.DrawFn) -> dict[str, str]:
    env = draw(st.dictionaries(st.sampled_from(VARIABLES), _value, max_size=8))
    for variable in SECRET_VARIABLES:  # secrets only ever hold the marker, so any echo of it is a leak
        env.pop(variable, None)
        if draw(st.booleans()):
            env[variable] = draw(st.sampled_from([SECRET, f" {SECRET}\n", f"{SECRET}@x", f"-{SECRET}"]))
    if draw(st.booleans()):
        env[ev.EAGLEEYE_NATS_URL] = draw(_url)
    return env


def _check(reader: Callable[[dict[str, str]], Any], env: dict[str, str]) -> None:
    try:
        result = reader(env)
    except ConfigError as error:
        # The variable at fault: one that was set, or the missing half of a pair (a user without a password).
        assert error.setting in VARIABLES, f"{error} names no variable"
        assert str(error).startswith(f"{error.setting}=")
        assert SECRET not in str(error) and SECRET not in repr(error.value)
        assert error.__cause__ is None or SECRET not in str(error.__cause__)
        return
    assert SECRET not in repr(result)


@pytest.mark.parametrize("reader", sorted(READERS))
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(env=environments())
@example(env={ev.EAGLEEYE_NATS_URL: f"nats://u:a://{SECRET}@host"})
@example(env={ev.EAGLEEYE_NATS_URL: f"nats://{SECRET}@[::1"})
@example(env={ev.EAGLEEYE_NATS_PASSWORD_FILE: "\x00", ev.EAGLEEYE_NATS_USER: "u"})
@example(env={ev.EAGLEEYE_NATS_CREDS: "a\x00b"})
@example(env={ev.EAGLEEYE_INSTANCE_ENDPOINT: "http://[::1"})
@example(env={ev.EAGLEEYE_HOST_ROOT: "\x00"})
def test_arbitrary_environments_succeed_or_name_the_variable(reader: str, env: dict[str, str]) -> None:
    _check(READERS[reader], env)


@settings(max_examples=200, deadline=None)
@given(content=st.binary(max_size=200), variable=st.sampled_from(["PASSWORD", "TOKEN"]))
def test_arbitrary_secret_files_are_read_or_refused_without_showing_them(
    tmp_path_factory: pytest.TempPathFactory, content: bytes, variable: str
) -> None:
    path = tmp_path_factory.mktemp("secret") / "secret"
    path.write_bytes(SECRET.encode() + content)
    env = {f"EAGLEEYE_NATS_{variable}_FILE": str(path)}
    if variable == "PASSWORD":
        env[ev.EAGLEEYE_NATS_USER] = "u"
    _check(Settings.from_env, env)


def test_the_fuzzed_variables_include_every_eagle_eye_variable() -> None:
    """A new EAGLEEYE_* constant is fuzzed without touching this file."""
    constants = {getattr(ev, name) for name in dir(ev) if name.startswith("EAGLEEYE_")}
    assert constants <= set(VARIABLES)
    assert len(constants) > 25
    assert Path(ev.__file__).read_text().count(".. envvar::") == len(constants)
