"""Xid and SXid events: from NVML's counter and the kernel log's, joined to the GPU by its PCI address, held, and
looked up in the catalog (Xid 45 as a follow-up, Xid 154 through the recovery action)."""

from __future__ import annotations

from eagleeye_otel.diagnosis import Severity
from eagleeye_otel.diagnosis._knowledge import load_knowledge_base
from eagleeye_otel.receivers.hardware._model import KernelEvent, KernelEventKind

XID_CODES_IN_THE_REFERENCE = {
    8, 13, 31, 32, 43, 45, 46, 48, 61, 62, 63, 64, 74, 79, 92, 94, 95, 109, 119, 120, 121, 136, 137, 140, 143,
    144, 145, 146, 147, 148, 149, 150, 154, 155, 156, 158,
}  # fmt: skip


def test_the_catalog_covers_every_xid_of_the_reference():
    xid = load_knowledge_base().rule("xid")
    assert {int(code) for code in xid.codes} >= XID_CODES_IN_THE_REFERENCE
    fatal = {46, 48, 62, 64, 74, 79, 95, 109, 119, 120, 140, 143}
    assert {code for code in fatal if xid.codes[str(code)].severity is Severity.CRITICAL} == fatal


def test_an_nvml_xid_opens_a_critical_finding_on_that_gpu(run, hw):
    gpu = hw.gpu(1)
    assert run.step(gpu) == set()
    assert run.step(hw.gpu(1, xid_counts={48: 1})) >= {"xid_48"}
    finding = run.finding("xid_48")
    assert finding.device == gpu.identity.id
    assert finding.severity is Severity.CRITICAL
    assert finding.evidence["sources"] == ["nvml_xid"]
    assert finding.evidence["name"] == "GPU_ECC_DBE"


def test_a_kernel_log_xid_is_joined_to_the_gpu_by_its_pci_address(run, hw):
    kernel = hw.kernel_log({("xid", "79", "0000:3c:00.0"): 1})
    faults = run.step(hw.gpu(0), hw.gpu(1), kernel_log=kernel)
    assert "xid_79" in faults
    assert run.finding("xid_79").device == hw.gpu_identity(1).id  # 0x3b + 1
    assert "GPU 1" in run.finding("xid_79").conclusion


def test_an_event_is_held_then_resolves(make_run, hw):
    run = make_run()
    run.step(hw.gpu(0, xid_counts={13: 1}))
    assert run.finding("xid_13").severity is Severity.WARNING
    for _ in range(5):  # the count stays: no new event, still held
        assert "xid_13" in run.step(hw.gpu(0, xid_counts={13: 1}), seconds=600)
    assert "xid_13" not in run.step(hw.gpu(0, xid_counts={13: 1}), seconds=3600)
    assert [f.fault for f in run.changes.resolved] == ["xid_13"]


def test_a_held_event_resolves_without_new_telemetry(make_run, hw):
    """A node that stops reporting is still evaluated for what its hold times out."""
    run = make_run()
    run.step(hw.gpu(0, xid_counts={43: 1}))
    run.clock.now += 601
    assert [f.fault for f in run.engine.evaluate().resolved] == ["xid_43"]


def test_a_new_event_extends_the_hold_and_updates_the_count(run, hw):
    run.step(hw.gpu(0, xid_counts={94: 1}))
    run.step(hw.gpu(0, xid_counts={94: 3}), seconds=3000)
    assert run.finding("xid_94").evidence["count"] == 3
    assert [f.fault for f in run.changes.updated] == ["xid_94"]
    assert "xid_94" in run.step(hw.gpu(0, xid_counts={94: 3}), seconds=3000)


def test_xid_45_is_folded_into_the_error_it_follows(run, hw):
    run.step(hw.gpu(0, xid_counts={13: 1, 45: 1}))
    assert {f.fault for f in run.engine.active()} == {"xid_13"}
    assert run.finding("xid_13").evidence["also"] == ["45"]


def test_xid_45_alone_points_at_the_fabric_manager(run, hw):
    run.step(hw.gpu(0, xid_counts={45: 1}))
    assert "Fabric Manager" in run.finding("xid_45").action


def test_xid_154_takes_the_recovery_action_from_telemetry(run, hw):
    faults = run.step(hw.gpu(0, xid_counts={154: 1}, recovery_action=2))
    assert faults >= {"xid_154", "gpu_recovery_action"}
    finding = run.finding("xid_154")
    assert finding.severity is Severity.CRITICAL
    assert "reboot" in finding.action
    assert finding.evidence["value"] == "2"


def test_xid_154_takes_the_recovery_action_from_the_kernel_line(make_run, hw):
    run = make_run(hysteresis=False)
    run.engine.ingest_kernel_log(
        hw.node,
        ["NVRM: Xid (PCI:0000:3b:00): 154, GPU recovery action changed from 0x0 (None) to 0x1 (GPU Reset Required)"],
    )
    run.engine.evaluate()
    finding = run.finding("xid_154")
    assert "GPU reset" in finding.conclusion
    assert finding.device == "0000:3b:00.0"


def test_xid_154_without_a_known_action_says_to_read_it(make_run, hw):
    run = make_run()
    run.engine.ingest_kernel_events(hw.node, [KernelEvent(KernelEventKind.XID, "154", "0000:3b:00.0", "NVRM: Xid")])
    run.engine.evaluate()
    assert "Read the GPU's recovery action" in run.finding("xid_154").action
    assert run.finding("xid_154").severity is Severity.WARNING


def test_an_xid_not_in_the_catalog_is_still_reported(run, hw):
    run.step(hw.gpu(0, xid_counts={999: 1}))
    assert "not describe" in run.finding("xid_999").conclusion


def test_an_nvlink5_error_is_critical_only_when_the_driver_says_fatal(make_run, hw):
    run = make_run(hysteresis=False)
    run.engine.ingest_kernel_log(
        hw.node,
        [
            "NVRM: Xid (PCI:0018:01:00): 149, NETIR_LINK_EVT Fatal XC0 i0 Link 08 (0x004505c6 0x00000000)",
            "NVRM: Xid (PCI:0018:02:00): 144, SAW_MVB_NONFATAL Nonfatal XC0 i0 Link 01 (0x0 0x0)",
        ],
    )
    run.engine.evaluate()
    assert run.finding("xid_149").severity is Severity.CRITICAL
    assert run.finding("xid_144").severity is Severity.WARNING


def test_sxid_severity_follows_the_line(make_run, hw):
    run = make_run(hysteresis=False)
    run.engine.ingest_kernel_log(
        hw.node,
        [
            "nvidia-nvswitch0: SXid (PCI:0000:89:00.0): 24007, Fatal, Link 30 sourcetrack timeout error",
            "nvidia-nvswitch3: SXid (PCI:0000:c3:00.0): 20009, Non-fatal, Link 14 RX Short Error Rate",
        ],
    )
    run.engine.evaluate()
    assert run.finding("sxid_24007").severity is Severity.CRITICAL
    assert run.finding("sxid_20009").severity is Severity.WARNING
    assert run.finding("sxid_20009").device == "0000:c3:00.0"
