"""``eagle-eye up`` as a newcomer runs it, with ``simulate`` traffic and an injected fault, then Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from eagleeye_otel.routing import RouterClient
from eagleeye_otel.settings import NatsSettings
from eagleeye_otel.simulation import FleetSpec, placement, simulated_gpu_id

EAGLE_EYE = str(Path(sys.executable).parent / "eagle-eye")


def _wait_for(log: Path, pattern: str, process: subprocess.Popen[bytes], timeout: float = 30) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while (match := re.search(pattern, log.read_text())) is None:
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    return match


def _listening(pids: set[int]) -> set[int]:
    return {c.laddr.port for c in psutil.net_connections("tcp") if c.pid in pids and c.status == "LISTEN"}


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.integration
async def test_up_serves_simulated_fleet_and_fault_then_stops_everything(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EAGLEEYE_")}
    log = tmp_path / "up.log"
    ports = ["--nats-port", "0", "--hardware-port", "0", "--diagnosis-port", "0", "--report-port", "0"]
    with log.open("w") as out:
        up = subprocess.Popen([EAGLE_EYE, "up", *ports], stdout=out, stderr=subprocess.STDOUT, env=env)
    simulate: subprocess.Popen[bytes] | None = None
    try:
        _wait_for(log, "ready", up)
        text = log.read_text()
        nats_url = re.search(r"NATS +(nats://[\d.:]+)", text)
        report = re.search(r"report +(http://[\d.:]+)/", text)
        assert nats_url is not None and report is not None, text
        tree = psutil.Process(up.pid)
        children = tree.children(recursive=True)
        assert children, "the embedded nats-server is a child"
        pids = {up.pid, *(child.pid for child in children)}
        bound = _listening(pids)
        assert len(bound) >= 4, text  # NATS, two Prometheus endpoints, the report

        spec = FleetSpec(instances=3, engines=2)
        sick_node, sick_gpu = placement(spec, 0, 1)
        fault = ["--fault", "xid79", "--node", sick_node, "--gpu", str(sick_gpu), "--fault-after", "1"]
        simulate = subprocess.Popen(
            [EAGLE_EYE, "simulate", "--instances", "3", "--engines", "2", "--duration", "60", *fault],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**env, "EAGLEEYE_NATS_URL": nats_url[1]},
        )
        async with RouterClient(nats_settings=NatsSettings(servers=(nats_url[1],)), follow_health=True) as client:
            deadline = time.monotonic() + 30
            while True:
                sick = client.get("sim-0000", 1)
                findings = json.loads(urllib.request.urlopen(f"{report[1]}/api/findings", timeout=5).read())["active"]
                if len(client.instances()) == 6 and sick is not None and not sick.healthy and findings:
                    break
                assert time.monotonic() < deadline, (client.instances(), findings)
                await asyncio.sleep(0.2)
        assert findings[0]["fault"] == "xid_79"
        assert findings[0]["node"] == sick_node
        assert findings[0]["device"] == simulated_gpu_id(sick_node, sick_gpu)
        healthy = client.get("sim-0000", 0)
        assert healthy is not None and healthy.healthy
        assert _wait_for(log, r"\+ sim-0002 engine 1 serving", up)
    finally:
        if simulate is not None:
            simulate.send_signal(signal.SIGINT)
            simulate.wait(20)
        up.send_signal(signal.SIGINT)
        up.wait(30)
    assert up.returncode == 0, log.read_text()
    assert simulate.returncode == 0
    assert not any(child.is_running() and child.status() != psutil.STATUS_ZOMBIE for child in children)
    assert all(_port_is_free(port) for port in bound), bound
