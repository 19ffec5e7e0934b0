"""What each hardware metric reads from a sweep: its points, each a value and the attributes of its series.

One table per kind of reading (:data:`_GPU`, :data:`_NPU`, :data:`_NODE`) says how a metric of
:data:`~eagleeye_otel.semconv._hardware.HARDWARE_METRICS` reads it; :class:`HardwarePoints` applies them to a whole
:class:`~eagleeye_otel.receivers.hardware._model.Sweep`. Both consumers of a sweep use it: the SDK's observable
callbacks (Prometheus, ``--once``, the diagnosis's snapshot) and the NATS batch encoded straight from the sweep
(:mod:`._otlp`), so the two cannot disagree on a point. A device that did not answer (lost, reset required, error,
hung) reports its ``hw.status``, its ``eagleeye.hw.read.status`` and its Xid counts with its identity, and no values.

Each point's attributes come from its device's :class:`~eagleeye_otel.receivers.hardware._series.Series`: built
once per series and handed out again every sweep.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.util.types import AttributeValue

from eagleeye_otel.log_limiter import LogLimiter
from eagleeye_otel.receivers.hardware._model import (
    DeviceStatus,
    GpuReading,
    KernelEventKind,
    NpuReading,
    Sweep,
)
from eagleeye_otel.receivers.hardware._series import (
    NODE_SERIES,
    Own,
    Point,
    Series,
    as_own,
    described_series,
    device_series,
)
from eagleeye_otel.semconv import _hardware as hw

__all__ = ["HardwarePoints", "gpu_state", "npu_state"]

_logger = logging.getLogger(__name__)


def gpu_state(reading: GpuReading) -> str:
    """The ``hw.state`` a GPU reports of itself (the diagnosis service may judge it worse).

    ``failed``: lost, reset required, a row remap failed, or NVML asks for a reset or reboot. ``degraded``: the read
    failed for another reason or did not return in time, or NVML asks to drain peer-to-peer traffic.
    ``predicted_failure``: a row remap or page retirement awaits a reset. ``ok`` otherwise.
    """
    if reading.status in (DeviceStatus.LOST, DeviceStatus.RESET_REQUIRED) or reading.remapped_rows_failure:
        return "failed"
    action = reading.recovery_action
    if action is not None and action not in (_RECOVERY_NONE, _RECOVERY_DRAIN_P2P):
        return "failed"
    if reading.status in (DeviceStatus.ERROR, DeviceStatus.HUNG) or action == _RECOVERY_DRAIN_P2P:
        return "degraded"
    if reading.remapped_rows_pending or reading.retired_pages_pending:
        return "predicted_failure"
    return "ok"


def npu_state(reading: NpuReading) -> str:
    """The ``hw.state`` of an Ascend chip: DCMI's health 2 (major) or 3 (critical) and lost are ``failed``."""
    if reading.status is DeviceStatus.LOST or (reading.health is not None and reading.health >= _HEALTH_MAJOR):
        return "failed"
    if reading.status is not DeviceStatus.OK or reading.health == _HEALTH_MINOR:
        return "degraded"
    return "ok"


_RECOVERY_NONE, _RECOVERY_DRAIN_P2P = 0, 3
_HEALTH_MINOR, _HEALTH_MAJOR = 1, 2


_Read = Callable[[Any, Series], list[Point]]
"""A metric's points from one reading (or the sweep), given the series of that device (or the node)."""


class _Fields:
    """Points from a reading's fields, each with its attributes; unread (None) fields are left out."""

    def __init__(self, *fields: tuple[str, Mapping[str, AttributeValue]]) -> None:
        self.names = tuple(name for name, _ in fields)
        self.owns = tuple(as_own(attributes) for _, attributes in fields)

    def __call__(self, reading: object, series: Series) -> list[Point]:
        points: list[Point] = []
        for name, attributes in zip(self.names, series.group(self.owns), strict=True):
            value = getattr(reading, name)
            if value is not None:
                points.append(((int(value) if isinstance(value, bool) else value), attributes))
        return points


