"""Hardware metric names, units and attributes: the ``hw.*`` conventions first, ``eagleeye.hw.*`` for the rest.

``hw.*`` names, units and attributes are copied from the OpenTelemetry semantic conventions
(``opentelemetry.semconv._incubating.metrics.hw_metrics`` and ``attributes.hw_attributes``, all at
*development* stability; a test checks they still match). Upstream has no names for what a health diagnosis needs
beyond load, heat, power and ECC counts: throttle reasons, Xid events, page retirement, row remapping, PCIe link
state, the recovery action, or anything Ascend-specific; those are ``eagleeye.hw.*``, shaped like their upstream
neighbours. :data:`HARDWARE_METRICS` is the one table the instruments and ``docs/hardware.md`` follow.

Every device point carries :data:`DEVICE_ATTRIBUTES` (``hw.id``, ``hw.name``, ``hw.type``). The device's description
(:data:`DEVICE_DESCRIPTION_ATTRIBUTES`: vendor, model, serial, driver, firmware, PCI bus id) is on its ``hw.status``
points only, the info-metric pattern: a query joins on ``hw.id`` to group by model or driver, or to match kernel-log
events by bus id. Upstream recommends the description on every GPU metric; on 8 GPUs that is about 400 points a
second carrying 6 more attributes each, which more than doubles the SDK's collection and OTLP encoding cost.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

# -- attributes: upstream ------------------------------------------------------------------------------------
HW_ID: Final = "hw.id"
HW_NAME: Final = "hw.name"
HW_TYPE: Final = "hw.type"
HW_VENDOR: Final = "hw.vendor"
HW_MODEL: Final = "hw.model"
HW_SERIAL_NUMBER: Final = "hw.serial_number"
HW_DRIVER_VERSION: Final = "hw.driver_version"
HW_FIRMWARE_VERSION: Final = "hw.firmware_version"
HW_STATE: Final = "hw.state"
HW_GPU_TASK: Final = "hw.gpu.task"
HW_SENSOR_LOCATION: Final = "hw.sensor_location"
HW_LIMIT_TYPE: Final = "hw.limit_type"
ERROR_TYPE: Final = "error.type"
NETWORK_IO_DIRECTION: Final = "network.io.direction"

# -- attributes: Eagle Eye's ---------------------------------------------------------------------------------
EAGLEEYE_HW_PCI_BUS_ID: Final = "eagleeye.hw.pci.bus_id"
"""Normalised PCI address (``0000:3b:00.0``), the key kernel-log lines name a GPU by."""
EAGLEEYE_HW_CLOCK_DOMAIN: Final = "eagleeye.hw.clock.domain"
EAGLEEYE_HW_GPU_CLOCK_EVENT_REASON: Final = "eagleeye.hw.gpu.clock_event.reason"
EAGLEEYE_HW_GPU_XID_CODE: Final = "eagleeye.hw.gpu.xid.code"
EAGLEEYE_HW_NPU_COMPONENT: Final = "eagleeye.hw.npu.component"
EAGLEEYE_HW_NPU_ERROR_CODE: Final = "eagleeye.hw.npu.error_code"
"""An Ascend error (event) code as ``0x`` and 8 upper-case hex digits, as Huawei's fault tables write it."""
EAGLEEYE_KERNEL_LOG_KIND: Final = "eagleeye.hw.kernel_log.kind"
EAGLEEYE_KERNEL_LOG_CODE: Final = "eagleeye.hw.kernel_log.code"
EAGLEEYE_KERNEL_LOG_DEVICE: Final = "eagleeye.hw.kernel_log.device"
EAGLEEYE_KERNEL_LOG_REASON: Final = "eagleeye.hw.kernel_log.reason"
"""Why records were not counted as events: ``malformed``, ``overflow`` or ``lost``."""
EAGLEEYE_HW_READ_STATE: Final = "eagleeye.hw.read.state"
"""How the driver answered a device this sweep: one of :data:`READ_STATES`."""
EAGLEEYE_HW_SOURCE: Final = "eagleeye.hw.source"
"""A source of the monitor: one of :data:`SOURCES`."""
EAGLEEYE_HW_SOURCE_STATE: Final = "eagleeye.hw.source.state"
"""How a source is doing: one of :data:`SOURCE_STATES`."""
EAGLEEYE_NODE_NAME: Final = "eagleeye.node.name"
"""Resource attribute: the node a hardware monitor runs on, the ``<node>`` of its NATS subject."""

