"""Instance health for routers, without a network: the finding view, the client's reads and pick(), the routing
message's node and devices, and where the vLLM plugin takes them from."""

from __future__ import annotations

import socket
from typing import Any

import msgspec
import pytest

from eagleeye_otel.diagnosis import Finding, FindingChange, Severity, encode_message
from eagleeye_otel.errors import ConfigError
from eagleeye_otel.instrumentation.vllm._routing_recorder import RoutingRecorder
from eagleeye_otel.routing import DEFAULT_HEALTH_TTL, InstanceHealth, RouterClient, RoutingMessage
from eagleeye_otel.settings import Settings
from tests.helpers.clock import ManualClock

NODE = "gpu-node-1.example.internal"
GPU_U, GPU_V = "GPU-0000000a-1111-2222-3333-44444444444a", "GPU-0000000b-1111-2222-3333-44444444444b"


def finding(
    device: str | None = GPU_U, severity: Severity = Severity.CRITICAL, fault: str = "xid_79", node: str = NODE
) -> Finding:
    return Finding(
        node=node,
        device=device,
        fault=fault,
        severity=severity,
        conclusion="The GPU fell off the bus.",
        action="Drain the node and reset the GPU.",
        evidence={"xid": 79},
        first_seen=1_700_000_000.0,
        last_seen=1_700_000_001.0,
    )


def published(f: Finding, change: FindingChange = FindingChange.OPENED) -> bytes:
    if change is FindingChange.RESOLVED:
        f = msgspec.structs.replace(f, resolved_at=f.last_seen + 5)
    return encode_message(f, change)


def routing(instance: str, *, waiting: int = 0, **overrides: Any) -> bytes:
    fields: dict[str, Any] = {
        "version": 1,
        "instance": instance,
        "model": "llama",
        "engine": 0,
        "timestamp": 1_700_000_000.5,
        "seq": 1,
        "started": 1_700_000_000.0,
        "num_requests_waiting": waiting,
        "num_requests_running": 0,
        "kv_cache_usage": 0.0,
        **overrides,
    }
    return msgspec.json.encode(RoutingMessage(**fields))


# -- InstanceHealth ------------------------------------------------------------------------------------------


def test_a_critical_finding_on_a_device_marks_it_and_the_node_wide_ones_mark_every_device() -> None:
    health = InstanceHealth(clock=ManualClock())
    assert health.healthy(NODE, (GPU_U,))
    assert health.handle(published(finding()))
    assert not health.healthy(NODE, (GPU_U,))
    assert health.healthy(NODE, (GPU_V,))
    assert health.healthy(NODE)  # no devices known: only node-wide findings count
    assert health.healthy("other-node", (GPU_U,))
    assert health.healthy(None, (GPU_U,))

    health.handle(published(finding(device=None, fault="node_heartbeat")))
    assert not health.healthy(NODE)
    assert not health.healthy(NODE, (GPU_V,))
    assert [f.fault for f in health.findings(NODE, (GPU_U,))] == ["node_heartbeat", "xid_79"]


def test_warnings_are_listed_but_leave_the_engine_healthy() -> None:
    health = InstanceHealth(clock=ManualClock())
    health.handle(published(finding(severity=Severity.WARNING, fault="gpu_sw_thermal_slowdown")))
    assert health.healthy(NODE, (GPU_U,))
    (listed,) = health.findings(NODE, (GPU_U,))
    assert listed.severity is Severity.WARNING


def test_resolution_forgets_the_finding_and_restatements_keep_it() -> None:
    clock = ManualClock()
    health = InstanceHealth(clock=clock)
    health.handle(published(finding()))
    clock.now += DEFAULT_HEALTH_TTL - 1
    health.handle(published(finding(), FindingChange.ACTIVE))
    clock.now += DEFAULT_HEALTH_TTL - 1
    assert not health.healthy(NODE, (GPU_U,))
    assert health.handle(published(finding(), FindingChange.RESOLVED))
    assert health.healthy(NODE, (GPU_U,))
    assert health.handle(published(finding(), FindingChange.RESOLVED))  # a resolution heard twice is harmless


def test_a_finding_nobody_restates_stops_counting_after_the_ttl() -> None:
    clock = ManualClock()
    health = InstanceHealth(ttl=4.0, clock=clock)
    health.handle(published(finding()))
    clock.now += 3.9
    assert not health.healthy(NODE, (GPU_U,))
    clock.now += 0.2
    assert health.healthy(NODE, (GPU_U,))
    assert health.findings(NODE, (GPU_U,)) == ()


@pytest.mark.parametrize(
    "payload",
    [b"", b"not json", b"[]", b'{"node": "n"}', b'{"node": 1, "device": null}', b"{" * 100_000],
)
def test_bad_payloads_are_dropped_without_raising(payload: bytes) -> None:
    health = InstanceHealth()
    assert health.handle(payload) is False
    assert health.healthy(NODE, (GPU_U,))


