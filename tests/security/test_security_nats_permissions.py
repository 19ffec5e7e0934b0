"""Per-component NATS credentials over TLS, against a real nats-server running the shipped
``deploy/nats/eagle-eye-auth.conf``: each component works with exactly its permissions, a credential cannot publish
another component's subjects (the server refuses, and a router never sees the forged message), and a wrong password
is refused with a clear error, never blocking the caller."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult, MetricsData

from eagleeye_otel.errors import RouterConnectError
from eagleeye_otel.exporters.nats import NatsMetricExporter, RoutingPublisher
from eagleeye_otel.nats_flush import flush
from eagleeye_otel.routing import RouterClient
from eagleeye_otel.settings import Settings
from tests.helpers.nats_auth import AuthServer
from tests.helpers.routing import INSTANCE, step

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

Eventually = Callable[..., Awaitable[None]]
PUBLISHER_LOGGER = "eagleeye_otel.exporters.nats._routing_publisher"


class Errors:
    """A nats-py ``error_cb`` that keeps what the server answered."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def on_error(self, error: Exception) -> None:
        self.seen.append(str(error))


class Sink:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    async def on_message(self, msg: Msg) -> None:
        self.messages.append((msg.subject, msg.data))


def publisher_for(auth: AuthServer, component: str = "vllm", **env: str) -> RoutingPublisher:
    # A 60 s heartbeat: a router that joins late can only learn the state from the snapshot replies.
    settings = Settings.from_env(auth.env(component, **env))
    routing = dataclasses.replace(settings.routing, heartbeat_interval=60.0)
    return RoutingPublisher(nats_settings=settings.nats, routing=routing, client_name="test-vllm")


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    made: list[Client] = []
    yield made
    for nc in made:
        await nc.close()


# -- each component works with its own credential ------------------------------------------------------------------


async def test_the_vllm_publisher_and_a_router_work_with_exactly_their_permissions(
    auth: AuthServer, eventually: Eventually
) -> None:
    publisher = publisher_for(auth)
    publisher.start()
    router = RouterClient(nats_settings=auth.nats("router"), follow_health=True)
    try:
        await eventually(lambda: publisher.stats.connected)
        publisher.offer(step(0, waiting=2, running=5, kv=0.75))
        publisher.offer(step(1, waiting=3))
        await eventually(lambda: publisher.stats.published == 2)

        # Joins after the steps, heartbeats a minute away: both engines arrive as snapshot replies, which the
        # vLLM user may send only to the reply subject of a request it received (allow_responses).
        await router.start()
        await eventually(lambda: len(router.instances()) == 2)
        assert {(s.message.engine, s.message.num_requests_waiting) for s in router.instances()} == {(0, 2), (1, 3)}

        publisher.offer(step(0, waiting=9))  # and live steps on the routing subject
        await eventually(lambda: (s := router.get(INSTANCE)) is not None and s.message.num_requests_waiting == 9)
        assert auth.violations() == []
    finally:
        await router.close()
        publisher.stop()


def _collect(value: int) -> MetricsData:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    provider.get_meter("test").create_counter("test.requests").add(value)
    data = reader.get_metrics_data()
    provider.shutdown()
    assert data is not None
    return data


async def test_the_nats_metric_exporter_publishes_otlp_as_the_vllm_user(
    auth: AuthServer, clients: list[Client], eventually: Eventually
) -> None:
    reader, sink = await auth.connect("metrics-reader"), Sink()
    clients.append(reader)
    await reader.subscribe("eagle_eye.metrics", cb=sink.on_message)
    await flush(reader)
    exporter = NatsMetricExporter(nats_settings=auth.nats("vllm"))
    try:
        await eventually(lambda: exporter.stats.connected)
        assert exporter.export(_collect(7)) is MetricExportResult.SUCCESS
        await eventually(lambda: len(sink.messages) == 1)
        ((subject, payload),) = sink.messages
        assert subject == "eagle_eye.metrics"
        assert ExportMetricsServiceRequest.FromString(payload).resource_metrics
        assert auth.violations() == []
    finally:
        exporter.shutdown(timeout_millis=2000)


# -- a credential cannot publish another component's subjects -------------------------------------------------------


FORGERIES = [
    ("router", "eagle_eye.routing_metrics"),  # a router faking load
    ("router", "eagle_eye.diagnosis.node-a"),  # ... or a finding
    ("hardware", "eagle_eye.routing_metrics"),
    ("hardware", "eagle_eye.diagnosis.node-a"),
    ("diagnosis", "eagle_eye.routing_metrics"),
    ("diagnosis", "eagle_eye.hardware.node-a"),
    ("vllm", "eagle_eye.hardware.node-a"),
    ("vllm", "eagle_eye.diagnosis.node-a"),
    ("metrics-reader", "eagle_eye.routing_metrics"),
    ("metrics-reader", "eagle_eye.routing_snapshot"),
]


