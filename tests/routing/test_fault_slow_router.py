"""A stuck router costs nobody else anything: the publisher and the other routers carry on, and it recovers.

Real processes throughout: a nats-server with a short write deadline (so it cuts a consumer that stops reading off
within seconds, as production servers do within their own deadline), a :class:`RoutingPublisher` fed steadily from a
thread standing in for vLLM's engine steps, and two routers, each a :class:`RouterClient` in a process of its own
(this file run as a script) that writes its view to a file. One router is frozen with SIGSTOP, the way a router
whose event loop is blocked stops reading its socket. While it is frozen the publisher keeps publishing, with
nothing failing and nothing queueing, and the other router keeps accepting every message it sends. nats-server
then drops the frozen router as a slow consumer; once resumed, that router notices, reconnects, asks for a snapshot
and holds every engine's fresh state again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from eagleeye_otel.exporters.nats import RoutingPublisher
from eagleeye_otel.nats_server import EmbeddedNatsServer, free_port
from eagleeye_otel.routing import RouterClient, RoutingMessage
from eagleeye_otel.settings import NatsSettings, Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ENGINES = 8
"""Data-parallel engines of the one instance the publisher serves."""
INSTANCE = "pod-slow-router-test"
DEVICES = tuple(f"GPU-{i:08x}-1111-2222-3333-444455556666" for i in range(8))
"""A TP=8 instance names its GPUs in every message, which makes a realistic message of about 700 bytes."""
STEP_PERIOD_S = 0.002
"""Each engine steps every 2 ms: a busy instance, enough traffic to fill a frozen router's socket buffers fast."""
SERVER_CONFIG = 'write_deadline: "2s"\n'
"""nats-server cuts off a client it could not write to for 2 s (the default is 10 s; the behaviour is the same)."""


# -- the router process ----------------------------------------------------------------------------------------


async def _run_router(url: str, view_file: Path) -> None:
    """A router: follow the routing subject and write the view (seq per engine) and the counters every 50 ms."""
    router = RouterClient(nats_settings=NatsSettings(servers=(url,)), client_name=view_file.stem)
    await router.start()
    staging = view_file.with_suffix(".new")
    while True:
        stats = router.stats
        view = {
            "at": time.time(),
            "seqs": {str(state.message.engine): state.message.seq for state in router.instances()},
            "accepted": stats.accepted,
            "duplicates": stats.duplicates,
            "out_of_order": stats.out_of_order,
            "invalid": stats.invalid,
        }
        staging.write_text(json.dumps(view))
        staging.replace(view_file)
        await asyncio.sleep(0.05)


if __name__ == "__main__":  # the router process: <url> <view file>
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(_run_router(sys.argv[1], Path(sys.argv[2])))


# -- the test side ---------------------------------------------------------------------------------------------


@dataclass
class RouterProcess:
    """A router running in its own process; ``view()`` reads what it wrote last."""

    name: str
    process: subprocess.Popen[bytes]
    view_file: Path
    log_file: Path

    def view(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.view_file.read_text()))
        except (OSError, ValueError):
            return {}

    def seqs(self) -> dict[int, int]:
        return {int(engine): seq for engine, seq in self.view().get("seqs", {}).items()}

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[EmbeddedNatsServer, int]]:
    """A nats-server with a 2 s write deadline and its monitoring endpoint (for ``slow_consumers``)."""
    config = tmp_path / "nats.conf"
    config.write_text(SERVER_CONFIG)
    monitoring = free_port()
    nats_server = EmbeddedNatsServer(extra_args=["-c", str(config), "-m", str(monitoring)])
    nats_server.start()
    try:
        yield nats_server, monitoring
    finally:
        nats_server.stop()


@pytest.fixture
def start_router(server: tuple[EmbeddedNatsServer, int], tmp_path: Path) -> Iterator[Callable[[str], RouterProcess]]:
    routers: list[RouterProcess] = []

    def start(name: str) -> RouterProcess:
        view_file, log_file = tmp_path / f"{name}.json", tmp_path / f"{name}.log"
        with log_file.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, __file__, server[0].url, str(view_file)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        routers.append(RouterProcess(name, process, view_file, log_file))
        return routers[-1]

    yield start
    for router in routers:
        router.process.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        router.process.terminate()
        try:
            router.process.wait(10)
        except subprocess.TimeoutExpired:
            router.process.kill()
            router.process.wait()


