"""HardwareMonitor in-process on the C doubles: what opens, what a sweep holds, the instruments' points."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from eagleeye_otel.receivers.hardware._instruments import register_hardware_metrics
from eagleeye_otel.receivers.hardware._model import DeviceStatus, Sweep
from eagleeye_otel.receivers.hardware._monitor import NO_ACCELERATOR, HardwareMonitor
from eagleeye_otel.semconv import _hardware as hw
from eagleeye_otel.settings import HardwareSettings

IDENTIFYING = {*hw.DEVICE_ATTRIBUTES, *hw.DEVICE_DESCRIPTION_ATTRIBUTES}


def collected_points(reader: InMemoryMetricReader) -> dict[tuple[str, str | None, frozenset], float]:
    """The reader's points keyed like the scenario's ``expected_points``."""
    points = {}
    data = reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data is not None else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    attributes = dict(point.attributes)
                    device = attributes.get(hw.HW_ID)
                    if device is not None:
                        attributes = {k: v for k, v in attributes.items() if k not in IDENTIFYING}
                    points[metric.name, device, frozenset(attributes.items())] = float(point.value)
    return points


def sweep_until(monitor: HardwareMonitor, done, timeout_s: float = 10.0) -> Sweep:
    deadline = time.monotonic() + timeout_s
    while True:
        sweep = monitor.sweep()
        if done(sweep) or time.monotonic() > deadline:
            return sweep
        time.sleep(0.05)


@pytest.fixture
def monitor(doubles):
    with HardwareMonitor.open(HardwareSettings.from_env(doubles.env), follow=False) as opened:
        yield opened


def test_every_source_opens_on_the_doubles(monitor, scenario):
    assert monitor.notes == ()
    sweep = monitor.sweep()
    assert sweep.node == scenario.NODE
    assert [gpu.identity.id for gpu in sweep.gpus] == [gpu["uuid"] for gpu in scenario.GPUS]
    assert [npu.identity.id for npu in sweep.npus] == [f"npu-{card}-{device}" for card, device in scenario.CHIPS]
    assert sweep.kernel_log is not None and sweep.kernel_log.lines == 4


def test_the_instruments_report_every_value_of_the_scenario(monitor, doubles, scenario):
    started = time.time()
    reader = InMemoryMetricReader()
    register_hardware_metrics(MeterProvider(metric_readers=[reader], shutdown_on_exit=False), monitor.sweep)
    sweep_until(monitor, lambda sweep: sweep.gpus[1].xid_counts)  # the event thread has counted the Xid
    points, times = scenario.split_times(collected_points(reader))
    assert points == pytest.approx(scenario.expected_points())
    assert set(times) == scenario.expected_times()
    assert all(started - 60 <= seen <= time.time() for seen in times.values()), times  # read at open, or since

    doubles.lose(frozenset({2}))
    lost = sweep_until(monitor, lambda sweep: sweep.gpus[2].status is DeviceStatus.LOST)
    assert [gpu.status for gpu in lost.gpus] == [DeviceStatus.OK, DeviceStatus.OK, DeviceStatus.LOST]
    time.sleep(0.6)  # past the sweep cache's sharing window: the next collection takes a new sweep
    points, later = scenario.split_times(collected_points(reader))
    assert points == pytest.approx(scenario.expected_points(lost=frozenset({2})))
    assert later == times  # no new event: the times stay


def test_status_points_carry_the_description(monitor, scenario):
    gpu = scenario.GPUS[1]
    reader = InMemoryMetricReader()
    register_hardware_metrics(MeterProvider(metric_readers=[reader], shutdown_on_exit=False), monitor.sweep)
    data = reader.get_metrics_data()
    assert data is not None
    (status,) = [m for m in data.resource_metrics[0].scope_metrics[0].metrics if m.name == hw.HW_STATUS]
    ok = {
        p.attributes[hw.HW_ID]: dict(p.attributes) for p in status.data.data_points if p.attributes[hw.HW_STATE] == "ok"
    }
    assert ok[gpu["uuid"]] == {
        hw.HW_ID: gpu["uuid"],
        hw.HW_NAME: "GPU 1",
        hw.HW_TYPE: "gpu",
        hw.HW_VENDOR: "nvidia",
        hw.HW_MODEL: "NVIDIA H100 80GB HBM3",
        hw.HW_SERIAL_NUMBER: gpu["serial"],
        hw.HW_DRIVER_VERSION: "570.124.06",
        hw.HW_FIRMWARE_VERSION: "96.00.99.00.01",
        hw.EAGLEEYE_HW_PCI_BUS_ID: "0000:3c:00.0",
        hw.HW_STATE: "ok",
    }
    assert ok["npu-0-1"] == {
        hw.HW_ID: "npu-0-1",
        hw.HW_NAME: "NPU 1",
        hw.HW_TYPE: "npu",
        hw.HW_VENDOR: "huawei",
        hw.HW_MODEL: "Ascend910B3",
        hw.HW_DRIVER_VERSION: "24.1.rc2",
        hw.HW_STATE: "ok",
    }


def test_a_source_failing_during_a_sweep_is_left_out(monitor, monkeypatch, caplog, scenario):
    def explode() -> tuple[()]:
        raise RuntimeError("DCMI exploded")

    monkeypatch.setattr(monitor.dcmi, "sweep", explode)
    sweep = monitor.sweep()
    assert len(sweep.gpus) == len(scenario.GPUS) and sweep.npus == ()
    assert "DCMI read failed" in caplog.text


def test_each_missing_source_is_one_line_and_the_node_is_still_reported(tmp_path: Path):
    not_a_library = tmp_path / "libnot.so"
    not_a_library.write_bytes(b"not an ELF file")
    settings = HardwareSettings(
        node_name="cpu-node", nvml_library=not_a_library, dcmi_library=not_a_library, kernel_log="off"
    )
    with HardwareMonitor.open(settings) as monitor:
        sweep = monitor.sweep()
    assert (sweep.node, sweep.gpus, sweep.npus, sweep.kernel_log) == ("cpu-node", (), (), None)
    nvml, dcmi, kernel_log, none = sweep.notes
    assert nvml.startswith("NVML") and str(not_a_library) in nvml
    assert dcmi.startswith("DCMI") and str(not_a_library) in dcmi
    assert kernel_log == "kernel log: off (EAGLEEYE_KERNEL_LOG=off)"
    assert none == NO_ACCELERATOR
    assert all("\n" not in note for note in sweep.notes)
