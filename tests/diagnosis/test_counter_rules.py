"""Memory-error and link-error rules over real OTLP counters: ECC, row remapping, page retirement, PCIe, NVLink."""

from __future__ import annotations

import pytest

from eagleeye_otel.diagnosis import Severity


def test_an_uncorrectable_ecc_error_is_critical_until_the_gpu_is_reset(run, hw):
    assert run.step(hw.gpu(0)) == set()
    assert run.step(hw.gpu(0, ecc_uncorrected_volatile=1)) == {"gpu_ecc_uncorrected"}
    finding = run.finding("gpu_ecc_uncorrected")
    assert finding.severity is Severity.CRITICAL
    assert "reset" in finding.action
    for _ in range(10):  # no new error: the GPU still holds the corrupted state
        assert "gpu_ecc_uncorrected" in run.step(hw.gpu(0, ecc_uncorrected_volatile=1))
    for _ in range(3):  # the reset zeroes the volatile counter
        faults = run.step(hw.gpu(0))
    assert faults == set()
    assert [f.fault for f in run.changes.resolved] == ["gpu_ecc_uncorrected"]


def test_row_remapping(run, hw):
    assert run.step(hw.gpu(0, remapped_rows_failure=True)) == {"gpu_row_remap_failure"}
    run.step(hw.gpu(1, remapped_rows_pending=True))
    assert "gpu_row_remap_pending" in run.step(hw.gpu(1, remapped_rows_pending=True))
    assert run.finding("gpu_row_remap_pending").severity is Severity.WARNING


def test_many_uncorrectable_remapped_rows(run, hw):
    gpu = hw.gpu(0, remapped_rows_uncorrectable=600)
    run.step(gpu)
    assert run.step(gpu) == {"gpu_remapped_rows_uncorrectable_many"}


def test_retired_pages(run, hw):
    run.step(hw.gpu(0, retired_pages_sbe=2, retired_pages_dbe=1))
    faults = run.step(hw.gpu(0, retired_pages_sbe=2, retired_pages_dbe=2, retired_pages_pending=True))
    assert faults == set()  # both warnings need a second update
    faults = run.step(hw.gpu(0, retired_pages_sbe=2, retired_pages_dbe=2, retired_pages_pending=True))
    assert faults == {"gpu_retired_pages_new", "gpu_retired_pages_pending"}
    assert run.finding("gpu_retired_pages_new").evidence["increase"] == 1
    assert run.step(hw.gpu(0, retired_pages_sbe=40, retired_pages_dbe=23)) >= {"gpu_retired_pages_limit"}
    assert run.finding("gpu_retired_pages_limit").evidence["value"] == 63


@pytest.mark.parametrize(
    ("generation", "width", "budget"),
    [(5, 16, 31), (4, 16, 16), (3, 16, 8), (4, 8, 8), (6, 16, 62)],
)
def test_pcie_replays_against_the_links_budget(make_run, hw, generation, width, budget):
    """DCGM's budget: replays per lane per minute by generation, times the lanes, rounded up."""
    run = make_run()

    def gpu(replays: int):
        return hw.gpu(0, pcie_replays=replays, pcie_link_generation=generation, pcie_link_width=width)

    replays = 1000
    for _ in range(61):  # a minute of exactly the budget: fine
        replays += budget / 60
        assert run.step(gpu(int(replays))) == set()
    for _ in range(20):  # then twice the budget
        replays += 2 * budget / 60
        faults = run.step(gpu(int(replays)))
    assert faults == {"gpu_pcie_replay_rate"}
    finding = run.finding("gpu_pcie_replay_rate")
    assert finding.evidence["limit"] == budget
    assert finding.evidence["increase"] > budget
    assert 55 <= finding.evidence["window_s"] <= 62


def test_a_counter_seen_once_cannot_give_a_rate(run, hw):
    assert run.step(hw.gpu(0, pcie_replays=10**6)) == set()


def test_a_counter_that_restarts_counts_from_zero(run, hw):
    run.step(hw.gpu(0, pcie_replays=500))
    run.step(hw.gpu(0, pcie_replays=510))
    assert run.step(hw.gpu(0, pcie_replays=5)) == set()  # driver reload: 5 new, within budget


def test_nvlink_crc_errors_warn_and_a_storm_is_critical(run, hw):
    def gpu(crc: int, replay: int = 0):
        return hw.gpu(0, nvlink_errors={"crc_flit": crc, "crc_data": 0, "replay": replay, "recovery": 0})

    run.step(gpu(0))
    run.step(gpu(3))
    assert run.step(gpu(3)) == {"gpu_nvlink_crc"}
    assert run.finding("gpu_nvlink_crc").evidence["increase"] == 3
    assert run.step(gpu(3 + 500)) >= {"gpu_nvlink_crc_storm"}
    assert run.finding("gpu_nvlink_crc_storm").evidence["rate"] >= 100
    assert run.step(gpu(503, replay=1)) >= {"gpu_nvlink_replay_recovery"}
    assert run.finding("gpu_nvlink_replay_recovery").severity is Severity.CRITICAL
