"""The hardware monitor, the diagnosis service and a router, each with its own credential from
``deploy/nats/eagle-eye-auth.conf`` over TLS: a fault in the NVML double reaches the router as a finding, and the
server refused nothing."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from eagleeye_otel.diagnosis import DiagnosisEngine, DiagnosisService, DiagnosisSettings
from eagleeye_otel.receivers.hardware._monitor import HardwareMonitor
from eagleeye_otel.receivers.hardware._service import start_hardware_service
from eagleeye_otel.routing import RouterClient, RoutingMessage
from eagleeye_otel.sdk import PipelineSettings
from eagleeye_otel.settings import HardwareSettings
from tests.helpers.nats_auth import AuthServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

NODE = "gpu-node-9"


async def test_a_gpu_fault_reaches_the_router_through_components_that_each_hold_only_their_permissions(
    auth: AuthServer, nvml: Any, tmp_path: Path, eventually: Callable[..., Awaitable[None]]
) -> None:
    nvml.write(nvml.node(2))
    settings = DiagnosisSettings(http_host="127.0.0.1", http_port=0, pipeline=PipelineSettings(exporters=()))
    service = await DiagnosisService.start(DiagnosisEngine(), settings=settings, nats_settings=auth.nats("diagnosis"))
    router = RouterClient(nats_settings=auth.nats("router"), follow_health=True, stale_after=600)
    monitor_service = None
    try:
        await eventually(lambda: service.health()["nats"] == "connected")
        hardware = HardwareSettings(node_name=NODE, nvml_library=nvml.library, kernel_log="off")
        monitor = HardwareMonitor.open(hardware)
        monitor_service = start_hardware_service(
            monitor, settings=hardware, nats_settings=auth.nats("hardware"), prometheus_port=None, interval_s=0.5
        )
        await router.start()
        sick = nvml.uuid(1)
        message = RoutingMessage(
            version=1,
            instance="pod-on-gpu1",
            model="llama",
            engine=0,
            timestamp=time.time(),
            seq=1,
            started=1_700_000_000.0,
            num_requests_waiting=0,
            num_requests_running=0,
            kv_cache_usage=0.0,
            node=NODE,
            devices=(sick,),
        )
        assert router.handle(msgspec.json.encode(message))
        await eventually(lambda: service.health()["payloads"] >= 1, timeout=15)  # monitor -> diagnosis

        nvml.write(nvml.node(2, extra="gpu 1 field 4 1\n"))  # a double-bit ECC error: critical
        await eventually(lambda: not router.get("pod-on-gpu1").healthy, timeout=20)  # type: ignore[union-attr]
        assert service.health()["published"] >= 1 and service.health()["publish_failures"] == 0
        assert auth.violations() == []
    finally:
        await router.close()
        if monitor_service is not None:
            monitor_service.stop()
        await service.stop()
