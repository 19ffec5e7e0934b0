"""NatsMetricExporter: the MetricExporter contract, a real SDK pipeline over a real nats-server, outages, fork."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from importlib.metadata import entry_points
from typing import Any
from unittest.mock import patch

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.sdk._configuration import _import_exporters
from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)

from eagleeye_otel.errors import ConfigError
from eagleeye_otel.exporters.nats import OTLP_JSON, NatsMetricExporter
from eagleeye_otel.exporters.nats.exporter import _AutoNatsMetricExporter
from eagleeye_otel.nats_flush import flush
from eagleeye_otel.nats_server import EmbeddedNatsServer, free_port
from eagleeye_otel.settings import NatsSettings

SUBJECT = "test.metrics"
Eventually = Callable[..., Awaitable[None]]


def collect(value: int, **attributes: str) -> MetricsData:
    """One collection of a counter named ``test.requests`` holding ``value``."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    provider.get_meter("test").create_counter("test.requests").add(value, attributes)
    data = reader.get_metrics_data()
    provider.shutdown()
    assert data is not None
    return data


def counter_values(request: ExportMetricsServiceRequest, name: str = "test.requests") -> list[int]:
    return [
        point.as_int
        for resource_metrics in request.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
        if metric.name == name
        for point in metric.sum.data_points
    ]


def transport_threads() -> set[threading.Thread]:
    """Live transport threads; tests compare before and after, since other tests' exporters may be running."""
    return {t for t in threading.enumerate() if t.name.startswith("eagle-eye-nats-")}


@pytest.fixture
def exporter_factory() -> Iterator[Callable[..., NatsMetricExporter]]:
    made: list[NatsMetricExporter] = []

    def make(url: str, **options: Any) -> NatsMetricExporter:
        exporter = NatsMetricExporter(nats_settings=NatsSettings(servers=(url,)), subject=SUBJECT, **options)
        made.append(exporter)
        return exporter

    yield make
    for exporter in made:
        exporter.shutdown(timeout_millis=2000)


@pytest.fixture
async def inbox(nats_server: EmbeddedNatsServer) -> AsyncIterator[list[Msg]]:
    """Messages on SUBJECT, seen by a plain nats-py subscriber (a diagnosis-service stand-in)."""
    messages: list[Msg] = []

    async def on_message(msg: Msg) -> None:
        messages.append(msg)

    nc: Client = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    await nc.subscribe(SUBJECT, cb=on_message)
    await flush(nc)
    yield messages
    await nc.close()


# -- contract, no server needed ----------------------------------------------------------------------------------


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="timeout"):
        NatsMetricExporter(nats_settings=NatsSettings(), timeout=0)


def test_disabled_exporter_opens_nothing_and_fails_quietly(caplog: pytest.LogCaptureFixture) -> None:
    before = transport_threads()
    exporter = NatsMetricExporter(nats_settings=NatsSettings(), enabled=False)
    assert transport_threads() <= before
    with caplog.at_level(logging.WARNING):
        assert exporter.export(collect(1)) is MetricExportResult.FAILURE
    assert exporter.stats.dropped == {"closed": 1}
    assert exporter.stats.exported == 0
    assert not caplog.records
    exporter.shutdown()


def test_export_without_server_fails_counts_and_logs_once(
    exporter_factory: Callable[..., NatsMetricExporter], caplog: pytest.LogCaptureFixture
) -> None:
    exporter = exporter_factory(f"nats://127.0.0.1:{free_port()}")
    data = collect(1)
    with caplog.at_level(logging.WARNING, logger="eagleeye_otel.exporters.nats.exporter"):
        results = [exporter.export(data, timeout_millis=10_000) for _ in range(5)]
    assert results == [MetricExportResult.FAILURE] * 5
    assert exporter.stats.dropped == {"not_connected": 5}
    assert not exporter.stats.connected
    assert exporter.force_flush(timeout_millis=200) is False
    records = [r for r in caplog.records if r.name == "eagleeye_otel.exporters.nats.exporter"]
    assert len(records) == 1  # rate-limited
    assert "not_connected" in records[0].getMessage()


def test_shutdown_runs_once_and_later_exports_fail(exporter_factory: Callable[..., NatsMetricExporter]) -> None:
    before = transport_threads()
    exporter = exporter_factory(f"nats://127.0.0.1:{free_port()}")
    assert len(transport_threads() - before) == 1
    # PeriodicExportingMetricReader.shutdown passes its remaining budget as timeout= (milliseconds).
    exporter.shutdown(timeout=1000)
    exporter.shutdown()
    assert transport_threads() <= before
    assert exporter.export(collect(1)) is MetricExportResult.FAILURE
    assert exporter.stats.dropped == {"closed": 1}