DEVICE_ATTRIBUTES: Final = (HW_ID, HW_NAME, HW_TYPE)
"""On every device point; ``hw.id`` is the GPU UUID or ``npu-<card>-<device>``, ``hw.name`` ``GPU 0``/``NPU 0``."""

DEVICE_DESCRIPTION_ATTRIBUTES: Final = (
    HW_VENDOR,
    HW_MODEL,
    HW_SERIAL_NUMBER,
    HW_DRIVER_VERSION,
    HW_FIRMWARE_VERSION,
    EAGLEEYE_HW_PCI_BUS_ID,
)
"""On ``hw.status`` points too (those known for the device): what the device is."""

# -- attribute values ----------------------------------------------------------------------------------------
HW_TYPE_GPU: Final = "gpu"
HW_TYPE_NPU: Final = "npu"
"""Not an upstream ``hw.type`` value (the enum is open): an Ascend NPU is not a GPU, and ``hw.gpu.*`` says GPU."""

NODE: Final = "node"
"""The source of node-level metrics, which carry no device identity."""

HW_STATES: Final = ("ok", "degraded", "failed", "predicted_failure")
"""The ``hw.state`` values reported for accelerators, each a series that is 1 for the current state, else 0."""

READ_STATES: Final = ("ok", "lost", "reset_required", "error", "hung")
"""``eagleeye.hw.read.state`` values, each a series that is 1 for how the device answered this sweep, else 0.

``lost``: fell off the bus, or absent; ``reset_required``: usable only after a reset; ``error``: the driver refused
the whole device; ``hung``: a driver call for it did not return within the deadline (it is not asked again until
that call returns, so a wedged device costs the monitor one parked thread).
"""

SOURCES: Final = ("nvml", "dcmi", "kernel_log")
"""The monitor's sources, as ``eagleeye.hw.source`` names them."""
SOURCE_STATES: Final = ("ok", "absent", "unavailable", "failed", "hung")
"""``eagleeye.hw.source.state`` values, each a series that is 1 for the source's current state, else 0.

``ok``: open and read this sweep; ``absent``: not on this node (no library and no such device on the PCI bus, or
turned off); ``unavailable``: could not be opened though the node seems to have it (the library does not load or
initialise, the driver is not loaded, or its devices are on the PCI bus without a library); ``failed``: open, but
this sweep's read failed; ``hung``: open, but listing its devices did not return within the deadline.
"""
SOURCE_CAUSES: Final = (
    "binding_missing",
    "library_not_found",
    "library_not_loadable",
    "driver_not_loaded",
    "init_failed",
    "no_device",
    "not_readable",
    "off",
)
"""``error.type`` of a source that did not open: why, in one word (the monitor's log and ``--once`` say more)."""

SENSOR_DIE: Final = "die"
SENSOR_MEMORY: Final = "memory"
LIMIT_THROTTLED: Final = "throttled"
"""``hw.limit_type`` of NVML's slowdown threshold: above it the GPU slows its clocks."""
LIMIT_HIGH_CRITICAL: Final = "high.critical"
"""``hw.limit_type`` of NVML's shutdown threshold."""

CLOCK_EVENT_REASONS: Final = (
    "gpu_idle",
    "applications_clocks_setting",
    "sw_power_cap",
    "hw_slowdown",
    "sync_boost",
    "sw_thermal_slowdown",
    "hw_thermal_slowdown",
    "hw_power_brake_slowdown",
    "display_clock_setting",
    "board_limit",
    "reliability",
)
"""NVML's clock-event ("throttle") reason bits 0x1 to 0x400 in bit order, as ``snake_case`` names.

Each is a series that is 0 or 1, so a reason that stops holding the clocks down reads 0 rather than vanishing.
"""

# -- metrics: upstream ---------------------------------------------------------------------------------------
HW_GPU_UTILIZATION: Final = "hw.gpu.utilization"
HW_GPU_MEMORY_UTILIZATION: Final = "hw.gpu.memory.utilization"
HW_GPU_MEMORY_USAGE: Final = "hw.gpu.memory.usage"
HW_GPU_MEMORY_LIMIT: Final = "hw.gpu.memory.limit"
HW_TEMPERATURE: Final = "hw.temperature"
HW_TEMPERATURE_LIMIT: Final = "hw.temperature.limit"
HW_POWER: Final = "hw.power"
HW_ENERGY: Final = "hw.energy"
HW_ERRORS: Final = "hw.errors"
HW_STATUS: Final = "hw.status"