def _field(name: str) -> _Fields:
    return _Fields((name, {}))


def _keyed(key: str, values: tuple[str, ...]) -> tuple[Own, ...]:
    return tuple(((key, value),) for value in values)


_HW_STATES = _keyed(hw.HW_STATE, hw.HW_STATES)
_READ_STATES = _keyed(hw.EAGLEEYE_HW_READ_STATE, hw.READ_STATES)
_CLOCK_EVENTS = _keyed(hw.EAGLEEYE_HW_GPU_CLOCK_EVENT_REASON, hw.CLOCK_EVENT_REASONS)


def _one_of(values: tuple[str, ...], owns: tuple[Own, ...], current: str, series: Series) -> list[Point]:
    """A state set: 1 for the current value, 0 for each other."""
    return [(int(value == current), attributes) for value, attributes in zip(values, series.group(owns), strict=True)]


def _states(state: Callable[[Any], str]) -> _Read:
    def read(reading: object, series: Series) -> list[Point]:
        return _one_of(hw.HW_STATES, _HW_STATES, state(reading), series)

    return read


def _read_status(reading: GpuReading | NpuReading, series: Series) -> list[Point]:
    return _one_of(hw.READ_STATES, _READ_STATES, reading.status.value, series)


def _gpu_memory_utilization(reading: GpuReading, series: Series) -> list[Point]:
    used, total = reading.memory_used_bytes, reading.memory_total_bytes
    return [(used / total, series(()))] if used is not None and total else []


def _clock_events(reading: GpuReading, series: Series) -> list[Point]:
    active = reading.clock_event_reasons
    if active is None:
        return []
    known = zip(hw.CLOCK_EVENT_REASONS, series.group(_CLOCK_EVENTS), strict=True)
    points: list[Point] = [(int(reason in active), attributes) for reason, attributes in known]
    for reason in sorted(active.difference(hw.CLOCK_EVENT_REASONS)):
        points.append((1, series(((hw.EAGLEEYE_HW_GPU_CLOCK_EVENT_REASON, reason),))))
    return points


_ecc_volatile = _Fields(
    ("ecc_corrected_volatile", {hw.ERROR_TYPE: "corrected"}),
    ("ecc_uncorrected_volatile", {hw.ERROR_TYPE: "uncorrected"}),
    ("pcie_replays", {hw.ERROR_TYPE: "pcie_replay"}),
)


def _gpu_errors(reading: GpuReading, series: Series) -> list[Point]:
    points = _ecc_volatile(reading, series)
    for counter, count in sorted((reading.nvlink_errors or {}).items()):
        points.append((count, series(((hw.ERROR_TYPE, f"nvlink_{counter}"),))))
    return points


def _xids(reading: GpuReading, series: Series) -> list[Point]:
    return [
        (count, series(((hw.EAGLEEYE_HW_GPU_XID_CODE, code),))) for code, count in sorted(reading.xid_counts.items())
    ]


def _xid_times(reading: GpuReading, series: Series) -> list[Point]:
    return [
        (seen, series(((hw.EAGLEEYE_HW_GPU_XID_CODE, code),))) for code, seen in sorted(reading.xid_last_seen.items())
    ]


def _npu_error_codes(reading: NpuReading, series: Series) -> list[Point]:
    return [
        (1, series(((hw.EAGLEEYE_HW_NPU_ERROR_CODE, f"0x{code:08X}"),))) for code in sorted(set(reading.error_codes))
    ]


def _devices(sweep: Sweep, series: Series) -> list[Point]:
    return [
        (len(sweep.gpus), series(((hw.HW_TYPE, hw.HW_TYPE_GPU),))),
        (len(sweep.npus), series(((hw.HW_TYPE, hw.HW_TYPE_NPU),))),
    ]


def _kernel_log_key(kind: KernelEventKind, code: str, device: str | None) -> Own:
    own: Own = ((hw.EAGLEEYE_KERNEL_LOG_KIND, kind.value), (hw.EAGLEEYE_KERNEL_LOG_CODE, code))
    return own if device is None else (*own, (hw.EAGLEEYE_KERNEL_LOG_DEVICE, device))


