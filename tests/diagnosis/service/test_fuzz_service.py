"""The diagnosis service on a real nats-server, fed hostile OTLP payloads: it keeps diagnosing, and Prometheus
shows each one in ``eagleeye_diagnosis_rejected_total``."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

import nats
import pytest

from eagleeye_otel.diagnosis import DiagnosisEngine, DiagnosisService, DiagnosisSettings
from eagleeye_otel.nats_server import EmbeddedNatsServer, free_port
from eagleeye_otel.sdk import PipelineSettings
from eagleeye_otel.settings import NatsSettings
from tests.helpers.hostile_protobuf import HOSTILE_OTLP


@pytest.mark.integration
@pytest.mark.timeout(60)
async def test_the_service_survives_hostile_exports_over_nats_and_prometheus_counts_them(
    nats_server: EmbeddedNatsServer, eventually: Callable[..., Awaitable[None]], hw: Any
) -> None:
    port = free_port("127.0.0.1")
    settings = DiagnosisSettings(pipeline=PipelineSettings(prometheus_host="127.0.0.1", prometheus_port=port))
    engine = DiagnosisEngine()
    service = await DiagnosisService.start(
        engine, settings=settings, nats_settings=NatsSettings(servers=(nats_server.url,))
    )
    client = await nats.connect(nats_server.url)
    subject = "eagle_eye.hardware.gpu-node-7"
    try:
        await eventually(lambda: service.health()["nats"] == "connected")
        for payload in HOSTILE_OTLP.values():
            if len(payload) < 1024 * 1024:  # the server's max_payload
                await client.publish(subject, payload)
        await client.publish(subject, hw.otlp(hw.gpu(0, remapped_rows_failure=True), at=time.time()))
        await eventually(lambda: engine.stats.payloads == 7)
        await eventually(lambda: service.board.view.active != ())  # still diagnosing after all that

        def rejected_malformed() -> float | None:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                lines = response.read().decode().splitlines()
            for line in lines:
                if line.startswith("eagleeye_diagnosis_rejected_total{") and 'reason="malformed"' in line:
                    return float(line.rsplit(" ", 1)[1])
            return None

        await eventually(lambda: rejected_malformed() == 6.0)
    finally:
        await client.close()
        await service.stop()