class SteadyLoad:
    """A thread offering every engine's new state every :data:`STEP_PERIOD_S`, as vLLM's stat logger would."""

    def __init__(self, publisher: RoutingPublisher) -> None:
        self.publisher = publisher
        self.offers = 0
        self.slowest_offer_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steady-load", daemon=True)

    def _run(self) -> None:
        step = 0
        while not self._stop.wait(STEP_PERIOD_S):
            step += 1
            for engine in range(ENGINES):
                message = RoutingMessage(
                    version=1,
                    instance=INSTANCE,
                    model="llama",
                    engine=engine,
                    timestamp=time.time(),
                    seq=0,
                    num_requests_waiting=step % 17,
                    num_requests_running=8,
                    kv_cache_usage=(step % 100) / 100,
                    started=1_700_000_000.0,
                    endpoint=f"http://10.1.2.3:{8000 + engine}/v1",
                    node="gpu-node-3.example.internal",
                    devices=DEVICES,
                )
                began = time.perf_counter()
                self.publisher.offer(message)
                self.slowest_offer_s = max(self.slowest_offer_s, time.perf_counter() - began)
                self.offers += 1

    def __enter__(self) -> SteadyLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture
async def publisher(server: tuple[EmbeddedNatsServer, int]) -> AsyncIterator[RoutingPublisher]:
    settings = Settings.from_env({"EAGLEEYE_NATS_URL": server[0].url})
    routing_publisher = RoutingPublisher(
        nats_settings=settings.nats, routing=settings.routing, client_name="slow-router-test-publisher"
    )
    routing_publisher.start()
    try:
        yield routing_publisher
    finally:
        routing_publisher.stop()


def slow_consumers(monitoring_port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{monitoring_port}/varz", timeout=5) as response:
        return int(json.loads(response.read())["slow_consumers"])


def client_names(monitoring_port: int) -> set[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{monitoring_port}/connz?limit=1024", timeout=5) as response:
        return {connection.get("name", "") for connection in json.loads(response.read())["connections"]}


async def until(condition: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.05)


async def test_a_stuck_router_slows_neither_the_publisher_nor_the_other_router_and_recovers(
    server: tuple[EmbeddedNatsServer, int],
    publisher: RoutingPublisher,
    start_router: Callable[[str], RouterProcess],
) -> None:
    _, monitoring = server
    healthy, stuck = start_router("healthy-router"), start_router("stuck-router")
    await until(lambda: {"healthy-router", "stuck-router"} <= client_names(monitoring), "both routers", 30)
    await until(lambda: publisher.stats.connected, "the publisher's connection", 30)
    assert publisher.stats.published == 0  # so the healthy router is subscribed before the first message

    with SteadyLoad(publisher) as load:
        await until(lambda: len(healthy.seqs()) == ENGINES == len(stuck.seqs()), "every engine at both routers", 30)

        stuck.process.send_signal(signal.SIGSTOP)
        frozen_at = publisher.stats
        last = frozen_at
        last_seqs = healthy.seqs()
        polls = 0

        def still_unaffected() -> bool:
            """Every poll while the router is frozen: the publisher and the healthy router keep going."""
            nonlocal last, last_seqs, polls
            stats, seqs = publisher.stats, healthy.seqs()
            assert stats.connected and stats.errors == 0 and stats.dropped == 0, stats
            assert stats.published > last.published, "the publisher stopped publishing"
            assert sorted(seqs) == list(range(ENGINES)), f"the healthy router lost engines: {seqs}"
            assert all(seqs[e] >= last_seqs[e] for e in seqs), "the healthy router went backwards"
            last, last_seqs, polls = stats, seqs, polls + 1
            return slow_consumers(monitoring) >= 1 and "stuck-router" not in client_names(monitoring)

        deadline = time.monotonic() + 90
        await asyncio.sleep(0.5)
        while not still_unaffected():
            assert time.monotonic() < deadline, "nats-server never cut the frozen router off"
            await asyncio.sleep(0.5)
        assert polls >= 2
        for _ in range(4):  # and after the cut-off too
            await asyncio.sleep(0.5)
            still_unaffected()
        assert healthy.process.poll() is None and stuck.process.poll() is None

        stuck.process.send_signal(signal.SIGCONT)
        resumed_seqs = healthy.seqs()

        def caught_up() -> bool:
            seqs = stuck.seqs()
            return len(seqs) == ENGINES and all(seqs[e] > resumed_seqs[e] for e in range(ENGINES))

        await until(caught_up, "the resumed router to hold every engine's fresh state", 60)
        assert "stuck-router" in client_names(monitoring)

    log = stuck.log()
    assert "router lost its NATS connection" in log and "router reconnected to NATS" in log, log

    # Nothing waits in the publisher and the healthy router took every message it sent, in order, none lost.
    publisher.stop()
    final = publisher.stats
    assert final.errors == 0 and final.dropped == 0
    assert load.offers == final.offered
    sent = final.published + final.heartbeats
    await until(lambda: healthy.view().get("accepted") == sent, "the healthy router to accept every message", 30)
    view = healthy.view()
    assert (view["duplicates"], view["out_of_order"], view["invalid"]) == (0, 0, 0), view
    print(
        f"published {final.published} steps and {final.heartbeats} heartbeats ({final.coalesced} coalesced), "
        f"{polls} polls while frozen; slowest offer() {load.slowest_offer_s * 1e6:.0f} µs"
    )
