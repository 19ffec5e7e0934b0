"""Threshold rules over real OTLP: temperature against the GPU's own limits, throttling, power brake, power cap."""

from __future__ import annotations

from eagleeye_otel.diagnosis import Severity


def test_a_healthy_node_has_no_finding(run, hw):
    for _ in range(5):
        assert run.step(hw.gpu(0), hw.gpu(1), hw.gpu(2), npus=(hw.npu(0), hw.npu(1))) == set()
    assert run.engine.stats.points > 100
    assert run.engine.stats.malformed == 0


def test_temperature_near_slowdown_warns_after_three_updates(run, hw):
    hot = hw.gpu(0, temperature_c=83.0)  # slowdown 87: within 5 degrees
    assert run.step(hot, hw.gpu(1)) == set()
    assert run.step(hot, hw.gpu(1)) == set()
    assert run.step(hot, hw.gpu(1)) == {"gpu_temperature_near_slowdown"}
    finding = run.finding("gpu_temperature_near_slowdown")
    assert finding.severity is Severity.WARNING
    assert finding.device == hw.gpu_identity(0).id
    assert finding.evidence["value"] == 83.0
    assert finding.evidence["limit"] == 82.0
    assert finding.evidence["limit_base"] == 87.0
    assert "83 °C" in finding.conclusion and "87 °C" in finding.conclusion


def test_temperature_at_slowdown_is_critical_at_once(run, hw):
    faults = run.step(hw.gpu(0, temperature_c=88.0))
    assert "gpu_temperature_slowdown" in faults
    finding = run.finding("gpu_temperature_slowdown")
    assert finding.severity is Severity.CRITICAL
    assert finding.evidence["limit"] == 87.0
    assert finding.evidence["limit_from"] == "hw.temperature.limit{hw.limit_type=throttled,hw.sensor_location=die}"


def test_the_limits_are_the_devices_own(run, hw):
    """A GPU with a lower slowdown threshold is judged against it, not against its neighbours'."""
    low_limit = hw.gpu(1, temperature_c=80.0, slowdown_temperature_c=79.0)
    assert run.step(hw.gpu(0, temperature_c=80.0), low_limit) >= {"gpu_temperature_slowdown"}
    assert run.finding("gpu_temperature_slowdown").device == hw.gpu_identity(1).id


def test_temperature_near_shutdown(run, hw):
    assert "gpu_temperature_near_shutdown" in run.step(hw.gpu(0, temperature_c=90.0))
    assert "within 3 °C of its 92 °C shutdown threshold" in run.finding("gpu_temperature_near_shutdown").conclusion


def test_hardware_thermal_slowdown_and_power_brake_are_critical(run, hw):
    reasons = frozenset({"hw_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown"})
    faults = run.step(hw.gpu(0, clock_event_reasons=reasons))
    assert {"gpu_hw_thermal_slowdown", "gpu_hw_power_brake"} <= faults
    assert "gpu_hw_slowdown" not in faults  # explained by the two others
    assert run.finding("gpu_hw_power_brake").severity is Severity.CRITICAL


def test_hw_slowdown_alone_warns(run, hw):
    gpu = hw.gpu(0, clock_event_reasons=frozenset({"hw_slowdown"}))
    run.step(gpu)
    assert run.step(gpu) == {"gpu_hw_slowdown"}


def test_sw_thermal_slowdown_warns(run, hw):
    gpu = hw.gpu(0, clock_event_reasons=frozenset({"sw_thermal_slowdown"}))
    run.step(gpu)
    assert run.step(gpu) == {"gpu_sw_thermal_slowdown"}


def test_power_at_the_cap_is_info_after_ten_updates(run, hw):
    capped = hw.gpu(0, power_w=690.0, clock_event_reasons=frozenset({"sw_power_cap"}))
    for _ in range(9):
        assert run.step(capped) == set()
    assert run.step(capped) == {"gpu_power_at_limit"}
    finding = run.finding("gpu_power_at_limit")
    assert finding.severity is Severity.INFO
    assert finding.evidence["limit"] == 700.0 * 0.95
    assert finding.evidence["eagleeye.hw.gpu.clock_event.active{eagleeye.hw.gpu.clock_event.reason=sw_power_cap}"] == 1


def test_power_near_the_limit_without_the_cap_reason_is_fine(run, hw):
    for _ in range(12):
        assert run.step(hw.gpu(0, power_w=690.0)) == set()


def test_a_device_that_stops_reporting_a_value_neither_keeps_nor_clears(run, hw):
    hot = hw.gpu(0, temperature_c=88.0)
    run.step(hot)
    for _ in range(5):
        assert "gpu_temperature_slowdown" in run.step(hw.gpu(0, temperature_c=None))
    for _ in range(3):
        faults = run.step(hw.gpu(0))
    assert "gpu_temperature_slowdown" not in faults
