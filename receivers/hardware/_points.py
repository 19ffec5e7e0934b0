"""What each hardware metric reads from a sweep: its points, each a value and the attributes of its series.

One table per kind of reading (:data:`_GPU`, :data:`_NPU`, :data:`_NODE`) says how a metric of
:data:`~eagleeye_otel.semconv._hardware.HARDWARE_METRICS` reads it; :class:`MetricPoints` applies it to a whole
:class:`~eagleeye_otel.receivers.hardware._model.Sweep`. Both consumers of a sweep use it: the SDK's observable
callbacks (Prometheus, ``--once``, the diagnosis's snapshot) and the NATS batch encoded straight from the sweep
(:mod:`._otlp`), so the two cannot disagree on a point. A device that did not answer (lost, reset required, error,
hung) reports its ``hw.status``, its ``eagleeye.hw.read.status`` and its Xid counts with its identity, and no values.

A series' attributes are built once and handed out again every sweep (the same mapping object), because building
them per point was most of what a collection cost: a device's identity merged with a point's own attributes, and
for ``hw.status`` its description (see :mod:`eagleeye_otel.semconv._hardware`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final

from opentelemetry.util.types import AttributeValue

from eagleeye_otel.log_limiter import LogLimiter
from eagleeye_otel.receivers.hardware._model import (
    DeviceIdentity,
    DeviceStatus,
    GpuReading,
    KernelEventKind,
    NpuReading,
    Sweep,
)
from eagleeye_otel.semconv import _hardware as hw

__all__ = ["Attributes", "MetricPoints", "Point", "gpu_state", "npu_state"]

_logger = logging.getLogger(__name__)

Attributes = Mapping[str, AttributeValue]
"""A series' attributes; the same object every sweep for the same series. Read-only."""
Point = tuple[int | float, Attributes]

_Own = tuple[tuple[str, AttributeValue], ...]
"""A point's own attributes (besides its device's), hashable: the key of its series within the device."""
_Read = Callable[[Any], Iterator[tuple[int | float, _Own]]]

_MAX_SERIES_PER_DEVICE: Final = 4096
"""Attribute sets kept per device (or for the node); past it they are built again. Xid codes, kernel-log keys and
unknown clock-event reasons are the only open-ended ones, each bounded by its source."""


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


class _Series:
    """The attribute sets of one device (or of the node): its own attributes merged with each point's, built once."""

    def __init__(self, base: Attributes) -> None:
        self._base = base
        self._sets: dict[_Own, Attributes] = {}

    def __call__(self, own: _Own) -> Attributes:
        found = self._sets.get(own)
        if found is None:
            if len(self._sets) >= _MAX_SERIES_PER_DEVICE:
                self._sets.clear()
            found = self._sets[own] = {**self._base, **dict(own)}
        return found


@functools.lru_cache(maxsize=1024)
def _identity(identity: DeviceIdentity) -> _Series:
    """The series of a device, each carrying ``hw.id``, ``hw.name`` and ``hw.type``."""
    return _Series(
        {
            hw.HW_ID: identity.id,
            hw.HW_NAME: f"{identity.type.upper()} {identity.index}" if identity.index >= 0 else identity.id,
            hw.HW_TYPE: identity.type,
        }
    )


@functools.lru_cache(maxsize=1024)
def _description(identity: DeviceIdentity) -> _Series:
    """The identity plus what the device is (vendor, model, versions, bus id), for its ``hw.status`` points."""
    described = {
        hw.HW_VENDOR: identity.vendor,
        hw.HW_MODEL: identity.model,
        hw.HW_SERIAL_NUMBER: identity.serial,
        hw.HW_DRIVER_VERSION: identity.driver_version,
        hw.HW_FIRMWARE_VERSION: identity.firmware_version,
        hw.EAGLEEYE_HW_PCI_BUS_ID: identity.pci_bus_id,
    }
    known = {key: value for key, value in described.items() if value is not None}
    return _Series({**_identity(identity)(()), **known})


_NODE_SERIES = _Series({})


def _own(attributes: Mapping[str, AttributeValue]) -> _Own:
    return tuple(attributes.items())


def _fields(*fields: tuple[str, Mapping[str, AttributeValue]]) -> _Read:
    """Points from a reading's fields, each with its attributes; unread (None) fields are left out."""
    keyed = tuple((name, _own(attributes)) for name, attributes in fields)

    def read(reading: object) -> Iterator[tuple[int | float, _Own]]:
        for name, own in keyed:
            value = getattr(reading, name)
            if value is not None:
                yield (int(value) if isinstance(value, bool) else value), own

    return read


def _field(name: str) -> _Read:
    return _fields((name, {}))


def _one_of(key: str, values: tuple[str, ...], current: str) -> Iterator[tuple[int, _Own]]:
    """1 for ``current``, 0 for each other value of ``key``: a state set."""
    for value in values:
        yield int(value == current), ((key, value),)


def _states(state: Callable[[Any], str]) -> _Read:
    def read(reading: object) -> Iterator[tuple[int | float, _Own]]:
        return _one_of(hw.HW_STATE, hw.HW_STATES, state(reading))

    return read


