"""A node under diagnosis: the NVML and DCMI C doubles, the hardware monitor exporting every second to a real
nats-server, the diagnosis service following it, and a recorder of everything on ``eagle_eye.>`` in arrival order.

Tests write a fault into a double's scenario, then read the order in which the recorder saw the hardware export that
first carried it and the finding that named it. Reached through the ``pipeline`` fixture (conftest modules cannot be
imported under importlib mode).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.msg import Msg
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from eagleeye_otel.diagnosis import DiagnosisEngine, DiagnosisService, DiagnosisSettings, FindingMessage
from eagleeye_otel.nats_flush import flush
from eagleeye_otel.nats_server import EmbeddedNatsServer
from eagleeye_otel.receivers.hardware._monitor import HardwareMonitor
from eagleeye_otel.receivers.hardware._service import HardwareService, start_hardware_service
from eagleeye_otel.sdk import PipelineSettings
from eagleeye_otel.semconv import _hardware as hw
from eagleeye_otel.settings import HardwareSettings, NatsSettings

NODE = "gpu-node-7.example.internal"
PERIOD_S = 1.0
"""The monitor's collection period, as deployed."""

Point = tuple[str, str | None, frozenset[tuple[str, object]]]
"""(metric, ``hw.id`` or None, the point's other attributes but the device description)."""

_DESCRIPTION = {*hw.DEVICE_ATTRIBUTES, *hw.DEVICE_DESCRIPTION_ATTRIBUTES}
_decode_finding = msgspec.json.Decoder(FindingMessage).decode


def gpu_uuid(i: int) -> str:
    return f"GPU-{i:08x}-1111-2222-3333-44445555{i:04x}"


def dcmi_text(health: int = 0, errorcodes: tuple[int, ...] = ()) -> str:
    """Two healthy Ascend 910B chips on cards 0 and 1; chip ``npu-1-0`` gets ``health`` and ``errorcodes``."""
    lines = ["driver_version 24.1.rc2"]
    for card in (0, 1):
        prefix = f"chip {card} 0"
        lines += [f"{prefix} logic_id {card}", f"{prefix} temperature {44 + card}", f"{prefix} power {900 + card}"]
        lines += [f"{prefix} utilization 2 50", f"{prefix} utilization 6 25", f"{prefix} utilization 13 60"]
        lines += [f"{prefix} hbm 65536 16384", f"{prefix} frequency 7 1800", f"{prefix} chip_info Ascend 910B3 V1 20"]
        lines.append(f"{prefix} health {health if card == 1 else 0}")
        lines += [f"{prefix} errorcode {code:#x}" for code in (errorcodes if card == 1 else ())]
    return "\n".join(lines) + "\n"


def _value(value: AnyValue) -> object:
    return getattr(value, value.WhichOneof("value"))


def _attributes(pairs: Any) -> dict[str, object]:
    return {pair.key: _value(pair.value) for pair in pairs}


def points(payload: bytes) -> dict[Point, float]:
    """An OTLP export's points, keyed by metric, device and the other attributes."""
    found: dict[Point, float] = {}
    for resource_metrics in ExportMetricsServiceRequest.FromString(payload).resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in getattr(metric, metric.WhichOneof("data")).data_points:
                    attributes: dict[str, object] = _attributes(point.attributes)
                    device = attributes.get(hw.HW_ID)
                    rest = frozenset((k, v) for k, v in attributes.items() if k not in _DESCRIPTION)
                    value = point.as_double if point.WhichOneof("value") == "as_double" else point.as_int
                    found[metric.name, device if isinstance(device, str) else None, rest] = float(value)
    return found


def point(metric: str, device: str | None, **attributes: object) -> Point:
    return (metric, device, frozenset(attributes.items()))


@dataclass
class Received:
    at: float
    subject: str
    data: bytes


@dataclass
class Pipeline:
    """The running node and what the recorder saw."""

    nvml_write: Callable[[str], Path]
    dcmi_write: Callable[[str], Path]
    kernel_log: Path
    nats_url: str
    service: DiagnosisService
    monitor: HardwareService | None = None
    received: list[Received] = field(default_factory=list)

    uuid = staticmethod(gpu_uuid)
    dcmi_text = staticmethod(dcmi_text)
    points = staticmethod(points)
    point = staticmethod(point)
    node = NODE
    period_s = PERIOD_S

    def hardware(self, since: float = 0.0) -> list[Received]:
        return [r for r in self.received if r.subject.startswith("eagle_eye.hardware.") and r.at >= since]

    def findings(self, since: float = 0.0) -> list[tuple[Received, FindingMessage]]:
        return [
            (r, _decode_finding(r.data))
            for r in self.received
            if r.subject.startswith("eagle_eye.diagnosis.") and r.at >= since
        ]

    def log_kernel(self, line: str) -> None:
        with self.kernel_log.open("a") as log:
            log.write(line + "\n")


@pytest.fixture
async def pipeline(
    nvml: Any,
    dcmi_library: Path,
    dcmi_scenario: Callable[[str], Path],
    nats_server: EmbeddedNatsServer,
    eventually: Callable[..., Any],
    tmp_path: Path,
) -> AsyncIterator[Pipeline]:
    """A healthy node of 2 GPUs and 2 NPUs under diagnosis; the monitor's first export has arrived."""
    nvml.write(nvml.node(2))
    dcmi_scenario(dcmi_text())
    kernel_log = tmp_path / "kern.log"
    kernel_log.write_text("")
    recorder = await nats.connect(nats_server.url)
    nats_settings = NatsSettings(servers=(nats_server.url,))
    settings = DiagnosisSettings(http_host="127.0.0.1", http_port=0, pipeline=PipelineSettings(exporters=()))
    service = await DiagnosisService.start(DiagnosisEngine(), settings=settings, nats_settings=nats_settings)
    result = Pipeline(nvml.write, dcmi_scenario, kernel_log, nats_server.url, service)

    async def record(msg: Msg) -> None:
        result.received.append(Received(time.monotonic(), msg.subject, msg.data))

    await recorder.subscribe("eagle_eye.>", cb=record)
    await flush(recorder)
    hardware = HardwareSettings(
        node_name=NODE, nvml_library=nvml.library, dcmi_library=dcmi_library, kernel_log=str(kernel_log)
    )
    try:
        await eventually(lambda: service.health()["nats"] == "connected")
        monitor = HardwareMonitor.open(hardware)
        assert monitor.dcmi is not None and monitor.nvml is not None, monitor.notes
        result.monitor = start_hardware_service(
            monitor, settings=hardware, nats_settings=nats_settings, prometheus_port=None, interval_s=PERIOD_S
        )
        await eventually(lambda: len(result.hardware()) >= 1, timeout=15)
        yield result
    finally:
        if result.monitor is not None:
            result.monitor.stop()
        await service.stop()
        await recorder.close()