def _kernel_log_events(sweep: Sweep, series: Series) -> list[Point]:
    summary = sweep.kernel_log
    if summary is None:
        return []
    return [(count, series(_kernel_log_key(*key))) for key, count in summary.counts.items()]


def _kernel_log_times(sweep: Sweep, series: Series) -> list[Point]:
    summary = sweep.kernel_log
    if summary is None:
        return []
    return [(seen, series(_kernel_log_key(*key))) for key, seen in summary.last_seen.items()]


def _sources(sweep: Sweep, series: Series) -> list[Point]:
    points: list[Point] = []
    for source, status in sweep.sources.items():
        own: Own = ((hw.EAGLEEYE_HW_SOURCE, source),)
        if status.cause is not None:
            own = (*own, (hw.ERROR_TYPE, status.cause))
        for value in hw.SOURCE_STATES:
            points.append((int(value == status.state.value), series((*own, (hw.EAGLEEYE_HW_SOURCE_STATE, value)))))
    return points


def _kernel_log_uncounted(sweep: Sweep, series: Series) -> list[Point]:
    summary = sweep.kernel_log
    if summary is None:
        return []
    counts = (("malformed", summary.malformed), ("overflow", summary.overflow), ("lost", summary.lost))
    return [(count, series(((hw.EAGLEEYE_KERNEL_LOG_REASON, reason),))) for reason, count in counts]


_DIE, _MEMORY = {hw.HW_SENSOR_LOCATION: hw.SENSOR_DIE}, {hw.HW_SENSOR_LOCATION: hw.SENSOR_MEMORY}

_GPU: Mapping[str, _Read] = {
    hw.HW_STATUS: _states(gpu_state),
    hw.EAGLEEYE_HW_READ_STATUS: _read_status,
    hw.HW_GPU_UTILIZATION: _Fields(("utilization", {hw.HW_GPU_TASK: "general"})),
    hw.HW_GPU_MEMORY_UTILIZATION: _gpu_memory_utilization,
    hw.HW_GPU_MEMORY_USAGE: _field("memory_used_bytes"),
    hw.HW_GPU_MEMORY_LIMIT: _field("memory_total_bytes"),
    hw.EAGLEEYE_HW_GPU_MEMORY_CONTROLLER_UTILIZATION: _field("memory_utilization"),
    hw.HW_TEMPERATURE: _Fields(("temperature_c", _DIE), ("memory_temperature_c", _MEMORY)),
    hw.HW_TEMPERATURE_LIMIT: _Fields(
        ("slowdown_temperature_c", {**_DIE, hw.HW_LIMIT_TYPE: hw.LIMIT_THROTTLED}),
        ("shutdown_temperature_c", {**_DIE, hw.HW_LIMIT_TYPE: hw.LIMIT_HIGH_CRITICAL}),
    ),
    hw.HW_POWER: _field("power_w"),
    hw.EAGLEEYE_HW_POWER_LIMIT: _field("power_limit_w"),
    hw.HW_ENERGY: _field("energy_j"),
    hw.EAGLEEYE_HW_CLOCK_FREQUENCY: _Fields(
        ("sm_clock_hz", {hw.EAGLEEYE_HW_CLOCK_DOMAIN: "sm"}),
        ("memory_clock_hz", {hw.EAGLEEYE_HW_CLOCK_DOMAIN: "memory"}),
    ),
    hw.EAGLEEYE_HW_GPU_CLOCK_EVENT_ACTIVE: _clock_events,
    hw.HW_ERRORS: _gpu_errors,
    hw.EAGLEEYE_HW_GPU_ECC_LIFETIME_ERRORS: _Fields(
        ("ecc_corrected_aggregate", {hw.ERROR_TYPE: "corrected"}),
        ("ecc_uncorrected_aggregate", {hw.ERROR_TYPE: "uncorrected"}),
    ),
    hw.EAGLEEYE_HW_GPU_RETIRED_PAGES: _Fields(
        ("retired_pages_sbe", {hw.ERROR_TYPE: "corrected"}),
        ("retired_pages_dbe", {hw.ERROR_TYPE: "uncorrected"}),
    ),
    hw.EAGLEEYE_HW_GPU_RETIRED_PAGES_PENDING: _field("retired_pages_pending"),
    hw.EAGLEEYE_HW_GPU_REMAPPED_ROWS: _Fields(
        ("remapped_rows_correctable", {hw.ERROR_TYPE: "corrected"}),
        ("remapped_rows_uncorrectable", {hw.ERROR_TYPE: "uncorrected"}),
    ),
    hw.EAGLEEYE_HW_GPU_REMAPPED_ROWS_PENDING: _field("remapped_rows_pending"),
    hw.EAGLEEYE_HW_GPU_REMAPPED_ROWS_FAILURE: _field("remapped_rows_failure"),
    hw.EAGLEEYE_HW_GPU_PCIE_LINK_GENERATION: _field("pcie_link_generation"),
    hw.EAGLEEYE_HW_GPU_PCIE_LINK_WIDTH: _field("pcie_link_width"),
    hw.EAGLEEYE_HW_GPU_PCIE_THROUGHPUT: _Fields(
        ("pcie_tx_bytes_per_s", {hw.NETWORK_IO_DIRECTION: "transmit"}),
        ("pcie_rx_bytes_per_s", {hw.NETWORK_IO_DIRECTION: "receive"}),
    ),
    hw.EAGLEEYE_HW_GPU_RECOVERY_ACTION: _field("recovery_action"),
    hw.EAGLEEYE_HW_GPU_XID: _xids,
    hw.EAGLEEYE_HW_GPU_XID_LAST_EVENT_TIME: _xid_times,
}
"""How each metric reads a GPU."""