def _read_status(reading: GpuReading | NpuReading) -> Iterator[tuple[int | float, _Own]]:
    return _one_of(hw.EAGLEEYE_HW_READ_STATE, hw.READ_STATES, reading.status.value)


def _gpu_memory_utilization(reading: GpuReading) -> Iterator[tuple[int | float, _Own]]:
    used, total = reading.memory_used_bytes, reading.memory_total_bytes
    if used is not None and total:
        yield used / total, ()


def _clock_events(reading: GpuReading) -> Iterator[tuple[int | float, _Own]]:
    active = reading.clock_event_reasons
    if active is None:
        return
    for reason in (*hw.CLOCK_EVENT_REASONS, *sorted(active.difference(hw.CLOCK_EVENT_REASONS))):
        yield int(reason in active), ((hw.EAGLEEYE_HW_GPU_CLOCK_EVENT_REASON, reason),)


_ecc_volatile = _fields(
    ("ecc_corrected_volatile", {hw.ERROR_TYPE: "corrected"}),
    ("ecc_uncorrected_volatile", {hw.ERROR_TYPE: "uncorrected"}),
    ("pcie_replays", {hw.ERROR_TYPE: "pcie_replay"}),
)


def _gpu_errors(reading: GpuReading) -> Iterator[tuple[int | float, _Own]]:
    yield from _ecc_volatile(reading)
    for counter, count in sorted((reading.nvlink_errors or {}).items()):
        yield count, ((hw.ERROR_TYPE, f"nvlink_{counter}"),)


def _xids(reading: GpuReading) -> Iterator[tuple[int | float, _Own]]:
    for code, count in sorted(reading.xid_counts.items()):
        yield count, ((hw.EAGLEEYE_HW_GPU_XID_CODE, code),)


def _xid_times(reading: GpuReading) -> Iterator[tuple[int | float, _Own]]:
    for code, seen in sorted(reading.xid_last_seen.items()):
        yield seen, ((hw.EAGLEEYE_HW_GPU_XID_CODE, code),)


def _npu_error_codes(reading: NpuReading) -> Iterator[tuple[int | float, _Own]]:
    for code in sorted(set(reading.error_codes)):
        yield 1, ((hw.EAGLEEYE_HW_NPU_ERROR_CODE, f"0x{code:08X}"),)


def _devices(sweep: Sweep) -> Iterator[tuple[int | float, _Own]]:
    yield len(sweep.gpus), ((hw.HW_TYPE, hw.HW_TYPE_GPU),)
    yield len(sweep.npus), ((hw.HW_TYPE, hw.HW_TYPE_NPU),)


def _kernel_log_key(kind: KernelEventKind, code: str, device: str | None) -> _Own:
    own: _Own = ((hw.EAGLEEYE_KERNEL_LOG_KIND, kind.value), (hw.EAGLEEYE_KERNEL_LOG_CODE, code))
    return own if device is None else (*own, (hw.EAGLEEYE_KERNEL_LOG_DEVICE, device))


def _kernel_log_events(sweep: Sweep) -> Iterator[tuple[int | float, _Own]]:
    summary = sweep.kernel_log
    if summary is not None:
        for key, count in summary.counts.items():
            yield count, _kernel_log_key(*key)


def _kernel_log_times(sweep: Sweep) -> Iterator[tuple[int | float, _Own]]:
    summary = sweep.kernel_log
    if summary is not None:
        for key, seen in summary.last_seen.items():
            yield seen, _kernel_log_key(*key)


def _sources(sweep: Sweep) -> Iterator[tuple[int | float, _Own]]:
    for source, status in sweep.sources.items():
        own: _Own = ((hw.EAGLEEYE_HW_SOURCE, source),)
        if status.cause is not None:
            own = (*own, (hw.ERROR_TYPE, status.cause))
        for value in hw.SOURCE_STATES:
            yield int(value == status.state.value), (*own, (hw.EAGLEEYE_HW_SOURCE_STATE, value))


def _kernel_log_uncounted(sweep: Sweep) -> Iterator[tuple[int | float, _Own]]:
    summary = sweep.kernel_log
    if summary is not None:
        for reason, count in (("malformed", summary.malformed), ("overflow", summary.overflow), ("lost", summary.lost)):
            yield count, ((hw.EAGLEEYE_KERNEL_LOG_REASON, reason),)


_DIE, _MEMORY = {hw.HW_SENSOR_LOCATION: hw.SENSOR_DIE}, {hw.HW_SENSOR_LOCATION: hw.SENSOR_MEMORY}

