"""NvmlSource against the C double of libnvidia-ml.so.1, through the real pynvml."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eagleeye_otel.errors import HardwareUnavailable
from eagleeye_otel.receivers.hardware import (
    CLOCK_EVENT_REASONS,
    NvmlSource,
    decode_clock_event_reasons,
)
from eagleeye_otel.receivers.hardware._model import DeviceStatus, GpuReading
from eagleeye_otel.receivers.hardware._pci import normalize_pci_bus_id


def expected_reading(i: int) -> dict[str, object]:
    """What conftest's ``_healthy_gpu(i)`` must read as, in SI units."""
    return {
        "status": DeviceStatus.OK,
        "detail": None,
        "utilization": (50 + i) / 100,
        "memory_utilization": (20 + i) / 100,
        "memory_used_bytes": (1 + i) * 1_073_741_824,
        "memory_total_bytes": 85520809984,
        "temperature_c": 40.0 + i,
        "memory_temperature_c": 55.5 if i % 2 else 50.0 + i,
        "slowdown_temperature_c": 87.0,
        "shutdown_temperature_c": 92.0,
        "power_w": pytest.approx(300.0 + i * 1.25),
        "power_limit_w": pytest.approx(700.0),
        "energy_j": pytest.approx((123_456_789 + i) / 1000),
        "sm_clock_hz": pytest.approx((1980 - i) * 1e6),
        "memory_clock_hz": pytest.approx(2619e6),
        "clock_event_reasons": frozenset(),
        "ecc_corrected_volatile": i,
        "ecc_uncorrected_volatile": 0,
        "ecc_corrected_aggregate": 10 * i,
        "ecc_uncorrected_aggregate": 0,
        "retired_pages_sbe": 0,
        "retired_pages_dbe": 0,
        "retired_pages_pending": False,
        "remapped_rows_correctable": i,
        "remapped_rows_uncorrectable": 0,
        "remapped_rows_pending": False,
        "remapped_rows_failure": False,
        "pcie_replays": 3 * i,
        "pcie_link_generation": 5,
        "pcie_link_width": 16,
        "pcie_tx_bytes_per_s": (1000 + i) * 1024.0,
        "pcie_rx_bytes_per_s": (2000 + i) * 1024.0,
        "nvlink_errors": {"crc_flit": i, "crc_data": 0, "replay": 0, "recovery": 0},
        "recovery_action": 0,
        "xid_counts": {},
        "xid_last_seen": {},
    }


# -- a healthy node ------------------------------------------------------------------------------------------


def test_healthy_node_reads_identity_once_and_every_signal_in_si_units(nvml):
    nvml.write(nvml.node(8))
    source = nvml.open()

    assert source.driver_version == "550.54.15"
    assert source.nvml_version == "12.550.54.15"
    assert [d.index for d in source.devices] == list(range(8))
    for i, identity in enumerate(source.devices):
        assert identity.id == nvml.uuid(i)
        assert (identity.type, identity.vendor) == ("gpu", "nvidia")
        assert identity.model == "NVIDIA H100 80GB HBM3"
        assert identity.serial == f"165022300{i:04d}"
        assert identity.firmware_version == f"96.00.74.00.{i:02d}"
        assert identity.driver_version == "550.54.15"
        assert identity.pci_bus_id == f"0000:{0x18 + 0x10 * i:02x}:00.0"

    assert set(expected_reading(0)) == {f.name for f in dataclasses.fields(GpuReading)} - {"identity"}
    for _ in range(2):
        readings = source.sweep()
        assert len(readings) == 8
        for i, reading in enumerate(readings):
            assert reading.identity == source.devices[i]
            actual = {name: getattr(reading, name) for name in expected_reading(i)}
            assert actual == expected_reading(i)
    assert nvml.calls("nvmlDeviceGetUUID") == 8, "identity is read once, at open"
    assert nvml.calls("nvmlDeviceGetFieldValues", 0) == 2, "the counters come in one batch per sweep"


