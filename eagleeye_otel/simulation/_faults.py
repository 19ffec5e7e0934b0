"""Simulated GPUs and their faults, read by the hardware monitor's own service.

:class:`SimulatedNode` is a :class:`HardwareMonitor` whose sweeps are made up instead of read from NVML, so the
sweeps reach NATS through :func:`start_hardware_service`, the same instruments, OTLP encoding and subject as on a
real node, and the diagnosis service cannot tell them apart. The GPU ids are the ones the simulated fleet puts in
its routing messages, so a router following health avoids the engines on a faulty GPU.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable
from typing import Final

from eagleeye_otel.receivers.hardware._model import DeviceIdentity, GpuReading, Sweep
from eagleeye_otel.receivers.hardware._monitor import HardwareMonitor

__all__ = ["FAULTS", "SimulatedNode", "healthy_gpu", "simulated_gpu_id"]

_NAMESPACE: Final = uuid.UUID("6b1d3f4e-2f3a-4c55-9a53-5e4c0e1a7e01")


def simulated_gpu_id(node: str, index: int) -> str:
    """The UUID-style id of simulated GPU ``index`` of ``node``; stable, so both simulators agree on it."""
    return f"GPU-{uuid.uuid5(_NAMESPACE, f'{node}/{index}')}"


def healthy_gpu(node: str, index: int) -> GpuReading:
    """A busy, cool, error-free H100-like GPU."""
    return GpuReading(
        identity=DeviceIdentity(
            id=simulated_gpu_id(node, index), type="gpu", vendor="nvidia", index=index, model="Simulated H100"
        ),
        utilization=0.7,
        memory_used_bytes=60 * 2**30,
        memory_total_bytes=80 * 2**30,
        temperature_c=58.0,
        slowdown_temperature_c=90.0,
        shutdown_temperature_c=95.0,
        power_w=450.0,
        power_limit_w=700.0,
        sm_clock_hz=1.98e9,
        clock_event_reasons=frozenset(),
        ecc_corrected_volatile=0,
        ecc_uncorrected_volatile=0,
    )


def _thermal(reading: GpuReading) -> GpuReading:
    """Hardware thermal slowdown: hot, and clocks cut by the hardware."""
    return dataclasses.replace(
        reading, temperature_c=91.0, sm_clock_hz=0.9e9, clock_event_reasons=frozenset({"hw_thermal_slowdown"})
    )


def _xid79(reading: GpuReading) -> GpuReading:
    """Xid 79 (fallen off the bus) seen through NVML."""
    return dataclasses.replace(reading, xid_counts={79: 1})


def _ecc(reading: GpuReading) -> GpuReading:
    """Uncorrectable (double-bit) ECC errors since the driver loaded."""
    return dataclasses.replace(reading, ecc_uncorrected_volatile=2)


FAULTS: Final[dict[str, Callable[[GpuReading], GpuReading]]] = {"thermal": _thermal, "xid79": _xid79, "ecc": _ecc}
"""The injectable faults, by the name ``--fault`` takes; each turns a healthy reading into a faulty one."""


class SimulatedNode(HardwareMonitor):
    """A node of ``gpus`` healthy GPUs, one of which shows ``fault`` from ``fault_after`` seconds on.

    The healthy sweeps first give the diagnosis a baseline, as a real fault appears on a GPU that was fine.

    Args:
        node: the node's name.
        gpus: how many GPUs it has.
        fault: a key of :data:`FAULTS`, or None for a healthy node.
        faulty_gpu: the index of the GPU that shows it.
        fault_after: seconds after creation before it shows.
        clock: monotonic seconds, for tests.
    """

    def __init__(
        self,
        node: str,
        *,
        gpus: int,
        fault: str | None = None,
        faulty_gpu: int = 0,
        fault_after: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(node=node, notes=("simulated by eagle-eye simulate",))
        self._healthy = tuple(healthy_gpu(node, index) for index in range(gpus))
        self._fault = None if fault is None else FAULTS[fault]
        self._faulty_gpu = faulty_gpu
        self._clock = clock
        self._fault_at = clock() + fault_after

    def sweep(self) -> Sweep:
        """The GPUs now: all healthy, but the faulty one once its fault is due."""
        gpus = self._healthy
        if self._fault is not None and self._clock() >= self._fault_at:
            index = self._faulty_gpu
            gpus = (*gpus[:index], self._fault(gpus[index]), *gpus[index + 1 :])
        return Sweep(node=self.node, taken_at=time.time(), gpus=gpus, notes=self.notes)