def test_export_never_raises_on_an_unencodable_batch(exporter_factory: Callable[..., NatsMetricExporter]) -> None:
    exporter = exporter_factory(f"nats://127.0.0.1:{free_port()}")
    assert exporter.export(object()) is MetricExportResult.FAILURE  # type: ignore[arg-type]
    assert exporter.stats.dropped == {"encoding_failed": 1}


def test_entry_point_loads_by_name_and_through_the_sdk_configurator() -> None:
    (entry_point,) = entry_points(group="opentelemetry_metrics_exporter", name="eagle_eye_nats")
    assert entry_point.load() is _AutoNatsMetricExporter
    _, metric_exporters, _ = _import_exporters([], ["eagle_eye_nats"], [])
    assert metric_exporters == {"eagle_eye_nats": _AutoNatsMetricExporter}


def test_entry_point_with_a_bad_setting_logs_it_and_stays_off(caplog: pytest.LogCaptureFixture) -> None:
    before = transport_threads()
    with patch.dict(os.environ, {"EAGLEEYE_METRICS_SUBJECT": "bad subject"}), caplog.at_level(logging.ERROR):
        exporter = _AutoNatsMetricExporter()
    assert "EAGLEEYE_METRICS_SUBJECT" in caplog.text
    assert transport_threads() <= before
    assert exporter.export(collect(1)) is MetricExportResult.FAILURE
    exporter.shutdown()


# -- against a real nats-server ----------------------------------------------------------------------------------


@pytest.mark.integration
async def test_periodic_reader_publishes_counter_values(
    nats_server: EmbeddedNatsServer, inbox: list[Msg], eventually: Eventually
) -> None:
    before = transport_threads()
    exporter = NatsMetricExporter(nats_settings=NatsSettings(servers=(nats_server.url,)), subject=SUBJECT)
    provider = MeterProvider(metric_readers=[PeriodicExportingMetricReader(exporter, export_interval_millis=200)])
    requests = provider.get_meter("test").create_counter("test.requests")
    try:
        requests.add(5)
        await eventually(lambda: any(counter_values(decode(m)) == [5] for m in inbox))
        requests.add(2)
        await eventually(lambda: any(counter_values(decode(m)) == [7] for m in inbox))
    finally:
        await asyncio.to_thread(provider.shutdown)
    assert {m.headers.get("Content-Type") for m in inbox if m.headers} == {"application/x-protobuf"}
    assert exporter.stats.exported >= 2
    assert transport_threads() <= before  # the reader's shutdown closed the exporter


def decode(msg: Msg) -> ExportMetricsServiceRequest:
    return ExportMetricsServiceRequest.FromString(msg.data)


async def export_until_received(
    exporter: NatsMetricExporter, value: int, inbox: list[Msg], eventually: Eventually
) -> None:
    """Export ``value`` until the subscriber has it: after a restart the subscriber reconnects on its own clock."""
    data = collect(value)

    def delivered() -> bool:
        exporter.export(data)
        return [value] in [counter_values(decode(m)) for m in inbox]

    await eventually(delivered, timeout=15, interval=0.1)


@pytest.mark.integration
async def test_server_down_at_start_then_up_then_lost_then_back(
    nats_server: EmbeddedNatsServer,
    exporter_factory: Callable[..., NatsMetricExporter],
    inbox: list[Msg],
    eventually: Eventually,
) -> None:
    nats_server.stop()
    exporter = exporter_factory(nats_server.url)
    assert exporter.export(collect(1)) is MetricExportResult.FAILURE
    assert exporter.stats.dropped == {"not_connected": 1}

    nats_server.start()
    await eventually(lambda: exporter.stats.connected, timeout=15)
    await export_until_received(exporter, 2, inbox, eventually)

    nats_server.stop()
    await eventually(lambda: not exporter.stats.connected)
    assert exporter.export(collect(3)) is MetricExportResult.FAILURE
    assert exporter.stats.dropped["not_connected"] >= 2

    nats_server.start()
    await eventually(lambda: exporter.stats.connected, timeout=15)
    await export_until_received(exporter, 4, inbox, eventually)
    assert [3] not in [counter_values(decode(m)) for m in inbox]  # dropped, not queued


@pytest.mark.integration
async def test_preferred_temporality_reaches_the_wire(
    nats_server: EmbeddedNatsServer,
    exporter_factory: Callable[..., NatsMetricExporter],
    inbox: list[Msg],
    eventually: Eventually,
) -> None:
    exporter = exporter_factory(nats_server.url, preferred_temporality={Counter: AggregationTemporality.DELTA})
    provider = MeterProvider(metric_readers=[PeriodicExportingMetricReader(exporter, export_interval_millis=math.inf)])
    requests = provider.get_meter("test").create_counter("test.requests")
    await eventually(lambda: exporter.stats.connected)
    for value in (5, 2):
        requests.add(value)
        await asyncio.to_thread(provider.force_flush)  # collect, export, then the exporter's PING/PONG flush
    await eventually(lambda: len(inbox) == 2)
    assert [counter_values(decode(m)) for m in inbox] == [[5], [2]]
    metric = decode(inbox[1]).resource_metrics[0].scope_metrics[0].metrics[0]
    assert metric.sum.aggregation_temporality == metrics_pb2.AGGREGATION_TEMPORALITY_DELTA
    await asyncio.to_thread(provider.shutdown)


