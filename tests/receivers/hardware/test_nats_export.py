"""The hardware NATS export: each batch the encoder's message for a shared sweep, over a real nats-server."""

from __future__ import annotations

import asyncio

import nats
import pytest
from nats.aio.msg import Msg
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.sdk.resources import Resource

from eagleeye_otel.exporters.nats import NatsMetricExporter
from eagleeye_otel.nats_flush import flush
from eagleeye_otel.nats_server import EmbeddedNatsServer
from eagleeye_otel.receivers.hardware._model import Sweep
from eagleeye_otel.receivers.hardware._nats_export import SweepExport
from eagleeye_otel.receivers.hardware._otlp import SweepEncoder
from eagleeye_otel.receivers.hardware._sweep_cache import SweepCache
from eagleeye_otel.settings import NatsSettings
from tests.receivers.hardware.sweeps import SWEEP

pytestmark = pytest.mark.integration

SUBJECT = "eagle_eye.hardware.node-a"
RESOURCE = Resource.create({"host.name": "node-a"})


class Taken:
    """A sweep source that counts how often it is read."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> Sweep:
        self.count += 1
        return SWEEP


async def test_exports_share_the_sweep_and_stop_sends_a_last_batch(nats_server: EmbeddedNatsServer, eventually):
    received: list[Msg] = []

    async def on_message(msg: Msg) -> None:
        received.append(msg)

    client = await nats.connect(nats_server.url)
    await client.subscribe(SUBJECT, cb=on_message)
    await flush(client)
    taken = Taken()
    sweeps = SweepCache(taken, max_age_s=60.0)
    exporter = NatsMetricExporter(nats_settings=NatsSettings(servers=(nats_server.url,)), subject=SUBJECT)
    export = SweepExport(exporter, SweepEncoder(RESOURCE), sweeps, interval_s=3600.0)
    try:
        await eventually(lambda: exporter.stats.connected)
        sweeps.get("hw.power")  # a Prometheus scrape's callback took this sweep: the export shares it
        assert await asyncio.to_thread(export.export) is True
        assert taken.count == 1
        await asyncio.to_thread(export.stop, 5.0)  # the last batch, then the connection closes
        await eventually(lambda: len(received) == 2)
    finally:
        await client.close()
    assert exporter.stats.exported == 2 and not exporter.stats.connected
    assert taken.count == 1  # both batches within the sweep's max age
    expected = SweepEncoder(RESOURCE).encode(SWEEP, 0)
    assert expected is not None
    for msg in received:
        assert msg.headers == {"Content-Type": "application/x-protobuf"}
        assert _names(msg.data) == _names(expected)


def _names(payload: bytes) -> list[str]:
    request = ExportMetricsServiceRequest.FromString(payload)
    return [metric.name for metric in request.resource_metrics[0].scope_metrics[0].metrics]
