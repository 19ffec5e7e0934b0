"""End-to-end fixtures: a tiny local model, a real vLLM OpenAI server on CPU, and a NATS collector.

Heavy work (torch, transformers, vLLM) happens in child processes only; the pytest process imports none of it.
The vLLM server runs in its own session (process group), so teardown can signal the API server, the engine
core and its workers together and leave nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest

from eagleeye_otel.nats_flush import flush
from eagleeye_otel.nats_server import EmbeddedNatsServer, free_port
from eagleeye_otel.routing import RoutingMessage

ROUTING_SUBJECT = "eagle_eye.routing_metrics"
SNAPSHOT_SUBJECT = "eagle_eye.routing_snapshot"
INSTANCE_ID = "e2e-vllm"
SERVED_MODEL = "tiny"
HEARTBEAT_INTERVAL_S = 0.5

_HERE = Path(__file__).resolve().parent
_READY_TIMEOUT_S = 180.0
_STOP_TIMEOUT_S = 30.0


def _offline_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    # The developer's own Eagle Eye / vLLM settings must not leak into the test servers.
    for name in list(env):
        if name.startswith(("EAGLEEYE_", "VLLM_", "OTEL_")):
            del env[name]
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


# -- the tiny model ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight 2-layer Llama plus a byte-level BPE tokenizer, built locally by ``tiny_model.py``."""
    out = tmp_path_factory.mktemp("tiny-model")
    result = subprocess.run(
        [sys.executable, str(_HERE / "tiny_model.py"), str(out)],
        env=_offline_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"building the tiny model failed ({result.returncode}):\n{result.stderr[-4000:]}")
    assert (out / "config.json").is_file()
    assert (out / "tokenizer.json").is_file()
    return out


# -- the vLLM server ---------------------------------------------------------------------------------------


