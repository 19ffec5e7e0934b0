"""Hardware instruments from hand-built sweeps: names, units, attributes, values; one sweep per collection."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry

from eagleeye_otel.receivers.hardware import _points
from eagleeye_otel.receivers.hardware._instruments import gpu_state, npu_state, register_hardware_metrics
from eagleeye_otel.receivers.hardware._model import (
    DeviceIdentity,
    DeviceStatus,
    GpuReading,
    Sweep,
)
from eagleeye_otel.semconv import _hardware as hw
from tests.receivers.hardware.sweeps import ASCEND, GPU, H100, LOST, NPU, SWEEP

_IDENTIFYING = {*hw.DEVICE_ATTRIBUTES, *hw.DEVICE_DESCRIPTION_ATTRIBUTES}

Points = dict[str, dict[frozenset[tuple[str, object]], float]]


def _provider(reader: InMemoryMetricReader) -> MeterProvider:
    return MeterProvider(metric_readers=[reader], shutdown_on_exit=False)


def _collect(reader: InMemoryMetricReader) -> tuple[Points, dict[str, str]]:
    points: Points = {}
    units: dict[str, str] = {}
    data = reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data is not None else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                units[metric.name] = metric.unit
                points[metric.name] = {
                    frozenset(point.attributes.items()): point.value for point in metric.data.data_points
                }
    return points, units


def _registered(sweep: Sweep, *, max_age_s: float = 0.0) -> tuple[InMemoryMetricReader, list[int]]:
    reader = InMemoryMetricReader()
    calls = [0]

    def take() -> Sweep:
        calls[0] += 1
        return sweep

    register_hardware_metrics(_provider(reader), take, max_age_s=max_age_s)
    return reader, calls


def _of(points: Points, name: str, identity: DeviceIdentity | None, **extra: object) -> float:
    """The value of ``name`` for the device (its id), with exactly these extra attributes."""
    for attributes, value in points[name].items():
        named = dict(attributes)
        if identity is not None and named.pop(hw.HW_ID, None) != identity.id:
            continue
        rest = named if identity is None else {k: v for k, v in named.items() if k not in _IDENTIFYING}
        if rest == extra:
            return value
    raise AssertionError(f"no {name} point for {identity and identity.id} with {extra}: {points[name]}")


@pytest.fixture(scope="module")
def collected() -> tuple[Points, dict[str, str]]:
    reader, _ = _registered(SWEEP)
    return _collect(reader)


def test_every_metric_of_the_table_is_reported_with_its_unit(collected):
    _, units = collected
    assert units == {metric.name: metric.unit for metric in hw.HARDWARE_METRICS}


def test_gpu_values_in_si_units_with_identity(collected):
    points, _ = collected
    assert _of(points, hw.HW_GPU_UTILIZATION, H100, **{hw.HW_GPU_TASK: "general"}) == 0.93
    assert _of(points, hw.HW_GPU_MEMORY_UTILIZATION, H100) == 0.75
    assert _of(points, hw.EAGLEEYE_HW_GPU_MEMORY_CONTROLLER_UTILIZATION, H100) == 0.41
    assert _of(points, hw.HW_GPU_MEMORY_USAGE, H100) == 60 * 2**30
    assert _of(points, hw.HW_GPU_MEMORY_LIMIT, H100) == 80 * 2**30
    assert _of(points, hw.HW_TEMPERATURE, H100, **{hw.HW_SENSOR_LOCATION: "die"}) == 71.0
    assert _of(points, hw.HW_TEMPERATURE, H100, **{hw.HW_SENSOR_LOCATION: "memory"}) == 80.0
    limit = hw.HW_TEMPERATURE_LIMIT
    assert _of(points, limit, H100, **{hw.HW_SENSOR_LOCATION: "die", hw.HW_LIMIT_TYPE: "throttled"}) == 87.0
    assert _of(points, limit, H100, **{hw.HW_SENSOR_LOCATION: "die", hw.HW_LIMIT_TYPE: "high.critical"}) == 92.0
    assert _of(points, hw.HW_POWER, H100) == 612.5
    assert _of(points, hw.EAGLEEYE_HW_POWER_LIMIT, H100) == 700.0
    assert _of(points, hw.HW_ENERGY, H100) == pytest.approx(123456.789)
    assert _of(points, hw.EAGLEEYE_HW_CLOCK_FREQUENCY, H100, **{hw.EAGLEEYE_HW_CLOCK_DOMAIN: "sm"}) == 1.98e9
    assert _of(points, hw.EAGLEEYE_HW_CLOCK_FREQUENCY, H100, **{hw.EAGLEEYE_HW_CLOCK_DOMAIN: "memory"}) == 2.619e9
    assert _of(points, hw.EAGLEEYE_HW_GPU_PCIE_LINK_GENERATION, H100) == 5
    assert _of(points, hw.EAGLEEYE_HW_GPU_PCIE_LINK_WIDTH, H100) == 16
    direction = hw.NETWORK_IO_DIRECTION
    assert _of(points, hw.EAGLEEYE_HW_GPU_PCIE_THROUGHPUT, H100, **{direction: "transmit"}) == 1.5e9
    assert _of(points, hw.EAGLEEYE_HW_GPU_PCIE_THROUGHPUT, H100, **{direction: "receive"}) == 2.5e8
    assert _of(points, hw.EAGLEEYE_HW_GPU_RECOVERY_ACTION, H100) == 0


def test_device_points_carry_the_identity_and_status_points_the_description(collected):
    points, _ = collected
    (power,) = [dict(a) for a in points[hw.HW_POWER] if dict(a)[hw.HW_ID] == H100.id]
    assert power == {hw.HW_ID: H100.id, hw.HW_NAME: "GPU 0", hw.HW_TYPE: "gpu"}
    (ok,) = [dict(a) for a in points[hw.HW_STATUS] if dict(a)[hw.HW_ID] == H100.id and dict(a)[hw.HW_STATE] == "ok"]
    assert ok == {
        hw.HW_ID: H100.id,
        hw.HW_NAME: "GPU 0",
        hw.HW_TYPE: "gpu",
        hw.HW_VENDOR: "nvidia",
        hw.HW_MODEL: "NVIDIA H100 80GB HBM3",
        hw.HW_SERIAL_NUMBER: "1650123456789",
        hw.HW_DRIVER_VERSION: "570.124.06",
        hw.HW_FIRMWARE_VERSION: "96.00.99.00.01",
        hw.EAGLEEYE_HW_PCI_BUS_ID: "0000:3b:00.0",
        hw.HW_STATE: "ok",
    }


def test_error_counters(collected):
    points, _ = collected
    errors = {dict(a)[hw.ERROR_TYPE]: v for a, v in points[hw.HW_ERRORS].items() if dict(a)[hw.HW_ID] == H100.id}
    assert errors == {"corrected": 3, "uncorrected": 0, "pcie_replay": 5, "nvlink_crc_flit": 7, "nvlink_replay": 1}
    lifetime = hw.EAGLEEYE_HW_GPU_ECC_LIFETIME_ERRORS
    assert _of(points, lifetime, H100, **{hw.ERROR_TYPE: "uncorrected"}) == 1
    assert _of(points, hw.EAGLEEYE_HW_GPU_REMAPPED_ROWS, H100, **{hw.ERROR_TYPE: "corrected"}) == 2
    assert _of(points, hw.EAGLEEYE_HW_GPU_REMAPPED_ROWS_PENDING, H100) == 1
    assert _of(points, hw.EAGLEEYE_HW_GPU_REMAPPED_ROWS_FAILURE, H100) == 0
    assert _of(points, hw.EAGLEEYE_HW_GPU_RETIRED_PAGES, H100, **{hw.ERROR_TYPE: "corrected"}) == 1
    assert _of(points, hw.EAGLEEYE_HW_GPU_RETIRED_PAGES, H100, **{hw.ERROR_TYPE: "uncorrected"}) == 0
    assert _of(points, hw.EAGLEEYE_HW_GPU_RETIRED_PAGES_PENDING, H100) == 0
    assert _of(points, hw.EAGLEEYE_HW_GPU_XID, H100, **{hw.EAGLEEYE_HW_GPU_XID_CODE: 79}) == 1
    assert _of(points, hw.EAGLEEYE_HW_GPU_XID, H100, **{hw.EAGLEEYE_HW_GPU_XID_CODE: 13}) == 2


def test_one_series_per_known_clock_event_reason_plus_unknown_active_ones(collected):
    points, _ = collected
    reasons = {
        dict(a)[hw.EAGLEEYE_HW_GPU_CLOCK_EVENT_REASON]: v
        for a, v in points[hw.EAGLEEYE_HW_GPU_CLOCK_EVENT_ACTIVE].items()
        if dict(a)[hw.HW_ID] == H100.id
    }
    assert set(reasons) == {*hw.CLOCK_EVENT_REASONS, "something_new"}
    assert {reason for reason, value in reasons.items() if value} == {"sw_power_cap", "something_new"}


def test_status_is_one_series_per_state(collected):
    points, _ = collected
    states = {dict(a)[hw.HW_STATE]: v for a, v in points[hw.HW_STATUS].items() if dict(a)[hw.HW_ID] == H100.id}
    assert states == {"ok": 0, "degraded": 0, "failed": 0, "predicted_failure": 1}


def test_a_lost_gpu_reports_its_state_and_identity_not_values(collected):
    points, _ = collected
    lost = {name: [dict(a) for a in series if dict(a).get(hw.HW_ID) == LOST.id] for name, series in points.items()}
    assert {name for name, series in lost.items() if series} == {
        hw.HW_STATUS,
        hw.EAGLEEYE_HW_READ_STATUS,
        hw.EAGLEEYE_HW_GPU_XID,
        hw.EAGLEEYE_HW_GPU_XID_LAST_EVENT_TIME,
    }
    assert _of(points, hw.HW_STATUS, LOST, **{hw.HW_STATE: "failed"}) == 1
    reads = {
        dict(a)[hw.EAGLEEYE_HW_READ_STATE]: v
        for a, v in points[hw.EAGLEEYE_HW_READ_STATUS].items()
        if dict(a)[hw.HW_ID] == LOST.id
    }
    assert reads == {"ok": 0, "lost": 1, "reset_required": 0, "error": 0, "hung": 0}
    assert (
        _of(points, hw.EAGLEEYE_HW_GPU_XID_LAST_EVENT_TIME, LOST, **{hw.EAGLEEYE_HW_GPU_XID_CODE: 79})
        == 1_700_000_079.5
    )
    assert _of(points, hw.HW_STATUS, LOST, **{hw.HW_STATE: "ok"}) == 0
    assert lost[hw.HW_STATUS][0][hw.EAGLEEYE_HW_PCI_BUS_ID] == "0000:5e:00.0"
    assert _of(points, hw.EAGLEEYE_HW_GPU_XID, LOST, **{hw.EAGLEEYE_HW_GPU_XID_CODE: 79}) == 1


def test_npu_values(collected):
    points, _ = collected
    assert _of(points, hw.HW_STATUS, ASCEND, **{hw.HW_STATE: "failed"}) == 1
    assert _of(points, hw.EAGLEEYE_HW_NPU_HEALTH, ASCEND) == 2
    codes = {
        dict(a)[hw.EAGLEEYE_HW_NPU_ERROR_CODE]: v
        for a, v in points[hw.EAGLEEYE_HW_NPU_ERROR_CODE_ACTIVE].items()
        if dict(a)[hw.HW_ID] == ASCEND.id
    }
    assert codes == {"0x80E01801": 1, "0x80E18402": 1}
    assert _of(points, hw.HW_TEMPERATURE, ASCEND, **{hw.HW_SENSOR_LOCATION: "die"}) == 55.0
    assert _of(points, hw.HW_POWER, ASCEND) == 88.5
    assert _of(points, hw.EAGLEEYE_HW_NPU_UTILIZATION, ASCEND, **{hw.EAGLEEYE_HW_NPU_COMPONENT: "aicore"}) == 0.5
    assert _of(points, hw.EAGLEEYE_HW_NPU_UTILIZATION, ASCEND, **{hw.EAGLEEYE_HW_NPU_COMPONENT: "npu"}) == 0.6
    assert _of(points, hw.EAGLEEYE_HW_NPU_MEMORY_USAGE, ASCEND) == 16 * 2**30
    assert _of(points, hw.EAGLEEYE_HW_NPU_MEMORY_LIMIT, ASCEND) == 64 * 2**30
    assert _of(points, hw.EAGLEEYE_HW_CLOCK_FREQUENCY, ASCEND, **{hw.EAGLEEYE_HW_CLOCK_DOMAIN: "aicore"}) == 1.8e9
    assert dict(next(iter(points[hw.EAGLEEYE_HW_NPU_HEALTH])))[hw.HW_NAME] == "NPU 0"


def test_node_metrics(collected):
    points, _ = collected
    assert _of(points, hw.EAGLEEYE_HW_DEVICES, None, **{hw.HW_TYPE: "gpu"}) == 2
    assert _of(points, hw.EAGLEEYE_HW_DEVICES, None, **{hw.HW_TYPE: "npu"}) == 1
    kind, code, device = hw.EAGLEEYE_KERNEL_LOG_KIND, hw.EAGLEEYE_KERNEL_LOG_CODE, hw.EAGLEEYE_KERNEL_LOG_DEVICE
    events = {frozenset(dict(a).items()): v for a, v in points[hw.EAGLEEYE_KERNEL_LOG_EVENTS].items()}
    assert events == {
        frozenset({kind: "xid", code: "79", device: "0000:5e:00.0"}.items()): 2,
        frozenset({kind: "sxid", code: "20034"}.items()): 1,
    }
    uncounted = {dict(a)[hw.EAGLEEYE_KERNEL_LOG_REASON]: v for a, v in points[hw.EAGLEEYE_KERNEL_LOG_UNCOUNTED].items()}
    assert uncounted == {"malformed": 4, "overflow": 5, "lost": 6}


def test_a_node_without_accelerators_still_reports_zero_devices():
    reader, _ = _registered(Sweep(node="cpu-only", taken_at=1.0))
    points, _ = _collect(reader)
    assert {name for name, series in points.items() if series} == {hw.EAGLEEYE_HW_DEVICES}
    assert set(points[hw.EAGLEEYE_HW_DEVICES].values()) == {0}


@pytest.mark.parametrize(
    ("changes", "state"),
    [
        ({}, "ok"),
        ({"status": DeviceStatus.RESET_REQUIRED}, "failed"),
        ({"status": DeviceStatus.ERROR}, "degraded"),
        ({"remapped_rows_failure": True}, "failed"),
        ({"recovery_action": 2}, "failed"),
        ({"recovery_action": 3}, "degraded"),
        ({"retired_pages_pending": True}, "predicted_failure"),
    ],
)
def test_gpu_state(changes, state):
    reading = dataclasses.replace(GPU, remapped_rows_pending=False, **changes)
    assert gpu_state(reading) == state


@pytest.mark.parametrize(
    ("changes", "state"),
    [
        ({"health": 0}, "ok"),
        ({"health": 1}, "degraded"),
        ({"health": 3}, "failed"),
        ({"health": None, "status": DeviceStatus.LOST}, "failed"),
        ({"health": None, "status": DeviceStatus.ERROR}, "degraded"),
    ],
)
def test_npu_state(changes, state):
    assert npu_state(dataclasses.replace(NPU, **changes)) == state


def test_every_metric_reads_the_sources_the_table_names():
    for metric in hw.HARDWARE_METRICS:
        read_from = {
            source
            for source, reads in (
                (hw.HW_TYPE_GPU, _points._GPU),
                (hw.HW_TYPE_NPU, _points._NPU),
                (hw.NODE, _points._NODE),
            )
            if metric.name in reads
        }
        assert read_from == set(metric.sources), metric.name


DOCS = Path(__file__).resolve().parents[3] / "docs" / "hardware.md"
_UNIT_SUFFIXES = {"bytes", "celsius", "watts", "joules", "hertz", "bytes_per_second", "seconds"}


def test_docs_list_every_metric_with_its_prometheus_name():
    registry = CollectorRegistry()
    register_hardware_metrics(MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)]), lambda: SWEEP)
    families = {family.name: family.type for family in registry.collect()}
    rows = {line.split(" | ")[0]: line for line in DOCS.read_text().splitlines() if line.startswith("| `")}
    for metric in hw.HARDWARE_METRICS:
        sanitized = re.sub(r"[^a-zA-Z0-9]+", "_", metric.name)
        (family,) = [f for f in families if f == sanitized or f.removeprefix(sanitized + "_") in _UNIT_SUFFIXES]
        exposed = family + ("_total" if families[family] == "counter" else "")
        row = rows[f"| `{metric.name}`"]
        assert row.startswith(f"| `{metric.name}` | {metric.instrument.value} | `{metric.unit}` | "), row
        assert f"| {', '.join(metric.sources)} | `{exposed}` | {metric.description} |" in row, row
        for attribute in metric.attributes:
            assert f"`{attribute}`" in row, (metric.name, attribute)


def test_a_hung_gpu_is_degraded_and_says_how_it_answered():
    hung = GpuReading(identity=H100, status=DeviceStatus.HUNG, detail="nvmlDeviceGetPowerUsage has not returned")
    assert gpu_state(hung) == "degraded"
    reader, _ = _registered(dataclasses.replace(SWEEP, gpus=(hung,), npus=()))
    points, _ = _collect(reader)
    assert _of(points, hw.EAGLEEYE_HW_READ_STATUS, H100, **{hw.EAGLEEYE_HW_READ_STATE: "hung"}) == 1
    assert _of(points, hw.EAGLEEYE_HW_READ_STATUS, H100, **{hw.EAGLEEYE_HW_READ_STATE: "ok"}) == 0
    assert hw.HW_POWER not in points or not points[hw.HW_POWER]


def test_kernel_log_event_times_and_source_states(collected):
    points, _ = collected
    xid = {
        hw.EAGLEEYE_KERNEL_LOG_KIND: "xid",
        hw.EAGLEEYE_KERNEL_LOG_CODE: "79",
        hw.EAGLEEYE_KERNEL_LOG_DEVICE: "0000:5e:00.0",
    }
    assert _of(points, hw.EAGLEEYE_KERNEL_LOG_LAST_EVENT_TIME, None, **xid) == 1_700_000_079.0
    sxid = {hw.EAGLEEYE_KERNEL_LOG_KIND: "sxid", hw.EAGLEEYE_KERNEL_LOG_CODE: "20034"}
    assert _of(points, hw.EAGLEEYE_KERNEL_LOG_LAST_EVENT_TIME, None, **sxid) == 1_700_000_034.0
    states = {
        (a[hw.EAGLEEYE_HW_SOURCE], a[hw.EAGLEEYE_HW_SOURCE_STATE], a.get(hw.ERROR_TYPE)): v
        for a, v in ((dict(attributes), value) for attributes, value in points[hw.EAGLEEYE_HW_SOURCE_STATUS].items())
    }
    assert len(states) == len(hw.SOURCES) * len(hw.SOURCE_STATES)
    assert {key for key, value in states.items() if value} == {
        ("nvml", "ok", None),
        ("dcmi", "hung", None),
        ("kernel_log", "unavailable", "not_readable"),
    }
