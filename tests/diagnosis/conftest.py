"""Telemetry for the diagnosis tests, built the way the hardware monitor builds it.

Hand-made :class:`Sweep` objects go through the monitor's own instruments (``register_hardware_metrics``) on a
meter provider with an in-memory reader, and the collection is encoded by the NATS exporter's encoder: the bytes the
engine gets are those the monitor would publish, so a metric or attribute name the rules expect but the monitor does
not send fails here. Tests reach these helpers through the ``hw`` fixture (conftest modules cannot be imported under
importlib mode).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource

from eagleeye_otel.diagnosis import DiagnosisEngine, Finding, load_knowledge_base
from eagleeye_otel.exporters.nats._encoding import encode_otlp_protobuf
from eagleeye_otel.receivers.hardware._instruments import register_hardware_metrics
from eagleeye_otel.receivers.hardware._model import (
    DeviceIdentity,
    GpuReading,
    KernelEventKind,
    KernelLogSummary,
    NpuReading,
    Sweep,
)
from eagleeye_otel.semconv import _hardware as semconv

NODE = "gpu-node-7"
KMSG_FIXTURES = Path(__file__).parents[1] / "receivers" / "hardware" / "fixtures" / "kmsg"


class Clock:
    """A settable clock for the engine."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Hardware:
    """Builders of readings and of the OTLP payloads the monitor publishes for them."""

    node = NODE
    kmsg_fixtures = KMSG_FIXTURES

    def __init__(self) -> None:
        self._sweep = Sweep(NODE, 0.0)
        self._reader = InMemoryMetricReader()
        self._provider = MeterProvider(
            metric_readers=[self._reader], resource=Resource.create({semconv.EAGLEEYE_NODE_NAME: NODE})
        )
        register_hardware_metrics(self._provider, lambda: self._sweep, max_age_s=0.0)

    def close(self) -> None:
        self._provider.shutdown()

    @staticmethod
    def gpu_identity(index: int, **overrides: Any) -> DeviceIdentity:
        """An H100 with driver 570 at PCI bus 0x3b + index."""
        fields: dict[str, Any] = {
            "id": f"GPU-{index:08d}-1111-2222-3333-444444444444",
            "type": semconv.HW_TYPE_GPU,
            "vendor": "nvidia",
            "index": index,
            "model": "NVIDIA H100 80GB HBM3",
            "serial": f"16501234567{index}",
            "pci_bus_id": f"0000:{0x3B + index:02x}:00.0",
            "driver_version": "570.124.06",
            "firmware_version": "96.00.99.00.01",
        }
        return DeviceIdentity(**{**fields, **overrides})

    def gpu(self, index: int = 0, *, identity: DeviceIdentity | None = None, **overrides: Any) -> GpuReading:
        """A healthy H100 at 80 % load; ``overrides`` change any field."""
        reading = GpuReading(
            identity=identity or self.gpu_identity(index),
            utilization=0.8,
            memory_utilization=0.4,
            memory_used_bytes=60 * 2**30,
            memory_total_bytes=80 * 2**30,
            temperature_c=65.0,
            memory_temperature_c=70.0,
            slowdown_temperature_c=87.0,
            shutdown_temperature_c=92.0,
            power_w=450.0,
            power_limit_w=700.0,
            energy_j=1.0e6,
            sm_clock_hz=1.98e9,
            memory_clock_hz=2.619e9,
            clock_event_reasons=frozenset(),
            ecc_corrected_volatile=0,
            ecc_uncorrected_volatile=0,
            ecc_corrected_aggregate=3,
            ecc_uncorrected_aggregate=0,
            retired_pages_sbe=0,
            retired_pages_dbe=0,
            retired_pages_pending=False,
            remapped_rows_correctable=0,
            remapped_rows_uncorrectable=0,
            remapped_rows_pending=False,
            remapped_rows_failure=False,
            pcie_replays=0,
            pcie_link_generation=5,
            pcie_link_width=16,
            pcie_tx_bytes_per_s=1.0e9,
            pcie_rx_bytes_per_s=2.0e9,
            nvlink_errors={"crc_flit": 0, "crc_data": 0, "replay": 0, "recovery": 0},
            recovery_action=0,
        )
        return dataclasses.replace(reading, **overrides)

    @staticmethod
    def npu(index: int = 0, **overrides: Any) -> NpuReading:
        """A healthy Ascend 910B3 at 70 % AI Core load."""
        identity = DeviceIdentity(
            id=f"npu-0-{index}", type=semconv.HW_TYPE_NPU, vendor="huawei", index=index, model="910B3"
        )
        reading = NpuReading(
            identity=identity,
            card_id=0,
            device_id=index,
            health=0,
            temperature_c=50.0,
            power_w=250.0,
            aicore_utilization=0.7,
            hbm_utilization=0.5,
            npu_utilization=0.7,
            hbm_used_bytes=30 * 2**30,
            hbm_total_bytes=64 * 2**30,
            aicore_frequency_hz=1.8e9,
        )
        return dataclasses.replace(reading, **overrides)

    @staticmethod
    def kernel_log(events: dict[tuple[str, str, str | None], int]) -> KernelLogSummary:
        """A kernel-log summary with these (kind, code, device) counts."""
        counts = {(KernelEventKind(kind), code, device): count for (kind, code, device), count in events.items()}
        return KernelLogSummary(counts=counts, last_messages={}, malformed=0, lines=100)

    def otlp(self, *gpus: GpuReading, at: float, npus: tuple[NpuReading, ...] = (), **sweep: Any) -> bytes:
        """The monitor's OTLP protobuf payload for one sweep of these devices, its points stamped ``at``."""
        self._sweep = Sweep(NODE, at, tuple(gpus), npus, **sweep)
        data = self._reader.get_metrics_data()
        assert data is not None
        request = ExportMetricsServiceRequest.FromString(encode_otlp_protobuf(data))
        for resource_metrics in request.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    points = metric.gauge.data_points if metric.HasField("gauge") else metric.sum.data_points
                    for point in points:
                        point.time_unix_nano = int(at * 1e9)
        return request.SerializeToString()


class Run:
    """An engine on a settable clock, fed one sweep per second as the monitor would."""

    def __init__(self, hardware: Hardware, rules: list[Path] | None = None, **engine: Any) -> None:
        self.hw = hardware
        self.clock = Clock()
        self.engine = DiagnosisEngine(load_knowledge_base(rules or []), clock=self.clock, **engine)

    def step(
        self, *gpus: GpuReading, npus: tuple[NpuReading, ...] = (), seconds: float = 1.0, **sweep: Any
    ) -> set[str]:
        """Advance the clock, ingest one sweep and evaluate; returns the faults active after it."""
        self.clock.now += seconds
        self.engine.ingest_otlp(self.hw.otlp(*gpus, at=self.clock.now, npus=npus, **sweep))
        self.changes = self.engine.evaluate()
        return {finding.fault for finding in self.engine.active()}

    def finding(self, fault: str, device: str | None = None) -> Finding:
        """The active finding of ``fault`` (on ``device`` when given)."""
        found = [f for f in self.engine.active() if f.fault == fault and (device is None or f.device == device)]
        assert len(found) == 1, (fault, device, self.engine.active())
        return found[0]


@pytest.fixture
def hw() -> Iterator[Hardware]:
    hardware = Hardware()
    yield hardware
    hardware.close()


@pytest.fixture
def run(hw: Hardware) -> Run:
    return Run(hw)


@pytest.fixture
def make_run(hw: Hardware) -> Any:
    """Build a :class:`Run` with extra rule files or engine options."""
    return lambda rules=None, **engine: Run(hw, rules, **engine)