def test_values_the_gpu_does_not_have_are_none_and_the_rest_still_reads(nvml):
    nvml.write("gpu 0 uuid GPU-bare\ngpu 0 temp 33\n")
    (reading,) = nvml.open().sweep()
    assert reading.status is DeviceStatus.OK
    assert reading.temperature_c == 33.0
    assert reading.power_w is None
    assert reading.nvlink_errors is None
    assert reading.clock_event_reasons is None
    assert reading.identity.pci_bus_id is None and reading.identity.serial is None


# -- failing GPUs --------------------------------------------------------------------------------------------


def test_a_gpu_lost_mid_run_is_reported_lost_with_its_identity_and_the_others_keep_reading(nvml, caplog):
    nvml.write(nvml.node(8))
    source = nvml.open()
    identity = source.sweep()[3].identity

    nvml.write(nvml.node(8, "gpu 3 fail * 15\n"))
    with caplog.at_level(logging.WARNING):
        readings = source.sweep()
    lost = readings[3]
    assert lost.status is DeviceStatus.LOST
    assert lost.identity == identity
    assert "GPU is lost" in (lost.detail or "")
    assert lost.temperature_c is None and lost.utilization is None
    assert "ok -> lost" in caplog.text
    for i, reading in enumerate(readings):
        if i != 3:
            assert reading.status is DeviceStatus.OK
            assert reading.temperature_c == 40.0 + i

    assert source.sweep()[3].status is DeviceStatus.LOST, "still lost while NVML says so"
    nvml.write(nvml.node(8))
    assert source.sweep()[3].status is DeviceStatus.OK, "probed again every sweep"


def test_reset_required_is_its_own_status(nvml):
    nvml.write(nvml.node(2, "gpu 1 fail nvmlDeviceGetMemoryInfo 16\n"))
    readings = nvml.open().sweep()
    assert readings[1].status is DeviceStatus.RESET_REQUIRED
    assert "nvmlDeviceGetMemoryInfo" in (readings[1].detail or "")
    assert readings[0].status is DeviceStatus.OK


def test_unknown_error_three_sweeps_in_a_row_means_lost(nvml):
    nvml.write(nvml.node(2, "gpu 0 fail nvmlDeviceGetUtilizationRates 999\n"))
    source = nvml.open()
    sweeps = [source.sweep() for _ in range(3)]
    assert [s[0].status for s in sweeps] == [DeviceStatus.ERROR, DeviceStatus.ERROR, DeviceStatus.LOST]
    assert "Unknown Error" in (sweeps[0][0].detail or "")
    assert "3 sweeps in a row" in (sweeps[2][0].detail or "")
    assert all(s[1].status is DeviceStatus.OK for s in sweeps)

    nvml.write(nvml.node(2))
    assert source.sweep()[0].status is DeviceStatus.OK
    nvml.write(nvml.node(2, "gpu 0 fail nvmlDeviceGetUtilizationRates 999\n"))
    assert source.sweep()[0].status is DeviceStatus.ERROR, "a good sweep restarts the count"


@pytest.mark.parametrize("failure", ["gpu 0 fail nvmlDeviceGetFieldValues 15", "gpu 0 field_fail 145 15"])
def test_a_field_read_reporting_a_lost_gpu_marks_it_lost(nvml, failure):
    nvml.write(nvml.node(1, failure + "\n"))
    assert nvml.open().sweep()[0].status is DeviceStatus.LOST


