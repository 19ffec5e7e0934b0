"""A fresh engine (a restarted diagnosis service) re-derives event findings from the monitor's counters and stamps.

The monitor counts Xids since it started and sends, beside each count, when it saw the last event. An engine that
sees a count for the first time dates those events by that stamp: an Xid from seconds ago is held (its finding
opens at once), one from before its hold is not, and NVML's Xids are dated the same way.
"""

from __future__ import annotations

from eagleeye_otel.diagnosis import Severity
from eagleeye_otel.receivers.hardware._model import KernelEventKind, KernelLogSummary

XID = KernelEventKind.XID
BUS = "0000:3b:00.0"  # GPU 0 of the fixtures


def summary(counts: dict[str, int], seen: dict[str, float]) -> KernelLogSummary:
    return KernelLogSummary(
        counts={(XID, code, BUS): count for code, count in counts.items()},
        last_messages={},
        malformed=0,
        lines=10,
        last_seen={(XID, code, BUS): at for code, at in seen.items()},
    )


def test_a_fresh_engine_holds_recent_events_and_drops_expired_ones(run, hw):
    now = run.clock.now
    log = summary({"79": 1, "13": 2}, {"79": now - 10, "13": now - 7200})  # Xid 13's one-hour hold ran out
    faults = run.step(hw.gpu(0), kernel_log=log)
    assert "xid_79" in faults and "xid_13" not in faults
    finding = run.finding("xid_79", hw.gpu_identity(0).id)
    assert finding.severity is Severity.CRITICAL
    assert finding.evidence["first_event"] == finding.evidence["last_event"] == now - 10
    assert finding.evidence["count"] == 1


def test_later_events_move_the_last_sighting_and_keep_the_first(run, hw):
    now = run.clock.now
    run.step(hw.gpu(0), kernel_log=summary({"79": 1}, {"79": now - 10}))
    run.step(hw.gpu(0), kernel_log=summary({"79": 3}, {"79": now + 0.5}))
    evidence = run.finding("xid_79").evidence
    assert (evidence["first_event"], evidence["last_event"], evidence["count"]) == (now - 10, now + 0.5, 3)


def test_nvml_xids_are_dated_by_their_stamp_too(run, hw):
    now = run.clock.now
    stale = hw.gpu(0, xid_counts={48: 1}, xid_last_seen={48: now - 7200})
    assert "xid_48" not in run.step(stale)
    fresh = hw.gpu(1, xid_counts={48: 1}, xid_last_seen={48: now - 5})
    assert "xid_48" in run.step(stale, fresh)
    assert run.finding("xid_48").device == hw.gpu_identity(1).id


def test_without_a_stamp_the_count_is_dated_by_the_export(run, hw):
    """Another producer (or an older monitor) sends counts only: they count as seen when they arrived."""
    run.step(hw.gpu(0), kernel_log=summary({"13": 1}, {}))
    evidence = run.finding("xid_13").evidence
    assert evidence["first_event"] == evidence["last_event"] == run.clock.now