# -- metrics: Eagle Eye's ------------------------------------------------------------------------------------
EAGLEEYE_HW_DEVICES: Final = "eagleeye.hw.devices"
EAGLEEYE_HW_POWER_LIMIT: Final = "eagleeye.hw.power.limit"
EAGLEEYE_HW_CLOCK_FREQUENCY: Final = "eagleeye.hw.clock.frequency"
EAGLEEYE_HW_GPU_MEMORY_CONTROLLER_UTILIZATION: Final = "eagleeye.hw.gpu.memory_controller.utilization"
EAGLEEYE_HW_GPU_CLOCK_EVENT_ACTIVE: Final = "eagleeye.hw.gpu.clock_event.active"
EAGLEEYE_HW_GPU_ECC_LIFETIME_ERRORS: Final = "eagleeye.hw.gpu.ecc.lifetime_errors"
EAGLEEYE_HW_GPU_RETIRED_PAGES: Final = "eagleeye.hw.gpu.retired_pages"
EAGLEEYE_HW_GPU_RETIRED_PAGES_PENDING: Final = "eagleeye.hw.gpu.retired_pages.pending"
EAGLEEYE_HW_GPU_REMAPPED_ROWS: Final = "eagleeye.hw.gpu.remapped_rows"
EAGLEEYE_HW_GPU_REMAPPED_ROWS_PENDING: Final = "eagleeye.hw.gpu.remapped_rows.pending"
EAGLEEYE_HW_GPU_REMAPPED_ROWS_FAILURE: Final = "eagleeye.hw.gpu.remapped_rows.failure"
EAGLEEYE_HW_GPU_PCIE_LINK_GENERATION: Final = "eagleeye.hw.gpu.pcie.link.generation"
EAGLEEYE_HW_GPU_PCIE_LINK_WIDTH: Final = "eagleeye.hw.gpu.pcie.link.width"
EAGLEEYE_HW_GPU_PCIE_THROUGHPUT: Final = "eagleeye.hw.gpu.pcie.throughput"
EAGLEEYE_HW_GPU_RECOVERY_ACTION: Final = "eagleeye.hw.gpu.recovery_action"
EAGLEEYE_HW_GPU_XID: Final = "eagleeye.hw.gpu.xid"
EAGLEEYE_HW_GPU_XID_LAST_EVENT_TIME: Final = "eagleeye.hw.gpu.xid.last_event_time"
EAGLEEYE_HW_READ_STATUS: Final = "eagleeye.hw.read.status"
EAGLEEYE_HW_SOURCE_STATUS: Final = "eagleeye.hw.source.status"
EAGLEEYE_HW_NPU_HEALTH: Final = "eagleeye.hw.npu.health"
EAGLEEYE_HW_NPU_ERROR_CODE_ACTIVE: Final = "eagleeye.hw.npu.error_code.active"
EAGLEEYE_HW_NPU_UTILIZATION: Final = "eagleeye.hw.npu.utilization"
EAGLEEYE_HW_NPU_MEMORY_USAGE: Final = "eagleeye.hw.npu.memory.usage"
EAGLEEYE_HW_NPU_MEMORY_LIMIT: Final = "eagleeye.hw.npu.memory.limit"
EAGLEEYE_KERNEL_LOG_EVENTS: Final = "eagleeye.hw.kernel_log.events"
EAGLEEYE_KERNEL_LOG_UNCOUNTED: Final = "eagleeye.hw.kernel_log.uncounted"
EAGLEEYE_KERNEL_LOG_LAST_EVENT_TIME: Final = "eagleeye.hw.kernel_log.last_event_time"


class HwInstrument(enum.Enum):
    """The observable instrument a hardware metric is reported with."""

    GAUGE = "gauge"
    """A value read now that does not add up across devices (temperature, utilisation, a frequency)."""
    COUNTER = "counter"
    """A total that only grows (until the driver reloads): errors, energy, events."""
    UP_DOWN_COUNTER = "updowncounter"
    """A size or a 0/1 state that adds up across devices (memory, ``hw.status``, flags)."""


@dataclass(frozen=True)
class HardwareMetric:
    """One hardware metric: what its instrument and its line in ``docs/hardware.md`` are built from."""

    name: str
    instrument: HwInstrument
    unit: str
    """UCUM, with ``{annotation}`` for counted things."""
    description: str
    attributes: tuple[str, ...] = ()
    """Point attributes besides the device identity."""
    sources: tuple[str, ...] = (HW_TYPE_GPU,)
    """What it is read from: GPU or NPU readings (with their identity), or :data:`NODE` (none)."""


