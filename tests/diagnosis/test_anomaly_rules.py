"""Anomaly rules: a device unlike its peers under the same load, or unlike its own recent baseline."""

from __future__ import annotations

from eagleeye_otel.diagnosis import Severity


def _eight(hw, **hot):
    return [hw.gpu(i, temperature_c=64.0 + i % 3) for i in range(7)] + [hw.gpu(7, **hot)]


def test_a_gpu_hotter_than_its_peers_at_the_same_load(run, hw):
    gpus = _eight(hw, temperature_c=79.0)
    for _ in range(4):
        assert run.step(*gpus) == set()
    assert run.step(*gpus) == {"gpu_temperature_above_peers"}
    finding = run.finding("gpu_temperature_above_peers")
    assert finding.device == hw.gpu_identity(7).id
    assert finding.severity is Severity.WARNING
    assert finding.evidence["reference"] == 65.0
    assert finding.evidence["delta"] == 14.0
    assert finding.evidence["peers"] == 7
    assert len(finding.evidence["peer_values"]) == 7
    assert finding.evidence["load"] == 0.8
    assert "14 °C hotter than the median of its 7 peers" in finding.conclusion
    assert "(65 °C) at the same load (80%)" in finding.conclusion


def test_a_hot_gpu_under_more_load_is_not_compared(run, hw):
    gpus = _eight(hw, temperature_c=79.0, utilization=1.0)
    for _ in range(6):
        assert run.step(*gpus) == set()


def test_a_gpu_with_too_few_peers_is_not_judged(run, hw):
    for _ in range(6):
        assert run.step(hw.gpu(0), hw.gpu(1, temperature_c=80.0)) == set()


def test_slow_clocks_and_low_power_against_peers(run, hw):
    gpus = [hw.gpu(i) for i in range(3)] + [hw.gpu(3, sm_clock_hz=1.2e9, power_w=250.0)]
    for _ in range(5):
        faults = run.step(*gpus)
    assert faults == {"gpu_sm_clock_below_peers", "gpu_power_off_peers"}
    assert run.finding("gpu_power_off_peers").evidence["delta"] == -200.0


def test_a_link_trained_narrower_than_its_peers(run, hw):
    gpus = [hw.gpu(i) for i in range(3)] + [hw.gpu(3, pcie_link_width=8)]
    for _ in range(3):
        faults = run.step(*gpus)
    assert faults == {"gpu_pcie_width_below_peers"}
    assert "x8 while its 3 peers run x16" in run.finding("gpu_pcie_width_below_peers").conclusion


def test_a_power_limit_that_drops_from_its_baseline(run, hw):
    for _ in range(40):
        assert run.step(hw.gpu(0)) == set()
    capped = hw.gpu(0, power_limit_w=400.0)
    assert run.step(capped) == set()
    assert run.step(capped) == {"gpu_power_limit_dropped"}
    finding = run.finding("gpu_power_limit_dropped")
    assert finding.evidence["reference"] == 700.0
    assert finding.evidence["value"] == 400.0
    for _ in range(10):  # the baseline does not learn the anomaly
        assert "gpu_power_limit_dropped" in run.step(capped)


def test_the_baseline_needs_enough_samples(run, hw):
    for _ in range(5):
        run.step(hw.gpu(0))
    for _ in range(3):
        assert run.step(hw.gpu(0, power_limit_w=400.0)) == set()