def test_each_field_entry_return_code_is_checked(nvml, caplog):
    # 230 unknown to an older driver (INVALID_ARGUMENT), 82 not supported, 94 timed out this once.
    nvml.write(nvml.node(2, "gpu 0 field_fail 230 2\ngpu 0 field_fail 82 3\ngpu 0 field_fail 94 10\n"))
    source = nvml.open()
    with caplog.at_level(logging.WARNING):
        sweeps = [source.sweep()[0] for _ in range(3)]
    for reading in sweeps:
        assert reading.status is DeviceStatus.OK
        assert (reading.recovery_action, reading.memory_temperature_c, reading.pcie_replays) == (None, None, None)
        assert reading.ecc_corrected_aggregate == 0 and reading.nvlink_errors is not None
    assert nvml.calls("nvmlDeviceGetFieldValues#230", 0) == 1, "a field the driver does not know is dropped"
    assert nvml.calls("nvmlDeviceGetFieldValues#82", 0) == 1, "an unsupported field is dropped"
    assert nvml.calls("nvmlDeviceGetFieldValues#94", 0) == 3, "a field that failed once is asked again"
    assert nvml.calls("nvmlDeviceGetFieldValues#230", 1) == 3
    assert "field 94 failed: Timeout" in caplog.text
    assert "field 230" not in caplog.text and "field 82" not in caplog.text


def test_a_gpu_unreachable_at_open_keeps_a_placeholder_until_it_answers(nvml):
    nvml.write(nvml.node(2, "gpu 1 fail * 15\n"))
    source = nvml.open()
    assert source.devices[1].id == "nvml-index-1"
    assert source.sweep()[1].status is DeviceStatus.LOST

    nvml.write(nvml.node(2))
    reading = source.sweep()[1]
    assert reading.status is DeviceStatus.OK
    assert reading.identity.id == nvml.uuid(1)
    assert reading.temperature_c == 41.0


def test_another_error_loses_that_value_only_and_is_logged(nvml, caplog):
    nvml.write(nvml.node(1, "gpu 0 fail nvmlDeviceGetPowerUsage 10\n"))
    source = nvml.open()
    with caplog.at_level(logging.WARNING):
        reading = source.sweep()[0]
    assert reading.status is DeviceStatus.OK
    assert reading.power_w is None and reading.power_limit_w == pytest.approx(700.0)
    assert "nvmlDeviceGetPowerUsage failed" in caplog.text


@pytest.mark.parametrize("code", [3, 4], ids=["not_supported", "no_permission"])
def test_an_unsupported_function_is_skipped_quietly_and_never_called_again(nvml, caplog, code):
    nvml.write(nvml.node(3, f"gpu 2 fail nvmlDeviceGetTotalEnergyConsumption {code}\n"))
    source = nvml.open()
    with caplog.at_level(logging.INFO):
        sweeps = [source.sweep() for _ in range(3)]
    assert all(s[2].energy_j is None and s[2].status is DeviceStatus.OK for s in sweeps)
    assert all(s[0].energy_j == pytest.approx(123_456.789) for s in sweeps)
    assert nvml.calls("nvmlDeviceGetTotalEnergyConsumption", 2) == 1
    assert nvml.calls("nvmlDeviceGetTotalEnergyConsumption", 0) == 3
    assert caplog.text == ""


# -- throttling and memory errors ----------------------------------------------------------------------------


def test_thermal_throttling_reason_bits_are_decoded(nvml):
    nvml.write(nvml.node(2, "gpu 1 temp 89\ngpu 1 clock_reasons 0x64\n"))
    readings = nvml.open().sweep()
    assert readings[1].clock_event_reasons == {"sw_power_cap", "sw_thermal_slowdown", "hw_thermal_slowdown"}
    assert readings[1].temperature_c == 89.0
    assert readings[1].slowdown_temperature_c == 87.0
    assert readings[0].clock_event_reasons == frozenset()


