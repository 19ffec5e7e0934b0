"""The moving parts of ``test_fault_nats_outage.py``: a steady completion load, vLLM samples, a router process.

The router runs as ``python -m tests.e2e.fault_nats_harness --router URL`` so that a busy
test process cannot delay what it sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import nats
import psutil

from eagleeye_otel.routing import RouterClient
from eagleeye_otel.settings import NatsSettings

METRICS_SUBJECT = "eagle_eye.metrics"
INSTANCE_ID = "e2e-vllm"  # what ``start_vllm`` sets
ROUTER_NAME = "eagle-eye-router"
PUBLISHER_NAME = f"eagle-eye-routing:{INSTANCE_ID}"
"""The two connections fresh state waits for after an outage, by their names in NATS monitoring."""
_PUBLISHER_THREAD = "eagle-eye-routing-publisher"[:15]  # as the kernel keeps a thread's name
SERVED_MODEL = "tiny"
_REPO = Path(__file__).resolve().parents[2]
_COUNTER = re.compile(rb"^(vllm:generation_tokens_total|vllm:iteration_tokens_total_count)\{[^}]*\} (\S+)$", re.M)


@dataclass(frozen=True)
class Reply:
    started: float
    ended: float
    status: int
    completion_tokens: int


@dataclass(frozen=True)
class Sample:
    at: float
    generation_tokens: float
    steps: float
    api_rss: int
    children_rss: int


# -- vLLM side: load and samples -----------------------------------------------------------------------------


def post_completion(server: Any, prompt: str, max_tokens: int) -> tuple[int, Any]:
    """POST /v1/completions; the status and the decoded body (or the error text), never raising."""
    body = json.dumps(
        {"model": SERVED_MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0, "ignore_eos": True}
    )
    connection = http.client.HTTPConnection(server.host, server.port, timeout=120)
    try:
        connection.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        payload = response.read()
    except (OSError, http.client.HTTPException) as error:
        return -1, repr(error)
    finally:
        connection.close()
    try:
        return response.status, json.loads(payload)
    except ValueError:
        return response.status, payload[:500]


def vllm_counters(server: Any) -> tuple[float, float]:
    """Generated tokens and engine steps (iterations) so far, from vLLM's own ``/metrics``."""
    connection = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read()
    finally:
        connection.close()
    found = {name: float(value) for name, value in _COUNTER.findall(text)}
    return found[b"vllm:generation_tokens_total"], found[b"vllm:iteration_tokens_total_count"]


def connected_since(monitor_port: int) -> dict[str, float]:
    """When each named client's current connection began, from nats-server's ``/connz``, as ``time.monotonic()``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{monitor_port}/connz?limit=1024", timeout=10) as response:
        connections = json.load(response)["connections"]
    return {c["name"]: _monotonic(_unix_time(c["start"])) for c in connections if c.get("name")}


def listening_since(log: str) -> float:
    """When the server last began to listen, from its log (local time to the microsecond), as ``time.monotonic()``."""
    line = [line for line in log.splitlines() if "Listening for client connections" in line][-1]
    stamp = " ".join(line.split()[1:3])  # [pid] 2026/11/28 16:08:16.363510 [INF] Listening ...
    return _monotonic(datetime.strptime(stamp, "%Y/%m/%d %H:%M:%S.%f").timestamp())


def _monotonic(unix_time: float) -> float:
    """A Unix time from the server's clock as ``time.monotonic()``, this harness's one clock."""
    return unix_time + time.monotonic() - time.time()


def _unix_time(rfc3339: str) -> float:
    """``2026-11-28T17:04:49.802833963Z`` (nanoseconds, which ``datetime`` does not take) as Unix time."""
    whole, _, fraction = rfc3339.removesuffix("Z").partition(".")
    return datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp() + float(f"0.{fraction or 0}")


class Load:
    """``concurrency`` threads, each sending one ``max_tokens`` completion after another until stopped."""

    def __init__(self, server: Any, *, concurrency: int, max_tokens: int) -> None:
        self._server = server
        self._max_tokens = max_tokens
        self._stop = threading.Event()
        self.replies: list[Reply] = []
        self._threads = [threading.Thread(target=self._work, daemon=True) for _ in range(concurrency)]

    def _work(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            status, body = post_completion(self._server, "A steady load on the engine", self._max_tokens)
            tokens = body.get("usage", {}).get("completion_tokens", -1) if isinstance(body, dict) else -1
            self.replies.append(Reply(started, time.monotonic(), status, tokens))

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(120)


class Sampler:
    """vLLM's token and step counters (its own ``/metrics``) and the RSS of its processes, every ``every`` s."""

    def __init__(self, server: Any, *, every: float) -> None:
        self._server = server
        self._every = every
        self._api = psutil.Process(server.pid)
        self._stop = threading.Event()
        self.samples: list[Sample] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                tokens, steps = vllm_counters(self._server)
            except (OSError, http.client.HTTPException, KeyError):
                continue  # a late sample only widens a window (see test_fault_nats_outage._per_second)
            children = 0
            for child in self._api.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    children += child.memory_info().rss
            self.samples.append(Sample(time.monotonic(), tokens, steps, self._api.memory_info().rss, children))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


