"""A node for the hardware monitor's tests: 3 GPUs (NVML double), 2 Ascend chips (DCMI double), a kernel log.

The scenario's values are written once, in driver units, and :func:`expected_points` restates them as the metric
points the monitor must publish, in SI units: the tests compare what arrives (in-process, over NATS) with that.
Tests reach these names through the ``scenario`` fixture (conftest modules cannot be imported under importlib mode).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from eagleeye_otel.semconv import _hardware as hw

NODE = "gpu-node-1.example.internal"

# GPU i: driver-unit values, as the NVML double serves them.
GPUS = [
    {
        "uuid": f"GPU-0000000{i}-1111-2222-3333-44444444444{i}",
        "name": "NVIDIA H100 80GB HBM3",
        "serial": f"165012345678{i}",
        "vbios": "96.00.99.00.01",
        "pci_bus_id": f"00000000:{0x3B + i:02X}:00.0",
        "util_gpu": 80 + i,
        "util_mem": 40 + i,
        "mem_total": 85899345920,
        "mem_used": 1073741824 * (10 + i),
        "temp": 60 + i,
        "temp_slowdown": 87,
        "temp_shutdown": 92,
        "power_mw": 350000 + 1000 * i,
        "power_limit_mw": 700000,
        "energy_mj": 123456789 + i,
        "clock_sm_mhz": 1980,
        "clock_mem_mhz": 2619,
        "clock_reasons": 0x4,
        "pcie_gen": 5,
        "pcie_width": 16,
        "pcie_tx_kbps": 1000 + i,
        "pcie_rx_kbps": 2000 + i,
        "supported_events": 0xC008,
    }
    for i in range(3)
]
GPUS[1].update(temp=91, clock_reasons=0x64)  # thermal throttling: sw_power_cap, sw/hw thermal slowdown
# Field values: id -> value (0 = healthy); GPU 1 has ECC errors, remapped rows and a pending remap.
FIELDS = [{82: 70, 3: 0, 4: 0, 5: 2, 6: 0, 142: 0, 143: 0, 144: 0, 145: 0, 94: 1, 230: 0, 38: 0, 52: 0} for _ in GPUS]
FIELDS[1].update({3: 12, 4: 1, 5: 40, 6: 1, 142: 3, 143: 1, 144: 1, 94: 17, 38: 5})
XID_EVENT = (1, 48)  # GPU 1 reports Xid 48 (double-bit ECC) through NVML events

# Ascend chips (card, device): DCMI-unit values; chip 0 1 has a major alarm and two error codes.
CHIPS = {
    (0, 0): {"logic_id": 0, "health": 0, "temperature": 45, "power": 905, "errorcodes": ()},
    (0, 1): {"logic_id": 1, "health": 2, "temperature": 71, "power": 1234, "errorcodes": (0x80E01801, 0x80E18402)},
}

KERNEL_LOG = """\
[  812.004523] NVRM: Xid (PCI:0000:3c:00): 48, pid=2411, name=python3, An uncorrectable double bit error (DBE) occurred
[  934.118201] NVRM: Xid (PCI:0000:3b:00): 13, pid=3120, name=vllm, Graphics SM Warp Exception
[  934.118301] NVRM: Xid (PCI:0000:3b:00): 13, pid=3120, name=vllm, Graphics Exception: ESR 0x504648=0x102000e
[  950.000000] NVRM: Xid (PCI:0000:3c:00): truncated
"""


def nvml_text(lost: frozenset[int] = frozenset()) -> str:
    """The NVML double's scenario; a GPU in ``lost`` answers every call with ``GPU_IS_LOST``."""
    lines = ["driver_version 570.124.06", "nvml_version 12.570.124.06", f"event 1 {XID_EVENT[0]} 0x8 {XID_EVENT[1]}"]
    for i, (gpu, fields) in enumerate(zip(GPUS, FIELDS, strict=True)):
        lines += [f"gpu {i} {key} {value}" for key, value in gpu.items()]
        lines += [f"gpu {i} field {field} {value}" for field, value in fields.items()]
        if i in lost:
            lines.append(f"gpu {i} fail * 15")
    return "\n".join(lines) + "\n"