def test_ecc_retired_pages_and_row_remap_errors(nvml):
    errors = """
gpu 0 field 3 1234 ull
gpu 0 field 4 2 ull
gpu 0 field 5 98765 ull
gpu 0 field 6 7 sll
gpu 0 field 29 12 ui
gpu 0 field 30 3 ul
gpu 0 field 31 1 ui
gpu 0 field 142 5 us
gpu 0 field 143 513 si
gpu 0 field 144 1 ui
gpu 0 field 145 1 ui
gpu 0 field 230 1 ui
"""  # later lines win: the double serves the last value a scenario gives
    nvml.write(nvml.node(1, errors))
    reading = nvml.open().sweep()[0]
    assert (reading.ecc_corrected_volatile, reading.ecc_uncorrected_volatile) == (1234, 2)
    assert (reading.ecc_corrected_aggregate, reading.ecc_uncorrected_aggregate) == (98765, 7)
    assert (reading.retired_pages_sbe, reading.retired_pages_dbe, reading.retired_pages_pending) == (12, 3, True)
    assert reading.remapped_rows_correctable == 5
    assert reading.remapped_rows_uncorrectable == 513
    assert reading.remapped_rows_pending is True and reading.remapped_rows_failure is True
    assert reading.recovery_action == 1


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_clock_event_reasons_name_every_bit(mask):
    names = decode_clock_event_reasons(mask)
    known = {name for bit, name in CLOCK_EVENT_REASONS.items() if mask & bit}
    assert known <= names
    unknown = {name for name in names if name.startswith("unknown_")}
    known_bits = sum(CLOCK_EVENT_REASONS)
    assert sum(int(name.removeprefix("unknown_"), 16) for name in unknown) == mask & ~known_bits
    assert names == known | unknown


@pytest.mark.parametrize(
    ("reported", "kernel"),
    [("00000000:3B:00.0", "0000:3b:00.0"), ("00000001:AF:1F.7", "0001:af:1f.7"), ("0000:04:00.0", "0000:04:00.0")],
)
def test_pci_bus_id_is_written_as_the_kernel_writes_it(reported, kernel):
    assert normalize_pci_bus_id(reported) == kernel


# -- opening -------------------------------------------------------------------------------------------------


def test_sources_share_nvml_by_reference_count(nvml):
    nvml.write(nvml.node(1))
    before = nvml.init_count()
    first = NvmlSource.open(str(nvml.library))
    with NvmlSource.open(str(nvml.library)) as second:
        assert nvml.init_count() == before + 2
        first.close()
        first.close()
        assert second.sweep()[0].status is DeviceStatus.OK
    assert nvml.init_count() == before
    with pytest.raises(RuntimeError, match="closed"):
        first.sweep()


def test_a_library_path_that_does_not_load_is_named(tmp_path):
    missing = tmp_path / "nvidia" / "libnvidia-ml.so.1"
    with pytest.raises(HardwareUnavailable) as raised:
        NvmlSource.open(str(missing))
    assert str(missing) in raised.value.reason
    assert "\n" not in raised.value.reason


def test_no_library_on_the_loader_path_names_what_was_tried():
    # In a fresh process: this one has the double loaded under the real library's soname.
    code = (
        "import ctypes\n"
        "from eagleeye_otel.errors import HardwareUnavailable\n"
        "from eagleeye_otel.receivers.hardware import NvmlSource\n"
        "try:\n    ctypes.CDLL('libnvidia-ml.so.1')\nexcept OSError:\n    pass\nelse:\n    raise SystemExit(3)\n"
        "try:\n    NvmlSource.open()\nexcept HardwareUnavailable as e:\n    print(e.reason)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    if result.returncode == 3:
        pytest.skip("a real libnvidia-ml.so.1 is installed here")
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.strip() == "NVML library not found (tried libnvidia-ml.so.1 on the dynamic loader's search path)"
    )


def test_driver_not_loaded(nvml):
    nvml.write("fail nvmlInitWithFlags 9\n")
    with pytest.raises(HardwareUnavailable, match="NVIDIA driver not loaded"):
        nvml.open()


def test_no_gpu_is_unavailable_and_releases_nvml(nvml):
    nvml.write("count 0\n")
    with pytest.raises(HardwareUnavailable, match="no GPU"):
        nvml.open()
    assert nvml.calls("nvmlShutdown") == 1
