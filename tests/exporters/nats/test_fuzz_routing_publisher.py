"""Hostile snapshot requests at the routing publisher (a real nats-server): whatever a request carries (garbage, a
megabyte, headers, no reply subject) and however many arrive, the publisher answers only with its own messages,
counts no error and keeps publishing steps."""

from __future__ import annotations

import random

import nats
import pytest

from eagleeye_otel.exporters.nats import RoutingPublisher
from eagleeye_otel.nats_flush import flush
from eagleeye_otel.nats_server import EmbeddedNatsServer
from tests.helpers.routing import Received, step, subscribe

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SNAPSHOT = "eagle_eye.routing_snapshot"


def _payloads(count: int) -> list[bytes]:
    rng = random.Random(7)
    fixed = [b"", b"\xff\xfe", b"[" * 100_000, b"x" * (1024 * 1024 - 1024), b'{"version": 1}', b"\x00" * 64]
    return fixed + [rng.randbytes(rng.randrange(200)) for _ in range(count - len(fixed))]


async def test_hostile_snapshot_requests_get_only_the_publishers_own_state(
    publisher: RoutingPublisher, nats_server: EmbeddedNatsServer, eventually
) -> None:
    await eventually(lambda: publisher.stats.connected)
    publisher.offer(step(0, waiting=4))
    publisher.offer(step(1, waiting=5))
    await eventually(lambda: publisher.stats.published == 2)
    router, received = await subscribe(nats_server.url)
    attacker = await nats.connect(nats_server.url)
    replies = Received()
    inbox = attacker.new_inbox()
    await attacker.subscribe(inbox, cb=replies.on_message)
    try:
        payloads = _payloads(1000)
        for index, payload in enumerate(payloads):
            reply = inbox if index % 2 == 0 else ""  # half of them with nowhere to answer
            headers = {"X-Junk": "\u00e9" * 10} if index % 3 == 0 else None
            await attacker.publish(SNAPSHOT, payload, reply=reply, headers=headers)
        await flush(attacker)
        await eventually(lambda: len(replies.messages) == len(payloads))  # two engines, every other request
        assert {(m.engine, m.num_requests_waiting) for m in replies.messages} == {(0, 4), (1, 5)}

        publisher.offer(step(0, waiting=9))  # and it still publishes
        await eventually(lambda: any(m.num_requests_waiting == 9 for m in received.steps()))
        assert publisher.stats.errors == 0
    finally:
        await attacker.close()
        await router.close()
