"""Ascend error codes by fault handling level: active on a chip (DCMI) or in the kernel log."""

from __future__ import annotations

import json

from eagleeye_otel.diagnosis import Severity
from eagleeye_otel.diagnosis._knowledge import load_knowledge_base


def test_the_table_has_every_level_and_the_named_codes():
    ascend = load_knowledge_base().rule("ascend")
    assert len(ascend.table) >= 800
    assert set(ascend.table.values()) == set(ascend.levels) - {"ManuallySeparateNPU"}
    assert ascend.table["0x80E18402"] == "SeparateNPU"
    assert ascend.table["0x80C98000"] == "RestartRequest"
    assert ascend.table["0xA2301001"] == "SeparateNPU"  # listed under two levels: the worse one


def test_active_codes_group_by_level(run, hw):
    chip = hw.npu(1, health=2, error_codes=(0x80E18005, 0x80F78008, 0x80C98000))
    faults = run.step(npus=(hw.npu(0), chip))
    assert faults >= {"ascend_restart_npu", "ascend_restart_request"}
    restart = run.finding("ascend_restart_npu")
    assert restart.severity is Severity.CRITICAL
    assert restart.evidence["codes"] == ["0x80E18005", "0x80F78008"]
    assert restart.evidence["sources"] == ["dcmi"]
    assert "0x80E18005, 0x80F78008" in restart.conclusion
    assert run.finding("ascend_restart_request").severity is Severity.WARNING


def test_named_codes_have_their_own_finding(run, hw):
    faults = run.step(npus=(hw.npu(0, health=2, error_codes=(0x80E18402, 0x80E18401)),))
    assert {"npu_hbm_isolated_rows_limit", "npu_hbm_isolated_rows"} <= faults
    assert run.finding("npu_hbm_isolated_rows_limit").severity is Severity.CRITICAL
    assert run.finding("npu_hbm_isolated_rows").severity is Severity.WARNING  # NotHandleFault, raised by its entry


def test_an_unknown_code_takes_its_level_from_the_chips_health(make_run, hw):
    run = make_run()
    run.step(npus=(hw.npu(0, health=1, error_codes=(0x8FFFFFF1,)), hw.npu(1, health=3, error_codes=(0x8FFFFFF1,))))
    levels = {f.device: f.fault for f in run.engine.active() if f.fault.startswith("ascend_")}
    assert levels == {"npu-0-0": "ascend_not_handle_fault", "npu-0-1": "ascend_separate_npu"}


def test_a_code_that_goes_away_resolves(run, hw):
    run.step(npus=(hw.npu(0, error_codes=(0x80E18005,)),))
    for _ in range(3):
        faults = run.step(npus=(hw.npu(0),))
    assert "ascend_restart_npu" not in faults


def test_heartbeat_lost_from_the_kernel_log(make_run, hw):
    run = make_run()
    run.step(npus=(hw.npu(0), hw.npu(1)))
    counts = run.engine.ingest_kernel_log(
        hw.node,
        [
            "[ 2301.880012] [ascend] [ERROR] [drv_soft_fault] [heart_beat_judge 318] <kworker/5:1H:39365> "
            "Heartbeat lost! (device=1; old_count=1104; new_count=1104; lost_count=4)",
            "[ 2301.990541] [ascend] [ERROR] [drv_pcie] [devdrv_sync_non_trans_msg_send 1487] <kworker/u386:2:8812> "
            'Device irq not resp. (dev_id=1; msg_type="devmng"; status=1; retry_cnt=3)',
        ],
    )
    assert (counts.events, counts.malformed) == (2, 0)
    run.engine.evaluate()
    heartbeat = run.finding("npu_heartbeat_lost")
    assert heartbeat.device == "npu-0-1"  # "device=1" is the chip whose index is 1
    assert heartbeat.severity is Severity.CRITICAL
    assert heartbeat.evidence["sources"] == ["kernel_log"]
    assert "Heartbeat lost" in heartbeat.evidence["message"]
    assert run.finding("npu_irq_not_responding").device == "npu-0-1"


def test_a_mindcluster_fault_code_file_overrides_the_levels(make_run, hw, tmp_path):
    codes = tmp_path / "faultCode.json"
    codes.write_text(json.dumps({"SeparateNPUCodes": ["80C98000"], "NotHandleFaultCodes": ["80E18005"]}))
    rules = tmp_path / "site.yaml"
    rules.write_text(f"rules:\n  - id: ascend\n    fault_code_file: {codes}\n")
    run = make_run([rules])
    faults = run.step(npus=(hw.npu(0, error_codes=(0x80C98000, 0x80E18005)),))
    assert faults >= {"ascend_separate_npu", "ascend_not_handle_fault"}
