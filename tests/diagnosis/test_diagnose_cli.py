"""``eagle-eye diagnose --dmesg/--snapshot``, run as a user runs it: every Xid variant, Ascend lines, a real
``hardware-monitor --once`` snapshot, text and JSON output, and bad input that ends in one clear line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from eagleeye_otel.diagnosis import load_knowledge_base

EAGLE_EYE = str(Path(sys.executable).parent / "eagle-eye")
_CATALOG = sorted(int(code) for code in load_knowledge_base().rule("xid").codes)
SYSLOG_FAULTS = {"xid_79", "xid_48", "sxid_24007", "xid_149", "npu_heartbeat_lost"}


def diagnose(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [EAGLE_EYE, "diagnose", *map(str, args)], check=False, capture_output=True, text=True, timeout=60
    )
    assert "Traceback" not in result.stderr + result.stdout
    if check:
        assert result.returncode == 0, result.stderr
    return result


def findings(*args: str | Path) -> dict[str, object]:
    return json.loads(diagnose(*args, "--format", "json").stdout)


def _xid_line(variant: int, bus: int, code: int) -> str:
    """One Xid line in one of the driver's and the transports' formats (hardware reference, section 3.1)."""
    pci = f"0000:{bus:02x}:00"
    text = {
        144: "SAW_MVB_NONFATAL Nonfatal XC0 i0 Link 01 (0x0 0x0)",
        149: "NETIR_LINK_EVT Fatal XC0 i0 Link 08 (0x004505c6 0x00000000)",
        154: "GPU recovery action changed from 0x0 (None) to 0x2 (Node Reboot Required)",
    }.get(code, "pid='<unknown>', name=<unknown>, something happened")
    formats = [
        f"[ {1000 + bus}.000001] NVRM: Xid (PCI:{pci}): {code}, {text}",
        f"4,{bus},{1000 + bus}000000,-;NVRM: Xid (PCI:{pci} GPU-I:01): {code}, pid=1234, name=python3, {text}",
        f"Nov 28 10:00:{bus % 60:02d} node-1 kernel: NVRM: Xid (PCI:{pci} GPU-I:02 GPU-CI:00): {code}, {text}",
        f"2026-11-28T10:00:03.123456+00:00 node-1 kernel: NVRM: Xid ({pci}): {code}, {text}",
        f"kern  :warn  : [ {bus}.5] NVRM: Xid (PCI:{pci}): {code}",
    ]
    return formats[variant % len(formats)]


def test_every_xid_variant(tmp_path):
    """Each catalog code on its own GPU, in each line format: one finding each, with the catalog's severity."""
    log = tmp_path / "dmesg.txt"
    log.write_text("\n".join(_xid_line(i, 0x10 + i, code) for i, code in enumerate(_CATALOG)) + "\n")
    report = findings("--dmesg", log, "--node", "gpu-node-1")
    assert report["inputs"]["dmesg"] == {
        "path": str(log),
        "lines": len(_CATALOG),
        "events": len(_CATALOG),
        "malformed": 0,
    }
    faults = {finding["fault"]: finding for finding in report["findings"]}
    assert set(faults) == {f"xid_{code}" for code in _CATALOG}
    xid = load_knowledge_base().rule("xid")
    for i, code in enumerate(_CATALOG):
        finding = faults[f"xid_{code}"]
        assert finding["node"] == "gpu-node-1"
        assert finding["device"] == f"0000:{0x10 + i:02x}:00.0"
        expected = {149: "critical", 154: "critical"}.get(code, xid.codes[str(code)].severity.value)
        assert finding["severity"] == expected, code
        assert finding["conclusion"] and finding["action"]
        assert finding["evidence"]["count"] == 1
    assert "reboot" in faults["xid_154"]["action"]