_G, _C, _U = HwInstrument.GAUGE, HwInstrument.COUNTER, HwInstrument.UP_DOWN_COUNTER
_NPU, _BOTH, _NODE = (HW_TYPE_NPU,), (HW_TYPE_GPU, HW_TYPE_NPU), (NODE,)

HARDWARE_METRICS: Final[tuple[HardwareMetric, ...]] = (
    HardwareMetric(
        HW_STATUS,
        _U,
        "1",
        "1 for the device's current state, 0 for the others; carries the device's description.",
        (HW_STATE,),
        _BOTH,
    ),
    HardwareMetric(
        EAGLEEYE_HW_READ_STATUS,
        _U,
        "1",
        "1 for how the driver answered the device this sweep, 0 for the others: ok, lost, reset_required, error, "
        "hung (a call did not return within the deadline).",
        (EAGLEEYE_HW_READ_STATE,),
        _BOTH,
    ),
    HardwareMetric(
        HW_GPU_UTILIZATION, _G, "1", "Fraction of the last sample period in which a kernel ran.", (HW_GPU_TASK,)
    ),
    HardwareMetric(HW_GPU_MEMORY_UTILIZATION, _G, "1", "Fraction of the GPU memory in use (usage / limit)."),
    HardwareMetric(HW_GPU_MEMORY_USAGE, _U, "By", "GPU memory in use."),
    HardwareMetric(HW_GPU_MEMORY_LIMIT, _U, "By", "GPU memory installed."),
    HardwareMetric(
        EAGLEEYE_HW_GPU_MEMORY_CONTROLLER_UTILIZATION,
        _G,
        "1",
        "Fraction of the last sample period in which memory was read or written (NVML's memory utilisation).",
    ),
    HardwareMetric(
        HW_TEMPERATURE, _G, "Cel", "Temperature of the chip (die) and of its memory.", (HW_SENSOR_LOCATION,), _BOTH
    ),
    HardwareMetric(
        HW_TEMPERATURE_LIMIT,
        _G,
        "Cel",
        "The die's slowdown (throttled) and shutdown (high.critical) thresholds.",
        (HW_SENSOR_LOCATION, HW_LIMIT_TYPE),
    ),
    HardwareMetric(HW_POWER, _G, "W", "Power drawn (NVML: one-second average on Ampere and later).", (), _BOTH),
    HardwareMetric(EAGLEEYE_HW_POWER_LIMIT, _G, "W", "Power limit the driver enforces, after every limiter."),
    HardwareMetric(HW_ENERGY, _C, "J", "Energy consumed since the driver loaded."),
    HardwareMetric(
        EAGLEEYE_HW_CLOCK_FREQUENCY,
        _G,
        "Hz",
        "Current clock: sm and memory (GPU), aicore (NPU).",
        (EAGLEEYE_HW_CLOCK_DOMAIN,),
        _BOTH,
    ),
    HardwareMetric(
        EAGLEEYE_HW_GPU_CLOCK_EVENT_ACTIVE,
        _U,
        "1",
        "1 while the reason holds the clocks down, 0 otherwise; one series per known reason.",
        (EAGLEEYE_HW_GPU_CLOCK_EVENT_REASON,),
    ),
    HardwareMetric(
        HW_ERRORS,
        _C,
        "{error}",
        "Errors since the driver loaded: ECC (corrected, uncorrected), pcie_replay, nvlink_* (all links).",
        (ERROR_TYPE,),
    ),
    HardwareMetric(
        EAGLEEYE_HW_GPU_ECC_LIFETIME_ERRORS, _C, "{error}", "ECC errors over the GPU's lifetime.", (ERROR_TYPE,)
    ),
    HardwareMetric(
        EAGLEEYE_HW_GPU_RETIRED_PAGES,
        _C,
        "{page}",
        "Memory pages retired, for multiple corrected or an uncorrected error (Volta and older).",
        (ERROR_TYPE,),
    ),
    HardwareMetric(EAGLEEYE_HW_GPU_RETIRED_PAGES_PENDING, _U, "1", "1 while a page retirement awaits a reset."),
    HardwareMetric(
        EAGLEEYE_HW_GPU_REMAPPED_ROWS,
        _C,
        "{row}",
        "Memory rows remapped, for corrected or uncorrected errors (Ampere and later).",
        (ERROR_TYPE,),
    ),
    HardwareMetric(EAGLEEYE_HW_GPU_REMAPPED_ROWS_PENDING, _U, "1", "1 while a row remap awaits a GPU reset."),
    HardwareMetric(EAGLEEYE_HW_GPU_REMAPPED_ROWS_FAILURE, _U, "1", "1 once a row remap failed (field diagnosis)."),
    HardwareMetric(EAGLEEYE_HW_GPU_PCIE_LINK_GENERATION, _G, "1", "Current PCIe link generation."),
    HardwareMetric(EAGLEEYE_HW_GPU_PCIE_LINK_WIDTH, _G, "{lane}", "Current PCIe link width."),
    HardwareMetric(
        EAGLEEYE_HW_GPU_PCIE_THROUGHPUT,
        _G,
        "By/s",
        "PCIe throughput over NVML's last 20 ms window.",
        (NETWORK_IO_DIRECTION,),
    ),
    HardwareMetric(
        EAGLEEYE_HW_GPU_RECOVERY_ACTION,
        _G,
        "1",
        "NVML's recovery action: 0 none, 1 GPU reset, 2 node reboot, 3 drain P2P, 4 drain and reset.",
    ),
    HardwareMetric(
        EAGLEEYE_HW_GPU_XID,
        _C,
        "{event}",
        "Xid events NVML reported since the monitor started, by Xid.",
        (EAGLEEYE_HW_GPU_XID_CODE,),
    ),
    HardwareMetric(
        EAGLEEYE_HW_GPU_XID_LAST_EVENT_TIME,
        _G,
        "s",
        "Unix time the monitor received the last of those Xid events, by Xid (lets a restarted diagnosis date them).",
        (EAGLEEYE_HW_GPU_XID_CODE,),
    ),
    HardwareMetric(EAGLEEYE_HW_NPU_HEALTH, _G, "1", "DCMI health: 0 ok, 1 minor, 2 major, 3 critical alarm.", (), _NPU),
    HardwareMetric(
        EAGLEEYE_HW_NPU_ERROR_CODE_ACTIVE,
        _U,
        "1",
        "1 for each error code the chip reports now; one series per active code.",
        (EAGLEEYE_HW_NPU_ERROR_CODE,),
        _NPU,
    ),
    HardwareMetric(
        EAGLEEYE_HW_NPU_UTILIZATION,
        _G,
        "1",
        "Fraction busy as DCMI reports it: aicore, hbm, npu (overall).",
        (EAGLEEYE_HW_NPU_COMPONENT,),
        _NPU,
    ),
    HardwareMetric(EAGLEEYE_HW_NPU_MEMORY_USAGE, _U, "By", "HBM in use.", (), _NPU),
    HardwareMetric(EAGLEEYE_HW_NPU_MEMORY_LIMIT, _U, "By", "HBM installed.", (), _NPU),
    HardwareMetric(
        EAGLEEYE_HW_DEVICES, _U, "{device}", "Accelerators found on the node, lost ones included.", (HW_TYPE,), _NODE
    ),
    HardwareMetric(
        EAGLEEYE_KERNEL_LOG_EVENTS,
        _C,
        "{event}",
        "Kernel-log hardware events since the monitor started (the device when the line names one).",
        (EAGLEEYE_KERNEL_LOG_KIND, EAGLEEYE_KERNEL_LOG_CODE, EAGLEEYE_KERNEL_LOG_DEVICE),
        _NODE,
    ),
    HardwareMetric(
        EAGLEEYE_KERNEL_LOG_LAST_EVENT_TIME,
        _G,
        "s",
        "Unix time the monitor read the last of those events (lets a restarted diagnosis date them).",
        (EAGLEEYE_KERNEL_LOG_KIND, EAGLEEYE_KERNEL_LOG_CODE, EAGLEEYE_KERNEL_LOG_DEVICE),
        _NODE,
    ),
    HardwareMetric(
        EAGLEEYE_KERNEL_LOG_UNCOUNTED,
        _C,
        "{record}",
        "Kernel-log records not in the events: malformed (a hardware line that could not be parsed), overflow "
        "(an event past the reader's bound on keys), lost (overwritten in the ring buffer before it was read).",
        (EAGLEEYE_KERNEL_LOG_REASON,),
        _NODE,
    ),
    HardwareMetric(
        EAGLEEYE_HW_SOURCE_STATUS,
        _U,
        "1",
        "1 for each source's current state, 0 for the others: ok, absent, unavailable, failed, hung; error.type "
        "says why a source did not open.",
        (EAGLEEYE_HW_SOURCE, EAGLEEYE_HW_SOURCE_STATE, ERROR_TYPE),
        _NODE,
    ),
)
"""Every hardware metric, in the order ``docs/hardware.md`` lists them."""
