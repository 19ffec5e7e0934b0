"""The routing publisher and the router client over TLS, against a real nats-server with certificates made by the
``openssl`` CLI: server TLS verified with ``EAGLEEYE_NATS_TLS_CA``, a CA that does not match, and mutual TLS."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Iterator
from typing import Any

import pytest

from eagleeye_otel.errors import RouterConnectError
from eagleeye_otel.exporters.nats import RoutingPublisher
from eagleeye_otel.nats_server import EmbeddedNatsServer
from eagleeye_otel.routing import RouterClient
from tests.helpers.pki import Pki, tls_args
from tests.helpers.routing import INSTANCE, Received, make_publisher, settings_for, step, subscribe

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PUBLISHER_LOGGER = "eagleeye_otel.exporters.nats._routing_publisher"


# -- servers and clients -----------------------------------------------------------------------------------------


def tls_url(server: EmbeddedNatsServer) -> str:
    return f"tls://{server.host}:{server.port}"


@pytest.fixture
def tls_server(pki: Pki) -> Iterator[EmbeddedNatsServer]:
    with EmbeddedNatsServer(extra_args=tls_args(pki.server_cert, pki.server_key)) as server:
        yield server


@pytest.fixture
def mtls_server(pki: Pki) -> Iterator[EmbeddedNatsServer]:
    """nats-server requiring TLS and a client certificate signed by the test CA."""
    args = ["--tlsverify", "--tlscert", str(pki.server_cert), "--tlskey", str(pki.server_key)]
    with EmbeddedNatsServer(extra_args=[*args, "--tlscacert", str(pki.ca)]) as server:
        yield server


def tls_client(context: ssl.SSLContext) -> dict[str, Any]:
    """nats-py options of a TLS subscriber that gives up after one try (a refusal must not stall the test)."""
    return {"tls": context, "connect_timeout": 5, "max_reconnect_attempts": 1}


def client_context(pki: Pki, *, with_client_cert: bool = False) -> ssl.SSLContext:
    return pki.client_context(with_client_cert=with_client_cert)


def publisher_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == PUBLISHER_LOGGER and r.levelno >= logging.WARNING]


async def assert_refused_and_harmless(
    publisher: RoutingPublisher, sink: Received, caplog: pytest.LogCaptureFixture, eventually
) -> list[str]:
    """Offers return, nothing is published or received, and the publisher logged a warning, a few at most.

    Returns the publisher's warnings.
    """
    for i in range(1000):  # back to back, as vLLM's loop offers; each returns at once
        publisher.offer(step(waiting=i))
    await eventually(lambda: publisher_warnings(caplog))
    await asyncio.sleep(1.5)  # three reconnect waits: still nothing goes through
    stats = publisher.stats
    assert stats.offered == 1000
    assert stats.connected is False
    assert (stats.published, stats.heartbeats, stats.errors) == (0, 0, 0)
    assert sink.messages == []
    warnings = publisher_warnings(caplog)
    assert 1 <= len(warnings) <= 3, warnings
    return warnings


# -- the tests ---------------------------------------------------------------------------------------------------


async def test_publisher_verifies_the_server_with_the_configured_ca(tls_server, pki, eventually) -> None:
    url = tls_url(tls_server)
    assert settings_for(url, EAGLEEYE_NATS_TLS_CA=pki.ca).nats.tls
    publisher = make_publisher(url, EAGLEEYE_NATS_TLS_CA=pki.ca)
    nc, sink = await subscribe(url, **tls_client(client_context(pki)))
    publisher.start()
    try:
        await eventually(lambda: publisher.stats.connected)
        publisher.offer(step(waiting=3, running=7, kv=0.5))

        await eventually(lambda: len(sink.steps()) == 1)
        message = sink.steps()[0]
        assert (message.instance, message.model, message.engine) == (INSTANCE, "tiny", 0)
        assert (message.num_requests_waiting, message.num_requests_running, message.kv_cache_usage) == (3, 7, 0.5)
        assert message.seq == 1
        assert publisher.stats.published == 1
    finally:
        publisher.stop()
        await nc.close()


async def test_a_server_signed_by_another_ca_is_refused_without_blocking(tls_server, pki, caplog, eventually) -> None:
    url = tls_url(tls_server)
    publisher = make_publisher(url, EAGLEEYE_NATS_TLS_CA=pki.other_ca)
    nc, sink = await subscribe(url, **tls_client(client_context(pki)))
    publisher.start()
    try:
        warnings = await assert_refused_and_harmless(publisher, sink, caplog, eventually)
        assert any("certificate verify failed" in w.lower() for w in warnings), warnings
    finally:
        publisher.stop()
        await nc.close()


async def test_a_tls_url_alone_verifies_against_the_system_cas(tls_server, pki, caplog, eventually) -> None:
    """``tls://`` without ``EAGLEEYE_NATS_TLS_CA`` still verifies, against the system CAs: a private CA fails."""
    url = tls_url(tls_server)
    publisher = make_publisher(url)
    nc, sink = await subscribe(url, **tls_client(client_context(pki)))
    publisher.start()
    try:
        warnings = await assert_refused_and_harmless(publisher, sink, caplog, eventually)
        assert any("certificate verify failed" in w.lower() for w in warnings), warnings
    finally:
        publisher.stop()
        await nc.close()