class VllmServer:
    """``python -m vllm.entrypoints.openai.api_server`` in its own process group, logging to a file."""

    def __init__(self, model_dir: Path, log_path: Path, env: dict[str, str]) -> None:
        self.model_dir = model_dir
        self.log_path = log_path
        self.host = "127.0.0.1"
        self.port = free_port(self.host)
        self._env = env
        self._process: subprocess.Popen[bytes] | None = None
        self.ready_after_s: float | None = None
        self.stopped_after_s: float | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        args = [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model_dir),
            "--served-model-name",
            SERVED_MODEL,
            "--dtype",
            "float32",
            "--enforce-eager",
            "--max-model-len",
            "256",
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                cwd=self.model_dir.parent,
                start_new_session=True,
            )
        started = time.monotonic()
        deadline = started + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self.stop()
                pytest.fail(f"vLLM exited with {code} before it was healthy:\n{self.log_tail()}")
            if self._health() == 200:
                self.ready_after_s = time.monotonic() - started
                return
            time.sleep(0.5)
        self.stop()
        pytest.fail(f"vLLM was not healthy within {_READY_TIMEOUT_S:g} s:\n{self.log_tail()}")

    def _health(self) -> int | None:
        try:
            connection = http.client.HTTPConnection(self.host, self.port, timeout=2)
            try:
                connection.request("GET", "/health")
                return connection.getresponse().status
            finally:
                connection.close()
        except OSError:
            return None

    def stop(self) -> None:
        """SIGTERM the whole process group, SIGKILL it after 30 s, and make sure no member survives."""
        process, self._process = self._process, None
        if process is None:
            return
        pgid = process.pid  # start_new_session: the leader's pid is the group id
        began = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            process.wait(_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            process.wait()
        # The leader is gone; engine-core and worker children may linger a moment in the same group.
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        while _group_alive(pgid):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                time.sleep(0.5)
                break
            time.sleep(0.2)
        self.stopped_after_s = time.monotonic() - began
        assert not _group_alive(pgid), f"processes of vLLM group {pgid} survived SIGKILL"

    def log_tail(self, max_bytes: int = 6000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return "<no log>"
        return data[-max_bytes:].decode(errors="replace")

    def log_text(self) -> str:
        return self.log_path.read_bytes().decode(errors="replace")

    def complete(self, prompt: str, max_tokens: int = 16, timeout: float = 60.0) -> dict[str, Any]:
        """POST /v1/completions (blocking); ``ignore_eos`` so that the random model always emits ``max_tokens``."""
        body = json.dumps(
            {
                "model": SERVED_MODEL,
                "prompt": prompt,
                "max_tokens": max_tokens,
                "temperature": 0.0,
                "ignore_eos": True,
            }
        )
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            connection.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            payload = response.read()
        finally:
            connection.close()
        assert response.status == 200, f"completion failed: {response.status} {payload[:2000]!r}"
        result: dict[str, Any] = json.loads(payload)
        return result


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg(0) also succeeds for zombies; only count members that are not zombies.
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            return True
    return False


@pytest.fixture(scope="session")
def start_vllm(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., VllmServer]]:
    """``start_vllm(name, **env)``: start a vLLM server on the tiny model; every one is stopped at the end.

    Tests stop servers themselves when they are done (``server.stop()``) to free the 2 cores and ~3 GB each.
    """
    servers: list[VllmServer] = []

    def start(name: str, **env: str) -> VllmServer:
        log_path = tmp_path_factory.mktemp(f"vllm-{name}") / "vllm.log"
        server = VllmServer(
            tiny_model_dir,
            log_path,
            _offline_env(VLLM_CPU_KVCACHE_SPACE="1", EAGLEEYE_INSTANCE_ID=INSTANCE_ID, **env),
        )
        servers.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


# -- NATS --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="class")
def routing_nats() -> Iterator[EmbeddedNatsServer]:
    """One nats-server for all the tests that share one vLLM server."""
    server = EmbeddedNatsServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class Received:
    """One routing message as a subscriber saw it."""

    at: float
    """Unix time of receipt."""
    raw: bytes
    message: RoutingMessage


class RoutingCollector:
    """Subscribes to the routing subject with plain nats-py on a thread of its own and keeps every message."""

    def __init__(self, url: str, subject: str = ROUTING_SUBJECT) -> None:
        self._url = url
        self._subject = subject
        self._decoder = msgspec.json.Decoder(RoutingMessage)
        self._received: list[Received] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="e2e-routing-collector", daemon=True)
        self._nc: Any = None
        self.decode_errors: list[str] = []

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._subscribe(), self._loop).result(10)

    async def _subscribe(self) -> None:
        self._nc = await nats.connect(self._url, name="e2e-routing-collector", allow_reconnect=False)

        async def on_message(msg: Any) -> None:
            now = time.time()
            try:
                message = self._decoder.decode(msg.data)
            except msgspec.ValidationError as error:
                self.decode_errors.append(f"{error}: {msg.data[:500]!r}")
                return
            with self._lock:
                self._received.append(Received(now, msg.data, message))

        await self._nc.subscribe(self._subject, cb=on_message)
        await flush(self._nc)

    def stop(self) -> None:
        async def close() -> None:
            if self._nc is not None:
                await self._nc.close()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def count(self) -> int:
        with self._lock:
            return len(self._received)

    def since(self, mark: int = 0) -> list[Received]:
        with self._lock:
            return self._received[mark:]

    def wait_for(
        self, predicate: Callable[[list[Received]], bool], *, mark: int = 0, timeout: float = 10.0
    ) -> list[Received]:
        """Poll until ``predicate(messages since mark)`` holds; return those messages, or fail the test."""
        deadline = time.monotonic() + timeout
        while True:
            received = self.since(mark)
            if predicate(received):
                return received
            if time.monotonic() > deadline:
                tail = "\n".join(r.raw.decode(errors="replace") for r in received[-10:])
                pytest.fail(f"routing messages did not meet the condition within {timeout:g} s; last ones:\n{tail}")
            time.sleep(0.02)


@pytest.fixture(scope="class")
def routing_collector(routing_nats: EmbeddedNatsServer) -> Iterator[RoutingCollector]:
    """Every routing message published on the class's NATS server, from before vLLM starts."""
    collector = RoutingCollector(routing_nats.url)
    collector.start()
    try:
        yield collector
    finally:
        collector.stop()


@pytest.fixture(scope="class")
def routed_vllm(
    start_vllm: Callable[..., VllmServer],
    routing_nats: EmbeddedNatsServer,
    routing_collector: RoutingCollector,
) -> Iterator[VllmServer]:
    """A vLLM server publishing to ``routing_nats`` (heartbeat every 0.5 s), watched by ``routing_collector``."""
    server = start_vllm(
        "routed",
        EAGLEEYE_NATS_URL=routing_nats.url,
        EAGLEEYE_HEARTBEAT_INTERVAL=str(HEARTBEAT_INTERVAL_S),
    )
    try:
        yield server
    finally:
        server.stop()
