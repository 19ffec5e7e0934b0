"""Hysteresis: findings open after their rule's ``for``, resolve after ``clear`` (and ``clear_s``), and a flapping
reading keeps one finding instead of a stream of opens and resolves."""

from __future__ import annotations

import msgspec


def test_opens_after_for_and_resolves_after_clear(run, hw):
    warm, cool = hw.gpu(0, temperature_c=84.0), hw.gpu(0)
    assert run.step(warm) == set()
    assert run.step(warm) == set()
    assert run.step(warm) == {"gpu_temperature_near_slowdown"}
    opened = run.changes.opened
    assert [f.fault for f in opened] == ["gpu_temperature_near_slowdown"]
    assert opened[0].first_seen == run.clock.now - 2  # when the condition was first seen
    assert run.step(cool) == {"gpu_temperature_near_slowdown"}
    assert run.step(cool) == {"gpu_temperature_near_slowdown"}
    assert run.step(cool) == set()
    (resolved,) = run.changes.resolved
    assert resolved.resolved_at == run.clock.now
    assert resolved.last_seen == run.clock.now - 3


def test_a_flapping_reading_keeps_one_finding(run, hw):
    hot, cool = hw.gpu(0, temperature_c=88.0), hw.gpu(0, temperature_c=86.0)
    opened = resolved = 0
    for step in range(40):
        run.step(hot if step % 2 == 0 else cool)
        opened += len([f for f in run.changes.opened if f.fault == "gpu_temperature_slowdown"])
        resolved += len([f for f in run.changes.resolved if f.fault == "gpu_temperature_slowdown"])
    assert (opened, resolved) == (1, 0)
    assert run.finding("gpu_temperature_slowdown").last_seen == run.clock.now - 1


def test_a_warning_that_holds_for_one_update_at_a_time_never_opens(run, hw):
    for step in range(20):
        assert run.step(hw.gpu(0, remapped_rows_pending=step % 2 == 0)) == set()


def test_a_steady_fault_is_not_reported_as_updated(run, hw):
    gpu = hw.gpu(0, remapped_rows_failure=True)
    run.step(gpu)
    for _ in range(5):
        run.step(gpu)
        assert run.changes.opened == run.changes.updated == run.changes.resolved == ()
    assert not run.changes


def test_changed_evidence_is_reported_as_updated(run, hw):
    run.step(hw.gpu(0, temperature_c=88.0))
    run.step(hw.gpu(0, temperature_c=89.0))
    (updated,) = [f for f in run.changes.updated if f.fault == "gpu_temperature_slowdown"]
    assert updated.evidence["value"] == 89.0


def test_for_clear_and_clear_s_come_from_the_rule(make_run, hw, tmp_path):
    rules = tmp_path / "site.yaml"
    rules.write_text("rules:\n  - {id: gpu_row_remap_failure, for: 3, clear: 1, clear_s: 10}\n")
    run = make_run([rules])
    bad = hw.gpu(0, remapped_rows_failure=True)
    assert [run.step(bad) for _ in range(3)][-1] == {"gpu_row_remap_failure"}
    assert run.step(hw.gpu(0), seconds=5) == {"gpu_row_remap_failure"}  # clear once, but only 5 s
    assert run.step(hw.gpu(0), seconds=5) == set()


def test_without_hysteresis_findings_open_at_once(make_run, hw):
    run = make_run(hysteresis=False)
    assert run.step(hw.gpu(0, temperature_c=84.0)) == {"gpu_temperature_near_slowdown"}
    assert run.step(hw.gpu(0)) == set()


def test_findings_are_the_architecture_contract(run, hw):
    run.step(hw.gpu(0, remapped_rows_failure=True))
    document = msgspec.to_builtins(run.finding("gpu_row_remap_failure"))
    assert set(document) == {
        "node",
        "device",
        "fault",
        "severity",
        "conclusion",
        "action",
        "evidence",
        "first_seen",
        "last_seen",
        "resolved_at",
    }
    assert document["severity"] == "critical"
    assert document["node"] == hw.node


def test_active_lists_severity_first(run, hw):
    run.step(hw.gpu(0, xid_counts={43: 1, 13: 1, 79: 1}))
    assert [f.severity.value for f in run.engine.active()] == ["critical", "warning", "info"]
