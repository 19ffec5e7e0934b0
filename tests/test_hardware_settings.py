"""HardwareSettings.from_env: defaults, node identity, subject, and bad values that name their variable."""

from __future__ import annotations

import socket

import pytest

from eagleeye_otel.errors import ConfigError
from eagleeye_otel.settings import HardwareSettings, Settings, subject_token


def test_defaults():
    settings = HardwareSettings.from_env({})
    assert settings.node_name == socket.gethostname()
    assert settings.k8s_node_name is None
    assert settings.subject == f"eagle_eye.hardware.{subject_token(socket.gethostname())}"
    assert (settings.nvml_library, settings.dcmi_library, settings.kernel_log) == (None, None, "auto")
    assert str(settings.host_root) == "/"


def test_node_name_from_the_downward_api_and_its_override():
    on_k8s = HardwareSettings.from_env({"NODE_NAME": "ip-10-0-0-7.ec2.internal"})
    assert on_k8s.node_name == on_k8s.k8s_node_name == "ip-10-0-0-7.ec2.internal"
    assert on_k8s.subject == "eagle_eye.hardware.ip-10-0-0-7_ec2_internal"
    named = HardwareSettings.from_env({"NODE_NAME": "k8s-node", "EAGLEEYE_NODE_NAME": "gpu-a"})
    assert (named.node_name, named.k8s_node_name) == ("gpu-a", "k8s-node")


@pytest.mark.parametrize(("name", "token"), [("a.b c/d*e>f", "a_b_c_d_e_f"), ("node-1_x", "node-1_x"), ("", "_")])
def test_subject_token(name, token):
    assert subject_token(name) == token


def test_paths_and_kernel_log(tmp_path):
    library, log = tmp_path / "libnvidia-ml.so.1", tmp_path / "kern.log"
    library.write_bytes(b"")
    log.write_text("")
    settings = HardwareSettings.from_env(
        {
            "EAGLEEYE_NVML_LIBRARY": str(library),
            "EAGLEEYE_DCMI_LIBRARY": str(library),
            "EAGLEEYE_KERNEL_LOG": str(log),
            "EAGLEEYE_HOST_ROOT": str(tmp_path),
            "EAGLEEYE_HARDWARE_SUBJECT_PREFIX": "site-1.hw",
            "EAGLEEYE_NODE_NAME": "n1",
        }
    )
    assert (settings.nvml_library, settings.dcmi_library, settings.kernel_log) == (library, library, str(log))
    assert settings.host_root == tmp_path
    assert settings.subject == "site-1.hw.n1"
    assert HardwareSettings.from_env({"EAGLEEYE_KERNEL_LOG": "off"}).kernel_log == "off"


@pytest.mark.parametrize(
    "variable", ["EAGLEEYE_NVML_LIBRARY", "EAGLEEYE_DCMI_LIBRARY", "EAGLEEYE_KERNEL_LOG", "EAGLEEYE_HOST_ROOT"]
)
def test_a_missing_path_names_its_variable(variable, tmp_path):
    with pytest.raises(ConfigError) as raised:
        HardwareSettings.from_env({variable: str(tmp_path / "absent")})
    assert raised.value.setting == variable


def test_a_bad_subject_prefix_names_its_variable():
    with pytest.raises(ConfigError, match="EAGLEEYE_HARDWARE_SUBJECT_PREFIX"):
        HardwareSettings.from_env({"EAGLEEYE_HARDWARE_SUBJECT_PREFIX": "eagle eye.>"})


def test_a_bad_hardware_setting_does_not_break_the_other_settings(tmp_path):
    environ = {"EAGLEEYE_NVML_LIBRARY": str(tmp_path / "absent")}
    assert Settings.from_env(environ).nats.servers == ()
