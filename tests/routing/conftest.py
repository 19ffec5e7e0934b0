"""Shared fixtures of the router tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client

from eagleeye_otel.nats_server import EmbeddedNatsServer


@pytest.fixture
async def sender(nats_server: EmbeddedNatsServer) -> AsyncIterator[Client]:
    """A plain nats-py connection to publish what a router should receive."""
    nc = await nats.connect(nats_server.url)
    yield nc
    await nc.close()
