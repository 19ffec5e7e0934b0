"""Hostile input on the router's two decoders: routing messages (RouterClient.handle) and diagnosis findings
(InstanceHealth.handle). Whatever arrives is counted in RouterStats, never raised, and never retained."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eagleeye_otel.diagnosis import Finding, FindingChange, Severity, encode_message
from eagleeye_otel.errors import ConfigError
from eagleeye_otel.routing import MAX_MESSAGE_BYTES, InstanceHealth, RouterClient, RoutingMessage
from tests.helpers.clock import ManualClock
from tests.helpers.memory import retained_bytes
from tests.helpers.routing import message_fields as routing_message_fields

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NODE = "gpu-node-1"
GPU = "GPU-0000000a-1111-2222-3333-44444444444a"


def message_fields(**overrides: Any) -> dict[str, Any]:
    """A valid message from an engine on :data:`NODE` using :data:`GPU`."""
    return routing_message_fields(**{"node": NODE, "devices": [GPU], **overrides})


def finding_fields(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "node": NODE,
        "device": GPU,
        "fault": "xid_79",
        "severity": "critical",
        "conclusion": "fell off the bus",
        "action": "drain the node",
        "evidence": {"xid": 79},
        "first_seen": 1.7e9,
        "last_seen": 1.7e9,
        "change": "opened",
    }
    return {**fields, **overrides}


def finding(node: str = NODE, **overrides: Any) -> bytes:
    return encode_message(
        Finding(
            node=node,
            device=overrides.pop("device", GPU),
            fault=overrides.pop("fault", "xid_79"),
            severity=overrides.pop("severity", Severity.CRITICAL),
            conclusion="fell off the bus",
            action="drain the node",
            evidence=overrides.pop("evidence", {"xid": 79}),
            first_seen=1.7e9,
            last_seen=1.7e9,
        ),
        FindingChange.OPENED,
    )


# -- strategies ----------------------------------------------------------------------------------------------

_json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    _json_leaves,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=25,
)
hostile_numbers = st.sampled_from(
    [b"-1", b"0", b"1e999", b"-1e999", b"NaN", b"Infinity", b"1e-400", b"99999999999999999999999999", b"1.5", b"true"]
)


def _field_overrides(fields: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Some fields replaced by anything JSON holds, some removed (``...`` marks a removal)."""
    return st.dictionaries(st.sampled_from(sorted(fields)), json_values | st.just(...), max_size=4)


def _apply(fields: dict[str, Any], overrides: dict[str, Any]) -> bytes:
    merged = {**fields, **overrides}
    return msgspec.json.encode({k: v for k, v in merged.items() if v is not ...})


def _splice(document: bytes, field: bytes, token: bytes) -> bytes:
    """``document`` with the value of ``field`` replaced by a raw JSON token msgspec would never encode."""
    start = document.index(b'"' + field + b'":') + len(field) + 3
    end = start
    while document[end : end + 1] not in (b",", b"}"):
        end += 1
    return document[:start] + token + document[end:]


# -- routing messages ----------------------------------------------------------------------------------------


def _check_accounting(client: RouterClient, before: int) -> None:
    stats = client.stats
    assert stats.received == before + 1
    rejected = stats.invalid + stats.oversized + stats.out_of_order + stats.duplicates + stats.overflow
    assert stats.accepted + rejected == stats.received


def _check_view(client: RouterClient) -> None:
    for state in client.instances():
        message = state.message
        assert message.version == 1
        assert 1 <= len(message.instance) <= 256 and 1 <= len(message.model) <= 256
        assert message.engine >= 0 and message.seq >= 0
        assert message.num_requests_waiting >= 0 and message.num_requests_running >= 0
        assert 0.0 <= message.kv_cache_usage <= 1.0
        assert math.isfinite(message.timestamp) and message.timestamp > 0
        assert len(message.devices) <= 64
        counters = [message.seq, message.engine, message.generation_tokens_total, message.prompt_tokens_total]
        assert all(value < 2**63 for value in counters)


@FUZZ
@given(payload=st.binary(max_size=4096))
def test_any_bytes_are_counted_never_raised(payload: bytes) -> None:
    client = RouterClient(clock=ManualClock())
    assert client.handle(payload) in (True, False)
    _check_accounting(client, 0)
    _check_view(client)


@FUZZ
@given(document=json_values)
def test_any_json_document_is_counted_never_raised(document: Any) -> None:
    client = RouterClient(clock=ManualClock())
    assert not client.handle(msgspec.json.encode(document))
    assert client.stats.invalid == 1


@FUZZ
@given(overrides=_field_overrides(message_fields()))
def test_a_message_with_any_field_replaced_or_removed_is_valid_or_counted(overrides: dict[str, Any]) -> None:
    client = RouterClient(clock=ManualClock())
    accepted = client.handle(_apply(message_fields(), overrides))
    _check_accounting(client, 0)
    assert accepted == (client.stats.accepted == 1)
    _check_view(client)


