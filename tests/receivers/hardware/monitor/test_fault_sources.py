"""The monitor under driver faults, in-process on the C doubles: a hung call, a failing call, a missing library.

Each fault is written into a double's scenario while the monitor runs. The claim is the same every time: the faulty
device or source is reported for what it is (a status, never an exception), and everything else is read as before.
A hang (a call that sleeps until the test rewrites the scenario) costs one parked reader thread and one deadline:
later sweeps do not call into the stuck device again and start no new thread, and once the call returns the device
is read again and the thread is gone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from eagleeye_otel.receivers.hardware._deadline import DEFAULT_CALL_DEADLINE_S
from eagleeye_otel.receivers.hardware._model import DeviceStatus, SourceState, Sweep
from eagleeye_otel.receivers.hardware._monitor import HardwareMonitor
from eagleeye_otel.receivers.hardware._status import pci_devices_of
from eagleeye_otel.settings import HardwareSettings


def readers(library: str) -> int:
    """Reader threads of ``library`` alive now (the live one plus one per stuck call)."""
    return sum(1 for thread in threading.enumerate() if thread.name == f"eagle-eye-{library}-reader")


def until(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def timed_sweep(monitor: HardwareMonitor) -> tuple[Sweep, float]:
    began = time.monotonic()
    sweep = monitor.sweep()
    return sweep, time.monotonic() - began


def assert_the_rest_is_read(sweep: Sweep, scenario, *, gpus: set[int], chips: set[str]) -> None:
    """The GPUs in ``gpus`` and the chips in ``chips`` answered with their scenario values; the kernel log too."""
    for i in gpus:
        gpu = sweep.gpus[i]
        assert gpu.status is DeviceStatus.OK, gpu
        assert gpu.temperature_c == scenario.GPUS[i]["temp"]
        assert gpu.power_w == scenario.GPUS[i]["power_mw"] / 1000
    by_id = {npu.identity.id: npu for npu in sweep.npus}
    for chip in chips:
        card, device = (int(part) for part in chip.split("-")[1:])
        assert by_id[chip].status is DeviceStatus.OK, by_id[chip]
        assert by_id[chip].temperature_c == scenario.CHIPS[card, device]["temperature"]
    assert sweep.kernel_log is not None and sweep.kernel_log.lines == 4


@pytest.fixture
def monitor(doubles):
    with HardwareMonitor.open(HardwareSettings.from_env(doubles.env), follow=False) as opened:
        assert opened.notes == ()
        yield opened


def test_a_dcmi_call_that_hangs_parks_one_thread_and_the_chip_is_reported_hung(monitor, dcmi_scenario, scenario):
    monitor.sweep()
    assert readers("dcmi") == 1
    dcmi_scenario(scenario.dcmi_text() + "chip 0 1 hang dcmi_get_device_temperature -1\n")

    sweep, waited = timed_sweep(monitor)
    hung = sweep.npus[1]
    assert hung.identity.id == "npu-0-1" and hung.status is DeviceStatus.HUNG
    assert "dcmi_get_device_temperature has not returned" in (hung.detail or "")
    assert_the_rest_is_read(sweep, scenario, gpus={0, 1, 2}, chips={"npu-0-0"})
    assert sweep.sources["dcmi"].state is SourceState.OK
    assert monitor.dcmi is not None and monitor.dcmi.stuck == {"npu-0-1": "dcmi_get_device_temperature"}

    for _ in range(3):  # the stuck chip is not asked again: no new thread, no wait
        sweep, later = timed_sweep(monitor)
        assert sweep.npus[1].status is DeviceStatus.HUNG
        assert_the_rest_is_read(sweep, scenario, gpus={0, 1, 2}, chips={"npu-0-0"})
        assert readers("dcmi") == 2  # the parked one, and the one reading the others
    deadline_ms = DEFAULT_CALL_DEADLINE_S * 1e3
    print(f"first hung sweep {waited * 1e3:.0f} ms (deadline {deadline_ms:.0f} ms), later ones {later * 1e3:.0f} ms")

    dcmi_scenario(scenario.dcmi_text())  # the call returns
    until(lambda: monitor.sweep().npus[1].status is DeviceStatus.OK)
    assert_the_rest_is_read(monitor.sweep(), scenario, gpus={0, 1, 2}, chips={"npu-0-0", "npu-0-1"})
    until(lambda: readers("dcmi") == 1)


def test_dcmi_card_list_that_hangs_reports_every_chip_hung_and_the_gpus_are_still_read(
    monitor, dcmi_scenario, scenario
):
    monitor.sweep()
    dcmi_scenario(scenario.dcmi_text() + "hang dcmi_get_card_list -1\n")
    for _ in range(3):
        sweep = monitor.sweep()
        assert [npu.status for npu in sweep.npus] == [DeviceStatus.HUNG, DeviceStatus.HUNG]
        assert sweep.sources["dcmi"].state is SourceState.HUNG
        assert "dcmi_get_card_list" in (sweep.sources["dcmi"].detail or "")
        assert_the_rest_is_read(sweep, scenario, gpus={0, 1, 2}, chips=set())
    assert readers("dcmi") == 1  # the parked one only: with the card list stuck, nothing else is asked of DCMI

    dcmi_scenario(scenario.dcmi_text())
    until(lambda: monitor.sweep().sources["dcmi"].state is SourceState.OK)
    assert_the_rest_is_read(monitor.sweep(), scenario, gpus={0, 1, 2}, chips={"npu-0-0", "npu-0-1"})


def test_a_dcmi_call_that_fails_marks_that_chip_only(monitor, dcmi_scenario, scenario):
    dcmi_scenario(scenario.dcmi_text() + "chip 0 0 fail dcmi_get_device_health -8005\n")
    sweep = monitor.sweep()
    assert sweep.npus[0].status is DeviceStatus.ERROR and "-8005" in (sweep.npus[0].detail or "")
    assert sweep.npus[1].status is DeviceStatus.OK and sweep.npus[1].health == 2
    assert_the_rest_is_read(sweep, scenario, gpus={0, 1, 2}, chips=set())


def test_an_nvml_call_that_hangs_on_one_gpu_leaves_the_others_read(monitor, nvml_scenario, scenario):
    monitor.sweep()
    nvml_scenario(scenario.nvml_text() + "gpu 1 hang nvmlDeviceGetPowerUsage -1\n")
    for _ in range(3):
        sweep = monitor.sweep()
        assert [gpu.status for gpu in sweep.gpus] == [DeviceStatus.OK, DeviceStatus.HUNG, DeviceStatus.OK]
        assert "nvmlDeviceGetPowerUsage" in (sweep.gpus[1].detail or "")
        assert_the_rest_is_read(sweep, scenario, gpus={0, 2}, chips={"npu-0-0", "npu-0-1"})
    assert readers("nvml") == 2

    nvml_scenario(scenario.nvml_text())
    until(lambda: monitor.sweep().gpus[1].status is DeviceStatus.OK)
    assert_the_rest_is_read(monitor.sweep(), scenario, gpus={0, 1, 2}, chips={"npu-0-0", "npu-0-1"})
    until(lambda: readers("nvml") == 1)


def test_a_lost_gpu_leaves_the_others_read(monitor, doubles, scenario):
    doubles.lose(frozenset({0}))
    sweep = monitor.sweep()
    assert sweep.gpus[0].status is DeviceStatus.LOST
    assert_the_rest_is_read(sweep, scenario, gpus={1, 2}, chips={"npu-0-0", "npu-0-1"})


@pytest.mark.parametrize("broken", ["nvml", "dcmi"])
def test_a_library_that_does_not_load_is_unavailable_and_the_other_backend_is_read(doubles, scenario, tmp_path, broken):
    not_a_library = tmp_path / "lib.so"
    not_a_library.write_bytes(b"not an ELF file")
    key = {"nvml": "EAGLEEYE_NVML_LIBRARY", "dcmi": "EAGLEEYE_DCMI_LIBRARY"}[broken]
    settings = HardwareSettings.from_env({**doubles.env, key: str(not_a_library)})
    with HardwareMonitor.open(settings, follow=False) as monitor:
        sweep = monitor.sweep()
    status = sweep.sources[broken]
    assert (status.state, status.cause) == (SourceState.UNAVAILABLE, "library_not_loadable")
    assert str(not_a_library) in (status.detail or "")
    if broken == "nvml":
        assert sweep.gpus == ()
        assert_the_rest_is_read(sweep, scenario, gpus=set(), chips={"npu-0-0", "npu-0-1"})
    else:
        assert sweep.npus == ()
        assert_the_rest_is_read(sweep, scenario, gpus={0, 1, 2}, chips=set())
    other = "dcmi" if broken == "nvml" else "nvml"
    assert sweep.sources[other].state is SourceState.OK and sweep.sources["kernel_log"].state is SourceState.OK


def pci_tree(root: Path, devices: dict[str, tuple[str, str]]) -> Path:
    """A host root whose sysfs lists these PCI devices: address -> (vendor, class)."""
    for address, (vendor, pci_class) in devices.items():
        folder = root / "sys/bus/pci/devices" / address
        folder.mkdir(parents=True)
        (folder / "vendor").write_text(vendor + "\n")
        (folder / "class").write_text(pci_class + "\n")
    return root


@pytest.mark.parametrize(
    ("bus", "state"),
    [
        ({"0000:3b:00.0": ("0x19e5", "0x120000")}, SourceState.UNAVAILABLE),  # an Ascend chip on the bus
        ({"0000:3b:00.0": ("0x19e5", "0x020000"), "0000:18:00.0": ("0x10de", "0x030200")}, SourceState.ABSENT),
    ],
)
def test_a_missing_library_is_a_fault_only_where_the_pci_bus_has_the_devices(tmp_path, bus, state):
    root = pci_tree(tmp_path / "host", bus)
    settings = HardwareSettings(
        node_name="node-x", dcmi_library=tmp_path / "nowhere/libdcmi.so", kernel_log="off", host_root=root
    )
    with HardwareMonitor.open(settings) as monitor:
        dcmi = monitor.sweep().sources["dcmi"]
    assert (dcmi.state, dcmi.cause) == (state, "library_not_found")
    assert pci_devices_of("dcmi", root) == (["0000:3b:00.0"] if state is SourceState.UNAVAILABLE else [])
    assert pci_devices_of("nvml", root) == ([] if state is SourceState.UNAVAILABLE else ["0000:18:00.0"])