async def test_publisher_connects_once_the_server_presents_a_trusted_certificate(pki, caplog, eventually) -> None:
    wrong = EmbeddedNatsServer(extra_args=tls_args(pki.other_server_cert, pki.other_server_key))
    url = tls_url(wrong)
    publisher = make_publisher(url, EAGLEEYE_NATS_TLS_CA=pki.ca)
    try:
        with wrong:  # say, a certificate from the wrong issuer, fixed by the operator a moment later
            publisher.start()
            await eventually(lambda: any("certificate verify failed" in w.lower() for w in publisher_warnings(caplog)))
        with EmbeddedNatsServer(port=wrong.port, extra_args=tls_args(pki.server_cert, pki.server_key)):
            nc, sink = await subscribe(url, **tls_client(client_context(pki)))
            try:
                await eventually(lambda: publisher.stats.connected, timeout=15)
                publisher.offer(step(waiting=5))
                await eventually(lambda: len(sink.steps()) == 1)
            finally:
                await nc.close()
    finally:
        publisher.stop()


async def test_mutual_tls_with_a_client_certificate(mtls_server, pki, eventually) -> None:
    url = tls_url(mtls_server)
    publisher = make_publisher(
        url, EAGLEEYE_NATS_TLS_CA=pki.ca, EAGLEEYE_NATS_TLS_CERT=pki.client_cert, EAGLEEYE_NATS_TLS_KEY=pki.client_key
    )
    nc, sink = await subscribe(url, **tls_client(client_context(pki, with_client_cert=True)))
    publisher.start()
    try:
        await eventually(lambda: publisher.stats.connected)
        publisher.offer(step(waiting=4))
        await eventually(lambda: len(sink.steps()) == 1)
        assert sink.steps()[0].num_requests_waiting == 4
    finally:
        publisher.stop()
        await nc.close()


async def test_mutual_tls_refuses_a_publisher_without_a_client_certificate(
    mtls_server, pki, caplog, eventually
) -> None:
    url = tls_url(mtls_server)
    publisher = make_publisher(url, EAGLEEYE_NATS_TLS_CA=pki.ca)
    nc, sink = await subscribe(url, **tls_client(client_context(pki, with_client_cert=True)))
    publisher.start()
    try:
        warnings = await assert_refused_and_harmless(publisher, sink, caplog, eventually)
        # TLS 1.3: the server checks the client certificate after the client's side of the handshake is done, so
        # the publisher sees "certificate required" or only "connection lost"; the server's log says which.
        assert all(w.startswith("NATS: ") for w in warnings), warnings
        refusals = "client didn't provide a certificate"
        await eventually(lambda: mtls_server.log_tail(100_000).count(refusals) >= 3)  # and it keeps trying
    finally:
        publisher.stop()
        await nc.close()


async def test_router_client_receives_the_state_over_tls(tls_server, pki, eventually) -> None:
    url = tls_url(tls_server)
    publisher = make_publisher(url, EAGLEEYE_NATS_TLS_CA=pki.ca)
    publisher.start()
    router = RouterClient(nats_settings=settings_for(url, EAGLEEYE_NATS_TLS_CA=pki.ca).nats)
    try:
        await eventually(lambda: publisher.stats.connected)
        publisher.offer(step(waiting=2, running=5, kv=0.75))
        await eventually(lambda: publisher.stats.published == 1)

        await router.start()  # joins after the step: the snapshot reply fills the view
        await eventually(lambda: len(router.instances()) == 1)
        (state,) = router.instances()
        message = state.message
        assert (message.instance, message.model, message.engine) == (INSTANCE, "tiny", 0)
        assert (message.num_requests_waiting, message.num_requests_running, message.kv_cache_usage) == (2, 5, 0.75)
        picked = router.pick("tiny")
        assert picked is not None and picked.message.instance == INSTANCE

        publisher.offer(step(waiting=9))  # and later steps arrive on the routing subject
        await eventually(lambda: (s := router.get(INSTANCE)) is not None and s.message.num_requests_waiting == 9)
    finally:
        await router.close()
        publisher.stop()


async def test_router_client_with_the_wrong_ca_fails_at_start_and_says_why(tls_server, pki) -> None:
    url = tls_url(tls_server)
    router = RouterClient(nats_settings=settings_for(url, EAGLEEYE_NATS_TLS_CA=pki.other_ca).nats)
    with pytest.raises(RouterConnectError) as raised:
        # Bounded so that a hang fails this test instead of the suite; three attempts take a few seconds.
        await asyncio.wait_for(router.start(), 20)
    assert raised.value.servers == (url,)
    assert "certificate verify failed" in raised.value.reason.lower()
