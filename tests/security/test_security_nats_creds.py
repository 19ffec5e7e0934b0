"""``EAGLEEYE_NATS_CREDS``: per-component user JWTs and NKey seeds (``.creds`` files made here with ``nkeys``) against a
real nats-server in operator mode over TLS. Each JWT carries the component's permissions; a forgery is refused; a
credential from an untrusted account is refused without blocking; the seed never reaches a log."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import nats
import pytest

from eagleeye_otel.errors import RouterConnectError
from eagleeye_otel.exporters.nats import RoutingPublisher
from eagleeye_otel.nats_flush import flush
from eagleeye_otel.nats_server import EmbeddedNatsServer
from eagleeye_otel.routing import RouterClient
from eagleeye_otel.settings import Settings
from tests.helpers.nats_jwt import Account
from tests.helpers.pki import Pki, make_pki, tls_args
from tests.helpers.routing import INSTANCE, step

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

Eventually = Callable[..., Awaitable[None]]
ROUTING, SNAPSHOT = "eagle_eye.routing_metrics", "eagle_eye.routing_snapshot"


@dataclass
class Operator:
    server: EmbeddedNatsServer
    pki: Pki
    vllm: Path
    router: Path
    untrusted: Path

    @property
    def url(self) -> str:
        return f"tls://{self.server.host}:{self.server.port}"

    def env(self, creds: Path) -> dict[str, str]:
        return {
            "EAGLEEYE_NATS_URL": self.url,
            "EAGLEEYE_NATS_CREDS": str(creds),
            "EAGLEEYE_NATS_TLS_CA": str(self.pki.ca),
        }

    def seeds(self) -> list[str]:
        return [
            line
            for path in (self.vllm, self.router, self.untrusted)
            for line in path.read_text().splitlines()
            if line.startswith("SU")
        ]


@pytest.fixture
def operator(tmp_path: Path) -> Iterator[Operator]:
    pki = make_pki(tmp_path)
    account = Account.new()
    vllm = account.user(
        "vllm", tmp_path / "vllm.creds", publish=[ROUTING, "eagle_eye.metrics"], subscribe=[SNAPSHOT], responses=256
    )
    router = account.user(
        "router",
        tmp_path / "router.creds",
        publish=[SNAPSHOT],
        subscribe=[ROUTING, "eagle_eye.diagnosis.>", "_INBOX.>"],
    )
    untrusted = Account.new().user("router", tmp_path / "untrusted.creds", subscribe=[ROUTING])
    config = account.server_config(tmp_path / "operator.conf")
    with EmbeddedNatsServer(extra_args=["-c", str(config), *tls_args(pki.server_cert, pki.server_key)]) as server:
        yield Operator(server, pki, vllm, router, untrusted)


def make_publisher(operator: Operator, creds: Path) -> RoutingPublisher:
    settings = Settings.from_env(operator.env(creds))
    # A 60 s heartbeat: a router that joins late can only learn the state from the snapshot replies.
    routing = dataclasses.replace(settings.routing, heartbeat_interval=60.0)
    return RoutingPublisher(nats_settings=settings.nats, routing=routing, client_name="test-vllm")


async def test_publisher_and_router_with_their_creds_files(
    operator: Operator, caplog: pytest.LogCaptureFixture, eventually: Eventually
) -> None:
    caplog.set_level(logging.DEBUG)
    publisher = make_publisher(operator, operator.vllm)
    publisher.start()
    router = RouterClient(nats_settings=Settings.from_env(operator.env(operator.router)).nats)
    try:
        await eventually(lambda: publisher.stats.connected)
        publisher.offer(step(0, waiting=2))
        publisher.offer(step(1, waiting=3))
        await eventually(lambda: publisher.stats.published == 2)
        await router.start()  # the snapshot replies are the only way in: heartbeats are a minute away
        await eventually(lambda: len(router.instances()) == 2)
        publisher.offer(step(0, waiting=9))
        await eventually(lambda: (s := router.get(INSTANCE)) is not None and s.message.num_requests_waiting == 9)
        assert "Violation" not in operator.server.log_tail(1_000_000)
    finally:
        await router.close()
        publisher.stop()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert not any(seed in logged for seed in operator.seeds())


async def test_a_router_jwt_cannot_publish_routing_messages(operator: Operator, eventually: Eventually) -> None:
    router = RouterClient(nats_settings=Settings.from_env(operator.env(operator.router)).nats)
    await router.start()
    errors: list[str] = []

    async def on_error(error: Exception) -> None:
        errors.append(str(error))

    forger = await nats.connect(
        operator.url, user_credentials=str(operator.router), tls=operator.pki.client_context(), error_cb=on_error
    )
    try:
        forged = msgspec.json.encode(msgspec.structs.replace(step(waiting=666), seq=1))
        await forger.publish(ROUTING, forged)
        await flush(forger)
        await eventually(lambda: any("permissions violation for publish" in e for e in errors))
        await asyncio.sleep(0.3)
        assert router.instances() == [] and router.stats.accepted == 0
    finally:
        await forger.close()
        await router.close()


async def test_creds_of_an_untrusted_account_are_refused_without_blocking(
    operator: Operator, caplog: pytest.LogCaptureFixture, eventually: Eventually
) -> None:
    router = RouterClient(nats_settings=Settings.from_env(operator.env(operator.untrusted)).nats)
    with pytest.raises(RouterConnectError) as raised:
        await asyncio.wait_for(router.start(), 20)
    assert "authorization violation" in raised.value.reason.lower(), raised.value.reason

    publisher = make_publisher(operator, operator.untrusted)
    publisher.start()
    try:
        for i in range(100):
            publisher.offer(step(waiting=i))
        await eventually(lambda: operator.server.log_tail(1_000_000).count("authentication error") >= 3, timeout=20)
        assert publisher.stats.connected is False and publisher.stats.published == 0
    finally:
        publisher.stop()
