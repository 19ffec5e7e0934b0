"""The NVML calls of one GPU sweep, each converting its driver unit to SI, plus the decoders they share.

Kept apart from the source's lifecycle so that the table of calls reads as the list of signals (hardware.md 2.3).
Each reader takes the pynvml module and a :class:`DeviceState` and returns ``GpuReading`` keyword arguments; it
raises pynvml's ``NVMLError`` as it comes, the source decides what the error means.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from eagleeye_otel.log_limiter import LogLimiter
from eagleeye_otel.receivers.hardware._model import DeviceIdentity, DeviceStatus
from eagleeye_otel.semconv import _hardware as semconv_hw

__all__ = [
    "CAPABILITY_CODES",
    "CLOCK_EVENT_REASONS",
    "GPU_IS_LOST",
    "READERS",
    "RESET_REQUIRED",
    "UNKNOWN",
    "DeviceState",
    "Reader",
    "decode_clock_event_reasons",
]

_logger = logging.getLogger(__name__)

# NVML return codes (nvml.h; the same in every pynvml release).
INVALID_ARGUMENT, NOT_SUPPORTED, NO_PERMISSION, FUNCTION_NOT_FOUND = 2, 3, 4, 13
GPU_IS_LOST, RESET_REQUIRED, UNKNOWN = 15, 16, 999
CAPABILITY_CODES = frozenset({NOT_SUPPORTED, NO_PERMISSION, FUNCTION_NOT_FOUND})
"""Answers about what a device (or driver) can do, not about its health: stop asking."""

CLOCK_EVENT_REASONS: Mapping[int, str] = {1 << bit: name for bit, name in enumerate(semconv_hw.CLOCK_EVENT_REASONS)}
"""``nvmlDeviceGetCurrentClocksEventReasons`` bits (hardware.md 2.4) and the names readings carry."""
_KNOWN_CLOCK_EVENT_BITS = sum(CLOCK_EVENT_REASONS)

_KIB = 1024  # NVML's PCIe throughput "KB/s" are KiB/s, as nvidia-smi dmon and nvitop read them.

_FIELDS: Mapping[int, tuple[str, Callable[[float], Any]]] = {
    82: ("memory_temperature_c", float),  # NVML_FI_DEV_MEMORY_TEMP
    3: ("ecc_corrected_volatile", int),  # NVML_FI_DEV_ECC_SBE_VOL_TOTAL
    4: ("ecc_uncorrected_volatile", int),  # NVML_FI_DEV_ECC_DBE_VOL_TOTAL
    5: ("ecc_corrected_aggregate", int),  # NVML_FI_DEV_ECC_SBE_AGG_TOTAL
    6: ("ecc_uncorrected_aggregate", int),  # NVML_FI_DEV_ECC_DBE_AGG_TOTAL
    29: ("retired_pages_sbe", int),  # NVML_FI_DEV_RETIRED_SBE
    30: ("retired_pages_dbe", int),  # NVML_FI_DEV_RETIRED_DBE
    31: ("retired_pages_pending", bool),  # NVML_FI_DEV_RETIRED_PENDING
    142: ("remapped_rows_correctable", int),  # NVML_FI_DEV_REMAPPED_COR
    143: ("remapped_rows_uncorrectable", int),  # NVML_FI_DEV_REMAPPED_UNC
    144: ("remapped_rows_pending", bool),  # NVML_FI_DEV_REMAPPED_PENDING
    145: ("remapped_rows_failure", bool),  # NVML_FI_DEV_REMAPPED_FAILURE
    94: ("pcie_replays", int),  # NVML_FI_DEV_PCIE_REPLAY_COUNTER
    230: ("recovery_action", int),  # NVML_FI_DEV_GET_GPU_RECOVERY_ACTION
}
"""Counters read in one ``nvmlDeviceGetFieldValues`` call per GPU: field id -> (reading attribute, conversion)."""

_NVLINK_FIELDS: Mapping[int, str] = {38: "crc_flit", 45: "crc_data", 52: "replay", 59: "recovery"}
"""NVLink error totals over all links (``NVML_FI_DEV_NVLINK_*_ERROR_COUNT_TOTAL``), keyed as in readings."""

_field_limiter = LogLimiter(_logger)


@dataclass(frozen=True)
class _EntryLayout:
    """Where a field-value entry holds its return code, value type and value, read for every entry in one pass.

    Reading each entry through its ctypes structure (pynvml decodes every field read in a Python
    ``__getattribute__``) cost two thirds of a GPU's field-value read; the offsets and union members here are those
    pynvml declares (``c_nvmlFieldValue_t``, ``c_nvmlValue_t``), so the values are the same.
    """

    record: struct.Struct
    code: int
    type: int
    value: int
    """Positions of the return code, value type and value bytes in an unpacked record."""
    members: tuple[struct.Struct, ...]
    """How to read the value of each ``nvmlValueType_t`` (the union's members in pynvml's order)."""

    def entries(self, answers: Any) -> Iterator[tuple[Any, ...]]:
        """The unpacked records of a ``c_nvmlFieldValue_t`` array, in order."""
        return self.record.iter_unpack(memoryview(answers).cast("B"))


@functools.lru_cache(maxsize=4)
def _layout(entry: Any) -> _EntryLayout:
    names = ("nvmlReturn", "valueType", "value")
    placed = sorted((getattr(entry, name).offset, getattr(entry, name).size, name) for name in names)
    parts, at = ["="], 0
    for offset, size, name in placed:
        parts.append(f"{offset - at}x{'I' if name != 'value' else f'{size}s'}")
        at = offset + size
    parts.append(f"{ctypes.sizeof(entry) - at}x")
    order = [name for _, _, name in placed]
    union = dict(entry._fields_)["value"]
    members = tuple(struct.Struct("@" + member._type_) for _, member in union._fields_)
    code, value_type, value = (order.index(name) for name in names)
    return _EntryLayout(struct.Struct("".join(parts)), code, value_type, value, members)


def decode_clock_event_reasons(mask: int) -> frozenset[str]:
    """Name the bits of a clock event reason mask; a bit this table does not know is kept as ``unknown_0x...``."""
    names = {name for bit, name in CLOCK_EVENT_REASONS.items() if mask & bit}
    unknown = mask & ~_KNOWN_CLOCK_EVENT_BITS
    if unknown:
        names.update(f"unknown_{1 << bit:#x}" for bit in range(unknown.bit_length()) if unknown >> bit & 1)
    return frozenset(names)


@dataclass
class DeviceState:
    """What the source remembers about one GPU between sweeps."""

    index: int
    identity: DeviceIdentity
    handle: Any = None
    unsupported: set[str] = field(default_factory=set)
    """Reader names the device refused; never called again."""
    field_ids: list[int] = field(default_factory=lambda: [*_FIELDS, *_NVLINK_FIELDS])
    """Field ids still asked for; an entry answered NOT_SUPPORTED is dropped."""
    unknown_sweeps: int = 0
    status: DeviceStatus = DeviceStatus.OK


Reader = Callable[[Any, DeviceState, dict[str, Any]], None]
"""Reads one NVML call's values into a reading's fields (given as a dict); an ``NVMLError`` says why not."""


def _scalar(
    attribute: str,
    function: str,
    argument: str | None = None,
    *,
    scale: float = 1.0,
    convert: Callable[[float], Any] = float,
) -> tuple[str, Reader]:
    """A reader of one number: ``pynvml.<function>(handle[, pynvml.<argument>]) * scale``."""

    def read(nvml: Any, device: DeviceState, values: dict[str, Any]) -> None:
        args = (device.handle,) if argument is None else (device.handle, getattr(nvml, argument))
        values[attribute] = convert(getattr(nvml, function)(*args) * scale)

    return (function if argument is None else f"{function}({argument})"), read


def _utilization(nvml: Any, device: DeviceState, values: dict[str, Any]) -> None:
    rates = nvml.nvmlDeviceGetUtilizationRates(device.handle)
    values["utilization"], values["memory_utilization"] = rates.gpu / 100, rates.memory / 100


def _memory(nvml: Any, device: DeviceState, values: dict[str, Any]) -> None:
    memory = nvml.nvmlDeviceGetMemoryInfo(device.handle)
    values["memory_used_bytes"], values["memory_total_bytes"] = int(memory.used), int(memory.total)


def _clock_event_reasons(nvml: Any, device: DeviceState, values: dict[str, Any]) -> None:
    mask = nvml.nvmlDeviceGetCurrentClocksEventReasons(device.handle)
    values["clock_event_reasons"] = decode_clock_event_reasons(int(mask))


def _field_values(nvml: Any, device: DeviceState, values: dict[str, Any]) -> None:
    """One batched read of the counters in ``_FIELDS``/``_NVLINK_FIELDS`` the device has not refused.

    Each entry carries its own return code: a capability code, or INVALID_ARGUMENT from a driver older than the
    field id, drops that field for good; a lost, reset or unknown GPU raises as a whole call would; anything else
    skips that entry this sweep.
    """
    if not device.field_ids:
        return
    nvlink: dict[str, int] = {}
    asked = list(device.field_ids)
    # (id, scope) pairs: pynvml takes a bare id only after a TypeError per entry. The answers come in the order asked.
    answers = nvml.nvmlDeviceGetFieldValues(device.handle, [(field_id, 0) for field_id in asked])
    layout = _layout(type(answers)._type_)
    for field_id, entry in zip(asked, layout.entries(answers), strict=True):
        code, value_type, value = entry[layout.code], entry[layout.type], entry[layout.value]
        if code in CAPABILITY_CODES or code == INVALID_ARGUMENT:
            device.field_ids.remove(field_id)
            continue
        if code in (GPU_IS_LOST, RESET_REQUIRED, UNKNOWN):
            raise nvml.NVMLError(code)
        if code != 0:
            _field_limiter.warning(
                "NVML GPU %s: field %d failed: %s", device.identity.id, field_id, nvml.NVMLError(code)
            )
            continue
        (number,) = layout.members[value_type].unpack_from(value)
        if field_id in _NVLINK_FIELDS:
            nvlink[_NVLINK_FIELDS[field_id]] = int(number)
        else:
            attribute, convert = _FIELDS[field_id]
            values[attribute] = convert(number)
    if nvlink:
        values["nvlink_errors"] = nvlink


READERS: tuple[tuple[str, Reader], ...] = (
    ("nvmlDeviceGetUtilizationRates", _utilization),
    ("nvmlDeviceGetMemoryInfo", _memory),
    _scalar("temperature_c", "nvmlDeviceGetTemperature", "NVML_TEMPERATURE_GPU"),
    _scalar("slowdown_temperature_c", "nvmlDeviceGetTemperatureThreshold", "NVML_TEMPERATURE_THRESHOLD_SLOWDOWN"),
    _scalar("shutdown_temperature_c", "nvmlDeviceGetTemperatureThreshold", "NVML_TEMPERATURE_THRESHOLD_SHUTDOWN"),
    _scalar("power_w", "nvmlDeviceGetPowerUsage", scale=1e-3),  # mW
    _scalar("power_limit_w", "nvmlDeviceGetEnforcedPowerLimit", scale=1e-3),  # mW
    _scalar("energy_j", "nvmlDeviceGetTotalEnergyConsumption", scale=1e-3),  # mJ
    _scalar("sm_clock_hz", "nvmlDeviceGetClockInfo", "NVML_CLOCK_SM", scale=1e6),  # MHz
    _scalar("memory_clock_hz", "nvmlDeviceGetClockInfo", "NVML_CLOCK_MEM", scale=1e6),  # MHz
    ("nvmlDeviceGetCurrentClocksEventReasons", _clock_event_reasons),
    _scalar("pcie_link_generation", "nvmlDeviceGetCurrPcieLinkGeneration", convert=int),
    _scalar("pcie_link_width", "nvmlDeviceGetCurrPcieLinkWidth", convert=int),
    _scalar("pcie_tx_bytes_per_s", "nvmlDeviceGetPcieThroughput", "NVML_PCIE_UTIL_TX_BYTES", scale=_KIB),
    _scalar("pcie_rx_bytes_per_s", "nvmlDeviceGetPcieThroughput", "NVML_PCIE_UTIL_RX_BYTES", scale=_KIB),
    ("nvmlDeviceGetFieldValues", _field_values),
)
"""One entry per NVML call of a sweep; the name is what :attr:`DeviceState.unsupported` remembers."""
