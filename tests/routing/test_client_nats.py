"""RouterClient against a real nats-server and a real RoutingPublisher."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import msgspec
import nats
import pytest
from nats.aio.client import Client

from eagleeye_otel.errors import RouterConnectError
from eagleeye_otel.exporters.nats import RoutingPublisher
from eagleeye_otel.nats_server import EmbeddedNatsServer, free_port
from eagleeye_otel.routing import RouterClient, RoutingMessage
from eagleeye_otel.semconv import DEFAULT_ROUTING_SUBJECT
from eagleeye_otel.settings import Settings

pytestmark = pytest.mark.integration


def settings_for(url: str, **env: str) -> Settings:
    return Settings.from_env({"EAGLEEYE_NATS_URL": url, **env})


def message(instance: str = "pod-a", seq: int = 1, **overrides: object) -> RoutingMessage:
    fields: dict[str, object] = {
        "version": 1,
        "instance": instance,
        "model": "llama",
        "engine": 0,
        "timestamp": time.time(),
        "seq": seq,
        "num_requests_waiting": 0,
        "num_requests_running": 0,
        "kv_cache_usage": 0.0,
        "started": 1_700_000_000.0,
        **overrides,
    }
    return RoutingMessage(**fields)  # type: ignore[arg-type]


async def eventually(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
async def router(nats_server: EmbeddedNatsServer) -> AsyncIterator[RouterClient]:
    async with RouterClient(nats_settings=settings_for(nats_server.url).nats) as client:
        yield client


async def test_messages_on_the_subject_reach_the_view(router: RouterClient, sender: Client) -> None:
    await sender.publish(DEFAULT_ROUTING_SUBJECT, msgspec.json.encode(message("pod-a", num_requests_waiting=3)))
    await sender.publish(DEFAULT_ROUTING_SUBJECT, msgspec.json.encode(message("pod-b", num_requests_waiting=1)))

    await eventually(lambda: len(router.instances()) == 2, "two instances")
    assert router.stats.invalid == 0  # the server's "no responders" reply to the snapshot request is not data
    picked = router.pick("llama")
    assert picked is not None
    assert picked.message.instance == "pod-b"


async def test_malformed_messages_are_counted_and_the_client_keeps_working(
    router: RouterClient, sender: Client
) -> None:
    await sender.publish(DEFAULT_ROUTING_SUBJECT, b"not json")
    await sender.publish(DEFAULT_ROUTING_SUBJECT, b'{"version": 2}')
    await sender.publish(DEFAULT_ROUTING_SUBJECT, msgspec.json.encode(message("pod-a")))

    await eventually(lambda: router.get("pod-a") is not None, "the valid message")
    assert router.stats.invalid == 2
    assert router.stats.accepted == 1


async def test_late_joiner_gets_the_state_from_a_snapshot(nats_server: EmbeddedNatsServer) -> None:
    # The longest heartbeat interval allowed: the router joins right after the step was sent, so what it gets
    # within that interval is the snapshot reply, the last message again with the same seq.
    settings = settings_for(nats_server.url, EAGLEEYE_HEARTBEAT_INTERVAL="1.5", EAGLEEYE_INSTANCE_ID="pod-a")
    publisher = RoutingPublisher(nats_settings=settings.nats, routing=settings.routing, client_name="test-pub")
    publisher.start()
    try:
        await eventually(lambda: publisher.stats.connected, "the publisher to connect")
        publisher.offer(message("pod-a", num_requests_running=5, kv_cache_usage=0.5))
        await eventually(lambda: publisher.stats.published == 1, "the step to be published")

        async with RouterClient(nats_settings=settings.nats) as late:
            await eventually(lambda: late.get("pod-a") is not None, "the snapshot reply")
            state = late.get("pod-a")
            assert state is not None
            assert (state.message.seq, state.message.num_requests_running, state.message.heartbeat) == (1, 5, False)
            assert state.message.kv_cache_usage == 0.5

            publisher.offer(message("pod-a", num_requests_running=6))

            def next_step_seen() -> bool:
                seen = late.get("pod-a")
                return seen is not None and seen.message.num_requests_running == 6

            await eventually(next_step_seen, "the next step")
    finally:
        await asyncio.to_thread(publisher.stop)


async def test_start_without_a_server_raises_router_connect_error() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    client = RouterClient(nats_settings=settings_for(url).nats)

    with pytest.raises(RouterConnectError) as raised:
        await client.start()
    assert raised.value.servers == (url,)
    assert "refused" in raised.value.reason.lower()
    assert isinstance(raised.value, ConnectionError)


async def test_refused_credentials_raise_without_leaking_them() -> None:
    with EmbeddedNatsServer(extra_args=["--user", "router", "--pass", "right"]) as server:
        url = f"nats://router:wrong-secret@{server.host}:{server.port}"
        client = RouterClient(nats_settings=settings_for(url).nats)

        with pytest.raises(RouterConnectError) as raised:
            await client.start()
    assert "authorization" in raised.value.reason.lower()
    assert raised.value.servers == (server.url,)
    assert "wrong-secret" not in str(raised.value)


async def test_given_connection_is_left_open(nats_server: EmbeddedNatsServer, sender: Client) -> None:
    async with RouterClient(nc=sender) as client:
        await sender.publish(DEFAULT_ROUTING_SUBJECT, msgspec.json.encode(message("pod-a")))
        await eventually(lambda: client.get("pod-a") is not None, "the message")
    assert sender.is_connected


async def test_router_outlives_a_nats_restart(nats_server: EmbeddedNatsServer, router: RouterClient) -> None:
    nats_server.stop()
    await asyncio.sleep(5.0)  # longer than the retries start() allows before giving up
    nats_server.start()

    async with await nats.connect(nats_server.url) as sender:

        async def publish_until_seen() -> bool:
            await sender.publish(DEFAULT_ROUTING_SUBJECT, msgspec.json.encode(message("pod-a")))
            return router.get("pod-a") is not None

        deadline = time.monotonic() + 15.0
        while not await publish_until_seen():
            assert time.monotonic() < deadline, "the router did not reconnect"
            await asyncio.sleep(0.1)


async def test_restart_with_the_same_instance_id_is_followed_at_once(router: RouterClient, sender: Client) -> None:
    """vLLM as PID 1 in a restarted container keeps its instance id; only ``started`` tells the processes apart."""
    for seq in range(1, 6):
        await sender.publish(DEFAULT_ROUTING_SUBJECT, msgspec.json.encode(message(seq=seq, started=1000.0)))
    await eventually(lambda: router.stats.accepted == 5, "the first process's messages")

    restarted = message(seq=1, started=2000.0, num_requests_running=3)
    await sender.publish(DEFAULT_ROUTING_SUBJECT, msgspec.json.encode(restarted))
    await eventually(lambda: router.stats.accepted == 6, "the restarted process's first message")
    state = router.get("pod-a")
    assert state is not None
    assert (state.message.started, state.message.seq, state.message.num_requests_running) == (2000.0, 1, 3)

    late = message(seq=6, started=1000.0, num_requests_running=9)  # sent by the old process before it died
    await sender.publish(DEFAULT_ROUTING_SUBJECT, msgspec.json.encode(late))
    await sender.publish(DEFAULT_ROUTING_SUBJECT, msgspec.json.encode(message(seq=2, started=2000.0)))
    await eventually(lambda: router.stats.received == 8, "both messages")
    assert router.stats.superseded == 1
    state = router.get("pod-a")
    assert state is not None
    assert (state.message.started, state.message.seq) == (2000.0, 2)
