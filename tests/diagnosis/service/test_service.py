"""The service on a real nats-server, fed OTLP payloads as the monitor encodes them: findings on NATS, Prometheus,
the API, restatements, resolution, bad input, a port that is taken, and OTel log events to real OTLP receivers."""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import msgspec
import nats
import pytest
from nats.aio.msg import Msg
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import (
    LogsServiceServicer,
    add_LogsServiceServicer_to_server,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from eagleeye_otel.diagnosis import DiagnosisEngine, DiagnosisService, DiagnosisSettings, FindingChange, FindingMessage
from eagleeye_otel.errors import ConfigError
from eagleeye_otel.nats_flush import flush
from eagleeye_otel.nats_server import EmbeddedNatsServer, free_port
from eagleeye_otel.sdk import PipelineSettings
from eagleeye_otel.settings import NatsSettings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

Eventually = Callable[..., Awaitable[None]]
HARDWARE = "eagle_eye.hardware.gpu-node-7"
_decode = msgspec.json.Decoder(FindingMessage).decode


class Findings:
    """What a subscriber to ``eagle_eye.diagnosis.>`` received: (subject, message)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, FindingMessage]] = []

    async def record(self, msg: Msg) -> None:
        self.received.append((msg.subject, _decode(msg.data)))

    def of(self, change: FindingChange) -> list[FindingMessage]:
        return [message for _, message in self.received if message.change is change]


def scrape(port: int) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode().splitlines()


async def test_findings_reach_nats_prometheus_and_the_api_and_resolve(
    nats_server: EmbeddedNatsServer, eventually: Eventually, hw: Any
) -> None:
    prometheus_port = free_port("127.0.0.1")
    settings = DiagnosisSettings(
        http_host="127.0.0.1",
        http_port=0,
        refresh_interval=0.5,
        pipeline=PipelineSettings(prometheus_host="127.0.0.1", prometheus_port=prometheus_port),
    )
    nats_settings = NatsSettings(servers=(nats_server.url,))
    service = await DiagnosisService.start(DiagnosisEngine(), settings=settings, nats_settings=nats_settings)
    client = await nats.connect(nats_server.url)
    findings = Findings()
    await client.subscribe("eagle_eye.diagnosis.>", cb=findings.record)
    try:
        await eventually(lambda: service.health()["nats"] == "connected")
        failing = hw.gpu(0, remapped_rows_failure=True)
        await client.publish(HARDWARE, b"not an OTLP export")
        await client.publish(HARDWARE, hw.otlp(failing, hw.gpu(1), at=time.time()))
        await eventually(lambda: findings.of(FindingChange.OPENED))
        (subject, opened), *_ = findings.received
        assert subject == "eagle_eye.diagnosis.gpu-node-7"
        assert (opened.node, opened.device, opened.fault) == (
            "gpu-node-7",
            failing.identity.id,
            "gpu_row_remap_failure",
        )
        await eventually(lambda: findings.of(FindingChange.ACTIVE))  # restated for late joiners
        assert findings.of(FindingChange.ACTIVE)[0].fault == "gpu_row_remap_failure"

        assert service.http is not None
        with urllib.request.urlopen(f"http://127.0.0.1:{service.http.port}/api/findings", timeout=10) as response:
            assert [f["fault"] for f in msgspec.json.decode(response.read())["active"]] == ["gpu_row_remap_failure"]
        health = service.health()
        assert (health["payloads"], health["malformed"], health["active"]) == (2, 1, 1)

        status = f'hw_id="{failing.identity.id}",hw_state="failed",hw_type="gpu"'
        await eventually(lambda: any(status in line and line.endswith(" 1.0") for line in scrape(prometheus_port)))
        lines = scrape(prometheus_port)
        assert any(
            line.startswith("eagleeye_diagnosis_findings{")
            and 'eagleeye_diagnosis_fault="gpu_row_remap_failure"' in line
            and 'eagleeye_diagnosis_severity="critical"' in line
            and line.endswith(" 1.0")
            for line in lines
        ), lines
        assert any('service_name="eagle-eye-diagnosis"' in line for line in lines if line.startswith("target_info"))

        for _ in range(4):  # the row remap works again: three clear evaluations resolve the finding
            await client.publish(HARDWARE, hw.otlp(hw.gpu(0), hw.gpu(1), at=time.time()))
            await flush(client)
        await eventually(lambda: findings.of(FindingChange.RESOLVED))
        (resolved,) = findings.of(FindingChange.RESOLVED)
        assert resolved.fault == "gpu_row_remap_failure" and resolved.resolved_at is not None
        assert service.board.view.active == () and service.board.view.resolved[0].fault == "gpu_row_remap_failure"
    finally:
        await client.close()
        await service.stop()
    assert service.published >= 3 and service.publish_failures == 0
    for port in (prometheus_port, service.http.port):  # type: ignore[union-attr]
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()


async def test_a_port_already_taken_stops_the_start_naming_the_setting(nats_server: EmbeddedNatsServer) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = DiagnosisSettings(http_host="127.0.0.1", http_port=port, pipeline=PipelineSettings(exporters=()))
        with pytest.raises(ConfigError) as caught:
            await DiagnosisService.start(
                DiagnosisEngine(), settings=settings, nats_settings=NatsSettings(servers=(nats_server.url,))
            )
    assert caught.value.setting == "EAGLEEYE_DIAGNOSIS_HTTP"
    assert f"127.0.0.1:{port}" in str(caught.value)


async def test_the_service_runs_while_nats_is_down_and_catches_up_when_it_comes(
    eventually: Eventually, hw: Any
) -> None:
    server = EmbeddedNatsServer()
    settings = DiagnosisSettings(http_port=None, pipeline=PipelineSettings(exporters=()))
    service = await DiagnosisService.start(
        DiagnosisEngine(), settings=settings, nats_settings=NatsSettings(servers=(server.url,))
    )
    try:
        assert service.health()["nats"] == "disconnected"
        server.start()
        await eventually(lambda: service.health()["nats"] == "connected", timeout=20)
        client = await nats.connect(server.url)
        findings = Findings()
        await client.subscribe("eagle_eye.diagnosis.>", cb=findings.record)
        await client.publish(HARDWARE, hw.otlp(hw.gpu(0, remapped_rows_failure=True), at=time.time()))
        await eventually(lambda: findings.of(FindingChange.OPENED))
        await client.close()
    finally:
        await service.stop()
        server.stop()


# -- OTel log events to a real OTLP endpoint -----------------------------------------------------------------


class _Logs:
    def __init__(self) -> None:
        self.requests: list[ExportLogsServiceRequest] = []
        self.lock = threading.Lock()

    def add(self, request: ExportLogsServiceRequest) -> None:
        with self.lock:
            self.requests.append(request)

    def records(self) -> list[Any]:
        with self.lock:
            return [
                record
                for request in self.requests
                for resource_logs in request.resource_logs
                for scope_logs in resource_logs.scope_logs
                for record in scope_logs.log_records
            ]


class _LogsService(LogsServiceServicer):
    def __init__(self, logs: _Logs) -> None:
        self._logs = logs

    def Export(self, request: ExportLogsServiceRequest, context: grpc.ServicerContext) -> Any:
        self._logs.add(request)
        return ExportLogsServiceResponse()


@pytest.fixture(params=["grpc", "http/protobuf"])
def otlp_logs(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Logs]:
    """A real OTLP log receiver, and the OTEL_* variables that point the service at it."""
    logs = _Logs()
    if request.param == "grpc":
        server = grpc.server(ThreadPoolExecutor(max_workers=2))
        add_LogsServiceServicer_to_server(_LogsService(logs), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        yield logs
        server.stop(grace=None).wait()
        return

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            logs.add(ExportLogsServiceRequest.FromString(body))
            reply = ExportLogsServiceResponse().SerializeToString()
            self.send_response(200 if self.path == "/v1/logs" else 404)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", f"http://127.0.0.1:{http.server_address[1]}/v1/logs")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/protobuf")
    yield logs
    http.shutdown()
    http.server_close()


def _text(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "kvlist_value":
        return {pair.key: _text(pair.value) for pair in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


async def test_each_change_is_an_otel_log_event_over_otlp(
    otlp_logs: _Logs, nats_server: EmbeddedNatsServer, eventually: Eventually, hw: Any
) -> None:
    from_env = DiagnosisSettings.from_env({**os.environ, "OTEL_METRICS_EXPORTER": "none"})
    settings = dataclasses.replace(from_env, http_port=None)
    assert settings.logs_protocol is not None
    service = await DiagnosisService.start(
        DiagnosisEngine(), settings=settings, nats_settings=NatsSettings(servers=(nats_server.url,))
    )
    client = await nats.connect(nats_server.url)
    try:
        await eventually(lambda: service.health()["nats"] == "connected")
        failing = hw.gpu(0, remapped_rows_failure=True)
        await client.publish(HARDWARE, hw.otlp(failing, at=time.time()))
        await eventually(otlp_logs.records, timeout=20)
    finally:
        await client.close()
        await service.stop()
    (record,) = otlp_logs.records()
    assert record.event_name == "eagleeye.diagnosis.finding"
    assert record.severity_text == "ERROR"
    attributes = {pair.key: _text(pair.value) for pair in record.attributes}
    assert attributes["eagleeye.diagnosis.fault"] == "gpu_row_remap_failure"
    assert attributes["eagleeye.diagnosis.change"] == "opened"
    assert attributes["hw.id"] == failing.identity.id
    body = _text(record.body)
    assert body["fault"] == "gpu_row_remap_failure" and body["action"] and body["node"] == "gpu-node-7"
    resource = {pair.key: _text(pair.value) for pair in otlp_logs.requests[0].resource_logs[0].resource.attributes}
    assert resource["service.name"] == "eagle-eye-diagnosis"