_NPU: Mapping[str, _Read] = {
    hw.HW_STATUS: _states(npu_state),
    hw.EAGLEEYE_HW_READ_STATUS: _read_status,
    hw.HW_TEMPERATURE: _Fields(("temperature_c", _DIE)),
    hw.HW_POWER: _field("power_w"),
    hw.EAGLEEYE_HW_CLOCK_FREQUENCY: _Fields(("aicore_frequency_hz", {hw.EAGLEEYE_HW_CLOCK_DOMAIN: "aicore"})),
    hw.EAGLEEYE_HW_NPU_HEALTH: _field("health"),
    hw.EAGLEEYE_HW_NPU_ERROR_CODE_ACTIVE: _npu_error_codes,
    hw.EAGLEEYE_HW_NPU_UTILIZATION: _Fields(
        ("aicore_utilization", {hw.EAGLEEYE_HW_NPU_COMPONENT: "aicore"}),
        ("hbm_utilization", {hw.EAGLEEYE_HW_NPU_COMPONENT: "hbm"}),
        ("npu_utilization", {hw.EAGLEEYE_HW_NPU_COMPONENT: "npu"}),
    ),
    hw.EAGLEEYE_HW_NPU_MEMORY_USAGE: _field("hbm_used_bytes"),
    hw.EAGLEEYE_HW_NPU_MEMORY_LIMIT: _field("hbm_total_bytes"),
}
"""How each metric reads an Ascend chip."""

_NODE: Mapping[str, _Read] = {
    hw.EAGLEEYE_HW_DEVICES: _devices,
    hw.EAGLEEYE_KERNEL_LOG_EVENTS: _kernel_log_events,
    hw.EAGLEEYE_KERNEL_LOG_UNCOUNTED: _kernel_log_uncounted,
    hw.EAGLEEYE_KERNEL_LOG_LAST_EVENT_TIME: _kernel_log_times,
    hw.EAGLEEYE_HW_SOURCE_STATUS: _sources,
}
"""How each node-level metric reads a sweep."""