@pytest.mark.parametrize(("forger", "subject"), FORGERIES)
async def test_a_credential_cannot_publish_another_components_subject(
    auth: AuthServer, clients: list[Client], eventually: Eventually, forger: str, subject: str
) -> None:
    """The server refuses the publish (the forger is told, the server logs it) and the subject's readers see
    nothing; a genuine message sent right after arrives, so the watchers were listening."""
    owner = {
        "eagle_eye.routing_metrics": "vllm",
        "eagle_eye.diagnosis.node-a": "diagnosis",
        "eagle_eye.hardware.node-a": "hardware",
        "eagle_eye.routing_snapshot": "router",
    }[subject]
    reader = {"vllm": "router", "diagnosis": "router", "hardware": "diagnosis", "router": "vllm"}[owner]
    watcher, seen = await auth.connect(reader), Sink()
    clients.append(watcher)
    await watcher.subscribe(subject, cb=seen.on_message)
    await flush(watcher)
    router = RouterClient(nats_settings=auth.nats("router"))  # the real client, for the routing subject
    await router.start()
    errors = Errors()
    forger_nc = await auth.connect(forger, error_cb=errors.on_error)
    genuine = await auth.connect(owner)
    clients.extend([forger_nc, genuine])
    forged = msgspec.json.encode(msgspec.structs.replace(step(waiting=666), seq=1))  # valid: only NATS stops it
    try:
        await forger_nc.publish(subject, forged)
        await flush(forger_nc)
        await eventually(lambda: any("permissions violation for publish" in e for e in errors.seen))
        assert any(f'Publish Violation - Subject "{subject}"' in line for line in auth.violations())

        await genuine.publish(subject, b"genuine")
        await flush(genuine)
        await eventually(lambda: (subject, b"genuine") in seen.messages)
        assert all(data != forged for _, data in seen.messages)
        assert router.instances() == [] and router.stats.accepted == 0
        assert forger_nc.is_connected  # refused publishes do not cost the forger its connection
    finally:
        await router.close()


@pytest.mark.parametrize(
    ("component", "subject"),
    [
        ("hardware", "eagle_eye.routing_metrics"),
        ("router", "eagle_eye.hardware.>"),
        ("vllm", "eagle_eye.routing_metrics"),
        ("diagnosis", "eagle_eye.routing_metrics"),
        ("metrics-reader", "eagle_eye.diagnosis.>"),
    ],
)
async def test_subscriptions_outside_a_components_permissions_are_refused(
    auth: AuthServer, clients: list[Client], eventually: Eventually, component: str, subject: str
) -> None:
    errors, sink = Errors(), Sink()
    nc = await auth.connect(component, error_cb=errors.on_error)
    publisher = await auth.connect(
        {"eagle_eye.hardware.>": "hardware", "eagle_eye.diagnosis.>": "diagnosis"}.get(subject, "vllm")
    )
    clients.extend([nc, publisher])
    await nc.subscribe(subject, cb=sink.on_message)
    await flush(nc)
    await eventually(lambda: any("permissions violation for subscription" in e for e in errors.seen))
    await publisher.publish(subject.replace(">", "node-a"), b"private")
    await flush(publisher)
    await asyncio.sleep(0.3)
    assert sink.messages == []
    assert any("Subscription Violation" in line for line in auth.violations())


# -- wrong credentials: refused, said clearly, never blocking ----------------------------------------------------------


async def test_a_router_with_a_wrong_password_fails_at_start_and_says_why(auth: AuthServer) -> None:
    router = RouterClient(nats_settings=auth.nats("router", password="not-the-password"))
    started = time.monotonic()
    with pytest.raises(RouterConnectError) as raised:
        await asyncio.wait_for(router.start(), 20)
    assert time.monotonic() - started < 15
    assert raised.value.servers == (auth.url,)
    assert "authorization violation" in raised.value.reason.lower()
    assert "not-the-password" not in str(raised.value)


async def test_the_vllm_publisher_with_a_wrong_password_keeps_retrying_without_stalling(
    auth: AuthServer, caplog: pytest.LogCaptureFixture, eventually: Eventually
) -> None:
    caplog.set_level(logging.DEBUG)
    publisher = publisher_for(auth, password="not-the-password")
    started = time.perf_counter()
    publisher.start()
    assert time.perf_counter() - started < 0.5  # the connection is made on the publisher's own thread
    try:
        slowest = 0.0
        for i in range(1000):  # back to back, as vLLM's loop offers
            before = time.perf_counter()
            publisher.offer(step(waiting=i))
            slowest = max(slowest, time.perf_counter() - before)
        assert slowest < 0.01, f"an offer took {slowest * 1e3:.1f} ms"
        await eventually(lambda: auth.authentication_errors() >= 3, timeout=20)  # it keeps trying
        stats = publisher.stats
        assert stats.connected is False and stats.published == 0
        warnings = [r.getMessage() for r in caplog.records if r.name == PUBLISHER_LOGGER and r.levelno >= 30]
        assert 1 <= len(warnings) <= 3, warnings  # rate-limited
        assert any("authorization violation" in w.lower() for w in warnings), warnings
        assert all("not-the-password" not in r.getMessage() for r in caplog.records)
    finally:
        publisher.stop()


async def test_without_the_ca_the_password_is_never_sent(auth: AuthServer) -> None:
    """A plain nats:// URL without EAGLEEYE_NATS_TLS_CA: nats-py upgrades to the TLS the server requires, cannot
    verify the certificate and stops there; the server never sees a login attempt."""
    env = {**auth.env("router"), "EAGLEEYE_NATS_URL": auth.server.url}
    del env["EAGLEEYE_NATS_TLS_CA"]
    router = RouterClient(nats_settings=Settings.from_env(env).nats)
    with pytest.raises(RouterConnectError) as raised:
        await asyncio.wait_for(router.start(), 20)
    assert "certificate verify failed" in raised.value.reason.lower(), raised.value.reason
    assert auth.authentication_errors() == 0