@pytest.mark.parametrize("ttl", [0, -1.0, float("nan"), float("inf"), "15"])
def test_a_bad_ttl_names_the_setting(ttl: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        RouterClient(follow_health=True, health_ttl=ttl)
    assert caught.value.setting == "health_ttl"


# -- the client ----------------------------------------------------------------------------------------------


def test_pick_skips_an_engine_whose_device_has_a_critical_finding_until_it_resolves() -> None:
    clock = ManualClock()
    client = RouterClient(clock=clock, follow_health=True)
    client.handle(routing("pod-u", waiting=0, node=NODE, devices=[GPU_U]))
    client.handle(routing("pod-v", waiting=5, node=NODE, devices=[GPU_V]))
    assert client.pick().message.instance == "pod-u"  # type: ignore[union-attr]

    client._health.handle(published(finding()))  # type: ignore[union-attr]  # what the subscription does
    sick = client.get("pod-u")
    assert sick is not None and not sick.healthy
    assert [f.fault for f in sick.findings] == ["xid_79"]
    assert client.get("pod-v").healthy  # type: ignore[union-attr]
    assert client.pick().message.instance == "pod-v"  # type: ignore[union-attr]
    assert {s.message.instance: s.healthy for s in client.instances()} == {"pod-u": False, "pod-v": True}

    client._health.handle(published(finding(), FindingChange.RESOLVED))  # type: ignore[union-attr]
    assert client.pick().message.instance == "pod-u"  # type: ignore[union-attr]


def test_pick_finds_nothing_when_every_engine_is_unhealthy() -> None:
    client = RouterClient(clock=ManualClock(), follow_health=True)
    client.handle(routing("pod-u", node=NODE, devices=[GPU_U]))
    client._health.handle(published(finding(device=None, fault="node_down")))  # type: ignore[union-attr]
    assert client.pick() is None
    assert len(client.instances()) == 1


def test_without_follow_health_findings_are_not_followed_and_states_are_healthy() -> None:
    client = RouterClient(clock=ManualClock())
    client.handle(routing("pod-u", node=NODE, devices=[GPU_U]))
    state = client.pick()
    assert state is not None and state.healthy and state.findings == ()


# -- the message, the settings and the plugin ----------------------------------------------------------------


def test_old_messages_without_node_or_devices_stay_valid_and_new_ones_round_trip() -> None:
    client = RouterClient(clock=ManualClock(), follow_health=True)
    assert client.handle(routing("old"))
    state = client.get("old")
    assert state is not None and state.message.node is None and state.message.devices == () and state.healthy
    decoded = msgspec.json.decode(routing("new", node=NODE, devices=[GPU_U, GPU_V]), type=RoutingMessage)
    assert (decoded.node, decoded.devices) == (NODE, (GPU_U, GPU_V))
    assert b"devices" not in routing("old")  # defaults are omitted: old routers see the same bytes


def test_too_many_devices_make_the_message_invalid() -> None:
    client = RouterClient(clock=ManualClock())
    payload = msgspec.json.encode({**msgspec.json.decode(routing("x")), "devices": [f"GPU-{i}" for i in range(65)]})
    assert client.handle(payload) is False
    assert client.stats.invalid == 1


@pytest.mark.parametrize(
    ("env", "node", "devices"),
    [
        ({}, socket.gethostname(), ()),
        ({"NODE_NAME": "k8s-node"}, "k8s-node", ()),
        ({"NODE_NAME": "k8s-node", "EAGLEEYE_NODE_NAME": "mine"}, "mine", ()),
        ({"NVIDIA_VISIBLE_DEVICES": f"{GPU_U},{GPU_V}"}, socket.gethostname(), (GPU_U, GPU_V)),
        ({"NVIDIA_VISIBLE_DEVICES": "all", "CUDA_VISIBLE_DEVICES": f" {GPU_V} "}, socket.gethostname(), (GPU_V,)),
        ({"NVIDIA_VISIBLE_DEVICES": "0,1", "CUDA_VISIBLE_DEVICES": "0,1"}, socket.gethostname(), ()),
        ({"ASCEND_VISIBLE_DEVICES": "0,1"}, socket.gethostname(), ()),
        (
            {"EAGLEEYE_INSTANCE_DEVICES": "npu-0-0, npu-1-0", "NVIDIA_VISIBLE_DEVICES": GPU_U},
            socket.gethostname(),
            ("npu-0-0", "npu-1-0"),
        ),
    ],
)
def test_node_and_devices_come_from_the_environment(env: dict[str, str], node: str, devices: tuple[str, ...]) -> None:
    routing_settings = Settings.from_env(env).routing
    assert (routing_settings.node, routing_settings.devices) == (node, devices)


@pytest.mark.parametrize("value", [",".join(f"GPU-{i}" for i in range(65)), "x" * 129])
def test_bad_instance_devices_name_the_setting(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"EAGLEEYE_INSTANCE_DEVICES": value})
    assert caught.value.setting == "EAGLEEYE_INSTANCE_DEVICES"


class _Publisher:
    def __init__(self) -> None:
        self.offered: list[RoutingMessage] = []

    def offer(self, message: RoutingMessage) -> None:
        self.offered.append(message)


def test_the_plugin_puts_node_and_devices_in_every_message() -> None:
    publisher = _Publisher()
    recorder = RoutingRecorder(
        publisher,  # type: ignore[arg-type]
        instance="pod-a",
        model="llama",
        engine=0,
        started=1.0,
        endpoint=None,
        node=NODE,
        devices=(GPU_U,),
    )
    recorder.announce()
    (message,) = publisher.offered
    assert (message.node, message.devices) == (NODE, (GPU_U,))