_WHEN_UNREADABLE = frozenset(
    {hw.HW_STATUS, hw.EAGLEEYE_HW_READ_STATUS, hw.EAGLEEYE_HW_GPU_XID, hw.EAGLEEYE_HW_GPU_XID_LAST_EVENT_TIME}
)
"""What a device that did not answer still reports: its state, how it answered, and the Xid events NVML sent."""


@dataclass(frozen=True)
class _Plan:
    """How one kind of device is read: every plain field of every metric in one pass, then the other reads."""

    fields: tuple[tuple[int, str], ...]
    """(metric index, reading field), for the metrics read from fields alone."""
    owns: tuple[Own, ...]
    """Each of those fields' own attributes."""
    others: tuple[tuple[int, _Read, bool, bool], ...]
    """(metric index, read, reported by an unread device too, points carry the description)."""


class HardwarePoints:
    """Every metric's points from a sweep, mapped once per sweep, device by device, whichever metric asks first.

    The points of the last sweep are kept, so the instruments' callbacks of one collection (one per metric) share one
    mapping. Thread-safe. A device whose reading cannot be mapped for a metric is logged and skipped.

    Args:
        metrics: the metrics, in the order of the returned lists; the hardware metrics table by default.
    """

    def __init__(self, metrics: tuple[hw.HardwareMetric, ...] = hw.HARDWARE_METRICS) -> None:
        self.metrics = metrics
        self._node = [(index, read) for index, m in enumerate(metrics) if (read := _NODE.get(m.name)) is not None]
        self._gpu = self._plan(_GPU)
        self._npu = self._plan(_NPU)
        self._failures = [LogLimiter(_logger) for _ in metrics]
        self._lock = threading.Lock()
        self._last: tuple[Sweep, list[list[Point]]] | None = None

    def _plan(self, reads: Mapping[str, _Read]) -> _Plan:
        fields: list[tuple[int, str]] = []
        owns: list[Own] = []
        others: list[tuple[int, _Read, bool, bool]] = []
        for index, metric in enumerate(self.metrics):
            read = reads.get(metric.name)
            if read is None:
                continue
            always, described = metric.name in _WHEN_UNREADABLE, metric.name == hw.HW_STATUS
            if isinstance(read, _Fields) and not always and not described:
                fields.extend((index, name) for name in read.names)
                owns.extend(read.owns)
            else:
                others.append((index, read, always, described))
        return _Plan(tuple(fields), tuple(owns), tuple(others))

    def __call__(self, sweep: Sweep) -> list[list[Point]]:
        """Per metric, the points of ``sweep``: the node's first, then GPUs' and NPUs' in their order. Read-only."""
        with self._lock:
            last = self._last
            if last is not None and last[0] is sweep:
                return last[1]
            points: list[list[Point]] = [[] for _ in self.metrics]
            for index, read in self._node:
                self._collect(points[index], index, read, sweep, NODE_SERIES)
            for plan, readings in ((self._gpu, sweep.gpus), (self._npu, sweep.npus)):
                for reading in readings:
                    self._device(points, plan, reading)
            self._last = (sweep, points)
            return points

    def _device(self, points: list[list[Point]], plan: _Plan, reading: GpuReading | NpuReading) -> None:
        series = device_series(reading.identity)
        ok = reading.status is DeviceStatus.OK
        if ok:
            for (index, name), attributes in zip(plan.fields, series.group(plan.owns), strict=True):
                value = getattr(reading, name)
                if value is not None:
                    points[index].append(((int(value) if isinstance(value, bool) else value), attributes))
        for index, read, always, described in plan.others:
            if ok or always:
                self._collect(
                    points[index], index, read, reading, described_series(reading.identity) if described else series
                )

    def _collect(self, into: list[Point], index: int, read: _Read, source: object, series: Series) -> None:
        try:
            into.extend(read(source, series))
        except Exception:
            device = getattr(source, "identity", None)
            self._failures[index].warning(
                "cannot report %s for %s",
                self.metrics[index].name,
                "the node" if device is None else device.id,
                exc_info=True,
            )
