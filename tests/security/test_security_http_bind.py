"""Every HTTP listener binds where it is configured, and only there: the vLLM plugin's Prometheus endpoint
(``OTEL_EXPORTER_PROMETHEUS_HOST``, default ``localhost``), the hardware monitor's (``--prometheus-host``, default
``0.0.0.0``), the diagnosis service's report/API (``EAGLEEYE_DIAGNOSIS_HTTP``, default ``0.0.0.0:9467``) and its
Prometheus endpoint (``OTEL_EXPORTER_PROMETHEUS_HOST``, default ``0.0.0.0``).

Each real process's listening sockets are read from the kernel (psutil): the set of addresses must be exactly the
configured one. On the loopback range a request shows it too: bound to 127.0.0.2, the port does not answer on
127.0.0.1, and the other way round. A non-loopback address of this machine is only bound and inspected, never sent
traffic (the workplace allows traffic to loopback addresses only).
"""

from __future__ import annotations

import http.client
import ipaddress
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from eagleeye_otel.nats_server import EmbeddedNatsServer, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

EAGLE_EYE = str(Path(sys.executable).parent / "eagle-eye")
PLUGIN = """
import time
from eagleeye_otel.instrumentation.vllm._runtime import plugin_runtime
assert plugin_runtime() is not None
while True:
    time.sleep(1)
"""


def non_loopback_address() -> str | None:
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family.name == "AF_INET" and not ipaddress.ip_address(address.address).is_loopback:
                return str(address.address)
    return None


HOSTS = {
    "default": None,
    "127.0.0.1": "127.0.0.1",
    "127.0.0.2": "127.0.0.2",
    "non-loopback": non_loopback_address(),
}


def launch(service: str, host: str | None, nats_url: str, tmp_path: Path) -> tuple[subprocess.Popen[bytes], set[int]]:
    """Start ``service`` with its listeners on ``host`` (its defaults when None); returns it and its ports."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "EAGLEEYE_NATS_URL": nats_url}
    if service == "vllm-plugin":
        port = free_port()
        env |= {"OTEL_EXPORTER_PROMETHEUS_PORT": str(port), "OTEL_METRICS_EXPORTER": "prometheus"}
        if host is not None:
            env["OTEL_EXPORTER_PROMETHEUS_HOST"] = host
        argv, ports = [sys.executable, "-c", PLUGIN], {port}
    elif service == "hardware-monitor":
        port = free_port()
        env |= {"EAGLEEYE_KERNEL_LOG": "off", "EAGLEEYE_NODE_NAME": "node-a"}
        argv = [EAGLE_EYE, "hardware-monitor", f"--prometheus-port={port}"]
        if host is not None:
            argv.append(f"--prometheus-host={host}")
        ports = {port}
    else:
        http, metrics = free_port(), free_port()
        # ":port" keeps the default host; the ports are free ones, not the defaults, so tests can run side by side.
        env |= {"EAGLEEYE_DIAGNOSIS_HTTP": f"{host or ''}:{http}", "OTEL_EXPORTER_PROMETHEUS_PORT": str(metrics)}
        if host is not None:
            env["OTEL_EXPORTER_PROMETHEUS_HOST"] = host
        argv, ports = [EAGLE_EYE, "diagnose"], {http, metrics}
    with (tmp_path / "stderr.txt").open("wb") as stderr:  # a file: a full pipe would stall a chatty service
        process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=stderr, cwd=tmp_path)
    return process, ports


def listening(pid: int, ports: set[int], timeout: float = 30.0) -> set[tuple[str, int]]:
    """The (address, port) pairs ``pid`` listens on among ``ports``, once all of them are open."""
    deadline = time.monotonic() + timeout
    while True:
        sockets = {
            (c.laddr.ip, c.laddr.port)
            for c in psutil.Process(pid).net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port in ports
        }
        if {port for _, port in sockets} == ports or time.monotonic() > deadline:
            return sockets
        time.sleep(0.1)


def answers(host: str, port: int) -> bool:
    connection = http.client.HTTPConnection(host, port, timeout=2)
    try:
        connection.request("GET", "/metrics")
        return connection.getresponse().status < 500
    except OSError:
        return False
    finally:
        connection.close()


DEFAULT_ADDRESSES = {"vllm-plugin": "127.0.0.1", "hardware-monitor": "0.0.0.0", "diagnose": "0.0.0.0"}
"""Documented defaults: inside vLLM only this host (OTel's ``localhost``); the services, every interface."""


@pytest.mark.parametrize("where", sorted(HOSTS))
@pytest.mark.parametrize("service", ["vllm-plugin", "hardware-monitor", "diagnose"])
def test_every_listener_binds_exactly_where_configured(
    nats_server: EmbeddedNatsServer, tmp_path: Path, service: str, where: str
) -> None:
    host = HOSTS[where]
    if where == "non-loopback" and host is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    process, ports = launch(service, host, nats_server.url, tmp_path)
    try:
        sockets = listening(process.pid, ports)
        expected = host if host is not None else DEFAULT_ADDRESSES[service]
        assert sockets == {(expected, port) for port in ports}, (tmp_path / "stderr.txt").read_text()
        if host == "127.0.0.2":
            assert all(answers("127.0.0.2", port) and not answers("127.0.0.1", port) for port in ports)
        elif host == "127.0.0.1":
            assert all(answers("127.0.0.1", port) and not answers("127.0.0.2", port) for port in ports)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
