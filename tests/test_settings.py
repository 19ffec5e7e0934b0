"""Settings.from_env: defaults, precedence and errors that name the setting."""

from __future__ import annotations

import os
from pathlib import Path
from unittest.mock import patch

import pytest

from eagleeye_otel.errors import ConfigError
from eagleeye_otel.settings import DEFAULT_NATS_URL, Settings


def test_defaults() -> None:
    settings = Settings.from_env({"HOSTNAME": "vllm-0"})
    assert settings.nats.servers == ()
    assert settings.nats.urls == (DEFAULT_NATS_URL,)
    assert settings.routing.subject == "eagle_eye.routing_metrics"
    assert settings.routing.snapshot_subject == "eagle_eye.routing_snapshot"
    assert settings.routing.heartbeat_interval == 1.0
    assert settings.routing.enabled is True
    assert settings.routing.instance_id == f"vllm-0-{os.getpid()}"


def test_pod_name_wins_over_hostname_and_explicit_id_wins_over_both() -> None:
    env = {"HOSTNAME": "node", "POD_NAME": "vllm-7"}
    assert Settings.from_env(env).routing.instance_id.startswith("vllm-7-")
    assert Settings.from_env({**env, "EAGLEEYE_INSTANCE_ID": "a"}).routing.instance_id == "a"


def test_reads_os_environ_by_default() -> None:
    with patch.dict(os.environ, {"EAGLEEYE_ROUTING_SUBJECT": "fleet.load"}):
        assert Settings.from_env().routing.subject == "fleet.load"


def test_several_servers_and_a_bare_host() -> None:
    settings = Settings.from_env({"EAGLEEYE_NATS_URL": "nats://a:4222, b:4223,tls://c"})
    assert settings.nats.servers == ("nats://a:4222", "nats://b:4223", "tls://c")
    assert settings.nats.tls


def test_secrets_are_not_in_repr() -> None:
    settings = Settings.from_env({"EAGLEEYE_NATS_USER": "u", "EAGLEEYE_NATS_PASSWORD": "hunter2"})
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in repr(Settings.from_env({"EAGLEEYE_NATS_TOKEN": "hunter2"}))


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"EAGLEEYE_NATS_URL": "http://a:4222"}, "EAGLEEYE_NATS_URL"),
        ({"EAGLEEYE_NATS_URL": "nats://a:notaport"}, "EAGLEEYE_NATS_URL"),
        ({"EAGLEEYE_ROUTING_SUBJECT": "bad subject"}, "EAGLEEYE_ROUTING_SUBJECT"),
        ({"EAGLEEYE_ROUTING_SUBJECT": "eagle.>"}, "EAGLEEYE_ROUTING_SUBJECT"),
        ({"EAGLEEYE_ROUTING_SUBJECT": "a..b"}, "EAGLEEYE_ROUTING_SUBJECT"),
        (
            {"EAGLEEYE_ROUTING_SNAPSHOT_SUBJECT": "eagle_eye.routing_metrics"},
            "EAGLEEYE_ROUTING_SNAPSHOT_SUBJECT",
        ),
        ({"EAGLEEYE_HEARTBEAT_INTERVAL": "soon"}, "EAGLEEYE_HEARTBEAT_INTERVAL"),
        ({"EAGLEEYE_HEARTBEAT_INTERVAL": "0"}, "EAGLEEYE_HEARTBEAT_INTERVAL"),
        ({"EAGLEEYE_HEARTBEAT_INTERVAL": "120"}, "EAGLEEYE_HEARTBEAT_INTERVAL"),
        ({"EAGLEEYE_ROUTING_ENABLED": "maybe"}, "EAGLEEYE_ROUTING_ENABLED"),
        ({"EAGLEEYE_INSTANCE_ENDPOINT": "10.0.0.1:8000"}, "EAGLEEYE_INSTANCE_ENDPOINT"),
        ({"EAGLEEYE_NATS_USER": "u"}, "EAGLEEYE_NATS_PASSWORD"),
        ({"EAGLEEYE_NATS_PASSWORD": "p"}, "EAGLEEYE_NATS_USER"),
        (
            {"EAGLEEYE_NATS_TOKEN": "t", "EAGLEEYE_NATS_USER": "u", "EAGLEEYE_NATS_PASSWORD": "p"},
            "EAGLEEYE_NATS_TOKEN",
        ),
        ({"EAGLEEYE_NATS_CREDS": "/nonexistent/user.creds"}, "EAGLEEYE_NATS_CREDS"),
        ({"EAGLEEYE_NATS_TLS_CA": "/nonexistent/ca.pem"}, "EAGLEEYE_NATS_TLS_CA"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert caught.value.setting == setting
    assert str(caught.value).startswith(setting)
    assert isinstance(caught.value, ValueError)


def test_a_heartbeat_interval_routers_would_outlive_is_refused_with_the_reason() -> None:
    assert Settings.from_env({"EAGLEEYE_HEARTBEAT_INTERVAL": "1.5"}).routing.heartbeat_interval == 1.5
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"EAGLEEYE_HEARTBEAT_INTERVAL": "2"})
    assert "must be in (0, 1.5] seconds" in str(caught.value)
    assert "stale_after" in str(caught.value)