def dcmi_text() -> str:
    lines = ["driver_version 24.1.rc2"]
    for (card, device), chip in CHIPS.items():
        prefix = f"chip {card} {device}"
        lines += [f"{prefix} {key} {chip[key]}" for key in ("logic_id", "health", "temperature", "power")]
        lines += [f"{prefix} errorcode {code:#x}" for code in chip["errorcodes"]]
        lines += [f"{prefix} utilization 2 {50 + device}", f"{prefix} utilization 6 25", f"{prefix} utilization 13 60"]
        lines += [f"{prefix} hbm 65536 {16384 * (device + 1)}", f"{prefix} frequency 7 1800"]
        lines.append(f"{prefix} chip_info Ascend 910B3 V1 20")
    return "\n".join(lines) + "\n"


Point = tuple[str, str | None, frozenset[tuple[str, object]]]
"""(metric, device ``hw.id`` or None for the node, the point's other non-identity attributes)."""


def _gpu_points(i: int) -> dict[Point, float]:
    gpu, fields, uuid = GPUS[i], FIELDS[i], GPUS[i]["uuid"]
    values: list[tuple[str, dict[str, object], float]] = [
        (hw.HW_GPU_UTILIZATION, {hw.HW_GPU_TASK: "general"}, gpu["util_gpu"] / 100),
        (hw.EAGLEEYE_HW_GPU_MEMORY_CONTROLLER_UTILIZATION, {}, gpu["util_mem"] / 100),
        (hw.HW_GPU_MEMORY_USAGE, {}, gpu["mem_used"]),
        (hw.HW_GPU_MEMORY_LIMIT, {}, gpu["mem_total"]),
        (hw.HW_GPU_MEMORY_UTILIZATION, {}, gpu["mem_used"] / gpu["mem_total"]),
        (hw.HW_TEMPERATURE, {hw.HW_SENSOR_LOCATION: "die"}, gpu["temp"]),
        (hw.HW_TEMPERATURE, {hw.HW_SENSOR_LOCATION: "memory"}, fields[82]),
        (hw.HW_TEMPERATURE_LIMIT, {hw.HW_SENSOR_LOCATION: "die", hw.HW_LIMIT_TYPE: "throttled"}, 87),
        (hw.HW_TEMPERATURE_LIMIT, {hw.HW_SENSOR_LOCATION: "die", hw.HW_LIMIT_TYPE: "high.critical"}, 92),
        (hw.HW_POWER, {}, gpu["power_mw"] / 1000),
        (hw.EAGLEEYE_HW_POWER_LIMIT, {}, gpu["power_limit_mw"] / 1000),
        (hw.HW_ENERGY, {}, gpu["energy_mj"] / 1000),
        (hw.EAGLEEYE_HW_CLOCK_FREQUENCY, {hw.EAGLEEYE_HW_CLOCK_DOMAIN: "sm"}, gpu["clock_sm_mhz"] * 1e6),
        (hw.EAGLEEYE_HW_CLOCK_FREQUENCY, {hw.EAGLEEYE_HW_CLOCK_DOMAIN: "memory"}, gpu["clock_mem_mhz"] * 1e6),
        (hw.EAGLEEYE_HW_GPU_PCIE_LINK_GENERATION, {}, gpu["pcie_gen"]),
        (hw.EAGLEEYE_HW_GPU_PCIE_LINK_WIDTH, {}, gpu["pcie_width"]),
        (hw.EAGLEEYE_HW_GPU_PCIE_THROUGHPUT, {hw.NETWORK_IO_DIRECTION: "transmit"}, gpu["pcie_tx_kbps"] * 1024),
        (hw.EAGLEEYE_HW_GPU_PCIE_THROUGHPUT, {hw.NETWORK_IO_DIRECTION: "receive"}, gpu["pcie_rx_kbps"] * 1024),
        (hw.HW_ERRORS, {hw.ERROR_TYPE: "corrected"}, fields[3]),
        (hw.HW_ERRORS, {hw.ERROR_TYPE: "uncorrected"}, fields[4]),
        (hw.HW_ERRORS, {hw.ERROR_TYPE: "pcie_replay"}, fields[94]),
        (hw.HW_ERRORS, {hw.ERROR_TYPE: "nvlink_crc_flit"}, fields[38]),
        (hw.HW_ERRORS, {hw.ERROR_TYPE: "nvlink_replay"}, fields[52]),
        (hw.EAGLEEYE_HW_GPU_ECC_LIFETIME_ERRORS, {hw.ERROR_TYPE: "corrected"}, fields[5]),
        (hw.EAGLEEYE_HW_GPU_ECC_LIFETIME_ERRORS, {hw.ERROR_TYPE: "uncorrected"}, fields[6]),
        (hw.EAGLEEYE_HW_GPU_REMAPPED_ROWS, {hw.ERROR_TYPE: "corrected"}, fields[142]),
        (hw.EAGLEEYE_HW_GPU_REMAPPED_ROWS, {hw.ERROR_TYPE: "uncorrected"}, fields[143]),
        (hw.EAGLEEYE_HW_GPU_REMAPPED_ROWS_PENDING, {}, fields[144]),
        (hw.EAGLEEYE_HW_GPU_REMAPPED_ROWS_FAILURE, {}, fields[145]),
        (hw.EAGLEEYE_HW_GPU_RECOVERY_ACTION, {}, fields[230]),
    ]
    active = {name for bit, name in enumerate(hw.CLOCK_EVENT_REASONS) if gpu["clock_reasons"] >> bit & 1}
    values += [
        (hw.EAGLEEYE_HW_GPU_CLOCK_EVENT_ACTIVE, {hw.EAGLEEYE_HW_GPU_CLOCK_EVENT_REASON: reason}, reason in active)
        for reason in hw.CLOCK_EVENT_REASONS
    ]
    points = {(name, uuid, frozenset(extra.items())): float(value) for name, extra, value in values}
    points.update(_status(uuid, "predicted_failure" if fields[144] else "ok"))
    return points


