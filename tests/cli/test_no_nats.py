"""Every command with no NATS server at its URL (a closed port), run as a user runs it: the commands that need NATS
now (``top``, ``simulate``, ``up`` pointed at a server) exit 1 with one line naming the URL and what to do; the
hardware monitor, a service that may start before NATS, says so in one line and keeps running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eagleeye_otel.nats_server import free_port

EAGLE_EYE = str(Path(sys.executable).parent / "eagle-eye")
_ANY_PORT = ["--hardware-port", "0", "--diagnosis-port", "0", "--report-port", "0"]


@pytest.fixture
def closed_url() -> str:
    return f"nats://127.0.0.1:{free_port()}"


def _env(url: str) -> dict[str, str]:
    return {**os.environ, "EAGLEEYE_NATS_URL": url, "EAGLEEYE_KERNEL_LOG": "off"}


@pytest.mark.parametrize(
    ("args", "what_to_do"),
    [
        (["top"], "`eagle-eye up` starts one; or pass --nats-url"),
        (["simulate", "--duration", "2"], "`eagle-eye up` starts one; or set EAGLEEYE_NATS_URL"),
        (["up", *_ANY_PORT], "`eagle-eye up` starts its own"),
    ],
    ids=["top", "simulate", "up"],
)
def test_a_command_that_needs_nats_says_so_in_one_line(closed_url: str, args: list[str], what_to_do: str) -> None:
    result = subprocess.run(
        [EAGLE_EYE, *args], check=False, capture_output=True, text=True, env=_env(closed_url), timeout=60
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"Error: cannot reach NATS at {closed_url} (ConnectionRefusedError: ")
    assert what_to_do in line
    assert "✓" not in result.stdout + result.stderr  # nothing claims to have started


def test_top_names_the_url_it_was_given(closed_url: str) -> None:
    env = {**_env("nats://127.0.0.1:4222")}
    result = subprocess.run(
        [EAGLE_EYE, "top", "--nats-url", closed_url], check=False, capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 1
    assert f"cannot reach NATS at {closed_url} " in result.stderr


def test_the_hardware_monitor_says_it_waits_for_nats_and_serves_meanwhile(closed_url: str, tmp_path: Path) -> None:
    log = tmp_path / "monitor.log"
    with open(log, "w") as output:
        monitor = subprocess.Popen(
            [EAGLE_EYE, "hardware-monitor", "--no-prometheus"],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=_env(closed_url),
        )
    try:
        deadline = time.monotonic() + 60
        while "reconnecting in the background" not in log.read_text():
            assert monitor.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        monitor.send_signal(signal.SIGTERM)
        assert monitor.wait(30) == 0
    finally:
        monitor.kill()
    text = log.read_text()
    assert "Traceback" not in text
    (line,) = [line for line in text.splitlines() if "cannot reach NATS" in line]
    assert line == (
        f"! cannot reach NATS at {closed_url} (ConnectionRefusedError: [Errno 111] Connect call failed "
        f"('127.0.0.1', {closed_url.rsplit(':', 1)[1]})): each batch is dropped and counted, Prometheus serves; "
        "reconnecting in the background"
    )
    assert "✓ NATS" not in text
