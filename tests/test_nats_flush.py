"""``nats_flush.flush`` against a real nats-server, one that traces every protocol line it processes (``-DV``)."""

from __future__ import annotations

import asyncio
import contextlib

import nats
import pytest
from nats.errors import FlushTimeoutError

from eagleeye_otel.nats_flush import flush
from eagleeye_otel.nats_server import EmbeddedNatsServer

pytestmark = pytest.mark.integration

SUBJECT = "flush.check"


def _processed(server: EmbeddedNatsServer) -> list[str]:
    """The protocol lines the server has processed from clients so far, in order."""
    return [line.split(" - <<- ", 1)[1] for line in server.log_tail(1 << 20).splitlines() if " - <<- " in line]


async def test_what_was_sent_before_reaches_the_server_ahead_of_the_ping() -> None:
    """A subscription and a publish made just before are processed by the server before the PING it answers.

    nats-py's own ``flush()`` sends its PING ahead of both here, every time: they still wait in its pending buffer.
    """
    with EmbeddedNatsServer(extra_args=["-DV"]) as server:
        nc = await nats.connect(server.url)
        try:
            await nc.subscribe(SUBJECT)
            await nc.publish(SUBJECT, b"payload")
            await flush(nc, 2)
            lines = _processed(server)
        finally:
            await nc.close()
    last_ping = max(i for i, line in enumerate(lines) if line.startswith("[PING]"))
    sub = next(i for i, line in enumerate(lines) if line.startswith(f"[SUB {SUBJECT}"))
    pub = next(i for i, line in enumerate(lines) if line.startswith(f"[PUB {SUBJECT}"))
    assert sub < last_ping and pub < last_ping, lines


async def test_a_message_published_as_soon_as_the_subscription_is_flushed_arrives() -> None:
    """What a router relies on at start: once ``flush`` returns, a publish from another connection is delivered."""
    with EmbeddedNatsServer() as server:
        sender, receiver = await nats.connect(server.url), await nats.connect(server.url)
        try:
            for round_ in range(50):
                subject = f"{SUBJECT}.{round_}"
                subscription = await receiver.subscribe(subject)
                await flush(receiver, 2)
                await sender.publish(subject, b"first")
                message = await subscription.next_msg(timeout=2)
                assert message.data == b"first", round_
        finally:
            await sender.close()
            await receiver.close()


async def test_without_a_server_it_raises_a_flush_timeout() -> None:
    with EmbeddedNatsServer() as server:
        nc = await nats.connect(server.url, reconnect_time_wait=0.1, max_reconnect_attempts=-1)
        server.stop()
    try:
        await asyncio.sleep(0.2)  # the client notices and starts reconnecting
        await nc.publish(SUBJECT, b"queued while down")
        with pytest.raises(FlushTimeoutError):
            await flush(nc, 0.5)
    finally:
        with contextlib.suppress(ConnectionResetError):  # nats-py's close() can trip over the dead socket
            await nc.close()