_GPU: Mapping[str, _Read] = {
    hw.HW_STATUS: _states(gpu_state),
    hw.EAGLEEYE_HW_READ_STATUS: _read_status,
    hw.HW_GPU_UTILIZATION: _fields(("utilization", {hw.HW_GPU_TASK: "general"})),
    hw.HW_GPU_MEMORY_UTILIZATION: _gpu_memory_utilization,
    hw.HW_GPU_MEMORY_USAGE: _field("memory_used_bytes"),
    hw.HW_GPU_MEMORY_LIMIT: _field("memory_total_bytes"),
    hw.EAGLEEYE_HW_GPU_MEMORY_CONTROLLER_UTILIZATION: _field("memory_utilization"),
    hw.HW_TEMPERATURE: _fields(("temperature_c", _DIE), ("memory_temperature_c", _MEMORY)),
    hw.HW_TEMPERATURE_LIMIT: _fields(
        ("slowdown_temperature_c", {**_DIE, hw.HW_LIMIT_TYPE: hw.LIMIT_THROTTLED}),
        ("shutdown_temperature_c", {**_DIE, hw.HW_LIMIT_TYPE: hw.LIMIT_HIGH_CRITICAL}),
    ),
    hw.HW_POWER: _field("power_w"),
    hw.EAGLEEYE_HW_POWER_LIMIT: _field("power_limit_w"),
    hw.HW_ENERGY: _field("energy_j"),
    hw.EAGLEEYE_HW_CLOCK_FREQUENCY: _fields(
        ("sm_clock_hz", {hw.EAGLEEYE_HW_CLOCK_DOMAIN: "sm"}),
        ("memory_clock_hz", {hw.EAGLEEYE_HW_CLOCK_DOMAIN: "memory"}),
    ),
    hw.EAGLEEYE_HW_GPU_CLOCK_EVENT_ACTIVE: _clock_events,
    hw.HW_ERRORS: _gpu_errors,
    hw.EAGLEEYE_HW_GPU_ECC_LIFETIME_ERRORS: _fields(
        ("ecc_corrected_aggregate", {hw.ERROR_TYPE: "corrected"}),
        ("ecc_uncorrected_aggregate", {hw.ERROR_TYPE: "uncorrected"}),
    ),
    hw.EAGLEEYE_HW_GPU_RETIRED_PAGES: _fields(
        ("retired_pages_sbe", {hw.ERROR_TYPE: "corrected"}),
        ("retired_pages_dbe", {hw.ERROR_TYPE: "uncorrected"}),
    ),
    hw.EAGLEEYE_HW_GPU_RETIRED_PAGES_PENDING: _field("retired_pages_pending"),
    hw.EAGLEEYE_HW_GPU_REMAPPED_ROWS: _fields(
        ("remapped_rows_correctable", {hw.ERROR_TYPE: "corrected"}),
        ("remapped_rows_uncorrectable", {hw.ERROR_TYPE: "uncorrected"}),
    ),
    hw.EAGLEEYE_HW_GPU_REMAPPED_ROWS_PENDING: _field("remapped_rows_pending"),
    hw.EAGLEEYE_HW_GPU_REMAPPED_ROWS_FAILURE: _field("remapped_rows_failure"),
    hw.EAGLEEYE_HW_GPU_PCIE_LINK_GENERATION: _field("pcie_link_generation"),
    hw.EAGLEEYE_HW_GPU_PCIE_LINK_WIDTH: _field("pcie_link_width"),
    hw.EAGLEEYE_HW_GPU_PCIE_THROUGHPUT: _fields(
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
    hw.HW_TEMPERATURE: _fields(("temperature_c", _DIE)),
    hw.HW_POWER: _field("power_w"),
    hw.EAGLEEYE_HW_CLOCK_FREQUENCY: _fields(("aicore_frequency_hz", {hw.EAGLEEYE_HW_CLOCK_DOMAIN: "aicore"})),
    hw.EAGLEEYE_HW_NPU_HEALTH: _field("health"),
    hw.EAGLEEYE_HW_NPU_ERROR_CODE_ACTIVE: _npu_error_codes,
    hw.EAGLEEYE_HW_NPU_UTILIZATION: _fields(
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


class MetricPoints:
    """One metric's points from a sweep; a device whose reading cannot be mapped is logged and skipped.

    Args:
        metric: the metric, one of ``HARDWARE_METRICS``.
    """

    def __init__(self, metric: hw.HardwareMetric) -> None:
        self.metric = metric
        self._gpu = _GPU.get(metric.name)
        self._npu = _NPU.get(metric.name)
        self._node = _NODE.get(metric.name)
        self._always = metric.name in _WHEN_UNREADABLE
        self._series = _description if metric.name == hw.HW_STATUS else _identity
        self._failures = LogLimiter(_logger)

    def __call__(self, sweep: Sweep) -> list[Point]:
        """The points of ``sweep``, node first, then GPUs and NPUs in their order."""
        points: list[Point] = []
        if self._node is not None:
            self._collect(points, self._node, sweep, _NODE_SERIES)
        for read, readings in ((self._gpu, sweep.gpus), (self._npu, sweep.npus)):
            if read is None:
                continue
            for reading in readings:
                if self._always or reading.status is DeviceStatus.OK:
                    self._collect(points, read, reading, self._series(reading.identity))
        return points

    def _collect(self, into: list[Point], read: _Read, source: object, series: _Series) -> None:
        try:
            into.extend((value, series(own)) for value, own in read(source))
        except Exception:
            device = getattr(source, "identity", None)
            self._failures.warning(
                "cannot report %s for %s", self.metric.name, "the node" if device is None else device.id, exc_info=True
            )
