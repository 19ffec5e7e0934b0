"""No NATS secret ever appears in what Eagle Eye prints or logs: the real services (``eagle-eye hardware-monitor``,
``eagle-eye diagnose``, and the vLLM plugin's runtime with its routing publisher and NATS metric exporter) run at
debug level with a password from a file or inside the URL, against a server that accepts it and one that refuses it,
from start to stop; every byte they write is searched for the secret. Bad secret settings stop a service with an
error that names the variable and not the secret."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from eagleeye_otel.nats_server import free_port
from tests.helpers.nats_auth import AuthServer, auth_server
from tests.helpers.pki import Pki

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

EAGLE_EYE = str(Path(sys.executable).parent / "eagle-eye")
WRONG = "wr0ng-Secret-value-XYZZY"

# The vLLM plugin's runtime as vLLM's API server builds it (the first stat logger), offering one step a second.
PLUGIN = """
import logging, sys, time
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")
from eagleeye_otel.instrumentation.vllm._runtime import plugin_runtime
from eagleeye_otel.routing import RoutingMessage
runtime = plugin_runtime()
assert runtime is not None and runtime.publisher is not None
i = 0
while True:
    i += 1
    runtime.publisher.offer(RoutingMessage(version=1, instance="pod-a", model="m", engine=0, timestamp=time.time(),
        seq=0, started=1.7e9, num_requests_waiting=i, num_requests_running=0, kv_cache_usage=0.0))
    time.sleep(0.2)
"""


@pytest.fixture
def auth(pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AuthServer]:
    with auth_server(pki, tmp_path, monkeypatch, monitor_port=free_port()) as server:
        yield server


def command(name: str) -> tuple[str, list[str], dict[str, str]]:
    """The NATS user, the argv and the extra env of service ``name``."""
    if name == "hardware-monitor":
        args = [EAGLE_EYE, "-v", "hardware-monitor", "--prometheus-host=127.0.0.1", "--prometheus-port=0"]
        return "hardware", args, {"EAGLEEYE_KERNEL_LOG": "off", "EAGLEEYE_NODE_NAME": "node-a"}
    if name == "diagnose":
        env = {"EAGLEEYE_DIAGNOSIS_HTTP": "127.0.0.1:0", "OTEL_METRICS_EXPORTER": "none"}
        return "diagnosis", [EAGLE_EYE, "-v", "diagnose"], env
    env = {
        "OTEL_METRICS_EXPORTER": "prometheus,eagle_eye_nats",
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(free_port()),
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
    }
    return "vllm", [sys.executable, "-c", PLUGIN], env


def authorized_users(auth: AuthServer) -> list[str]:
    url = f"http://127.0.0.1:{auth.monitor_port}/connz?auth=1"
    with urllib.request.urlopen(url, timeout=2) as response:
        connections = json.loads(response.read())["connections"] or []
    return [c.get("authorized_user", "") for c in connections]


def run_until(process: subprocess.Popen[bytes], done: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():  # type: ignore[operator]
        assert process.poll() is None, f"exited early with {process.returncode}"
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


@pytest.mark.parametrize("form", ["password-file", "url"])
@pytest.mark.parametrize("accepted", [True, False], ids=["accepted", "refused"])
@pytest.mark.parametrize("service", ["hardware-monitor", "diagnose", "vllm-plugin"])
def test_no_secret_in_anything_a_service_writes(
    auth: AuthServer, tmp_path: Path, service: str, accepted: bool, form: str
) -> None:
    component, argv, extra = command(service)
    secret = auth.passwords[component] if accepted else WRONG
    env = {**auth.env(component, password=secret), **extra, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    if form == "url":
        del env["EAGLEEYE_NATS_USER"], env["EAGLEEYE_NATS_PASSWORD_FILE"]
        env["EAGLEEYE_NATS_URL"] = f"tls://eagle-eye-{component}:{secret}@127.0.0.1:{auth.server.port}"
    output = tmp_path / "output.txt"
    with output.open("wb") as sink:
        process = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=tmp_path)
        try:
            if accepted:
                run_until(process, lambda: f"eagle-eye-{component}" in authorized_users(auth))
                time.sleep(1.5)  # a few publishes and exports
            else:
                run_until(process, lambda: auth.authentication_errors() >= 3)  # it keeps retrying, never exits
            process.send_signal(signal.SIGINT)
            process.wait(20)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    text = output.read_bytes().decode(errors="replace")
    assert text.strip(), "the service wrote nothing at all"
    assert secret not in text, f"{service} wrote the secret:\n{text[-3000:]}"
    if not accepted:
        assert "authorization violation" in text.lower(), text[-3000:]  # and says why it is not connected


@pytest.mark.parametrize("service", ["hardware-monitor", "diagnose"])
@pytest.mark.parametrize(
    "case", ["password-and-file", "unreadable-file", "url-and-password", "different-url-credentials"]
)
def test_bad_secret_settings_stop_a_service_naming_the_variable_not_the_secret(
    tmp_path: Path, service: str, case: str
) -> None:
    secret = "Do-Not-Print-Me-42"
    password = tmp_path / "password"
    password.write_text(secret)
    env: dict[str, str] = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "EAGLEEYE_KERNEL_LOG": "off"}
    if case == "password-and-file":
        expected = "EAGLEEYE_NATS_PASSWORD_FILE"
        env |= {"EAGLEEYE_NATS_USER": "u", "EAGLEEYE_NATS_PASSWORD": secret, expected: str(password)}
    elif case == "unreadable-file":
        expected = "EAGLEEYE_NATS_PASSWORD_FILE"
        env |= {"EAGLEEYE_NATS_USER": "u", expected: str(tmp_path / "missing")}
    elif case == "url-and-password":
        expected = "EAGLEEYE_NATS_URL"
        env |= {"EAGLEEYE_NATS_URL": f"nats://u:{secret}@127.0.0.1:4222", "EAGLEEYE_NATS_TOKEN": secret}
    else:
        expected = "EAGLEEYE_NATS_URL"
        env |= {"EAGLEEYE_NATS_URL": f"nats://u:{secret}@a:4222,nats://u:{secret}x@b:4222"}
    argv = [EAGLE_EYE, "-v", service] + (["--prometheus-port=0"] if service == "hardware-monitor" else [])
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert expected in result.stderr
    assert secret not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