# -- the router, in a process of its own ---------------------------------------------------------------------


async def router_main(url: str, api_pid: int) -> None:
    """Follow the engine with a RouterClient; stdin says when NATS was killed, stdout gets one JSON report.

    After ``KILLED <unix time>`` (taken once the killed server was reaped) it notes the newest seq it has seen, and then
    the first state it accepts whose ``timestamp`` is later: the engine made that state after the server was
    gone, so it came through the server that replaced it. (Counting from when the router read the command
    would not do: a router process held off the CPU can still be working through messages sent before the
    kill.)
    Every poll also records how long this thread, and the routing publisher's thread in vLLM's API server
    (``api_pid``), have waited for a CPU so far (the kernel's schedstat), so that the scheduling delay of a
    crowded machine can be told apart from Eagle Eye's own. ``STOP`` prints the report and ends. It also notes
    when OTLP payloads from the plugin's metric exporter arrive.
    """
    router = RouterClient(nats_settings=NatsSettings(servers=(url,)))
    await router.start()
    metrics_at: list[float] = []

    async def on_metrics(msg: Any) -> None:
        metrics_at.append(time.monotonic())

    async def on_error(error: Exception) -> None:
        pass  # refused connections while NATS is down: expected

    nc = await nats.connect(
        url, name="e2e-metrics-watcher", reconnect_time_wait=0.1, max_reconnect_attempts=-1, error_cb=on_error
    )
    await nc.subscribe(METRICS_SUBJECT, cb=on_metrics)
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[str] = asyncio.Queue()
    threading.Thread(target=_read_lines, args=(sys.stdin, loop, commands), daemon=True).start()
    print("READY", flush=True)
    report: dict[str, Any] = {"cpu_wait": [], "publisher_wait": []}
    dead_since: float | None = None
    newest_seq: int | None = None  # also when a router starved for stale_after has just expired what it held
    with (
        open("/proc/thread-self/schedstat", "rb", buffering=0) as schedstat,
        open(_thread_schedstat(api_pid, _PUBLISHER_THREAD), "rb", buffering=0) as publisher_schedstat,
    ):
        while True:
            if not commands.empty():
                command = (await commands.get()).split()
                if command[0] == "STOP":
                    break
                dead_since = float(command[1])
                held = router.get(INSTANCE_ID, 0)
                report["seq_at_kill"] = held.message.seq if held is not None else newest_seq
            now = time.monotonic()
            for series, stat in (("cpu_wait", schedstat), ("publisher_wait", publisher_schedstat)):
                stat.seek(0)
                report[series].append((now, int(stat.read().split()[1]) / 1e9))
            state = router.get(INSTANCE_ID, 0)
            if state is not None and dead_since is None:
                newest_seq = state.message.seq
            if dead_since is not None and "fresh_at" not in report and state and state.message.timestamp > dead_since:
                report |= {"fresh_at": state.received_at, "fresh_seq": state.message.seq}
            await asyncio.sleep(0.01)
    report["metrics_at"] = metrics_at
    await nc.close()
    await router.close()
    print(json.dumps(report), flush=True)


def _thread_schedstat(pid: int, name: str) -> Path:
    """The schedstat file of the thread of process ``pid`` called ``name``."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        if (task / "comm").read_text().strip() == name:
            return task / "schedstat"
    raise LookupError(f"no thread {name!r} in process {pid}")


def _read_lines(stream: IO[str], loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str]) -> None:
    for line in stream:
        loop.call_soon_threadsafe(queue.put_nowait, line)


class RouterProcess:
    """:func:`router_main` in a child process, driven over its stdin and stdout."""

    def __init__(self, url: str, api_pid: int) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.fault_nats_harness", "--router", url, str(api_pid)],
            cwd=_REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None and self._process.stdout.readline().strip() == "READY"

    def send(self, line: str) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(line + "\n")
        self._process.stdin.flush()

    def report(self) -> dict[str, Any]:
        self.send("STOP")
        out, _ = self._process.communicate(timeout=30)
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result

    def kill(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()


# -- the scenario --------------------------------------------------------------------------------------------


if __name__ == "__main__" and sys.argv[1:2] == ["--router"]:
    asyncio.run(router_main(sys.argv[2], int(sys.argv[3])))
