"""DcmiSource and its ctypes binding against a C double of libdcmi.so (built by the ``dcmi_library`` fixture)."""

from __future__ import annotations

import ctypes.util
import logging
import os
import shutil
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eagleeye_otel.errors import EagleEyeError, HardwareUnavailable
from eagleeye_otel.receivers.hardware import DcmiSource
from eagleeye_otel.receivers.hardware._dcmi_binding import LIBRARY_DIRS, DcmiCallError, DcmiLibrary
from eagleeye_otel.receivers.hardware._model import DeviceStatus, NpuReading

MIB = 1024 * 1024


def chip_lines(card: int, device: int, logic_id: int, **values: object) -> str:
    """A healthy 910B3 chip whose values differ by logic id; ``values`` override or add ``key -> value`` lines."""
    lines = {
        "logic_id": logic_id,
        "health": 0,
        "temperature": 40 + logic_id,
        "power": 900 + 10 * logic_id,
        "utilization 2": 10 + logic_id,
        "utilization 6": 20 + logic_id,
        "utilization 13": 30 + logic_id,
        "hbm": f"65536 {1024 * (logic_id + 1)}",
        "frequency 7": 1600 + logic_id,
        "chip_info": "Ascend 910B3 V1 20",
    }
    lines.update(
        {
            key.replace("_", " ") if key.startswith(("utilization", "frequency")) else key: value
            for key, value in values.items()
        }
    )
    return "".join(f"chip {card} {device} {key} {value}\n" for key, value in lines.items() if value is not None)


def node(cards: int, chips_per_card: int, **overrides: dict[str, object]) -> str:
    """``driver_version`` plus ``cards`` x ``chips_per_card`` healthy chips; ``overrides["c<card>d<dev>"]`` per chip."""
    text = "driver_version 24.1.rc2\n"
    for card in range(cards):
        for device in range(chips_per_card):
            extra = overrides.get(f"c{card}d{device}", {})
            text += chip_lines(card, device, card * chips_per_card + device, **extra)
    return text


def by_id(readings: tuple[NpuReading, ...]) -> dict[str, NpuReading]:
    return {reading.identity.id: reading for reading in readings}


@pytest.fixture
def open_source(dcmi_library, dcmi_scenario):
    """``open_source(scenario_text)``: write the scenario, then open a DcmiSource on the double."""

    def open_(text: str, **kwargs) -> DcmiSource:
        dcmi_scenario(text)
        return DcmiSource.open(str(dcmi_library), **kwargs)

    return open_


@pytest.mark.parametrize(("cards", "chips_per_card"), [(2, 4), (8, 1)])
def test_healthy_eight_chip_node_in_si_units(open_source, cards, chips_per_card):
    readings = open_source(node(cards, chips_per_card)).sweep()

    assert [(r.card_id, r.device_id) for r in readings] == [
        (card, device) for card in range(cards) for device in range(chips_per_card)
    ]
    for logic_id, reading in enumerate(readings):
        identity = reading.identity
        assert identity.id == f"npu-{reading.card_id}-{reading.device_id}"
        assert (identity.type, identity.vendor, identity.index) == ("npu", "huawei", logic_id)
        assert identity.model == "Ascend910B3"
        assert identity.driver_version == "24.1.rc2"
        assert identity.firmware_version is None
        assert reading.status is DeviceStatus.OK
        assert reading.detail is None
        assert reading.health == 0
        assert reading.error_codes == ()
        assert reading.temperature_c == 40.0 + logic_id
        assert reading.power_w == pytest.approx(90.0 + logic_id)  # 0.1 W units
        assert reading.aicore_utilization == pytest.approx((10 + logic_id) / 100)
        assert reading.hbm_utilization == pytest.approx((20 + logic_id) / 100)
        assert reading.npu_utilization == pytest.approx((30 + logic_id) / 100)
        assert reading.hbm_total_bytes == 64 * 1024 * MIB
        assert reading.hbm_used_bytes == (logic_id + 1) * 1024 * MIB
        assert reading.aicore_frequency_hz == (1600 + logic_id) * 1_000_000


def test_health_alarms_and_error_codes_are_reported_as_ints(open_source):
    text = node(1, 3) + (
        "chip 0 1 health 2\n"
        "chip 0 1 errorcode 0x80E01801\n"
        "chip 0 1 errorcode 0x80C98000\n"
        "chip 0 2 health 3\n"
        "chip 0 2 errorcode 2162263042\n"  # 0x80E18402, given in decimal
    )
    readings = by_id(open_source(text).sweep())

    assert readings["npu-0-0"].health == 0
    assert readings["npu-0-0"].error_codes == ()
    assert readings["npu-0-1"].health == 2
    assert readings["npu-0-1"].error_codes == (0x80E01801, 0x80C98000)
    assert readings["npu-0-2"].health == 3
    assert readings["npu-0-2"].error_codes == (0x80E18402,)
    assert all(r.status is DeviceStatus.OK for r in readings.values())  # an alarm is a reading, not a failure


