"""Inline delivery: the routing subscription's payloads reach the ingest from the parser, over a real nats-server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from eagleeye_otel.nats_flush import flush
from eagleeye_otel.nats_server import EmbeddedNatsServer
from eagleeye_otel.routing import RouterClient
from eagleeye_otel.routing._inline import INLINE_DELIVERY, InlineDeliveryClient
from eagleeye_otel.settings import NatsSettings
from tests.helpers.routing import INSTANCE, step

pytestmark = pytest.mark.integration

SUBJECT = "inline.test"


@pytest.fixture
async def receiver(nats_server: EmbeddedNatsServer) -> AsyncIterator[InlineDeliveryClient]:
    nc = InlineDeliveryClient()
    await nc.connect(servers=[nats_server.url], allow_reconnect=False)
    yield nc
    await nc.close()


class Recorder:
    """What arrived inline (and in how many calls) and what arrived through the subscription's callback."""

    def __init__(self) -> None:
        self.inline: list[bytes] = []
        self.calls = 0
        self.callback: list[bytes] = []

    def ingest(self, payloads: list[bytes]) -> None:
        self.inline.extend(payloads)
        self.calls += 1

    async def on_message(self, msg: Msg) -> None:
        self.callback.append(msg.data)


def test_the_installed_nats_py_allows_inline_delivery() -> None:
    # Without it routers fall back to nats-py's callback and ingest about a third fewer messages a second.
    assert INLINE_DELIVERY


async def test_payloads_arrive_inline_in_order_and_are_counted(
    sender: Client, receiver: InlineDeliveryClient, eventually: Callable[..., Awaitable[None]]
) -> None:
    recorder = Recorder()
    subscription = await receiver.subscribe(SUBJECT, cb=recorder.on_message)
    assert receiver.deliver_inline(subscription, recorder.ingest)
    await flush(receiver)
    sent = [b"%d" % i for i in range(2000)]
    for payload in sent:
        await sender.publish(SUBJECT, payload)
    await flush(sender)

    await eventually(lambda: len(recorder.inline) == len(sent))
    assert recorder.inline == sent
    assert recorder.callback == []
    assert receiver.stats["in_msgs"] >= len(sent)
    assert recorder.calls < len(sent), "messages read together are handed over together"


async def test_frames_cut_anywhere_by_the_reads_arrive_whole(receiver: InlineDeliveryClient) -> None:
    """The parser's fast path, fed the server's bytes cut at every position, with other frames in between."""
    recorder, other = Recorder(), Recorder()
    subscription = await receiver.subscribe(SUBJECT, cb=recorder.on_message)
    receiver.deliver_inline(subscription, recorder.ingest)
    elsewhere = await receiver.subscribe("other.subject", cb=other.on_message)
    sid, other_sid = subscription._id, elsewhere._id
    stream = (
        b"MSG %s %d 5\r\nfirst\r\n" % (SUBJECT.encode(), sid)
        + b"MSG %s %d 0\r\n\r\n" % (SUBJECT.encode(), sid)
        + b"MSG other.subject %d 3\r\nabc\r\n" % other_sid
        + b"MSG %s %d _INBOX.x 2\r\nhi\r\n" % (SUBJECT.encode(), sid)
        + b"MSG %s %d 6\r\nMSG \r\n\r\n" % (SUBJECT.encode(), sid)
    )
    expected = [b"first", b"", b"hi", b"MSG \r\n"]
    for cut in range(1, len(stream)):
        await receiver._ps.parse(stream[:cut])
        await receiver._ps.parse(stream[cut:])
        assert recorder.inline == expected, cut
        recorder.inline.clear()
    await asyncio.sleep(0.1)  # the other subscription's callbacks run on their own task
    assert other.callback == [b"abc"] * (len(stream) - 1)


async def test_other_subscriptions_and_messages_with_headers_use_the_callback(
    sender: Client, receiver: InlineDeliveryClient, eventually: Callable[..., Awaitable[None]]
) -> None:
    inline, other = Recorder(), Recorder()
    subscription = await receiver.subscribe(SUBJECT, cb=inline.on_message)
    receiver.deliver_inline(subscription, inline.ingest)
    await receiver.subscribe("other.subject", cb=other.on_message)
    await flush(receiver)

    await sender.publish(SUBJECT, b"with-headers", headers={"k": "v"})
    await sender.publish("other.subject", b"elsewhere")
    await sender.publish(SUBJECT, b"plain")
    await flush(sender)

    await eventually(lambda: inline.inline and inline.callback and other.callback)
    assert inline.inline == [b"plain"]
    assert inline.callback == [b"with-headers"]
    assert other.callback == [b"elsewhere"] and other.inline == []


