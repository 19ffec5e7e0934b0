"""Faults against the real processes: ``eagle-eye hardware-monitor`` and ``eagle-eye diagnose`` on a real nats-server.

The monitor runs on the NVML and DCMI C doubles, as a DaemonSet runs it (its own process, settings from the
environment, a Prometheus endpoint and an OTLP export on NATS every second); the diagnosis runs as its own process
too; a recorder subscribed to ``eagle_eye.>`` keeps every message in arrival order. Each test breaks something:

* a GPU falls off the bus, one Ascend chip's DCMI call hangs and another's fails: the monitor keeps exporting the
  other devices (a value changed meanwhile shows up on NATS and on the Prometheus endpoint), and the diagnosis names
  each fault; the hung chip comes back once its call returns;
* a vendor library does not load: the other backend is served, and the diagnosis says the node is blind;
* the diagnosis process is killed while critical findings are active (a lost GPU and an Xid 79 from the kernel log)
  and started again: it publishes every one of them again at the first export it receives, within one collection
  period of being back, from live telemetry alone; an Xid whose hold ran out before the restart does not come back.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.msg import Msg
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from eagleeye_otel.diagnosis import FindingChange, FindingMessage, Severity
from eagleeye_otel.nats_flush import flush
from eagleeye_otel.nats_server import EmbeddedNatsServer, free_port
from eagleeye_otel.semconv import _hardware as hw

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

EAGLE_EYE = str(Path(sys.executable).parent / "eagle-eye")
PERIOD_S = 1.0
"""The monitor's collection period, as deployed: every second an OTLP export on NATS."""
_decode_finding = msgspec.json.Decoder(FindingMessage).decode

Eventually = Callable[..., Awaitable[None]]


@dataclass
class Received:
    at: float
    subject: str
    data: bytes


@dataclass
class Stack:
    """A nats-server with its monitoring port, a recorder, and the processes a test started."""

    nats: EmbeddedNatsServer
    monitoring_port: int
    tmp_path: Path
    env: dict[str, str]
    received: list[Received] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, name: str, args: list[str], **env: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.tmp_path / f"{name}-{len(self.processes)}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [EAGLE_EYE, *args], stdout=output, stderr=subprocess.STDOUT, env={**self.env, **env}
            )
        self.processes.append(process)
        return process, log

    def monitor(self, **env: str) -> tuple[subprocess.Popen[bytes], Path]:
        args = ["--prometheus-host", "127.0.0.1", "--prometheus-port", "0", "--interval", str(PERIOD_S)]
        return self.start("monitor", ["hardware-monitor", *args], **env)

    def diagnose(self, *rule_files: Path) -> tuple[subprocess.Popen[bytes], Path]:
        args = [arg for rules in rule_files for arg in ("--rules", str(rules))]
        prometheus = {"OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1", "OTEL_EXPORTER_PROMETHEUS_PORT": str(free_port())}
        return self.start("diagnose", ["diagnose", *args], EAGLEEYE_DIAGNOSIS_HTTP="127.0.0.1:0", **prometheus)

    def hardware(self, since: float = 0.0) -> list[Received]:
        return [r for r in self.received if r.subject.startswith("eagle_eye.hardware.") and r.at > since]

    def findings(self, since: float = 0.0) -> list[tuple[Received, FindingMessage]]:
        return [
            (r, _decode_finding(r.data))
            for r in self.received
            if r.subject.startswith("eagle_eye.diagnosis.") and r.at > since
        ]

    def opened(self, fault: str, device: str | None, since: float = 0.0) -> list[tuple[Received, FindingMessage]]:
        return [
            (r, f)
            for r, f in self.findings(since)
            if f.change is FindingChange.OPENED and (f.fault, f.device) == (fault, device)
        ]

    def resolved(self, fault: str, device: str | None, since: float = 0.0) -> bool:
        return any(
            f.change is FindingChange.RESOLVED and (f.fault, f.device) == (fault, device)
            for _, f in self.findings(since)
        )

    def diagnosis_clients(self) -> list[dict[str, Any]]:
        """The diagnosis processes connected to nats-server, with their subscriptions."""
        url = f"http://127.0.0.1:{self.monitoring_port}/connz?subs=1"
        with urllib.request.urlopen(url, timeout=5) as response:
            connections = json.loads(response.read())["connections"] or []
        return [c for c in connections if c.get("name") == "eagle-eye-diagnosis"]


