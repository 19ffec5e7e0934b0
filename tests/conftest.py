"""Shared fixtures: a real ``nats-server`` on a free loopback port."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator

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


async def _eventually(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


@pytest.fixture
def eventually() -> Callable[..., Awaitable[None]]:
    """``await eventually(predicate, timeout=10)``: poll until true, else fail the test."""
    return _eventually