def test_absent_chip_is_lost_and_not_queried_while_the_others_read(open_source):
    # The absent chip would hang on its next call: the sweep must stop asking it after its health.
    text = node(1, 4, c0d2={"health": "0xFFFFFFFF"}) + "chip 0 2 hang dcmi_get_device_temperature 3000\n"
    source = open_source(text)

    started = time.monotonic()
    readings = by_id(source.sweep())

    assert time.monotonic() - started < 2
    lost = readings["npu-0-2"]
    assert lost.status is DeviceStatus.LOST
    assert "absent" in (lost.detail or "")
    assert lost.health is None
    assert lost.temperature_c is None
    for chip_id in ("npu-0-0", "npu-0-1", "npu-0-3"):
        assert readings[chip_id].status is DeviceStatus.OK
        assert readings[chip_id].temperature_c is not None


def test_hung_call_delays_but_does_not_break_the_sweep(open_source):
    source = open_source(node(1, 2) + "chip 0 1 hang dcmi_get_device_power_info 200\n")

    started = time.monotonic()
    readings = by_id(source.sweep())

    assert time.monotonic() - started >= 0.2
    assert readings["npu-0-1"].power_w == pytest.approx(91.0)


def test_function_failing_on_one_chip_skips_that_field_only(open_source, dcmi_scenario, caplog):
    source = open_source(node(1, 4) + "chip 0 1 fail dcmi_get_device_temperature -8005\n")

    with caplog.at_level(logging.WARNING):
        readings = by_id(source.sweep())

    failing = readings["npu-0-1"]
    assert failing.status is DeviceStatus.OK
    assert failing.temperature_c is None
    assert failing.detail == "dcmi_get_device_temperature returned -8005"
    assert failing.power_w == pytest.approx(91.0)
    assert [readings[f"npu-0-{d}"].temperature_c for d in (0, 2, 3)] == [40.0, 42.0, 43.0]
    assert "npu-0-1: dcmi_get_device_temperature returned -8005" in caplog.text

    dcmi_scenario(node(1, 4))  # a transient failure: asked again next sweep
    assert by_id(source.sweep())["npu-0-1"].temperature_c == 41.0


def test_every_failed_call_is_named_in_the_detail(open_source):
    text = node(1, 1) + (
        "chip 0 0 fail dcmi_get_device_utilization_rate -8005\n"
        "chip 0 0 fail dcmi_get_device_frequency -8009\n"
        "chip 0 0 fail dcmi_get_device_errorcode_v2 -8006\n"
    )
    reading = open_source(text).sweep()[0]

    assert reading.status is DeviceStatus.OK
    assert (reading.aicore_utilization, reading.hbm_utilization, reading.npu_utilization) == (None, None, None)
    assert reading.aicore_frequency_hz is None
    assert reading.error_codes == ()
    assert reading.detail == "; ".join(
        [
            "dcmi_get_device_errorcode_v2 returned -8006",
            "dcmi_get_device_utilization_rate(2) returned -8005",
            "dcmi_get_device_utilization_rate(6) returned -8005",
            "dcmi_get_device_utilization_rate(13) returned -8005",
            "dcmi_get_device_frequency(7) returned -8009",
        ]
    )
    assert reading.temperature_c == 40.0


@pytest.mark.parametrize("code", [-8255, -8013])
def test_unsupported_function_is_not_asked_again(open_source, dcmi_scenario, code):
    source = open_source(node(1, 2) + f"chip 0 0 fail dcmi_get_device_hbm_info {code}\n")

    first = by_id(source.sweep())
    assert first["npu-0-0"].hbm_total_bytes is None
    assert first["npu-0-0"].detail is None  # unsupported is not a failure
    assert first["npu-0-1"].hbm_total_bytes == 64 * 1024 * MIB

    dcmi_scenario(node(1, 2))  # the library would now answer, but the source no longer asks this chip
    second = by_id(source.sweep())
    assert second["npu-0-0"].hbm_total_bytes is None
    assert second["npu-0-1"].hbm_total_bytes == 64 * 1024 * MIB


def test_values_the_chip_lacks_are_none(open_source):
    # An inference chip without HBM and without the overall NPU utilisation type (the double answers -8255).
    text = node(1, 1, c0d0={"hbm": None, "utilization_13": None, "utilization_6": None})
    reading = open_source(text).sweep()[0]

    assert reading.status is DeviceStatus.OK
    assert (reading.hbm_total_bytes, reading.hbm_used_bytes) == (None, None)
    assert (reading.npu_utilization, reading.hbm_utilization) == (None, None)
    assert reading.aicore_utilization == pytest.approx(0.10)