@pytest.fixture
async def stack(doubles: Any, tmp_path: Path) -> AsyncIterator[Stack]:
    monitoring_port = free_port()
    server = EmbeddedNatsServer(extra_args=["-m", str(monitoring_port)])
    server.start()
    recorder = await nats.connect(server.url)
    result = Stack(server, monitoring_port, tmp_path, {**doubles.env, "EAGLEEYE_NATS_URL": server.url})

    async def record(msg: Msg) -> None:
        result.received.append(Received(time.monotonic(), msg.subject, msg.data))

    await recorder.subscribe("eagle_eye.>", cb=record)
    await flush(recorder)
    try:
        yield result
    finally:
        for process in result.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in result.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        await recorder.close()
        server.stop()


def announced(log: Path, process: subprocess.Popen[bytes], pattern: str) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(pattern, log.read_text(errors="replace"))
        if found:
            return found.group(1)
        assert process.poll() is None, log.read_text(errors="replace")
        time.sleep(0.05)
    raise AssertionError(f"{pattern!r} never appeared:\n{log.read_text(errors='replace')}")


def points(payload: bytes) -> dict[tuple[str, str | None, frozenset[tuple[str, object]]], float]:
    """An OTLP export's points: (metric, ``hw.id`` or None, the other attributes but the description) -> value."""
    described = {*hw.DEVICE_ATTRIBUTES, *hw.DEVICE_DESCRIPTION_ATTRIBUTES}
    found = {}
    for resource_metrics in ExportMetricsServiceRequest.FromString(payload).resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in getattr(metric, metric.WhichOneof("data")).data_points:
                    attributes = {a.key: getattr(a.value, a.value.WhichOneof("value")) for a in point.attributes}
                    device = attributes.get(hw.HW_ID)
                    rest = frozenset((k, v) for k, v in attributes.items() if k not in described)
                    value = point.as_double if point.WhichOneof("value") == "as_double" else point.as_int
                    found[metric.name, device if isinstance(device, str) else None, rest] = float(value)
    return found