def _status(device: str, state: str, read: str = "ok") -> dict[Point, float]:
    points = {(hw.HW_STATUS, device, frozenset({hw.HW_STATE: s}.items())): float(s == state) for s in hw.HW_STATES}
    for value in hw.READ_STATES:
        points[hw.EAGLEEYE_HW_READ_STATUS, device, frozenset({hw.EAGLEEYE_HW_READ_STATE: value}.items())] = float(
            value == read
        )
    return points


def _npu_points(card: int, device: int) -> dict[Point, float]:
    chip, chip_id = CHIPS[card, device], f"npu-{card}-{device}"
    values: list[tuple[str, dict[str, object], float]] = [
        (hw.HW_TEMPERATURE, {hw.HW_SENSOR_LOCATION: "die"}, chip["temperature"]),
        (hw.HW_POWER, {}, chip["power"] / 10),
        (hw.EAGLEEYE_HW_NPU_HEALTH, {}, chip["health"]),
        (hw.EAGLEEYE_HW_NPU_UTILIZATION, {hw.EAGLEEYE_HW_NPU_COMPONENT: "aicore"}, (50 + device) / 100),
        (hw.EAGLEEYE_HW_NPU_UTILIZATION, {hw.EAGLEEYE_HW_NPU_COMPONENT: "hbm"}, 0.25),
        (hw.EAGLEEYE_HW_NPU_UTILIZATION, {hw.EAGLEEYE_HW_NPU_COMPONENT: "npu"}, 0.6),
        (hw.EAGLEEYE_HW_NPU_MEMORY_USAGE, {}, 16384 * (device + 1) * 2**20),
        (hw.EAGLEEYE_HW_NPU_MEMORY_LIMIT, {}, 65536 * 2**20),
        (hw.EAGLEEYE_HW_CLOCK_FREQUENCY, {hw.EAGLEEYE_HW_CLOCK_DOMAIN: "aicore"}, 1.8e9),
    ]
    code_attribute = hw.EAGLEEYE_HW_NPU_ERROR_CODE
    values += [
        (hw.EAGLEEYE_HW_NPU_ERROR_CODE_ACTIVE, {code_attribute: f"0x{code:08X}"}, 1) for code in chip["errorcodes"]
    ]
    points = {(name, chip_id, frozenset(extra.items())): float(value) for name, extra, value in values}
    points.update(_status(chip_id, "failed" if chip["health"] >= 2 else "ok"))
    return points


