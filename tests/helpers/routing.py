"""A routing publisher, a step to offer it and a plain nats-py subscriber standing in for a router."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from eagleeye_otel.exporters.nats import RoutingPublisher
from eagleeye_otel.nats_flush import flush
from eagleeye_otel.routing import RoutingMessage
from eagleeye_otel.settings import Settings

SUBJECT = "eagle_eye.routing_metrics"
INSTANCE = "pod-a"
_decode = msgspec.json.Decoder(RoutingMessage).decode


def message_fields(**overrides: Any) -> dict[str, Any]:
    """The fields of a valid routing message v1 as plain data, to encode as they are or bent out of shape."""
    fields: dict[str, Any] = {
        "version": 1,
        "instance": INSTANCE,
        "model": "llama",
        "engine": 0,
        "timestamp": 1_700_000_000.5,
        "seq": 1,
        "num_requests_waiting": 0,
        "num_requests_running": 0,
        "kv_cache_usage": 0.0,
        "started": 1_700_000_000.0,
        "endpoint": "http://10.0.0.1:8000",
    }
    return {**fields, **overrides}


def step(engine: int = 0, *, waiting: int = 0, running: int = 1, kv: float = 0.25) -> RoutingMessage:
    return RoutingMessage(
        version=1,
        instance=INSTANCE,
        model="tiny",
        engine=engine,
        timestamp=time.time(),
        seq=0,
        num_requests_waiting=waiting,
        num_requests_running=running,
        kv_cache_usage=kv,
        started=1_700_000_000.0,
    )


class Received:
    """Routing messages seen by the subscriber, decoded."""

    def __init__(self) -> None:
        self.messages: list[RoutingMessage] = []

    async def on_message(self, msg: Msg) -> None:
        self.messages.append(_decode(msg.data))

    def steps(self) -> list[RoutingMessage]:
        return [m for m in self.messages if not m.heartbeat]

    def heartbeats(self) -> list[RoutingMessage]:
        return [m for m in self.messages if m.heartbeat]


async def subscribe(url: str, **options: Any) -> tuple[Client, Received]:
    """A router stand-in subscribed (and flushed, so the server knows) before the test publishes."""
    sink = Received()
    nc = await nats.connect(url, **options)
    await nc.subscribe(SUBJECT, cb=sink.on_message)
    await flush(nc)
    return nc, sink


def settings_for(url: str, **env: str | Path) -> Settings:
    return Settings.from_env(
        {"EAGLEEYE_NATS_URL": url, "EAGLEEYE_HEARTBEAT_INTERVAL": "0.2", **{k: str(v) for k, v in env.items()}}
    )


def make_publisher(url: str, **env: str | Path) -> RoutingPublisher:
    settings = settings_for(url, **env)
    return RoutingPublisher(nats_settings=settings.nats, routing=settings.routing, client_name="test-publisher")