def scrape(port: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def sample(exposition: str, name: str, **labels: str) -> float | None:
    """The value of the first sample of ``name`` whose labels include ``labels``."""
    for line in exposition.splitlines():
        if line.startswith(name + "{") and all(f'{key}="{value}"' in line for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_a_lost_gpu_a_hung_and_a_failing_dcmi_call_leave_the_rest_served_and_are_diagnosed(
    stack: Stack, doubles: Any, scenario: Any, nvml_scenario: Any, dcmi_scenario: Any, eventually: Eventually
) -> None:
    diagnose, _ = stack.diagnose()
    monitor, monitor_log = stack.monitor()
    port = announced(monitor_log, monitor, r"http://127\.0\.0\.1:(\d+)/metrics")
    await eventually(lambda: len(stack.hardware()) >= 2, timeout=30)

    lost_gpu, hung_chip, failing_chip = scenario.GPUS[2]["uuid"], "npu-0-0", "npu-0-1"
    broken = time.monotonic()
    nvml_scenario(scenario.nvml_text(lost=frozenset({2})) + "gpu 0 temp 77\n")  # GPU 0 heats up meanwhile
    dcmi_scenario(
        scenario.dcmi_text()
        + "chip 0 0 hang dcmi_get_device_temperature -1\n"
        + "chip 0 1 fail dcmi_get_device_health -8005\n"
    )

    for fault, device, severity in (
        ("gpu_lost", lost_gpu, Severity.CRITICAL),
        ("npu_hung", hung_chip, Severity.WARNING),
        ("npu_unreadable", failing_chip, Severity.WARNING),
    ):
        await eventually(lambda f=fault, d=device: bool(stack.opened(f, d, broken)), timeout=30)
        (_, finding), *_ = stack.opened(fault, device, broken)
        assert finding.severity is severity and finding.node == scenario.NODE, finding

    # The monitor kept exporting every second, the healthy GPUs with their values, GPU 0's new temperature included.
    await eventually(lambda: len(stack.hardware(broken)) >= 5, timeout=30)
    exports = stack.hardware(broken)
    latest = points(exports[-1].data)
    gpu0 = scenario.GPUS[0]["uuid"]
    assert latest[hw.HW_TEMPERATURE, gpu0, frozenset({hw.HW_SENSOR_LOCATION: "die"}.items())] == 77
    assert latest[hw.HW_POWER, scenario.GPUS[1]["uuid"], frozenset()] == scenario.GPUS[1]["power_mw"] / 1000
    read_state = hw.EAGLEEYE_HW_READ_STATE
    assert latest[hw.EAGLEEYE_HW_READ_STATUS, hung_chip, frozenset({read_state: "hung"}.items())] == 1
    assert latest[hw.EAGLEEYE_HW_READ_STATUS, failing_chip, frozenset({read_state: "error"}.items())] == 1
    assert latest[hw.EAGLEEYE_HW_READ_STATUS, lost_gpu, frozenset({read_state: "lost"}.items())] == 1
    gaps = [b.at - a.at for a, b in itertools.pairwise(exports)]
    print(f"{len(exports)} exports since the faults, largest gap {max(gaps):.2f} s at a {PERIOD_S:g} s period")

    # ... and its Prometheus endpoint answers with the same picture.
    exposition = scrape(port)
    assert sample(exposition, "hw_temperature_celsius", hw_id=gpu0, hw_sensor_location="die") == 77
    assert sample(exposition, "eagleeye_hw_read_status", hw_id=hung_chip, eagleeye_hw_read_state="hung") == 1
    assert sample(exposition, "eagleeye_hw_source_status", eagleeye_hw_source="dcmi", eagleeye_hw_source_state="ok")

    # The hung call returns: the chip is read again and its finding resolves.
    released = time.monotonic()
    dcmi_scenario(scenario.dcmi_text() + "chip 0 1 fail dcmi_get_device_health -8005\n")
    await eventually(lambda: stack.resolved("npu_hung", hung_chip, released), timeout=30)
    healthy_again = points(stack.hardware(released)[-1].data)
    temperature = scenario.CHIPS[0, 0]["temperature"]
    assert healthy_again[hw.HW_TEMPERATURE, hung_chip, frozenset({hw.HW_SENSOR_LOCATION: "die"}.items())] == temperature
    assert monitor.poll() is None and diagnose.poll() is None


@pytest.mark.parametrize(("broken", "fault"), [("NVML", "nvml_unavailable"), ("DCMI", "dcmi_unavailable")])
async def test_a_vendor_library_that_does_not_load_is_diagnosed_and_the_rest_is_served(
    stack: Stack, scenario: Any, eventually: Eventually, broken: str, fault: str
) -> None:
    not_a_library = stack.tmp_path / "broken.so"
    not_a_library.write_bytes(b"not an ELF file")
    stack.diagnose()
    monitor, monitor_log = stack.monitor(**{f"EAGLEEYE_{broken}_LIBRARY": str(not_a_library)})
    port = announced(monitor_log, monitor, r"http://127\.0\.0\.1:(\d+)/metrics")

    await eventually(lambda: bool(stack.opened(fault, None)), timeout=30)
    (_, finding), *_ = stack.opened(fault, None)
    assert finding.severity is Severity.WARNING and finding.node == scenario.NODE
    assert finding.evidence["attributes"][hw.ERROR_TYPE] == "library_not_loadable", finding.evidence

    latest = points(stack.hardware()[-1].data)
    if broken == "NVML":  # the NPUs are read, no GPU is
        assert {d for _, d, _ in latest if d} == {"npu-0-0", "npu-0-1"}
    else:
        assert {d for _, d, _ in latest if d} == {gpu["uuid"] for gpu in scenario.GPUS}
    exposition = scrape(port)
    source = broken.lower()
    state = sample(
        exposition, "eagleeye_hw_source_status", eagleeye_hw_source=source, eagleeye_hw_source_state="unavailable"
    )
    assert state == 1 and 'error_type="library_not_loadable"' in exposition


def short_xid_13_hold(tmp_path: Path) -> Path:
    """Xid 13 held 4 s instead of an hour, so that its finding has run out before the restart."""
    rules = tmp_path / "short-hold.yaml"
    rules.write_text(
        "version: 1\nrules:\n  - id: xid\n    codes:\n      13: {name: GR_EXCEPTION, severity: warning, hold: 4}\n"
    )
    return rules


def critical_active(url: str) -> set[tuple[str, str | None]]:
    with urllib.request.urlopen(f"{url}api/findings?severity=critical", timeout=10) as response:
        return {(f["fault"], f["device"]) for f in json.loads(response.read())["active"]}


async def test_a_restarted_diagnosis_republishes_every_critical_finding_within_one_period_from_live_telemetry(
    stack: Stack, doubles: Any, scenario: Any, eventually: Eventually
) -> None:
    rules = short_xid_13_hold(stack.tmp_path)
    first, first_log = stack.diagnose(rules)
    url = announced(first_log, first, r"diagnosis report on (http://127\.0\.0\.1:\d+/)")
    stack.monitor()
    gpu0 = scenario.GPUS[0]["uuid"]  # at PCI 0000:3b:00.0, where the kernel log's Xid 13 lines point
    await eventually(lambda: bool(stack.opened("xid_13", gpu0)), timeout=30)
    await eventually(lambda: stack.resolved("xid_13", gpu0), timeout=30)  # its 4 s hold ran out

    broken = time.monotonic()
    with open(doubles.env["EAGLEEYE_KERNEL_LOG"], "a") as log:
        log.write(
            "[ 9812.004523] NVRM: Xid (PCI:0000:3b:00): 79, pid=2411, name=python3, GPU has fallen off the bus.\n"
        )
    doubles.lose(frozenset({0}))
    for fault in ("xid_79", "gpu_lost"):
        await eventually(lambda f=fault: bool(stack.opened(f, gpu0, broken)), timeout=30)
    await eventually(lambda: {("xid_79", gpu0), ("gpu_lost", gpu0)} <= critical_active(url), timeout=10)
    before = critical_active(url)

    first.send_signal(signal.SIGKILL)
    first.wait(10)
    await eventually(lambda: not stack.diagnosis_clients(), timeout=30)  # nats-server saw it go
    killed = time.monotonic()
    second, _ = stack.diagnose(rules)
    subscribed = "eagle_eye.hardware.>"
    while True:  # poll nats-server until the new process is subscribed: it came back between the last two polls
        not_yet = time.monotonic()  # (off the event loop, which must stamp the recorder's messages as they come)
        clients = await asyncio.to_thread(stack.diagnosis_clients)
        if any(subscribed in (c.get("subscriptions_list") or []) for c in clients):
            back = time.monotonic()
            break
        assert second.poll() is None and time.monotonic() - killed < 60
        await asyncio.sleep(0.005)

    for fault, device in sorted(before, key=str):
        await eventually(lambda f=fault, d=device: bool(stack.opened(f, d, killed)), timeout=15)
    exports = stack.hardware(back)
    republished = [stack.opened(fault, device, killed)[0][0].at for fault, device in before]
    for at in republished:  # each came with the first export after the restart, before the second one
        assert len([e for e in exports if e.at < at]) <= 1, (at - back, [e.at - back for e in exports[:3]])
    print(
        f"{len(before)} critical findings republished {min(republished) - not_yet:.2f} to "
        f"{max(republished) - not_yet:.2f} s after the restarted service subscribed (between {not_yet - killed:.3f} "
        f"and {back - killed:.3f} s after start); collection period {PERIOD_S:g} s"
    )
    assert ("xid_79", gpu0) in before and ("gpu_lost", gpu0) in before
    assert not stack.opened("xid_13", gpu0, killed), "an Xid whose hold ran out came back after the restart"