def expected_points(*, lost: frozenset[int] = frozenset(), xid_seen: bool = True) -> dict[Point, float]:
    """Every point the monitor must report for the scenario."""
    points: dict[Point, float] = {}
    for i, gpu in enumerate(GPUS):
        points.update(_status(gpu["uuid"], "failed", "lost") if i in lost else _gpu_points(i))
    if xid_seen:
        gpu, xid = XID_EVENT
        points[hw.EAGLEEYE_HW_GPU_XID, GPUS[gpu]["uuid"], frozenset({hw.EAGLEEYE_HW_GPU_XID_CODE: xid}.items())] = 1.0
    for card, device in CHIPS:
        points.update(_npu_points(card, device))
    for kind, count in (("gpu", len(GPUS)), ("npu", len(CHIPS))):
        points[hw.EAGLEEYE_HW_DEVICES, None, frozenset({hw.HW_TYPE: kind}.items())] = float(count)
    for code, device, count in (("48", "0000:3c:00.0", 1), ("13", "0000:3b:00.0", 2)):
        attributes = {hw.EAGLEEYE_KERNEL_LOG_KIND: "xid", hw.EAGLEEYE_KERNEL_LOG_CODE: code}
        points[
            hw.EAGLEEYE_KERNEL_LOG_EVENTS,
            None,
            frozenset({**attributes, hw.EAGLEEYE_KERNEL_LOG_DEVICE: device}.items()),
        ] = count
    for reason, count in (("malformed", 1), ("overflow", 0), ("lost", 0)):  # malformed: the truncated Xid line
        points[hw.EAGLEEYE_KERNEL_LOG_UNCOUNTED, None, frozenset({hw.EAGLEEYE_KERNEL_LOG_REASON: reason}.items())] = (
            count
        )
    for source in hw.SOURCES:
        for state in hw.SOURCE_STATES:
            attributes = {hw.EAGLEEYE_HW_SOURCE: source, hw.EAGLEEYE_HW_SOURCE_STATE: state}
            points[hw.EAGLEEYE_HW_SOURCE_STATUS, None, frozenset(attributes.items())] = float(state == "ok")
    return points


TIMES = frozenset({hw.EAGLEEYE_HW_GPU_XID_LAST_EVENT_TIME, hw.EAGLEEYE_KERNEL_LOG_LAST_EVENT_TIME})
"""Metrics whose values are the Unix times of events, which no scenario can state in advance."""


def split_times(points: dict[Point, float]) -> tuple[dict[Point, float], dict[Point, float]]:
    """``points`` without the event times, and the event times."""
    times = {key: value for key, value in points.items() if key[0] in TIMES}
    return {key: value for key, value in points.items() if key[0] not in TIMES}, times


def expected_times(*, xid_seen: bool = True) -> set[Point]:
    """The event-time points the scenario must produce: one per Xid event key and per kernel-log event key."""
    keys: set[Point] = set()
    if xid_seen:
        gpu, xid = XID_EVENT
        keys.add(
            (
                hw.EAGLEEYE_HW_GPU_XID_LAST_EVENT_TIME,
                GPUS[gpu]["uuid"],
                frozenset({hw.EAGLEEYE_HW_GPU_XID_CODE: xid}.items()),
            )
        )
    for code, device in (("48", "0000:3c:00.0"), ("13", "0000:3b:00.0")):
        attributes = {
            hw.EAGLEEYE_KERNEL_LOG_KIND: "xid",
            hw.EAGLEEYE_KERNEL_LOG_CODE: code,
            hw.EAGLEEYE_KERNEL_LOG_DEVICE: device,
        }
        keys.add((hw.EAGLEEYE_KERNEL_LOG_LAST_EVENT_TIME, None, frozenset(attributes.items())))
    return keys


@dataclass
class Doubles:
    """The scenario files and the environment that points the monitor at the doubles."""

    env: dict[str, str]
    lose: Callable[[frozenset[int]], object]


@pytest.fixture
def doubles(nvml_library, nvml_scenario, dcmi_library, dcmi_scenario, tmp_path: Path) -> Doubles:
    """Write the scenarios and return the variables a monitor process needs (on top of ``os.environ``)."""
    nvml_scenario(nvml_text())
    dcmi_scenario(dcmi_text())
    kernel_log = tmp_path / "kern.log"
    kernel_log.write_text(KERNEL_LOG)
    env = {
        **os.environ,
        "EAGLEEYE_NODE_NAME": NODE,
        "EAGLEEYE_NVML_LIBRARY": str(nvml_library),
        "EAGLEEYE_DCMI_LIBRARY": str(dcmi_library),
        "EAGLEEYE_KERNEL_LOG": str(kernel_log),
    }
    return Doubles(env=env, lose=lambda lost: nvml_scenario(nvml_text(lost)))


@pytest.fixture(scope="session")
def scenario() -> ModuleType:
    """This module: ``scenario.GPUS``, ``scenario.expected_points(...)``, ..."""
    return sys.modules[__name__]
