"""The monitor process, a real nats-server and an OTLP decoder on the subscriber side agree on every value.

``eagle-eye hardware-monitor`` runs as a DaemonSet would run it (its own process, settings from the environment)
against the NVML and DCMI C doubles; the test subscribes to ``eagle_eye.hardware.*``, decodes each message as an OTLP
``ExportMetricsServiceRequest`` and compares its points with the scenario, before and after a GPU falls off the bus.
Its Prometheus endpoint is scraped too, and SIGTERM stops it cleanly.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nats
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from eagleeye_otel.nats_flush import flush
from eagleeye_otel.semconv import _hardware as hw

IDENTIFYING = {*hw.DEVICE_ATTRIBUTES, *hw.DEVICE_DESCRIPTION_ATTRIBUTES}

pytestmark = pytest.mark.integration

EAGLE_EYE = str(Path(sys.executable).parent / "eagle-eye")


def _value(value: AnyValue) -> object:
    return getattr(value, value.WhichOneof("value"))


def _attributes(pairs: list[KeyValue]) -> dict[str, object]:
    return {pair.key: _value(pair.value) for pair in pairs}


def decode(payload: bytes) -> tuple[dict[str, object], dict[tuple[str, str | None, frozenset], float]]:
    """An OTLP message's resource attributes, and its points keyed like the scenario's ``expected_points``."""
    request = ExportMetricsServiceRequest.FromString(payload)
    (resource_metrics,) = request.resource_metrics
    points = {}
    for scope_metrics in resource_metrics.scope_metrics:
        for metric in scope_metrics.metrics:
            data = getattr(metric, metric.WhichOneof("data"))
            for point in data.data_points:
                attributes = _attributes(point.attributes)
                device = attributes.get(hw.HW_ID)
                if device is not None:
                    attributes = {k: v for k, v in attributes.items() if k not in IDENTIFYING}
                value = point.as_double if point.WhichOneof("value") == "as_double" else point.as_int
                points[metric.name, device, frozenset(attributes.items())] = float(value)
    return _attributes(resource_metrics.resource.attributes), points


def prometheus_port(log: Path) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(r"http://127\.0\.0\.1:(\d+)/metrics", log.read_text())
        if found:
            return int(found.group(1))
        time.sleep(0.1)
    raise AssertionError(f"the monitor never announced its Prometheus endpoint:\n{log.read_text()}")


async def test_the_monitor_nats_and_an_otlp_decoder_agree(doubles, scenario, nats_server, eventually, tmp_path):
    messages: list[tuple[str, dict[str, str], bytes]] = []

    async def received(msg) -> None:
        messages.append((msg.subject, dict(msg.headers or {}), msg.data))

    client = await nats.connect(nats_server.url)
    await client.subscribe("eagle_eye.hardware.*", cb=received)
    await flush(client)
    log = tmp_path / "monitor.log"
    env = {**doubles.env, "EAGLEEYE_NATS_URL": nats_server.url, "NODE_NAME": "k8s-node-1"}
    args = ["hardware-monitor", "--prometheus-host", "127.0.0.1", "--prometheus-port", "0", "--interval", "0.5"]
    with open(log, "w") as output:
        monitor = subprocess.Popen([EAGLE_EYE, *args], stdout=output, stderr=subprocess.STDOUT, env=env)
    try:
        xid = (hw.EAGLEEYE_HW_GPU_XID, scenario.GPUS[1]["uuid"], frozenset({hw.EAGLEEYE_HW_GPU_XID_CODE: 48}.items()))
        await eventually(lambda: messages and xid in decode(messages[-1][2])[1], timeout=60)
        subject, headers, payload = messages[-1]
        assert subject == "eagle_eye.hardware.gpu-node-1_example_internal"
        assert headers["Content-Type"] == "application/x-protobuf"
        resource, points = decode(payload)
        points, times = scenario.split_times(points)
        assert points == pytest.approx(scenario.expected_points())
        assert set(times) == scenario.expected_times()
        assert resource["host.name"] == resource[hw.EAGLEEYE_NODE_NAME] == scenario.NODE
        assert resource["k8s.node.name"] == "k8s-node-1"
        assert resource["service.name"] == "eagle-eye-hardware-monitor"

        port = prometheus_port(log)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            exposition = response.read().decode()
        uuid = scenario.GPUS[0]["uuid"]
        (usage,) = [line for line in exposition.splitlines() if line.startswith("hw_gpu_memory_usage") and uuid in line]
        assert float(usage.rsplit(" ", 1)[1]) == scenario.GPUS[0]["mem_used"]

        doubles.lose(frozenset({2}))
        lost = (hw.HW_STATUS, scenario.GPUS[2]["uuid"], frozenset({hw.HW_STATE: "failed"}.items()))
        await eventually(lambda: decode(messages[-1][2])[1].get(lost) == 1.0, timeout=30)
        points, _ = scenario.split_times(decode(messages[-1][2])[1])
        assert points == pytest.approx(scenario.expected_points(lost=frozenset({2})))

        monitor.send_signal(signal.SIGTERM)
        assert monitor.wait(timeout=30) == 0, log.read_text()
    finally:
        if monitor.poll() is None:
            monitor.kill()
            monitor.wait()
        await client.close()
