"""Hardware readings as OTel observable instruments: one sweep per collection, however many instruments read it.

Each instrument in :data:`~eagleeye_otel.semconv._hardware.HARDWARE_METRICS` gets a callback that maps the current
:class:`~eagleeye_otel.receivers.hardware._model.Sweep` to observations. The sweep itself (every driver call) is taken
by :class:`SweepCache` when a collection starts and shared by the other callbacks of that collection, and by another
reader's collection that comes within ``max_age_s`` (the NATS reader every second and a Prometheus scrape would
otherwise sweep twice). A device that did not answer (lost, reset required, error) reports its ``hw.status`` and its
Xid count with its identity, and no values. Every point of a device carries ``hw.id``, ``hw.name`` and ``hw.type``;
its ``hw.status`` points also carry its description (see :mod:`eagleeye_otel.semconv._hardware`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation, get_meter
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
from eagleeye_otel.receivers.hardware._sweep_cache import SweepCache
from eagleeye_otel.semconv import _hardware as hw
from eagleeye_otel.version import __version__

__all__ = ["HARDWARE_METER_NAME", "SweepCache", "gpu_state", "npu_state", "register_hardware_metrics"]

_logger = logging.getLogger(__name__)

HARDWARE_METER_NAME = "eagleeye_otel.receivers.hardware"
"""Instrumentation scope of the accelerator and kernel-log metrics."""

_Attributes = Mapping[str, AttributeValue]
_Point = tuple[int | float, _Attributes]
_Read = Callable[[Any], Iterator[_Point]]


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


@functools.lru_cache(maxsize=1024)
def _identity(identity: DeviceIdentity) -> _Attributes:
    """The attributes on every point of a device; constant, so built once per device."""
    return {
        hw.HW_ID: identity.id,
        hw.HW_NAME: f"{identity.type.upper()} {identity.index}" if identity.index >= 0 else identity.id,
        hw.HW_TYPE: identity.type,
    }


@functools.lru_cache(maxsize=1024)
def _description(identity: DeviceIdentity) -> _Attributes:
    """The identity plus what the device is (vendor, model, versions, bus id), for its ``hw.status`` points."""
    described = {
        hw.HW_VENDOR: identity.vendor,
        hw.HW_MODEL: identity.model,
        hw.HW_SERIAL_NUMBER: identity.serial,
        hw.HW_DRIVER_VERSION: identity.driver_version,
        hw.HW_FIRMWARE_VERSION: identity.firmware_version,
        hw.EAGLEEYE_HW_PCI_BUS_ID: identity.pci_bus_id,
    }
    return {**_identity(identity), **{key: value for key, value in described.items() if value is not None}}


def _fields(*fields: tuple[str, _Attributes]) -> _Read:
    """Points from a reading's fields, each with its attributes; unread (None) fields are left out."""

    def read(reading: object) -> Iterator[_Point]:
        for name, attributes in fields:
            value = getattr(reading, name)
            if value is not None:
                yield (int(value) if isinstance(value, bool) else value), attributes

    return read


def _field(name: str) -> _Read:
    return _fields((name, {}))


def _states(state: Callable[[Any], str]) -> _Read:
    def read(reading: object) -> Iterator[_Point]:
        current = state(reading)
        for value in hw.HW_STATES:
            yield int(value == current), {hw.HW_STATE: value}

    return read


def _gpu_memory_utilization(reading: GpuReading) -> Iterator[_Point]:
    used, total = reading.memory_used_bytes, reading.memory_total_bytes
    if used is not None and total:
        yield used / total, {}


def _clock_events(reading: GpuReading) -> Iterator[_Point]:
    active = reading.clock_event_reasons
    if active is None:
        return
    for reason in (*hw.CLOCK_EVENT_REASONS, *sorted(active.difference(hw.CLOCK_EVENT_REASONS))):
        yield int(reason in active), {hw.EAGLEEYE_HW_GPU_CLOCK_EVENT_REASON: reason}


_ecc_volatile = _fields(
    ("ecc_corrected_volatile", {hw.ERROR_TYPE: "corrected"}),
    ("ecc_uncorrected_volatile", {hw.ERROR_TYPE: "uncorrected"}),
    ("pcie_replays", {hw.ERROR_TYPE: "pcie_replay"}),
)


def _gpu_errors(reading: GpuReading) -> Iterator[_Point]:
    yield from _ecc_volatile(reading)
    for counter, count in sorted((reading.nvlink_errors or {}).items()):
        yield count, {hw.ERROR_TYPE: f"nvlink_{counter}"}


def _read_status(reading: GpuReading | NpuReading) -> Iterator[_Point]:
    current = reading.status.value
    for value in hw.READ_STATES:
        yield int(value == current), {hw.EAGLEEYE_HW_READ_STATE: value}


def _xids(reading: GpuReading) -> Iterator[_Point]:
    for code, count in sorted(reading.xid_counts.items()):
        yield count, {hw.EAGLEEYE_HW_GPU_XID_CODE: code}


def _xid_times(reading: GpuReading) -> Iterator[_Point]:
    for code, seen in sorted(reading.xid_last_seen.items()):
        yield seen, {hw.EAGLEEYE_HW_GPU_XID_CODE: code}


