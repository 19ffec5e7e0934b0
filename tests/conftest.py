"""Shared fixtures: a real ``nats-server`` on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from eagleeye_otel.nats_server import EmbeddedNatsServer


@pytest.fixture
def nats_server() -> Iterator[EmbeddedNatsServer]:
    """A fresh nats-server for one test; ``stop()``/``start()`` keep its port."""
    server = EmbeddedNatsServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