@FUZZ
@given(field=st.sampled_from(["timestamp", "seq", "kv_cache_usage", "engine", "started"]), token=hostile_numbers)
def test_numbers_json_cannot_hold_or_out_of_range_are_rejected(field: str, token: bytes) -> None:
    client = RouterClient(clock=ManualClock())
    payload = _splice(msgspec.json.encode(message_fields(started=1.7e9)), field.encode(), token)
    client.handle(payload)
    _check_accounting(client, 0)
    _check_view(client)


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=8))
def test_corrupted_messages_are_counted_never_raised(flips: list[tuple[int, int]]) -> None:
    payload = bytearray(msgspec.json.encode(message_fields()))
    for position, value in flips:
        payload[position % len(payload)] = value
    client = RouterClient(clock=ManualClock())
    client.handle(bytes(payload))
    _check_accounting(client, 0)
    _check_view(client)


HOSTILE_ROUTING = {
    "nested-100k-deep": b"[" * 100_000 + b"]" * 100_000,
    "nested-within-the-size-limit": b'{"x":' + b"[" * 8000 + b"]" * 8000 + b"}",
    "object-nested-within-the-size-limit": b'{"a":' * 3000 + b"1" + b"}" * 3000,
    "100-MB": b'{"instance":"' + b"a" * 100_000_000 + b'"}',
    "just-over-the-limit": b" " * (MAX_MESSAGE_BYTES + 1),
    "invalid-utf8": _splice(msgspec.json.encode(message_fields()), b"instance", b'"\xff\xfe\xc0\x80"'),
    "lone-surrogate-escape": _splice(msgspec.json.encode(message_fields()), b"instance", b'"\\ud800"'),
    "overlong-instance": msgspec.json.encode(message_fields(instance="i" * 257)),
    "too-many-devices": msgspec.json.encode(message_fields(devices=[GPU] * 65)),
    "huge-device-id": msgspec.json.encode(message_fields(devices=["d" * 129])),
    "nan-literal": _splice(msgspec.json.encode(message_fields()), b"kv_cache_usage", b"NaN"),
    "infinite-timestamp": _splice(msgspec.json.encode(message_fields()), b"timestamp", b"1e999"),
    "nul-bytes": b"\x00" * 1000,
    "16000-digit-counter": _splice(
        msgspec.json.encode(message_fields(generation_tokens_total=1)), b"generation_tokens_total", b"9" * 16_000
    ),
    "seq-past-int64": msgspec.json.encode(message_fields(seq=2**63)),
    "bom": b"\xef\xbb\xbf" + msgspec.json.encode(message_fields()),
    "trailing-garbage": msgspec.json.encode(message_fields()) + b"{}",
}


@pytest.mark.parametrize("payload", HOSTILE_ROUTING.values(), ids=HOSTILE_ROUTING.keys())
def test_hostile_routing_payloads_are_counted(payload: bytes) -> None:
    client = RouterClient(clock=ManualClock())
    assert not client.handle(payload)
    stats = client.stats
    assert stats.invalid + stats.oversized == 1
    assert stats.oversized == (len(payload) > MAX_MESSAGE_BYTES)
    assert client.instances() == []
    assert client.handle(msgspec.json.encode(message_fields()))  # and the next good message gets in


def _hostile_stream(count: int) -> list[bytes]:
    """``count`` distinct bad payloads: each bad in its own way, none a valid message."""
    good = msgspec.json.encode(message_fields())
    kinds = [
        lambda i: b"[" * (i % 5000 + 1),
        lambda i: good.replace(b'"pod-a"', b'"\xff' + str(i).encode() + b'"'),
        lambda i: msgspec.json.encode(message_fields(instance=f"pod-{i}", kv_cache_usage=1.0 + i)),
        lambda i: msgspec.json.encode(message_fields(instance=f"pod-{i}", version=2)),
        lambda i: b'{"instance":"pod-%d",' % i + b" " * MAX_MESSAGE_BYTES,
        lambda i: msgspec.json.encode({f"key-{i}": [i] * 50}),
    ]
    return [kinds[i % len(kinds)](i) for i in range(count)]


def test_a_hostile_flood_retains_no_memory() -> None:
    client = RouterClient(clock=ManualClock())
    payloads = _hostile_stream(30_000)
    assert retained_bytes(client.handle, payloads, warmup=100) < 64 * 1024
    stats = client.stats
    assert stats.accepted == 0
    assert stats.invalid + stats.oversized == stats.received == 30_100
    assert client.instances() == []


# -- diagnosis findings (follow_health) ----------------------------------------------------------------------


