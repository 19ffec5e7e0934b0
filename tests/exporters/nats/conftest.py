"""Shared fixtures of the NATS exporter tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from eagleeye_otel.exporters.nats import RoutingPublisher
from eagleeye_otel.nats_server import EmbeddedNatsServer
from tests.helpers.routing import make_publisher


@pytest.fixture
def publisher(nats_server: EmbeddedNatsServer) -> Iterator[RoutingPublisher]:
    """A started routing publisher on the test's nats-server, stopped afterwards."""
    pub = make_publisher(nats_server.url)
    pub.start()
    yield pub
    pub.stop()
