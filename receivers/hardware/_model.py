"""What one hardware sweep reads: typed, unit-normalised readings shared by the sources and the instruments.

Sources (NVML, DCMI, kernel log) fill these in with SI units (bytes, watts, joules, hertz, seconds, degrees
Celsius, fractions 0..1) so that no driver unit (mW, mJ, KB/s, 0.1 W, MB, MHz, %) leaks further. ``None`` means
"not read": the function is unsupported on this device, or failed this time. The OTel instruments and the
``--once`` JSON output are built from these types only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

__all__ = [
    "DeviceIdentity",
    "DeviceStatus",
    "GpuReading",
    "KernelEvent",
    "KernelEventKind",
    "KernelLogSummary",
    "NpuReading",
    "SourceState",
    "SourceStatus",
    "Sweep",
]


class DeviceStatus(str, Enum):
    """How a device answered this sweep (a reading, never an exception)."""

    OK = "ok"
    LOST = "lost"
    """Fell off the bus or inaccessible (NVML ``GPU_IS_LOST``, repeated ``UNKNOWN``; DCMI device gone)."""
    RESET_REQUIRED = "reset_required"
    """NVML ``RESET_REQUIRED``: usable again only after a GPU reset."""
    ERROR = "error"
    """Some other failure for the whole device this sweep; ``detail`` says which."""
    HUNG = "hung"
    """A driver call for the device did not return within the deadline; not asked again until it returns."""


@dataclass(frozen=True)
class DeviceIdentity:
    """Who a device is; constant while the node runs.

    ``id`` is the stable key (GPU UUID; for Ascend ``npu-<card>-<device>``) and becomes ``hw.id``.
    """

    id: str
    type: str  # "gpu" or "npu"
    vendor: str  # "nvidia" or "huawei"
    index: int  # NVML index, or Ascend logic id
    model: str | None = None
    serial: str | None = None
    pci_bus_id: str | None = None  # normalised lower-case "dddd:bb:dd.f", e.g. "0000:3b:00.0"
    driver_version: str | None = None
    firmware_version: str | None = None  # VBIOS, or Ascend firmware


@dataclass(frozen=True)
class GpuReading:
    """One NVIDIA GPU in one sweep."""

    identity: DeviceIdentity
    status: DeviceStatus = DeviceStatus.OK
    detail: str | None = None
    utilization: float | None = None  # fraction 0..1 of time a kernel ran
    memory_utilization: float | None = None  # fraction 0..1 of time memory was read or written
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    temperature_c: float | None = None
    memory_temperature_c: float | None = None
    slowdown_temperature_c: float | None = None
    shutdown_temperature_c: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    energy_j: float | None = None  # since driver load
    sm_clock_hz: float | None = None
    memory_clock_hz: float | None = None
    clock_event_reasons: frozenset[str] | None = None  # decoded names, e.g. {"sw_power_cap", "hw_thermal_slowdown"}
    ecc_corrected_volatile: int | None = None
    ecc_uncorrected_volatile: int | None = None
    ecc_corrected_aggregate: int | None = None
    ecc_uncorrected_aggregate: int | None = None
    retired_pages_sbe: int | None = None
    retired_pages_dbe: int | None = None
    retired_pages_pending: bool | None = None
    remapped_rows_correctable: int | None = None
    remapped_rows_uncorrectable: int | None = None
    remapped_rows_pending: bool | None = None
    remapped_rows_failure: bool | None = None
    pcie_replays: int | None = None
    pcie_link_generation: int | None = None
    pcie_link_width: int | None = None
    pcie_tx_bytes_per_s: float | None = None
    pcie_rx_bytes_per_s: float | None = None
    nvlink_errors: dict[str, int] | None = None  # totals by counter: "crc_flit", "crc_data", "replay", "recovery"
    recovery_action: int | None = None  # NVML_FI_DEV_GET_GPU_RECOVERY_ACTION: 0 none, 1 reset, 2 reboot, ...
    xid_counts: dict[int, int] = field(default_factory=dict)  # Xid events seen through NVML since start
    xid_last_seen: dict[int, float] = field(default_factory=dict)  # Unix time of the last event of each Xid


@dataclass(frozen=True)
class NpuReading:
    """One Huawei Ascend NPU chip in one sweep."""

    identity: DeviceIdentity
    card_id: int
    device_id: int
    status: DeviceStatus = DeviceStatus.OK
    detail: str | None = None
    health: int | None = None  # 0 ok, 1 minor, 2 major, 3 critical (0xFFFFFFFF absent -> status LOST)
    error_codes: tuple[int, ...] = ()
    temperature_c: float | None = None
    power_w: float | None = None
    aicore_utilization: float | None = None  # fractions 0..1
    hbm_utilization: float | None = None
    npu_utilization: float | None = None
    hbm_used_bytes: int | None = None
    hbm_total_bytes: int | None = None
    aicore_frequency_hz: float | None = None


class KernelEventKind(str, Enum):
    """The kernel-log lines the parser understands."""

    XID = "xid"
    SXID = "sxid"  # NVSwitch
    FALLEN_OFF_BUS = "fallen_off_bus"
    ASCEND = "ascend"


@dataclass(frozen=True)
class KernelEvent:
    """One parsed kernel-log line."""

    kind: KernelEventKind
    code: str  # the Xid/SXid number, or the Ascend fault code, as text
    device: str | None  # normalised PCI bus id ("0000:3b:00.0"), NVSwitch id, or Ascend device id
    message: str
    timestamp: float | None = None  # seconds since boot (dmesg) when the line carries one


@dataclass(frozen=True)
class KernelLogSummary:
    """Counts per (kind, code, device) and the last message of each, plus the lines skipped as malformed."""

    counts: dict[tuple[KernelEventKind, str, str | None], int]
    last_messages: dict[tuple[KernelEventKind, str, str | None], str]
    malformed: int
    lines: int
    overflow: int = 0  # events not keyed because the reader already held its maximum number of keys
    lost: int = 0  # kmsg records overwritten in the ring buffer before they were read
    last_seen: dict[tuple[KernelEventKind, str, str | None], float] = field(default_factory=dict)
    """Unix time the reader counted the last event of each key: what dates the counts for a restarted diagnosis."""


class SourceState(str, Enum):
    """How one of the monitor's sources is doing (the ``eagleeye.hw.source.state`` values)."""

    OK = "ok"
    ABSENT = "absent"
    """Not on this node: no library and no such device on the PCI bus, or turned off."""
    UNAVAILABLE = "unavailable"
    """The node seems to have it, but it did not open: the library fails to load or initialise, say."""
    FAILED = "failed"
    """Open, but this sweep's read failed."""
    HUNG = "hung"
    """Open, but listing its devices did not return within the deadline."""


@dataclass(frozen=True)
class SourceStatus:
    """One source in one sweep: its state and, for one that did not open, why (a cause word and the note)."""

    state: SourceState
    cause: str | None = None  # one of semconv SOURCE_CAUSES
    detail: str | None = None


@dataclass(frozen=True)
class Sweep:
    """Everything one collection read on a node."""

    node: str
    taken_at: float  # Unix seconds
    gpus: tuple[GpuReading, ...] = ()
    npus: tuple[NpuReading, ...] = ()
    kernel_log: KernelLogSummary | None = None
    notes: tuple[str, ...] = ()  # e.g. "NVML: libnvidia-ml.so.1 not found"
    sources: dict[str, SourceStatus] = field(default_factory=dict)  # by semconv SOURCES name
