"""The NATS transport against a real nats-server: hand-over, headers, drop reasons, flush and close."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from eagleeye_otel.exporters.nats._transport import (
    CLOSED,
    NOT_CONNECTED,
    OTHER_PROCESS,
    TOO_LARGE,
    NatsTransport,
    PublishDropped,
)
from eagleeye_otel.nats_flush import flush
from eagleeye_otel.nats_server import EmbeddedNatsServer, free_port
from eagleeye_otel.settings import NatsSettings

pytestmark = pytest.mark.integration

SUBJECT = "test.transport"


def loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("eagle-eye-nats-")]


@pytest.fixture
def transport(nats_server: EmbeddedNatsServer) -> Iterator[NatsTransport]:
    started = NatsTransport(nats_settings=NatsSettings(servers=(nats_server.url,)), client_name="transport-test")
    started.start()
    try:
        yield started
    finally:
        started.close(2.0)


@pytest.fixture
async def inbox(nats_server: EmbeddedNatsServer) -> AsyncIterator[list[Msg]]:
    messages: list[Msg] = []

    async def on_message(msg: Msg) -> None:
        messages.append(msg)

    nc: Client = await nats.connect(nats_server.url)
    await nc.subscribe(SUBJECT, cb=on_message)
    await flush(nc)
    yield messages
    await nc.close()


async def test_publish_delivers_payload_and_headers(
    transport: NatsTransport, inbox: list[Msg], eventually: Callable[..., Awaitable[None]]
) -> None:
    await eventually(lambda: transport.connected)
    transport.publish(SUBJECT, b"\x00\x01payload", headers={"Content-Type": "application/x-protobuf"}, timeout=1.0)
    assert transport.flush(2.0)
    await eventually(lambda: len(inbox) == 1)
    assert inbox[0].data == b"\x00\x01payload"
    assert inbox[0].headers == {"Content-Type": "application/x-protobuf"}


async def test_payload_over_the_servers_max_payload_is_refused_before_sending(
    tmp_path: Path, eventually: Callable[..., Awaitable[None]]
) -> None:
    config = tmp_path / "small.conf"
    config.write_text("max_payload: 1024\n")
    with EmbeddedNatsServer(extra_args=["-c", str(config)]) as server:
        small = NatsTransport(nats_settings=NatsSettings(servers=(server.url,)), client_name="small")
        small.start()
        try:
            await eventually(lambda: small.connected)
            with pytest.raises(PublishDropped) as dropped:
                small.publish(SUBJECT, b"x" * 2048, timeout=1.0)
            assert dropped.value.reason == TOO_LARGE
            small.publish(SUBJECT, b"x" * 512, timeout=1.0)  # still usable
            assert small.connected
        finally:
            small.close(2.0)


def test_no_server_drops_at_once_and_flush_reports_false() -> None:
    down = NatsTransport(
        nats_settings=NatsSettings(servers=(f"nats://127.0.0.1:{free_port()}",)), client_name="nobody-home"
    )
    down.start()
    try:
        with pytest.raises(PublishDropped) as dropped:
            down.publish(SUBJECT, b"x", timeout=5.0)
        assert dropped.value.reason == NOT_CONNECTED
        assert not down.connected
        assert down.flush(0.5) is False
    finally:
        down.close(2.0)


def test_close_stops_the_thread_runs_once_and_later_publishes_are_closed(nats_server: EmbeddedNatsServer) -> None:
    transport = NatsTransport(nats_settings=NatsSettings(servers=(nats_server.url,)), client_name="closing")
    transport.start()
    assert any(t.name == "eagle-eye-nats-closing" for t in loop_threads())
    transport.close(2.0)
    transport.close(2.0)
    assert not any(t.name == "eagle-eye-nats-closing" for t in loop_threads())
    assert not transport.connected
    with pytest.raises(PublishDropped) as dropped:
        transport.publish(SUBJECT, b"x", timeout=1.0)
    assert dropped.value.reason == CLOSED
    transport.start()  # a closed transport stays closed
    assert not any(t.name == "eagle-eye-nats-closing" for t in loop_threads())


def test_never_started_transport_refuses_publishes() -> None:
    idle = NatsTransport(nats_settings=NatsSettings(), client_name="idle")
    with pytest.raises(PublishDropped) as dropped:
        idle.publish(SUBJECT, b"x", timeout=1.0)
    assert dropped.value.reason == CLOSED
    idle.close(1.0)


async def test_forked_child_publishes_nothing_and_leaves_the_parents_connection_alone(
    transport: NatsTransport, inbox: list[Msg], eventually: Callable[..., Awaitable[None]]
) -> None:
    await eventually(lambda: transport.connected)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report what the transport did, then leave without returning into pytest
        try:
            code = 1
            try:
                transport.publish(SUBJECT, b"from-child", timeout=1.0)
            except PublishDropped as dropped:
                code = 0 if dropped.reason == OTHER_PROCESS else 2
            transport.close(1.0)  # must not say goodbye on the parent's socket
            os.write(write_end, bytes([code, transport.flush(0.2)]))
        finally:
            os._exit(0)
    os.close(write_end)
    report = await asyncio.to_thread(os.read, read_end, 2)
    os.close(read_end)
    await asyncio.to_thread(os.waitpid, pid, 0)
    assert report == bytes([0, False])

    transport.publish(SUBJECT, b"from-parent", timeout=1.0)
    assert transport.flush(2.0)
    await eventually(lambda: len(inbox) >= 1)
    assert [m.data for m in inbox] == [b"from-parent"]
    assert transport.connected