def _npu_error_codes(reading: NpuReading) -> Iterator[_Point]:
    for code in sorted(set(reading.error_codes)):
        yield 1, {hw.EAGLEEYE_HW_NPU_ERROR_CODE: f"0x{code:08X}"}


def _devices(sweep: Sweep) -> Iterator[_Point]:
    yield len(sweep.gpus), {hw.HW_TYPE: hw.HW_TYPE_GPU}
    yield len(sweep.npus), {hw.HW_TYPE: hw.HW_TYPE_NPU}


def _kernel_log_key(kind: KernelEventKind, code: str, device: str | None) -> dict[str, AttributeValue]:
    attributes: dict[str, AttributeValue] = {hw.EAGLEEYE_KERNEL_LOG_KIND: kind.value, hw.EAGLEEYE_KERNEL_LOG_CODE: code}
    if device is not None:
        attributes[hw.EAGLEEYE_KERNEL_LOG_DEVICE] = device
    return attributes


def _kernel_log_events(sweep: Sweep) -> Iterator[_Point]:
    summary = sweep.kernel_log
    if summary is not None:
        for key, count in summary.counts.items():
            yield count, _kernel_log_key(*key)


def _kernel_log_times(sweep: Sweep) -> Iterator[_Point]:
    summary = sweep.kernel_log
    if summary is not None:
        for key, seen in summary.last_seen.items():
            yield seen, _kernel_log_key(*key)


def _sources(sweep: Sweep) -> Iterator[_Point]:
    for source, status in sweep.sources.items():
        attributes: dict[str, AttributeValue] = {hw.EAGLEEYE_HW_SOURCE: source}
        if status.cause is not None:
            attributes[hw.ERROR_TYPE] = status.cause
        for value in hw.SOURCE_STATES:
            yield int(value == status.state.value), {**attributes, hw.EAGLEEYE_HW_SOURCE_STATE: value}


def _kernel_log_uncounted(sweep: Sweep) -> Iterator[_Point]:
    summary = sweep.kernel_log
    if summary is not None:
        for reason, count in (("malformed", summary.malformed), ("overflow", summary.overflow), ("lost", summary.lost)):
            yield count, {hw.EAGLEEYE_KERNEL_LOG_REASON: reason}


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

_NODE: Mapping[str, Callable[[Sweep], Iterator[_Point]]] = {
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


class _Callback:
    """One instrument's callback: the metric's points from the current sweep; a failing device is logged, skipped."""

    def __init__(self, metric: hw.HardwareMetric, sweeps: SweepCache) -> None:
        self._name = metric.name
        self._sweeps = sweeps
        self._gpu = _GPU.get(metric.name)
        self._npu = _NPU.get(metric.name)
        self._node = _NODE.get(metric.name)
        self._always = metric.name in _WHEN_UNREADABLE
        self._attributes = _description if metric.name == hw.HW_STATUS else _identity
        self._failures = LogLimiter(_logger)

    def __call__(self, _options: CallbackOptions) -> Iterable[Observation]:
        sweep = self._sweeps.get(self._name)
        if sweep is None:
            return ()
        observations: list[Observation] = []
        if self._node is not None:
            self._collect(observations, self._node, sweep, {})
        for read, readings in ((self._gpu, sweep.gpus), (self._npu, sweep.npus)):
            if read is None:
                continue
            for reading in readings:
                if self._always or reading.status is DeviceStatus.OK:
                    self._collect(observations, read, reading, self._attributes(reading.identity))
        return observations

    def _collect(self, into: list[Observation], read: _Read, source: object, identity: _Attributes) -> None:
        try:
            into.extend(Observation(value, {**identity, **extra}) for value, extra in read(source))
        except Exception:
            self._failures.warning(
                "cannot report %s for %s", self._name, identity.get(hw.HW_ID, "the node"), exc_info=True
            )


def register_hardware_metrics(
    meter_provider: MeterProvider | None, take_sweep: Callable[[], Sweep], *, max_age_s: float = 0.5
) -> SweepCache:
    """Register every hardware metric as an observable instrument backed by one sweep per collection.

    Args:
        meter_provider: where to register; the global provider when None.
        take_sweep: reads every source once; called by the first callback of a collection (see :class:`SweepCache`).
        max_age_s: how old a sweep may be and still serve another reader's collection.

    Returns:
        The cache, whose ``sweeps`` counts the sweeps taken.
    """
    sweeps = SweepCache(take_sweep, max_age_s=max_age_s)
    meter = get_meter(HARDWARE_METER_NAME, __version__, meter_provider)
    create_by_kind = {
        hw.HwInstrument.GAUGE: meter.create_observable_gauge,
        hw.HwInstrument.COUNTER: meter.create_observable_counter,
        hw.HwInstrument.UP_DOWN_COUNTER: meter.create_observable_up_down_counter,
    }
    for metric in hw.HARDWARE_METRICS:
        create = create_by_kind[metric.instrument]
        create(metric.name, [_Callback(metric, sweeps)], unit=metric.unit, description=metric.description)
    return sweeps