async def test_a_failing_ingest_is_logged_and_the_connection_keeps_delivering(
    sender: Client,
    receiver: InlineDeliveryClient,
    eventually: Callable[..., Awaitable[None]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    delivered: list[bytes] = []

    def ingest(payloads: list[bytes]) -> None:
        if b"boom" in payloads:
            raise RuntimeError("ingest bug")
        delivered.extend(payloads)

    subscription = await receiver.subscribe(SUBJECT, cb=Recorder().on_message)
    receiver.deliver_inline(subscription, ingest)
    await flush(receiver)
    with caplog.at_level(logging.WARNING):
        await sender.publish(SUBJECT, b"before")
        await eventually(lambda: delivered == [b"before"])
        await sender.publish(SUBJECT, b"boom")
        await eventually(lambda: "ingest bug" in caplog.text)
        await sender.publish(SUBJECT, b"after")
        await eventually(lambda: len(delivered) == 2)

    assert delivered == [b"before", b"after"]
    assert receiver.is_connected
    assert "routing ingest failed" in caplog.text and "ingest bug" in caplog.text


async def test_after_stop_inline_the_callback_takes_over(
    sender: Client, receiver: InlineDeliveryClient, eventually: Callable[..., Awaitable[None]]
) -> None:
    recorder = Recorder()
    subscription = await receiver.subscribe(SUBJECT, cb=recorder.on_message)
    receiver.deliver_inline(subscription, recorder.ingest)
    receiver.stop_inline(subscription)
    await flush(receiver)
    await sender.publish(SUBJECT, b"late")
    await flush(sender)

    await eventually(lambda: recorder.callback == [b"late"])
    assert recorder.inline == []


async def test_a_router_client_ingests_inline_on_its_own_connection(
    nats_server: EmbeddedNatsServer, sender: Client, eventually: Callable[..., Awaitable[None]]
) -> None:
    settings = NatsSettings(servers=(nats_server.url,))
    # Its own snapshot subject: a publisher of another test still reconnecting to this port must not answer.
    async with RouterClient(nats_settings=settings, subject=SUBJECT, snapshot_subject=f"{SUBJECT}.snapshot") as client:
        connection = client._nc
        assert isinstance(connection, InlineDeliveryClient)
        assert connection._inline, "the routing subscription is delivered inline"
        for seq in (1, 2, 3):
            await sender.publish(SUBJECT, msgspec.json.encode(msgspec.structs.replace(step(), seq=seq)))
        await sender.publish(SUBJECT, b"not json")
        await flush(sender)

        await eventually(lambda: client.stats.received == 4)
        state = client.get(INSTANCE)
        assert state is not None and state.message.seq == 3
        assert client.stats.accepted == 3 and client.stats.invalid == 1


async def test_coalesced_reads_deliver_every_message_in_order(
    nats_server: EmbeddedNatsServer, sender: Client, eventually: Callable[..., Awaitable[None]]
) -> None:
    settings = NatsSettings(servers=(nats_server.url,))
    snapshot = f"{SUBJECT}.snapshot"
    async with RouterClient(
        nats_settings=settings, subject=SUBJECT, snapshot_subject=snapshot, coalesce_reads=0.05
    ) as client:
        connection = client._nc
        assert isinstance(connection, InlineDeliveryClient) and connection.coalesce_s == 0.05
        for seq in range(1, 301):
            await sender.publish(SUBJECT, msgspec.json.encode(msgspec.structs.replace(step(), seq=seq)))
            if seq % 50 == 0:
                await flush(sender)  # spread over several reads, so that reading pauses between them

        await eventually(lambda: client.stats.received == 300)
        state = client.get(INSTANCE)
        assert state is not None and state.message.seq == 300
        assert (client.stats.accepted, client.stats.out_of_order) == (300, 0)