@pytest.mark.parametrize(
    ("code", "status"), [(-8005, DeviceStatus.ERROR), (-8006, DeviceStatus.ERROR), (-8008, DeviceStatus.LOST)]
)
def test_chip_that_cannot_answer_its_health_is_not_read_further(open_source, code, status):
    readings = by_id(open_source(node(1, 2) + f"chip 0 1 fail dcmi_get_device_health {code}\n").sweep())

    failed = readings["npu-0-1"]
    assert failed.status is status
    assert failed.detail == f"dcmi_get_device_health returned {code}"
    assert (failed.health, failed.temperature_c, failed.power_w) == (None, None, None)
    assert readings["npu-0-0"].status is DeviceStatus.OK


def test_chip_no_longer_listed_is_lost_until_it_returns(open_source, dcmi_scenario):
    source = open_source(node(1, 2))
    assert len(source.sweep()) == 2

    dcmi_scenario(node(1, 2) + "card 0 devices 1\n")
    readings = by_id(source.sweep())
    assert readings["npu-0-1"].status is DeviceStatus.LOST
    assert readings["npu-0-1"].detail == "no longer listed by DCMI"
    assert readings["npu-0-1"].identity.index == 1  # remembered from when it was seen
    assert readings["npu-0-1"].identity.model == "Ascend910B3"
    assert readings["npu-0-0"].status is DeviceStatus.OK

    dcmi_scenario(node(1, 2))
    assert {r.status for r in source.sweep()} == {DeviceStatus.OK}


def test_card_that_cannot_be_enumerated_marks_its_known_chips_error(open_source, dcmi_scenario):
    source = open_source(node(2, 2))
    source.sweep()

    dcmi_scenario(node(2, 2) + "card 1 fail dcmi_get_device_num_in_card -8005\n")
    readings = by_id(source.sweep())

    assert [readings[f"npu-1-{d}"].status for d in (0, 1)] == [DeviceStatus.ERROR] * 2
    assert readings["npu-1-0"].detail == "dcmi_get_device_num_in_card returned -8005"
    assert [readings[f"npu-0-{d}"].status for d in (0, 1)] == [DeviceStatus.OK] * 2


def test_card_list_failure_marks_every_known_chip_error(open_source, dcmi_scenario):
    source = open_source(node(1, 2))
    source.sweep()

    dcmi_scenario(node(1, 2) + "fail dcmi_get_card_list -8009\n")
    readings = source.sweep()

    assert [(r.identity.id, r.status) for r in readings] == [
        ("npu-0-0", DeviceStatus.ERROR),
        ("npu-0-1", DeviceStatus.ERROR),
    ]
    assert readings[0].detail == "dcmi_get_card_list returned -8009"


def test_identity_is_retried_until_read(open_source, dcmi_scenario):
    source = open_source(
        node(1, 1)
        + "chip 0 0 fail dcmi_get_device_logic_id -8005\n"
        + "chip 0 0 fail dcmi_get_device_chip_info -8005\n"
    )
    first = source.sweep()[0]
    assert (first.identity.index, first.identity.model) == (-1, None)
    assert first.status is DeviceStatus.OK
    assert first.temperature_c == 40.0

    dcmi_scenario(node(1, 1))
    second = source.sweep()[0]
    assert (second.identity.index, second.identity.model) == (0, "Ascend910B3")


def test_sweep_never_raises():
    class Broken:
        def card_list(self):
            raise ValueError("a bug")

    assert DcmiSource(Broken()).sweep() == ()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    temperature=st.integers(-40, 150),
    power=st.integers(0, 2**31 - 1),
    percent=st.integers(0, 100),
    hbm_mb=st.integers(0, 2**40),
    mhz=st.integers(0, 2**32 - 1),
)
def test_units_are_converted_exactly(open_source, temperature, power, percent, hbm_mb, mhz):
    values = {
        "temperature": temperature,
        "power": power,
        "utilization_2": percent,
        "hbm": f"{hbm_mb} {hbm_mb // 2}",
        "frequency_7": mhz,
    }
    reading = open_source(node(1, 1, c0d0=values)).sweep()[0]

    assert reading.temperature_c == float(temperature)
    assert reading.power_w == power / 10
    assert reading.aicore_utilization == percent / 100
    assert reading.hbm_total_bytes == hbm_mb * MIB
    assert reading.hbm_used_bytes == hbm_mb // 2 * MIB
    assert reading.aicore_frequency_hz == mhz * 1e6


