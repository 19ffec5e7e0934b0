"""The eagle-eye command line, run as a user would run it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from eagleeye_otel.nats_server import free_port
from eagleeye_otel.routing import RoutingMessage

EAGLE_EYE = str(Path(sys.executable).parent / "eagle-eye")


def test_schema_routing_prints_a_json_schema_that_validates_a_message() -> None:
    out = subprocess.run([EAGLE_EYE, "schema", "routing"], check=True, capture_output=True, text=True).stdout
    schema = json.loads(out)
    assert schema["title"] == "Eagle Eye routing message v1"
    required = {
        "version", "instance", "model", "engine", "timestamp", "started", "seq",
        "num_requests_waiting", "num_requests_running", "kv_cache_usage",
    }  # fmt: skip
    assert set(schema["required"]) == required
    assert schema["properties"]["kv_cache_usage"]["maximum"] == 1.0
    assert "description" in schema["properties"]["prefix_cache_hits_total"]


def test_version() -> None:
    out = subprocess.run([EAGLE_EYE, "--version"], check=True, capture_output=True, text=True).stdout
    assert out.startswith("eagle-eye, version ")


def test_up_rejects_a_bad_setting_by_name() -> None:
    env = {**os.environ, "EAGLEEYE_NATS_URL": "http://nope"}
    result = subprocess.run([EAGLE_EYE, "up"], check=False, capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode != 0
    assert "EAGLEEYE_NATS_URL" in result.stderr


_FREE_PORTS = ("--hardware-port", "0", "--diagnosis-port", "0", "--report-port", "0")


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.integration
def test_up_serves_nats_reports_an_instance_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "up.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EAGLEEYE_")}
    with log.open("w") as out:
        up = subprocess.Popen(
            [EAGLE_EYE, "up", "--nats-port", str(port), *_FREE_PORTS], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    try:
        deadline = time.monotonic() + 30
        while "ready" not in log.read_text():
            assert up.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert f"nats://127.0.0.1:{port}" in log.read_text()

        message = RoutingMessage(
            version=1, instance="pod-x", model="tiny", engine=0, timestamp=time.time(), seq=1, started=1.7e9,
            num_requests_waiting=0, num_requests_running=0, kv_cache_usage=0.0,
        )  # fmt: skip
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.recv(4096)  # INFO
            payload = msgspec.json.encode(message)
            sock.sendall(b"CONNECT {}\r\nPUB eagle_eye.routing_metrics %d\r\n%s\r\nPING\r\n" % (len(payload), payload))
            sock.recv(4096)  # PONG
        deadline = time.monotonic() + 10
        while "pod-x engine 0 serving tiny" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(20)
    assert up.returncode == 0, log.read_text()
    assert _port_is_free(port)
