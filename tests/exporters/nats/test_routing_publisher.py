"""The routing publisher against a real nats-server: content, coalescing, heartbeats, outages and auth."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import threading
from collections.abc import AsyncIterator, Iterator

import nats
import pytest

from eagleeye_otel.nats_flush import flush
from eagleeye_otel.nats_server import EmbeddedNatsServer, free_port
from tests.helpers.routing import Received, make_publisher, step, subscribe

pytestmark = pytest.mark.integration


@pytest.fixture
async def received(nats_server: EmbeddedNatsServer) -> AsyncIterator[Received]:
    nc, sink = await subscribe(nats_server.url)
    yield sink
    await nc.close()


async def test_step_message_carries_the_offered_state(publisher, received, eventually) -> None:
    await eventually(lambda: publisher.stats.connected)
    publisher.offer(step(waiting=3, running=7, kv=0.5))

    await eventually(lambda: len(received.steps()) == 1)
    message = received.steps()[0]
    assert (message.instance, message.model, message.engine) == ("pod-a", "tiny", 0)
    assert (message.num_requests_waiting, message.num_requests_running, message.kv_cache_usage) == (3, 7, 0.5)
    assert message.seq == 1
    assert message.heartbeat is False


async def test_engines_have_their_own_sequence(publisher, received, eventually) -> None:
    await eventually(lambda: publisher.stats.connected)
    for engine in (0, 1, 0, 1):
        publisher.offer(step(engine))
        await eventually(lambda: publisher.stats.offered == publisher.stats.published)

    await eventually(lambda: len(received.steps()) == 4)
    by_engine = {e: [m.seq for m in received.steps() if m.engine == e] for e in (0, 1)}
    assert by_engine == {0: [1, 2], 1: [1, 2]}


async def test_a_burst_is_coalesced_and_the_newest_state_wins(publisher, received, eventually) -> None:
    await eventually(lambda: publisher.stats.connected)
    burst = 5000

    def engine_loop() -> None:
        # Like vLLM's event loop: offers back to back without yielding.
        for i in range(burst):
            publisher.offer(step(waiting=i))

    thread = threading.Thread(target=engine_loop)
    thread.start()
    thread.join()

    await eventually(lambda: received.steps() and received.steps()[-1].num_requests_waiting == burst - 1)
    stats = publisher.stats
    assert stats.offered == burst
    assert stats.published == len(received.steps())
    assert stats.published + stats.coalesced + stats.dropped == burst
    seqs = [m.seq for m in received.messages]
    assert seqs == sorted(set(seqs)), "seq must be strictly increasing"


async def test_heartbeats_repeat_the_last_state_while_idle(publisher, received, eventually) -> None:
    await eventually(lambda: publisher.stats.connected)
    publisher.offer(step(waiting=0, running=0, kv=0.0))

    await eventually(lambda: len(received.heartbeats()) >= 3, timeout=5)
    last_step = received.steps()[-1]
    for beat in received.heartbeats():
        assert beat.num_requests_running == last_step.num_requests_running
        assert beat.kv_cache_usage == last_step.kv_cache_usage
        assert beat.timestamp >= last_step.timestamp
    seqs = [m.seq for m in received.messages]
    assert seqs == list(range(1, len(seqs) + 1))


async def test_no_heartbeat_before_the_first_step(publisher, received) -> None:
    await asyncio.sleep(0.6)  # three heartbeat intervals
    assert received.messages == []


async def test_start_with_no_server_never_blocks_and_recovers(eventually) -> None:
    port = free_port()
    publisher = make_publisher(f"nats://127.0.0.1:{port}")
    publisher.start()
    try:
        for i in range(100):
            publisher.offer(step(waiting=i))
        assert publisher.stats.offered == 100
        assert publisher.stats.connected is False
        assert publisher.stats.published == 0

        with EmbeddedNatsServer(port=port) as server:
            nc, sink = await subscribe(server.url)
            await eventually(lambda: publisher.stats.connected, timeout=15)
            # The newest state offered during the outage arrives as a step, without a new step.
            await eventually(lambda: len(sink.messages) == 1)
            first = sink.messages[0]
            assert (first.num_requests_waiting, first.heartbeat, first.seq) == (99, False, 1)
            assert publisher.stats.coalesced == 99
            assert publisher.stats.dropped == 0
            await nc.close()
    finally:
        publisher.stop()


async def test_reconnects_after_the_server_restarts(nats_server, publisher, eventually) -> None:
    await eventually(lambda: publisher.stats.connected)
    publisher.offer(step(waiting=1))
    await eventually(lambda: publisher.stats.published == 1)

    nats_server.stop()
    await eventually(lambda: not publisher.stats.connected)
    publisher.offer(step(waiting=2))

    nats_server.start()
    nc, sink = await subscribe(nats_server.url)
    await eventually(lambda: publisher.stats.connected, timeout=15)
    await eventually(lambda: any(m.num_requests_waiting == 2 and not m.heartbeat for m in sink.messages))
    publisher.offer(step(waiting=3))
    await eventually(lambda: any(m.num_requests_waiting == 3 and not m.heartbeat for m in sink.messages))
    await nc.close()


async def test_snapshot_request_returns_the_last_sent_state(publisher, nats_server, eventually) -> None:
    await eventually(lambda: publisher.stats.connected)
    publisher.offer(step(0, waiting=4))
    publisher.offer(step(1, waiting=5))
    await eventually(lambda: publisher.stats.published == 2)

    nc = await nats.connect(nats_server.url)
    replies = Received()
    inbox = nc.new_inbox()
    await nc.subscribe(inbox, cb=replies.on_message)
    await nc.publish("eagle_eye.routing_snapshot", b"", reply=inbox)
    await eventually(lambda: len(replies.messages) == 2)
    assert {(m.engine, m.num_requests_waiting) for m in replies.messages} == {(0, 4), (1, 5)}
    await nc.close()


async def test_offers_after_stop_are_ignored(publisher) -> None:
    publisher.stop()
    publisher.offer(step())
    assert publisher.stats.offered == 0


@pytest.fixture
def auth_server() -> Iterator[EmbeddedNatsServer]:
    with EmbeddedNatsServer(extra_args=["--user", "router", "--pass", "s3cret"]) as server:
        yield server


async def test_user_password_auth(auth_server, eventually) -> None:
    publisher = make_publisher(auth_server.url, EAGLEEYE_NATS_USER="router", EAGLEEYE_NATS_PASSWORD="s3cret")
    publisher.start()
    try:
        nc, sink = await subscribe(auth_server.url, user="router", password="s3cret")
        await eventually(lambda: publisher.stats.connected)
        publisher.offer(step(waiting=9))
        await eventually(lambda: len(sink.steps()) == 1)
        await nc.close()
    finally:
        publisher.stop()


async def test_wrong_password_is_refused_and_nothing_is_sent(auth_server, caplog) -> None:
    publisher = make_publisher(auth_server.url, EAGLEEYE_NATS_USER="router", EAGLEEYE_NATS_PASSWORD="wrong")
    publisher.start()
    try:
        nc, sink = await subscribe(auth_server.url, user="router", password="s3cret")
        publisher.offer(step())
        await asyncio.sleep(1.0)
        assert publisher.stats.connected is False
        assert publisher.stats.published == 0
        assert sink.messages == []
        assert "authorization" in caplog.text.lower()
        assert "wrong" not in caplog.text, "secrets must never be logged"
        await nc.close()
    finally:
        publisher.stop()


async def test_token_auth(eventually) -> None:
    with EmbeddedNatsServer(extra_args=["--auth", "t0ken"]) as server:
        publisher = make_publisher(server.url, EAGLEEYE_NATS_TOKEN="t0ken")
        publisher.start()
        try:
            nc, sink = await subscribe(server.url, token="t0ken")
            await eventually(lambda: publisher.stats.connected)
            publisher.offer(step())
            await eventually(lambda: len(sink.steps()) == 1)
            await nc.close()
        finally:
            publisher.stop()


async def test_idle_heartbeats_never_leave_a_gap_longer_than_the_interval(nats_server, eventually) -> None:
    """The contract routers rely on: no gap between two messages of an engine exceeds the heartbeat interval."""
    interval = 0.5
    publisher = make_publisher(nats_server.url, EAGLEEYE_HEARTBEAT_INTERVAL=str(interval))
    nc, sink = await subscribe(nats_server.url)
    publisher.start()
    try:
        await eventually(lambda: publisher.stats.connected)
        publisher.offer(step(waiting=0, running=0, kv=0.0))
        await eventually(lambda: len(sink.heartbeats()) >= 4, timeout=10)
        stamps = [m.timestamp for m in sink.messages]
        gaps = [later - earlier for earlier, later in itertools.pairwise(stamps)]
        assert max(gaps) <= interval, gaps
    finally:
        publisher.stop()
        await nc.close()


async def test_a_stalled_server_never_makes_two_messages_share_a_seq(nats_server, eventually) -> None:
    """Backpressure (the server stopped while the engine keeps stepping and routers ask for snapshots): every message
    an engine sends has its own seq, steps keep their order, and snapshot replies only repeat what was sent."""
    publisher = make_publisher(nats_server.url)
    nc, sink = await subscribe(nats_server.url)
    replies = Received()
    inbox = nc.new_inbox()
    await nc.subscribe(inbox, cb=replies.on_message)
    await flush(nc)
    publisher.start()
    try:
        await eventually(lambda: publisher.stats.connected)
        publisher.offer(step(0, waiting=0))
        await eventually(lambda: len(sink.steps()) == 1)
        pid = nats_server.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # the server reads nothing: the publisher's socket fills up
        try:
            offered = 0
            while publisher.stats.coalesced < 100:  # until the socket is full and states wait in their slots
                assert offered < 200_000, "the publisher's socket never filled up"
                offered += 1
                publisher.offer(step(offered % 2, waiting=offered))
                if offered % 5000 == 0:
                    await nc.publish("eagle_eye.routing_snapshot", b"", reply=inbox)
                    await asyncio.sleep(0.01)
        finally:
            os.kill(pid, signal.SIGCONT)
        last = {offered - 1, offered}
        await eventually(lambda: {m.num_requests_waiting for m in sink.steps()} >= last, timeout=15)
        await eventually(lambda: len(replies.messages) >= 2, timeout=15)

        for engine in (0, 1):
            seqs = [m.seq for m in sink.messages if m.engine == engine]
            assert seqs == sorted(set(seqs)), f"engine {engine}: seq repeated or out of order"
            waiting = [m.num_requests_waiting for m in sink.steps() if m.engine == engine]
            assert waiting == sorted(waiting), f"engine {engine}: an older state was sent after a newer one"
            sent = {m.seq: m for m in sink.messages if m.engine == engine}
            for reply in (m for m in replies.messages if m.engine == engine):
                assert sent[reply.seq] == reply, "a snapshot reply must repeat a message as it was sent"
    finally:
        publisher.stop()
        await nc.close()


async def test_the_publisher_answers_the_servers_pings_and_stays_connected(tmp_path, eventually) -> None:
    """A server that pings every 100 ms and drops a client after two unanswered pings keeps the publisher."""
    config = tmp_path / "ping.conf"
    config.write_text('ping_interval: "100ms"\nping_max: 2\n')
    with EmbeddedNatsServer(extra_args=["-c", str(config)]) as server:
        publisher = make_publisher(server.url)
        nc, sink = await subscribe(server.url)
        publisher.start()
        try:
            await eventually(lambda: publisher.stats.connected)
            await asyncio.sleep(1.5)  # fifteen pings
            publisher.offer(step(waiting=7))
            await eventually(lambda: any(m.num_requests_waiting == 7 for m in sink.steps()))
            assert (publisher.stats.errors, publisher.stats.reconnects) == (0, 0)
        finally:
            publisher.stop()
            await nc.close()
