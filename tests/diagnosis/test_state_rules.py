"""Device-state rules: a GPU or NPU that stopped answering, NVML's recovery action, DCMI health."""

from __future__ import annotations

import pytest

from eagleeye_otel.diagnosis import Severity
from eagleeye_otel.receivers.hardware._model import DeviceStatus


@pytest.mark.parametrize(
    ("status", "fault"), [(DeviceStatus.LOST, "gpu_lost"), (DeviceStatus.RESET_REQUIRED, "gpu_reset_required")]
)
def test_a_gpu_that_stops_answering_is_critical(run, hw, status, fault):
    """Over OTLP a lost GPU reports hw.status failed, and eagleeye.hw.read.status says how: lost or reset required."""
    assert run.step(hw.gpu(0), hw.gpu(1)) == set()
    lost = hw.gpu(1, status=status, detail="NVML: GPU is lost")
    assert run.step(hw.gpu(0), lost) == {fault}
    finding = run.finding(fault)
    assert finding.device == hw.gpu_identity(1).id
    assert finding.severity is Severity.CRITICAL
    assert finding.evidence == {"value": status.value, "property": "status"}
    for _ in range(3):
        faults = run.step(hw.gpu(0), hw.gpu(1))
    assert faults == set()


@pytest.mark.parametrize(("device", "fault"), [("gpu", "gpu_hung"), ("npu", "npu_hung")])
def test_a_device_whose_driver_call_hangs_is_a_warning_once_it_persists(run, hw, device, fault):
    """A read that did not return within the deadline: one sweep may be a slow driver, two in a row are a finding."""

    def step(**overrides: object) -> set[str]:
        if device == "gpu":
            return run.step(hw.gpu(0, **overrides))
        return run.step(npus=(hw.npu(0, **overrides),))

    hung = {"status": DeviceStatus.HUNG, "detail": "a driver call has not returned for 0.5 s (deadline 0.5 s)"}
    assert step() == set()
    assert step(**hung) == set()
    assert step(**hung) == {fault}
    finding = run.finding(fault)
    assert finding.severity is Severity.WARNING
    assert finding.evidence == {"value": "hung", "property": "status"}
    for _ in range(3):
        faults = step()
    assert faults == set()


def test_a_gpu_whose_reads_fail_is_a_warning(run, hw):
    broken = hw.gpu(0, status=DeviceStatus.ERROR, detail="NVML: Unknown Error")
    run.step(broken)
    assert run.step(broken) == {"gpu_unreadable"}
    assert run.finding("gpu_unreadable").severity is Severity.WARNING


@pytest.mark.parametrize(
    ("action", "severity", "words"),
    [
        (1, Severity.CRITICAL, "GPU reset"),
        (2, Severity.CRITICAL, "reboot"),
        (3, Severity.WARNING, "peer-to-peer"),
        (4, Severity.CRITICAL, "drain"),
        (7, Severity.CRITICAL, "full system reboot"),
    ],
)
def test_the_recovery_action(make_run, hw, action, severity, words):
    run = make_run()
    for _ in range(2):
        faults = run.step(hw.gpu(0, recovery_action=action))
    assert faults == {"gpu_recovery_action"}
    finding = run.finding("gpu_recovery_action")
    assert finding.severity is severity
    assert words in finding.conclusion
    assert finding.evidence == {"value": str(action), "signal": "eagleeye.hw.gpu.recovery_action"}


def test_a_changed_recovery_action_updates_the_finding(run, hw):
    run.step(hw.gpu(0, recovery_action=1))
    run.step(hw.gpu(0, recovery_action=2))
    assert [f.fault for f in run.changes.updated] == ["gpu_recovery_action"]
    assert "reboot" in run.finding("gpu_recovery_action").conclusion


@pytest.mark.parametrize(
    ("health", "severity"), [(1, Severity.WARNING), (2, Severity.CRITICAL), (3, Severity.CRITICAL)]
)
def test_npu_health(make_run, hw, health, severity):
    run = make_run()
    for _ in range(2):
        faults = run.step(npus=(hw.npu(0), hw.npu(1, health=health)))
    assert faults == {"npu_health"}
    assert run.finding("npu_health").severity is severity
    assert run.finding("npu_health").device == "npu-0-1"


def test_a_lost_npu(run, hw):
    assert run.step(npus=(hw.npu(0, status=DeviceStatus.LOST, health=None),)) == {"npu_lost"}
    assert "npu-smi" in run.finding("npu_lost").action