def test_the_monitors_kernel_log_fixtures(tmp_path):
    fixtures = Path(__file__).parents[1] / "receivers" / "hardware" / "fixtures" / "kmsg"
    dmesg = findings("--dmesg", fixtures / "dmesg.txt")
    assert dmesg["inputs"]["dmesg"]["malformed"] == 1  # the cut "NVRM: Xid (PCI:0000:3b" line
    by_fault = {(f["fault"], f["device"]) for f in dmesg["findings"]}
    uuid = "GPU-5a0d9a43-2b1c-8e4f-1d2a-9c7b3e6f0a11"  # from the driver's "GPU at PCI:0000:3b:00" line
    assert {
        ("xid_13", uuid),
        ("xid_43", uuid),
        ("xid_48", "0000:86:00.0"),
        ("xid_64", "0000:86:00.0"),
        ("xid_79", "0000:d8:00.0"),
        ("xid_79", None),  # "fallen off the bus" split over lines: no device
        ("xid_95", "0000:18:00.0"),
        ("xid_154", "0000:d8:00.0"),
        ("sxid_20009", "0000:c3:00.0"),
        ("npu_heartbeat_lost", "NPU 1"),
        ("npu_irq_not_responding", "NPU 1"),
    } <= by_fault
    assert ("xid_45", uuid) not in by_fault  # folded into the Xid 13 it followed
    assert dmesg["summary"]["critical"] >= 8
    syslog = findings("--dmesg", fixtures / "syslog.txt")
    assert {f["fault"] for f in syslog["findings"]} == {
        "xid_79",
        "xid_48",
        "sxid_24007",
        "xid_149",
        "npu_heartbeat_lost",
    }
    kmsg = findings("--dmesg", fixtures / "kmsg.txt")
    assert ("xid_79", "0000:b3:00.0") in {(f["fault"], f["device"]) for f in kmsg["findings"]}


def test_a_real_hardware_monitor_snapshot(tmp_path):
    """The --once JSON of `eagle-eye hardware-monitor` (no GPU here: its kernel-log events) is an input as is."""
    fixtures = Path(__file__).parents[1] / "receivers" / "hardware" / "fixtures" / "kmsg"
    snapshot = tmp_path / "snapshot.json"
    monitor = subprocess.run(
        [EAGLE_EYE, "hardware-monitor", "--once", "--format", "json", "--dmesg-file", str(fixtures / "syslog.txt")],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    snapshot.write_text(monitor.stdout)
    report = findings("--snapshot", snapshot)
    assert report["node"] == json.loads(monitor.stdout)["node"]
    assert {f["fault"] for f in report["findings"]} == {
        "xid_79",
        "xid_48",
        "sxid_24007",
        "xid_149",
        "npu_heartbeat_lost",
    }


def test_text_output_is_readable():
    fixtures = Path(__file__).parents[1] / "receivers" / "hardware" / "fixtures" / "kmsg"
    out = diagnose("--dmesg", fixtures / "syslog.txt", "--node", "gpu-node-7").stdout
    lines = out.splitlines()
    assert lines[0] == "gpu-node-7: 5 critical, 0 warning, 0 info"
    assert "CRITICAL xid_79  0000:d8:00.0" in out
    assert "  → Drain the node and power-cycle it" in out
    assert out.index("CRITICAL") < out.index("evidence")


def test_a_clean_log_has_no_finding(tmp_path):
    log = tmp_path / "dmesg.txt"
    log.write_text("[    0.000000] Linux version 6.8.0\n[    4.8] nvidia: module license 'NVIDIA' taints kernel.\n")
    assert "No fault found." in diagnose("--dmesg", log).stdout
    assert findings("--dmesg", log)["findings"] == []


def test_garbage_is_skipped_and_counted(tmp_path):
    log = tmp_path / "garbage.bin"
    log.write_bytes(bytes(range(256)) * 64 + b"\nNVRM: Xid (PCI:zz): 79,\nNVRM: Xid \xff\xfe\n" + b"x" * 100_000)
    report = findings("--dmesg", log)
    assert report["inputs"]["dmesg"]["malformed"] == 2
    assert report["findings"] == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "--snapshot="),
        ("[1, 2]", "not a hardware-monitor --once --format json document"),
        ('{"node": "n", "gpus": 3}', "snapshot.gpus"),
    ],
)
def test_a_bad_snapshot_is_one_clear_line(tmp_path, content, message):
    snapshot = tmp_path / "snapshot.json"
    snapshot.write_text(content)
    result = diagnose("--snapshot", snapshot, check=False)
    assert result.returncode == 1
    assert message in result.stderr
    assert result.stderr.startswith("Error: ")


