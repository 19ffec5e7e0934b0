"""``eagle-eye hardware-monitor`` run as a user runs it: ``--once`` on the doubles and on a node without accelerators,
and the settings that stop it at start."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

EAGLE_EYE = str(Path(sys.executable).parent / "eagle-eye")


def run(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EAGLE_EYE, *args], check=False, capture_output=True, text=True, env=env, timeout=timeout)


def test_once_json_on_the_doubles(doubles, scenario):
    result = run(["hardware-monitor", "--once", "--format", "json"], doubles.env)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["node"] == scenario.NODE
    assert document["notes"] == []
    gpus = {gpu["identity"]["id"]: gpu for gpu in document["gpus"]}
    assert list(gpus) == [gpu["uuid"] for gpu in scenario.GPUS]
    throttled = gpus[scenario.GPUS[1]["uuid"]]
    assert throttled["state"] == "predicted_failure"
    assert throttled["status"] == "ok"
    assert throttled["temperature_c"] == 91.0
    assert throttled["power_w"] == 351.0
    assert throttled["clock_event_reasons"] == ["hw_thermal_slowdown", "sw_power_cap", "sw_thermal_slowdown"]
    assert throttled["ecc_uncorrected_volatile"] == 1 and throttled["remapped_rows_pending"] is True
    assert throttled["identity"]["pci_bus_id"] == "0000:3c:00.0"
    npus = {npu["identity"]["id"]: npu for npu in document["npus"]}
    assert npus["npu-0-1"]["state"] == "failed"
    assert npus["npu-0-1"]["error_codes"] == ["0x80E01801", "0x80E18402"]
    assert npus["npu-0-1"]["power_w"] == 123.4
    events = document["kernel_log"]["events"]
    assert [(e["kind"], e["code"], e["device"], e["count"]) for e in events] == [
        ("xid", "13", "0000:3b:00.0", 2),
        ("xid", "48", "0000:3c:00.0", 1),
    ]
    assert events[1]["last_message"].startswith("NVRM: Xid (PCI:0000:3c:00): 48,")
    assert document["kernel_log"]["malformed"] == 1


def test_once_text_on_the_doubles(doubles, scenario):
    result = run(["hardware-monitor", "--once"], {**doubles.env, "COLUMNS": "250"})
    assert result.returncode == 0, result.stderr
    for gpu in scenario.GPUS:
        assert gpu["uuid"] in result.stdout
    assert "npu-0-1" in result.stdout and "0x80E18402" in result.stdout
    assert "predicted_failure" in result.stdout


def test_once_on_a_node_without_accelerators_says_so_and_exits_0(tmp_path):
    not_a_library = tmp_path / "libnot.so"
    not_a_library.write_bytes(b"not an ELF file")
    env = {
        "PATH": "/usr/bin:/bin",
        "EAGLEEYE_NODE_NAME": "cpu-node-7",
        "EAGLEEYE_NVML_LIBRARY": str(not_a_library),
        "EAGLEEYE_DCMI_LIBRARY": str(not_a_library),
        "EAGLEEYE_KERNEL_LOG": "off",
    }
    result = run(["hardware-monitor", "--once", "--format", "json"], env)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert (document["node"], document["gpus"], document["npus"]) == ("cpu-node-7", [], [])
    assert document["notes"][-1] == "no GPU or NPU found: reporting the node only"
    assert document["notes"][0].startswith("NVML") and document["notes"][1].startswith("DCMI")
    text = run(["hardware-monitor", "--once"], env)
    assert text.returncode == 0 and "cpu-node-7" in text.stdout and "no GPU or NPU found" in text.stdout


def test_a_bad_setting_stops_it_at_start_naming_the_setting(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "EAGLEEYE_NVML_LIBRARY": str(tmp_path / "absent.so")}
    result = run(["hardware-monitor"], env)
    assert result.returncode == 1
    assert "EAGLEEYE_NVML_LIBRARY" in result.stderr and "no such file" in result.stderr


def test_a_port_in_use_stops_it_at_start_naming_the_option():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"PATH": "/usr/bin:/bin", "EAGLEEYE_KERNEL_LOG": "off"}
        result = run(["hardware-monitor", "--prometheus-host", "127.0.0.1", "--prometheus-port", str(port)], env)
    assert result.returncode == 1
    assert "--prometheus-port" in result.stderr and str(port) in result.stderr
