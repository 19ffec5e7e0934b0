"""While NATS is down, publishers and routers retry often enough to be back within 1 s, and never hammer it.

A "down" server here is a loopback listener that accepts each TCP connection and closes it at once, noting the
time: every accepted connection is one attempt of the client under test (nats-py sees no INFO and gives up).
Only the lower bound on the pause between attempts is checked; a crowded machine can stretch pauses but never
shorten them. How fast a router sees fresh state after a real outage is ``test_fault_nats_outage.py``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from eagleeye_otel.exporters.nats import RoutingPublisher
from eagleeye_otel.nats_options import RECONNECT_WAIT_MAX_S, RECONNECT_WAIT_MIN_S, connect_options, reconnect_wait
from eagleeye_otel.nats_server import EmbeddedNatsServer
from eagleeye_otel.routing import RouterClient
from eagleeye_otel.settings import NatsSettings, RoutingSettings

pytestmark = pytest.mark.integration

WATCH_S = 3.0
MIN_PAUSE_S = 0.125
"""At most 8 attempts a second per client: the design bound, written out so that lowering the constant fails."""
_SLACK_S = 0.02
"""Timer granularity between nats-py's clock reading and ours; far below the pause itself."""


class _DownServer:
    """Accepts and drops connections on ``port``, noting when each arrived."""

    def __init__(self, port: int = 0) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self._sock.listen(64)
        self.port: int = self._sock.getsockname()[1]
        self.attempts: list[float] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._sock.accept()
            except OSError:
                return
            self.attempts.append(time.monotonic())
            connection.close()

    def close(self) -> None:
        self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(5)


@pytest.fixture
def down_server() -> Iterator[_DownServer]:
    server = _DownServer()
    try:
        yield server
    finally:
        server.close()


def _assert_paced(attempts: list[float]) -> None:
    assert len(attempts) >= 2, f"only {len(attempts)} attempts in {WATCH_S:g} s"
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert min(gaps) >= MIN_PAUSE_S - _SLACK_S, [round(g, 3) for g in gaps]
    assert len(attempts) <= WATCH_S / MIN_PAUSE_S + 1, len(attempts)


def test_reconnect_pause_is_short_and_varies_per_connection() -> None:
    waits = [reconnect_wait() for _ in range(200)]
    assert all(RECONNECT_WAIT_MIN_S <= w <= RECONNECT_WAIT_MAX_S for w in waits)
    assert RECONNECT_WAIT_MIN_S >= MIN_PAUSE_S, "more than 8 attempts a second per client hammers a down server"
    assert RECONNECT_WAIT_MAX_S <= 0.25, "routers must see fresh state within 1 s after NATS returns"
    assert len(set(waits)) > 100, "a fixed pause would make a fleet retry in lockstep"
    settings = NatsSettings()
    for background in (True, False):
        options = [connect_options(settings, name="t", background=background) for _ in range(20)]
        assert all(RECONNECT_WAIT_MIN_S <= o["reconnect_time_wait"] <= RECONNECT_WAIT_MAX_S for o in options)
        assert len({o["reconnect_time_wait"] for o in options}) > 1


async def test_publisher_paces_its_attempts_on_a_server_that_never_answered(down_server: _DownServer) -> None:
    publisher = RoutingPublisher(
        nats_settings=NatsSettings(servers=(f"nats://127.0.0.1:{down_server.port}",)),
        routing=RoutingSettings(instance_id="reconnect-test"),
        client_name="reconnect-test",
    )
    publisher.start()
    try:
        await asyncio.sleep(WATCH_S)
        attempts = list(down_server.attempts)
    finally:
        publisher.stop()
    _assert_paced(attempts)


async def test_router_paces_its_attempts_after_losing_the_server() -> None:
    with EmbeddedNatsServer() as nats_server:
        router = RouterClient(nats_settings=NatsSettings(servers=(nats_server.url,)))
        await router.start()
        try:
            assert nats_server.pid is not None
            os.kill(nats_server.pid, signal.SIGKILL)
            nats_server.stop()
            down = _DownServer(nats_server.port)
            try:
                await asyncio.sleep(WATCH_S)
                attempts = list(down.attempts)
            finally:
                down.close()
        finally:
            await router.close()
    _assert_paced(attempts)