@pytest.mark.integration
async def test_json_encoding_over_nats(
    nats_server: EmbeddedNatsServer,
    exporter_factory: Callable[..., NatsMetricExporter],
    inbox: list[Msg],
    eventually: Eventually,
) -> None:
    exporter = exporter_factory(nats_server.url, encoding=OTLP_JSON)
    await eventually(lambda: exporter.stats.connected)
    assert exporter.export(collect(9, model="m")) is MetricExportResult.SUCCESS
    assert exporter.force_flush() is True
    await eventually(lambda: len(inbox) == 1)
    assert inbox[0].headers == {"Content-Type": "application/json"}
    document = json.loads(inbox[0].data)
    (metric,) = document["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
    assert metric["name"] == "test.requests"
    assert metric["sum"]["dataPoints"][0]["asInt"] == "9"


@pytest.mark.integration
async def test_a_batch_encoded_by_its_producer_goes_out_as_is_and_is_counted(
    nats_server: EmbeddedNatsServer,
    exporter_factory: Callable[..., NatsMetricExporter],
    inbox: list[Msg],
    eventually: Eventually,
) -> None:
    exporter = exporter_factory(nats_server.url)
    payload = encode_metrics(collect(11)).SerializeToString()
    await eventually(lambda: exporter.stats.connected)
    exported = exporter.stats.exported
    assert exporter.export_encoded(payload) is MetricExportResult.SUCCESS
    assert exporter.stats.exported == exported + 1
    await eventually(lambda: any(m.data == payload for m in inbox))
    assert {m.headers.get("Content-Type") for m in inbox if m.headers} == {"application/x-protobuf"}
    exporter.shutdown()
    assert exporter.export_encoded(payload) is MetricExportResult.FAILURE
    assert exporter.stats.dropped["closed"] == 1


@pytest.mark.integration
async def test_entry_point_exporter_reads_the_environment(
    nats_server: EmbeddedNatsServer, eventually: Eventually
) -> None:
    messages: list[Msg] = []

    async def on_message(msg: Msg) -> None:
        messages.append(msg)

    nc = await nats.connect(nats_server.url)
    await nc.subscribe("env.metrics", cb=on_message)
    await flush(nc)
    (entry_point,) = entry_points(group="opentelemetry_metrics_exporter", name="eagle_eye_nats")
    env = {"EAGLEEYE_NATS_URL": nats_server.url, "EAGLEEYE_METRICS_SUBJECT": "env.metrics"}
    with patch.dict(os.environ, env):
        exporter = entry_point.load()()
    try:
        assert exporter.subject == "env.metrics"
        await eventually(lambda: exporter.stats.connected)
        assert exporter.export(collect(11)) is MetricExportResult.SUCCESS
        await eventually(lambda: len(messages) == 1)
        assert counter_values(decode(messages[0])) == [11]
    finally:
        exporter.shutdown()
        await nc.close()


@pytest.mark.integration
async def test_forked_child_exports_nothing_even_with_the_lock_held_at_fork(
    nats_server: EmbeddedNatsServer,
    exporter_factory: Callable[..., NatsMetricExporter],
    inbox: list[Msg],
    eventually: Eventually,
) -> None:
    exporter = exporter_factory(nats_server.url)
    await eventually(lambda: exporter.stats.connected)
    child_data = collect(99, who="child")
    read_end, write_end = os.pipe()
    # Fork while an export holds the exporter's lock, as the reader thread may when vLLM forks a worker: the
    # child inherits the lock held, with no thread left to release it.
    with exporter._lock:
        pid = os.fork()
        if pid == 0:  # child: never return into pytest
            try:
                # A deadlocked child dies (the default action, not pytest-timeout's handler), closing the pipe.
                signal.signal(signal.SIGALRM, signal.SIG_DFL)
                signal.alarm(10)
                result = exporter.export(child_data)
                exporter.shutdown(timeout_millis=500)
                os.write(write_end, json.dumps([result.name, dict(exporter.stats.dropped)]).encode())
            finally:
                os._exit(0)
    os.close(write_end)
    report = await asyncio.wait_for(asyncio.to_thread(os.read, read_end, 1024), 30)
    os.close(read_end)
    await asyncio.to_thread(os.waitpid, pid, 0)
    assert json.loads(report) == ["FAILURE", {"other_process": 1}]

    assert exporter.export(collect(1, who="parent")) is MetricExportResult.SUCCESS
    await eventually(lambda: len(inbox) >= 1)
    assert [counter_values(decode(m)) for m in inbox] == [[1]]
    assert exporter.stats.connected