@FUZZ
@given(payload=st.binary(max_size=4096))
def test_any_bytes_as_a_finding_are_counted_never_raised(payload: bytes) -> None:
    client = RouterClient(clock=ManualClock(), follow_health=True)
    health = client._health
    assert health is not None
    accepted = health.handle(payload)  # what the diagnosis subscription does with each payload
    assert accepted != (client.stats.findings_invalid == 1)


@FUZZ
@given(overrides=_field_overrides(finding_fields()))
def test_a_finding_with_any_field_replaced_or_removed_is_taken_or_counted(overrides: dict[str, Any]) -> None:
    clock = ManualClock()
    health = InstanceHealth(clock=clock)
    taken = health.handle(_apply(finding_fields(), overrides))
    assert taken != (health.invalid == 1)
    node = overrides.get("node", NODE)
    if taken and isinstance(node, str):
        severities = {f.severity for f in health.findings(node, (GPU,))}
        assert health.healthy(node, (GPU,)) == (Severity.CRITICAL not in severities)


HOSTILE_FINDINGS = {
    "nested-100k-deep": b"[" * 100_000 + b"]" * 100_000,
    "evidence-nested-within-the-size-limit": finding().replace(b'{"xid":79}', b"[" * 20_000 + b"]" * 20_000),
    "over-64-KiB": finding(evidence={"blob": "x" * 70_000}),
    "100-MB": b" " * 100_000_000,
    "invalid-utf8": finding().replace(NODE.encode(), b"\xff\xfe"),
    "infinite-number-in-evidence": finding().replace(b'{"xid":79}', b'{"xid":1e999}'),
    "unknown-severity": finding().replace(b'"critical"', b'"fatal"'),
    "null-node": finding().replace(b'"gpu-node-1"', b"null"),
}


@pytest.mark.parametrize("payload", HOSTILE_FINDINGS.values(), ids=HOSTILE_FINDINGS.keys())
def test_hostile_findings_are_counted(payload: bytes) -> None:
    client = RouterClient(clock=ManualClock(), follow_health=True)
    health = client._health
    assert health is not None
    assert not health.handle(payload)
    assert client.stats.findings_invalid == 1
    assert health.healthy(NODE, (GPU,))
    assert health.handle(finding())
    assert not health.healthy(NODE, (GPU,))


def test_a_flood_of_bad_findings_retains_no_memory() -> None:
    health = InstanceHealth(clock=ManualClock())
    good = finding()
    payloads = [
        good.replace(b'"critical"', b'"level-%d"' % i) if i % 2 else b"[" * (i % 3000) + b"%d" % i
        for i in range(30_000)
    ]
    assert retained_bytes(health.handle, payloads, warmup=100) < 64 * 1024
    assert health.invalid == 30_100


def test_a_flood_of_findings_from_unknown_nodes_is_capped_and_swept_out_after_the_ttl() -> None:
    """Nobody reads the health of made-up nodes, so only a sweep can free their room for real findings."""
    clock = ManualClock()
    health = InstanceHealth(ttl=10.0, clock=clock, max_findings=100)
    for i in range(150):
        health.handle(finding(node=f"made-up-{i}"))
    assert health.overflow == 50
    assert not health.handle(finding())  # full: the real finding waits for the flood to age out
    clock.now += 10.5
    assert health.handle(finding())
    assert not health.healthy(NODE, (GPU,))
    assert health.overflow == 51


def test_large_findings_are_bounded_by_bytes_as_well() -> None:
    clock = ManualClock()
    health = InstanceHealth(clock=clock, max_held_bytes=100_000)
    big = [finding(node=f"n{i}", evidence={"blob": "x" * 30_000}) for i in range(5)]
    assert [health.handle(payload) for payload in big] == [True, True, True, False, False]
    assert health.overflow == 2
    assert health.handle(big[0])  # a restatement replaces its own bytes
    assert health.handle(finding())  # a small one still fits
    resolved = msgspec.structs.replace(msgspec.json.decode(big[1], type=Finding), resolved_at=1.8e9)
    assert health.handle(encode_message(resolved, FindingChange.RESOLVED))
    assert health.handle(big[3])  # a resolution frees its bytes


@pytest.mark.parametrize(("argument", "value"), [("max_findings", 0), ("max_held_bytes", -1), ("max_findings", 1.5)])
def test_bad_bounds_name_the_argument(argument: str, value: Any) -> None:
    with pytest.raises(ConfigError) as raised:
        InstanceHealth(**{argument: value})
    assert raised.value.setting == argument


def test_messages_the_router_rejects_are_not_in_its_schema() -> None:
    """The decoder is the schema: a document the JSON Schema forbids never gets into the view."""
    schema = msgspec.json.schema(RoutingMessage)["$defs"]["RoutingMessage"]
    client = RouterClient(clock=ManualClock())
    for field in schema["required"]:
        payload = msgspec.json.encode({k: v for k, v in message_fields().items() if k != field})
        assert not client.handle(payload)
    assert client.stats.invalid == len(schema["required"])