def test_a_bad_rule_file_names_the_file_and_key(tmp_path):
    rules = tmp_path / "site.yaml"
    rules.write_text("rules:\n  - {id: xid, hold: soon}\n")
    log = tmp_path / "dmesg.txt"
    log.write_text("")
    result = diagnose("--dmesg", log, "--rules", rules, check=False)
    assert result.returncode == 1
    assert f"{rules}: rules[0].hold" in result.stderr


def test_user_rules_change_the_report(tmp_path):
    rules = tmp_path / "site.yaml"
    rules.write_text("rules:\n  - id: xid\n    codes:\n      13: {severity: critical}\n")
    log = tmp_path / "dmesg.txt"
    log.write_text("NVRM: Xid (PCI:0000:3b:00): 13, pid=1, name=x, Graphics Exception\n")
    (finding,) = findings("--dmesg", log, "--rules", rules)["findings"]
    assert finding["severity"] == "critical"


def test_missing_files_are_usage_errors(tmp_path):
    result = diagnose("--dmesg", tmp_path / "nope.txt", check=False)
    assert result.returncode == 2
    assert "does not exist" in result.stderr


_FALLEN_OFF_THE_BUS = (
    "[ 1402.1] NVRM: Xid (PCI:0000:3b:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.\n"
)
_GRAPHICS_EXCEPTION = "[ 1402.1] NVRM: Xid (PCI:0000:3b:00): 13, pid=1, name=x, Graphics Exception\n"  # a warning
_CLEAN = "[    0.000000] Linux version 6.8.0\n"


@pytest.mark.parametrize(
    ("log", "fail_on", "status"),
    [
        (_FALLEN_OFF_THE_BUS, "critical", 1),
        (_CLEAN, "critical", 0),
        (_FALLEN_OFF_THE_BUS, "never", 0),
        (_CLEAN, "never", 0),
        (_GRAPHICS_EXCEPTION, "critical", 0),
        (_GRAPHICS_EXCEPTION, "warning", 1),
        (_FALLEN_OFF_THE_BUS, "info", 1),
    ],
)
def test_fail_on_gates_a_preflight_check(tmp_path, log, fail_on, status):
    """Exit 1 when a finding at or above the level is active, and the report is printed all the same."""
    dmesg = tmp_path / "dmesg.txt"
    dmesg.write_text(log)
    result = diagnose("--dmesg", dmesg, "--format", "json", "--fail-on", fail_on, check=False)
    assert result.returncode == status, result.stderr
    assert result.stderr == ""
    assert json.loads(result.stdout)["inputs"]["dmesg"]["lines"] == 1


def test_fail_on_defaults_to_never(tmp_path):
    dmesg = tmp_path / "dmesg.txt"
    dmesg.write_text(_FALLEN_OFF_THE_BUS)
    assert [f["fault"] for f in findings("--dmesg", dmesg)["findings"]] == ["xid_79"]  # findings() checks exit 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fail-on", "fatal"], "'fatal' is not one of 'critical', 'warning', 'info', 'never'"),
        (["--fail-on", "critical"], "--fail-on needs --dmesg or --snapshot"),
    ],
)
def test_a_bad_fail_on_is_a_usage_error(args, message):
    """A bad level, or a gate on the service (which runs until stopped and has no verdict to give)."""
    result = diagnose(*args, check=False)
    assert result.returncode == 2
    assert message in result.stderr
