"""``eagle-eye diagnose`` without files is the service: its own process, settings from the environment, findings on
NATS and the report on HTTP, SIGTERM ends it cleanly, and a bad setting stops it at start naming the variable."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.msg import Msg

from eagleeye_otel.diagnosis import FindingChange, FindingMessage
from eagleeye_otel.nats_server import EmbeddedNatsServer, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

EAGLE_EYE = str(Path(sys.executable).parent / "eagle-eye")


def run_failing(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EAGLE_EYE, "diagnose"], env={**os.environ, **env}, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"EAGLEEYE_DIAGNOSIS_HTTP": "everywhere"}, "EAGLEEYE_DIAGNOSIS_HTTP"),
        ({"EAGLEEYE_DIAGNOSIS_INPUT_SUBJECT": "a b"}, "EAGLEEYE_DIAGNOSIS_INPUT_SUBJECT"),
        ({"EAGLEEYE_NATS_URL": "http://nats:4222"}, "EAGLEEYE_NATS_URL"),
        ({"OTEL_LOGS_EXPORTER": "console"}, "OTEL_LOGS_EXPORTER"),
    ],
)
def test_a_bad_setting_stops_it_at_start_naming_the_setting(env: dict[str, str], setting: str) -> None:
    result = run_failing(env)
    assert result.returncode == 1
    assert setting in result.stderr and "Traceback" not in result.stderr


def wait_for_url(log: Path, process: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(r"diagnosis report on (http://127\.0\.0\.1:\d+/)", log.read_text())
        if found:
            return found.group(1)
        assert process.poll() is None, log.read_text()
        time.sleep(0.1)
    raise AssertionError(f"the service never announced its report:\n{log.read_text()}")


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


async def test_the_service_process_publishes_findings_and_stops_on_sigterm(
    nats_server: EmbeddedNatsServer, eventually: Callable[..., Awaitable[None]], hw: Any, tmp_path: Path
) -> None:
    messages: list[FindingMessage] = []

    async def received(msg: Msg) -> None:
        messages.append(msgspec.json.decode(msg.data, type=FindingMessage))

    client = await nats.connect(nats_server.url)
    await client.subscribe("eagle_eye.diagnosis.>", cb=received)
    env = {
        **os.environ,
        "EAGLEEYE_NATS_URL": nats_server.url,
        "EAGLEEYE_DIAGNOSIS_HTTP": "127.0.0.1:0",
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(free_port("127.0.0.1")),
    }
    log = tmp_path / "diagnose.log"
    with log.open("w") as output:
        process = subprocess.Popen([EAGLE_EYE, "diagnose"], stdout=output, stderr=subprocess.STDOUT, env=env)
    try:
        url = wait_for_url(log, process)
        await eventually(lambda: get_json(f"{url}healthz")["nats"] == "connected", timeout=20)
        failing = hw.gpu(0, remapped_rows_failure=True)
        await client.publish("eagle_eye.hardware.gpu-node-7", hw.otlp(failing, at=time.time()))
        await eventually(lambda: any(m.change is FindingChange.OPENED for m in messages), timeout=20)
        assert messages[0].fault == "gpu_row_remap_failure"
        assert [f["device"] for f in get_json(f"{url}api/findings?severity=critical")["active"]] == [
            failing.identity.id
        ]

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()
        assert "diagnosis: stopping" in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        await client.close()