def test_certificate_without_key(tmp_path: Path) -> None:
    cert = tmp_path / "client.pem"
    cert.write_text("not checked here")
    with pytest.raises(ConfigError, match="EAGLEEYE_NATS_TLS_KEY"):
        Settings.from_env({"EAGLEEYE_NATS_TLS_CERT": str(cert)})


def test_empty_values_count_as_unset() -> None:
    settings = Settings.from_env({"EAGLEEYE_NATS_URL": " ", "EAGLEEYE_ROUTING_SUBJECT": ""})
    assert settings.nats.servers == ()
    assert settings.routing.subject == "eagle_eye.routing_metrics"


def test_a_bad_url_is_reported_without_its_password() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"EAGLEEYE_NATS_URL": "http://router:hunter2@nats:4222"})
    assert "hunter2" not in str(caught.value)
    assert "router:***@nats:4222" in str(caught.value)


def test_metric_overrides() -> None:
    settings = Settings.from_env(
        {"EAGLEEYE_METRICS_ENABLE": "vllm.inter_token_latency", "EAGLEEYE_METRICS_DISABLE": " vllm.iteration_tokens ,"}
    )
    assert settings.metrics.overrides == {"vllm.inter_token_latency": True, "vllm.iteration_tokens": False}


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"EAGLEEYE_METRICS_ENABLE": "vllm:inter_token_latency_seconds"}, "EAGLEEYE_METRICS_ENABLE"),
        (
            {"EAGLEEYE_METRICS_ENABLE": "vllm.iteration_tokens", "EAGLEEYE_METRICS_DISABLE": "vllm.iteration_tokens"},
            "EAGLEEYE_METRICS_DISABLE",
        ),
    ],
)
def test_bad_metric_overrides_name_the_setting(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert caught.value.setting == setting


# -- secrets: from a variable or a file, never shown ------------------------------------------------------------


def test_token_and_password_files_are_read_and_stripped(tmp_path: Path) -> None:
    token, password = tmp_path / "token", tmp_path / "password"
    token.write_text("s3cr3t-token\n")  # as `echo` or `kubectl create secret --from-file` leaves it
    password.write_text("  hunter2\r\n")
    assert Settings.from_env({"EAGLEEYE_NATS_TOKEN_FILE": str(token)}).nats.token == "s3cr3t-token"
    nats = Settings.from_env({"EAGLEEYE_NATS_USER": "vllm", "EAGLEEYE_NATS_PASSWORD_FILE": str(password)}).nats
    assert (nats.user, nats.password) == ("vllm", "hunter2")
    assert "hunter2" not in repr(nats)
    assert "s3cr3t" not in repr(Settings.from_env({"EAGLEEYE_NATS_TOKEN_FILE": str(token)}))


@pytest.mark.parametrize("variable", ["EAGLEEYE_NATS_TOKEN", "EAGLEEYE_NATS_PASSWORD"])
def test_a_secret_and_its_file_together_are_refused(variable: str, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-the-file")
    env = {variable: "from-the-env", f"{variable}_FILE": str(secret), "EAGLEEYE_NATS_USER": "u"}
    if variable == "EAGLEEYE_NATS_TOKEN":
        del env["EAGLEEYE_NATS_USER"]
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert caught.value.setting == f"{variable}_FILE"
    assert "not both" in str(caught.value)
    assert "from-the-env" not in str(caught.value) and "from-the-file" not in str(caught.value)


@pytest.mark.parametrize("case", ["missing", "directory", "empty", "binary", "huge"])
def test_an_unusable_secret_file_names_the_variable_and_hides_the_content(case: str, tmp_path: Path) -> None:
    path = tmp_path / "password"
    if case == "directory":
        path.mkdir()
    elif case == "empty":
        path.write_text(" \n")
    elif case == "binary":
        path.write_bytes(b"hunter2\xff\xfe")
    elif case == "huge":
        path.write_text("hunter2" * 20_000)
    env = {"EAGLEEYE_NATS_USER": "u", "EAGLEEYE_NATS_PASSWORD_FILE": str(path)}
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert caught.value.setting == "EAGLEEYE_NATS_PASSWORD_FILE"
    assert str(path) in str(caught.value)
    assert "hunter2" not in str(caught.value) and caught.value.__cause__ is None and caught.value.__context__ is None


def test_credentials_leave_the_url_so_it_can_be_shown() -> None:
    nats = Settings.from_env({"EAGLEEYE_NATS_URL": "nats://vllm:hunter2@a:4222, tls://vllm:hunter2@b"}).nats
    assert nats.servers == ("nats://a:4222", "tls://b")
    assert (nats.user, nats.password, nats.token) == ("vllm", "hunter2", None)
    assert "hunter2" not in repr(nats)
    token = Settings.from_env({"EAGLEEYE_NATS_URL": "nats://s3cr3t@a:4222"}).nats
    assert (token.servers, token.token, token.user) == (("nats://a:4222",), "s3cr3t", None)


@pytest.mark.parametrize(
    "env",
    [
        {"EAGLEEYE_NATS_URL": "nats://u:hunter2@a, nats://u:other@b"},
        {"EAGLEEYE_NATS_URL": "nats://u:hunter2@a", "EAGLEEYE_NATS_TOKEN": "t"},
        {"EAGLEEYE_NATS_URL": "nats://:hunter2@a"},
        {"EAGLEEYE_NATS_URL": "nats://u:hunter2/x@a:4222"},  # a '/' must be percent-encoded: here it splits the URL
        {"EAGLEEYE_NATS_URL": "nats://hunter2@[::1"},
        {"EAGLEEYE_NATS_URL": "nats://u:a://hunter2@host"},
    ],
)
def test_bad_credentials_in_the_url_are_refused_without_showing_them(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert caught.value.setting == "EAGLEEYE_NATS_URL"
    assert "hunter2" not in str(caught.value)


def test_a_creds_file_is_checked_at_start(tmp_path: Path) -> None:
    """nats-py loops forever reading a credentials file without a JWT: Eagle Eye refuses it first."""
    creds = tmp_path / "user.creds"
    creds.write_text("SUAGARBAGEHUNTER2\n")
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"EAGLEEYE_NATS_CREDS": str(creds)})
    assert caught.value.setting == "EAGLEEYE_NATS_CREDS" and "not a NATS credentials file" in str(caught.value)
    assert "HUNTER2" not in str(caught.value)
    creds.write_text(
        "-----BEGIN NATS USER JWT-----\neyJ0\n------END NATS USER JWT------\n"
        "-----BEGIN USER NKEY SEED-----\nSUA\n------END USER NKEY SEED------\n"
    )
    assert Settings.from_env({"EAGLEEYE_NATS_CREDS": str(creds)}).nats.creds_file == creds