# -- opening ---------------------------------------------------------------------------------------------


def test_missing_library_names_every_path_tried():
    with pytest.raises(HardwareUnavailable) as raised:
        DcmiSource.open()

    message = str(raised.value)
    assert "\n" not in message
    assert "libdcmi.so" in message
    for directory in LIBRARY_DIRS:
        assert f"{directory}/libdcmi.so" in message
    assert isinstance(raised.value, EagleEyeError)


def test_configured_library_path_is_the_only_one_tried(tmp_path):
    missing = tmp_path / "elsewhere" / "libdcmi.so"
    with pytest.raises(HardwareUnavailable, match="tried") as raised:
        DcmiSource.open(str(missing))

    assert str(missing) in str(raised.value)
    assert "/usr/local/dcmi" not in str(raised.value)


def test_configured_library_that_is_not_a_library_says_why(tmp_path):
    impostor = tmp_path / "libdcmi.so"
    impostor.write_text("not an ELF file")

    with pytest.raises(HardwareUnavailable) as raised:
        DcmiSource.open(str(impostor))

    assert str(impostor) in str(raised.value)
    assert "(" in str(raised.value)  # the loader's reason follows the path


def test_default_search_finds_the_library_on_the_loader_path(dcmi_library, dcmi_scenario):
    dcmi_scenario(node(1, 1))
    script = "from eagleeye_otel.receivers.hardware import DcmiSource; print(DcmiSource.open().sweep()[0].power_w)"
    env = {**os.environ, "LD_LIBRARY_PATH": str(dcmi_library.parent)}  # read by the loader at process start

    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)

    assert result.stdout.strip() == "90.0"


def test_library_with_a_missing_dependency_names_the_dependency(tmp_path):
    gcc = shutil.which("gcc")
    assert gcc is not None
    (tmp_path / "dep.c").write_text("int ascend_dependency(void) { return 0; }\n")
    (tmp_path / "dcmi.c").write_text(
        "int ascend_dependency(void);\nint dcmi_init(void) { return ascend_dependency(); }\n"
    )
    subprocess.run([gcc, "-shared", "-fPIC", "-o", tmp_path / "libascend_dep.so", tmp_path / "dep.c"], check=True)
    library = tmp_path / "libdcmi.so"
    subprocess.run(
        [gcc, "-shared", "-fPIC", "-o", library, tmp_path / "dcmi.c", f"-L{tmp_path}", "-lascend_dep"], check=True
    )
    (tmp_path / "libascend_dep.so").unlink()

    with pytest.raises(HardwareUnavailable, match=r"libascend_dep\.so"):
        DcmiSource.open(str(library))


def test_library_without_dcmi_functions_is_refused():
    libc = ctypes.util.find_library("c")
    assert libc is not None
    with pytest.raises(HardwareUnavailable, match="has no dcmi_init"):
        DcmiSource.open(libc)


def test_init_failure_is_unavailable(open_source):
    with pytest.raises(HardwareUnavailable, match="dcmi_init returned -8005"):
        open_source(node(1, 1) + "fail dcmi_init -8005\n")


def test_node_without_cards_is_unavailable(open_source):
    with pytest.raises(HardwareUnavailable, match="no NPU card"):
        open_source("driver_version 24.1.rc2\n")


def test_driver_version_falls_back_to_version_info(open_source, tmp_path):
    version_info = tmp_path / "host" / "usr/local/Ascend/driver/version.info"
    version_info.parent.mkdir(parents=True)
    version_info.write_text("Version=24.1.rc3\nascendhal_version=7.35.23\n")
    text = node(1, 1).replace("driver_version 24.1.rc2\n", "")

    source = open_source(text, root_path=str(tmp_path / "host"))
    assert source.sweep()[0].identity.driver_version == "24.1.rc3"

    assert open_source(text, root_path=str(tmp_path / "nowhere")).sweep()[0].identity.driver_version is None


def test_binding_reports_calls_by_name_and_code(dcmi_library, dcmi_scenario):
    dcmi_scenario(node(1, 1) + "chip 0 0 fail dcmi_get_device_power_info -8006\n")
    library = DcmiLibrary.load(str(dcmi_library))
    library.init()

    with pytest.raises(DcmiCallError) as raised:
        library.power(0, 0)
    assert (raised.value.function, raised.value.code, raised.value.unsupported) == (
        "dcmi_get_device_power_info",
        -8006,
        False,
    )
    with pytest.raises(DcmiCallError) as raised:
        library.temperature(0, 5)  # no such chip
    assert raised.value.code == -8007
    assert library.card_list() == (0,)
    assert library.device_num_in_card(0) == 1
    assert library.chip_info(0, 0).aicore_cnt == 20
