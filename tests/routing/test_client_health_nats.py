"""RouterClient(follow_health=True) on a real nats-server: findings published as the diagnosis service publishes
them (``eagle_eye.diagnosis.<node>``, JSON) take an engine out of pick() and resolutions bring it back."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import msgspec
import nats
import pytest

from eagleeye_otel.diagnosis import DiagnosisSettings, Finding, FindingChange, Severity, encode_message
from eagleeye_otel.nats_server import EmbeddedNatsServer
from eagleeye_otel.routing import RouterClient, RoutingMessage
from eagleeye_otel.semconv import DEFAULT_ROUTING_SUBJECT
from eagleeye_otel.settings import NatsSettings

pytestmark = pytest.mark.integration

NODE = "gpu-node-1.example.internal"
GPU_U, GPU_V = "GPU-0000000a-1111-2222-3333-44444444444a", "GPU-0000000b-1111-2222-3333-44444444444b"


def routing(instance: str, devices: list[str], waiting: int, seq: int) -> bytes:
    return msgspec.json.encode(
        RoutingMessage(
            version=1,
            instance=instance,
            model="llama",
            engine=0,
            timestamp=time.time(),
            seq=seq,
            started=1_700_000_000.0,
            num_requests_waiting=waiting,
            num_requests_running=0,
            kv_cache_usage=0.1,
            node=NODE,
            devices=tuple(devices),
        )
    )


async def test_an_engine_on_a_dying_gpu_is_skipped_until_the_finding_resolves(
    nats_server: EmbeddedNatsServer, eventually: Callable[..., Awaitable[None]]
) -> None:
    sender = await nats.connect(nats_server.url)
    client = RouterClient(nats_settings=NatsSettings(servers=(nats_server.url,)), follow_health=True)
    await client.start()
    try:
        seq = 0

        async def heartbeat() -> None:  # pod-u is the least loaded, so pick() prefers it while it is healthy
            nonlocal seq
            seq += 1
            await sender.publish(DEFAULT_ROUTING_SUBJECT, routing("pod-u", [GPU_U], 0, seq))
            await sender.publish(DEFAULT_ROUTING_SUBJECT, routing("pod-v", [GPU_V], 3, seq))

        await heartbeat()
        await eventually(lambda: len(client.instances()) == 2)
        assert client.pick().message.instance == "pod-u"  # type: ignore[union-attr]

        lost = Finding(
            node=NODE,
            device=GPU_U,
            fault="xid_79",
            severity=Severity.CRITICAL,
            conclusion="GPU 0 fell off the bus.",
            action="Drain the node, then reset or reseat the GPU.",
            evidence={"xid": 79},
            first_seen=time.time(),
            last_seen=time.time(),
        )
        subject = DiagnosisSettings().subject(NODE)
        assert subject == "eagle_eye.diagnosis.gpu-node-1_example_internal"
        await sender.publish(subject, encode_message(lost, FindingChange.OPENED))
        await eventually(lambda: not client.get("pod-u").healthy, timeout=5)  # type: ignore[union-attr]
        await heartbeat()
        for _ in range(20):
            assert client.pick().message.instance == "pod-v"  # type: ignore[union-attr]
        assert [f.fault for f in client.get("pod-u").findings] == ["xid_79"]  # type: ignore[union-attr]
        assert client.get("pod-v").healthy  # type: ignore[union-attr]

        resolved = msgspec.structs.replace(lost, resolved_at=time.time())
        await sender.publish(subject, encode_message(resolved, FindingChange.RESOLVED))
        await eventually(lambda: client.get("pod-u").healthy, timeout=5)  # type: ignore[union-attr]
        assert client.pick().message.instance == "pod-u"  # type: ignore[union-attr]
    finally:
        await client.close()
        await sender.close()
