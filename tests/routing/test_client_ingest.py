"""RouterClient.handle() and the reads, fed real encoded routing messages; no network."""

from __future__ import annotations

import logging
import math
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client

from eagleeye_otel.errors import ConfigError
from eagleeye_otel.routing import MAX_MESSAGE_BYTES, RouterClient, RoutingMessage
from eagleeye_otel.routing._view import RESTART_MEMORY_S
from eagleeye_otel.settings import NatsSettings
from tests.helpers.clock import ManualClock
from tests.helpers.routing import message_fields


def encoded(**overrides: Any) -> bytes:
    return msgspec.json.encode(RoutingMessage(**message_fields(**overrides)))


def raw(**overrides: Any) -> bytes:
    """Encoded without the type, so the payload can break the schema."""
    return msgspec.json.encode(message_fields(**overrides))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def client(clock: ManualClock) -> RouterClient:
    return RouterClient(clock=clock)


def test_valid_message_is_accepted(client: RouterClient, clock: ManualClock) -> None:
    assert client.handle(encoded(seq=7, num_requests_waiting=2, kv_cache_usage=0.25))

    state = client.get("pod-a")
    assert state is not None
    assert state.message.seq == 7
    assert state.message.num_requests_waiting == 2
    assert state.message.kv_cache_usage == 0.25
    assert state.message.endpoint == "http://10.0.0.1:8000"
    assert state.received_at == clock.now
    assert client.instances() == [state]
    assert client.stats.accepted == 1
    assert client.stats.received == 1


def test_unknown_fields_are_ignored(client: RouterClient) -> None:
    payload = raw(future_field={"nested": [1, 2, 3]})
    assert client.handle(payload)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"{not json",
        b"\xff\xfe\x00",
        b"[]",
        b"null",
        raw(seq="5"),
        raw(num_requests_running=1.5),
        raw(instance=""),
        raw(engine=-1),
        raw(version=2),
        raw(kv_cache_usage=1.5),
        raw(num_requests_waiting=-1),
        raw(timestamp=0),
        msgspec.json.encode({k: v for k, v in message_fields().items() if k != "seq"}),
        msgspec.json.encode({k: v for k, v in message_fields().items() if k != "started"}),
        raw(started=0),
        b'{"x":' + b"[" * 5000 + b"]" * 5000 + b"}",
    ],
    ids=[
        "empty",
        "malformed",
        "not-utf8",
        "array",
        "null",
        "seq-string",
        "running-float",
        "empty-instance",
        "negative-engine",
        "version-2",
        "kv-1.5",
        "negative-waiting",
        "zero-timestamp",
        "missing-seq",
        "missing-started",
        "zero-started",
        "deeply-nested",
    ],
)
def test_invalid_payload_is_counted_not_raised(client: RouterClient, payload: bytes) -> None:
    assert not client.handle(payload)
    assert client.stats.invalid == 1
    assert client.stats.accepted == 0
    assert client.instances() == []


def test_oversized_payload_is_dropped_undecoded(client: RouterClient) -> None:
    payload = raw(padding="x" * MAX_MESSAGE_BYTES)
    assert len(payload) > MAX_MESSAGE_BYTES

    assert not client.handle(payload)
    assert client.stats.oversized == 1
    assert client.stats.invalid == 0
    assert client.instances() == []


def test_bad_input_is_logged_rate_limited(client: RouterClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="eagleeye_otel.routing._client"):
        for _ in range(100):
            client.handle(b"garbage")
    assert client.stats.invalid == 100
    assert len(caplog.records) == 1
    assert "invalid routing message" in caplog.records[0].getMessage()


def test_older_seq_is_out_of_order(client: RouterClient) -> None:
    assert client.handle(encoded(seq=5, num_requests_waiting=5))
    assert not client.handle(encoded(seq=4, num_requests_waiting=4))

    state = client.get("pod-a")
    assert state is not None
    assert (state.message.seq, state.message.num_requests_waiting) == (5, 5)
    assert client.stats.out_of_order == 1
    assert client.stats.duplicates == 0


def test_same_seq_is_a_duplicate(client: RouterClient) -> None:
    assert client.handle(encoded(seq=5))
    assert not client.handle(encoded(seq=5))

    assert client.stats.duplicates == 1
    assert client.stats.out_of_order == 0
    assert client.stats.accepted == 1


def test_new_started_means_restart_and_replaces(client: RouterClient) -> None:
    assert client.handle(encoded(started=1000.0, seq=500, num_requests_running=9))
    assert client.handle(encoded(started=2000.0, seq=1, num_requests_running=0))

    state = client.get("pod-a")
    assert state is not None
    assert (state.message.started, state.message.seq, state.message.num_requests_running) == (2000.0, 1, 0)


def test_late_message_of_an_older_process_is_superseded(client: RouterClient, clock: ManualClock) -> None:
    """Order is (started, seq): a higher seq of the old process does not overwrite the restarted engine."""
    assert client.handle(encoded(started=2000.0, seq=1, num_requests_running=0))
    assert not client.handle(encoded(started=1000.0, seq=501, num_requests_running=9))
    clock.now += 3.5  # stale, not yet expired: still the newer process's state that an old message meets
    assert not client.handle(encoded(started=1000.0, seq=502, num_requests_running=9))

    assert client.stats.superseded == 2
    assert (client.stats.out_of_order, client.stats.duplicates, client.stats.received) == (0, 0, 3)
    assert client.handle(encoded(started=2000.0, seq=2))
    state = client.get("pod-a")
    assert state is not None
    assert (state.message.started, state.message.seq) == (2000.0, 2)


def test_an_expired_engine_still_refuses_its_older_process(client: RouterClient, clock: ManualClock) -> None:
    assert client.handle(encoded(started=2000.0, seq=1))
    clock.now += 3.5
    assert client.get("pod-a") is None  # expired
    assert client.stats.expired == 1

    assert not client.handle(encoded(started=1000.0, seq=900))
    assert client.get("pod-a") is None
    assert client.stats.superseded == 1

    clock.now += RESTART_MEMORY_S + 1  # remembered for a bounded time only: a clock stepped back is not locked out
    assert client.handle(encoded(started=1000.0, seq=901))
    assert client.get("pod-a") is not None


def test_expired_engine_of_the_same_process_comes_back_with_any_seq(client: RouterClient, clock: ManualClock) -> None:
    """A snapshot reply after an outage resends the last message: the router takes it as the current state."""
    assert client.handle(encoded(seq=500))
    clock.now += 3.5
    assert client.instances() == []
    assert client.handle(encoded(seq=500))

    state = client.get("pod-a")
    assert state is not None
    assert state.message.seq == 500


def test_lower_seq_is_accepted_once_the_held_message_is_stale(client: RouterClient, clock: ManualClock) -> None:
    assert client.handle(encoded(seq=500))
    clock.now += 3.5
    assert client.handle(encoded(seq=1))

    state = client.get("pod-a")
    assert state is not None
    assert state.message.seq == 1


def test_memory_of_expired_engines_is_bounded(clock: ManualClock) -> None:
    client = RouterClient(clock=clock, max_instances=10, stale_after=0.5)
    for i in range(50):
        assert client.handle(encoded(instance=f"pod-{i}", started=2000.0))
        clock.now += 1.0
        client.instances()  # expires the previous engine
    assert client.stats.expired == 50

    # Only the 10 most recently expired engines are remembered, although pod-35 expired within RESTART_MEMORY_S.
    assert not client.handle(encoded(instance="pod-45", started=1000.0))
    assert client.handle(encoded(instance="pod-35", started=1000.0))


def test_handle_many_applies_a_batch_in_order(client: RouterClient) -> None:
    batch = [encoded(seq=1), b"{", encoded(seq=3, num_requests_waiting=3), encoded(seq=2), encoded(instance="pod-b")]

    assert client.handle_many(batch) == 3
    state = client.get("pod-a")
    assert state is not None
    assert (state.message.seq, state.message.num_requests_waiting) == (3, 3)
    assert (client.stats.invalid, client.stats.out_of_order, client.stats.received) == (1, 1, 5)


def test_engines_are_ordered_independently(client: RouterClient) -> None:
    assert client.handle(encoded(engine=0, seq=10))
    assert client.handle(encoded(engine=1, seq=1))
    assert client.handle(encoded(instance="pod-b", seq=1))

    assert {(s.message.instance, s.message.engine) for s in client.instances()} == {
        ("pod-a", 0),
        ("pod-a", 1),
        ("pod-b", 0),
    }
    assert client.get("pod-a", 1) is not None
    assert client.get("pod-a", 2) is None


def test_stale_engines_expire(client: RouterClient, clock: ManualClock) -> None:
    client.handle(encoded(instance="pod-a"))
    clock.now += 2.0
    client.handle(encoded(instance="pod-b"))

    clock.now += 1.0  # pod-a is exactly stale_after old: still fresh
    assert {s.message.instance for s in client.instances()} == {"pod-a", "pod-b"}

    clock.now += 0.5
    assert [s.message.instance for s in client.instances()] == ["pod-b"]
    assert client.get("pod-a") is None
    assert client.stats.expired == 1

    clock.now += 10.0
    assert client.get("pod-b") is None
    assert client.pick() is None
    assert client.stats.expired == 2


def test_age_uses_the_client_clock(client: RouterClient, clock: ManualClock) -> None:
    client.handle(encoded())
    clock.now += 1.25
    state = client.get("pod-a")
    assert state is not None
    assert state.age(clock.now) == 1.25


def test_instances_filters_by_model(client: RouterClient) -> None:
    client.handle(encoded(instance="pod-a", model="llama"))
    client.handle(encoded(instance="pod-b", model="qwen"))

    assert [s.message.instance for s in client.instances("qwen")] == ["pod-b"]
    assert client.instances("mistral") == []


def test_pick_prefers_fewest_waiting_then_running_then_kv(client: RouterClient) -> None:
    client.handle(encoded(instance="busy", num_requests_waiting=3, num_requests_running=0, kv_cache_usage=0.0))
    client.handle(encoded(instance="full", num_requests_waiting=0, num_requests_running=8, kv_cache_usage=0.1))
    client.handle(encoded(instance="warm", num_requests_waiting=0, num_requests_running=2, kv_cache_usage=0.9))
    client.handle(encoded(instance="cool", num_requests_waiting=0, num_requests_running=2, kv_cache_usage=0.2))

    picked = client.pick()
    assert picked is not None
    assert picked.message.instance == "cool"


def test_pick_filters_by_model_and_skips_stale(client: RouterClient, clock: ManualClock) -> None:
    client.handle(encoded(instance="idle-old", model="llama"))
    clock.now += 2.5
    client.handle(encoded(instance="loaded", model="llama", num_requests_waiting=4))
    client.handle(encoded(instance="other", model="qwen"))
    clock.now += 1.0

    picked = client.pick("llama")
    assert picked is not None
    assert picked.message.instance == "loaded"
    assert client.pick("mistral") is None


def test_pick_spreads_exact_ties(client: RouterClient) -> None:
    client.handle(encoded(instance="pod-a"))
    client.handle(encoded(instance="pod-b"))
    client.handle(encoded(instance="pod-c", num_requests_running=1))

    picked = set()
    for _ in range(200):
        state = client.pick()
        assert state is not None
        picked.add(state.message.instance)
    assert picked == {"pod-a", "pod-b"}


def test_view_is_bounded_against_a_flood_of_instances(clock: ManualClock) -> None:
    client = RouterClient(clock=clock, max_instances=100)
    for i in range(5000):
        client.handle(encoded(instance=f"fake-{i}"))

    assert len(client.instances()) == 100
    assert client.stats.overflow == 4900
    assert client.stats.accepted == 100

    clock.now += 3.5  # the flood went quiet: new instances find room again
    assert client.handle(encoded(instance="real"))
    assert [s.message.instance for s in client.instances()] == ["real"]
    assert client.stats.expired == 100


def test_known_engines_keep_updating_when_full(clock: ManualClock) -> None:
    client = RouterClient(clock=clock, max_instances=1)
    assert client.handle(encoded(instance="pod-a", seq=1))
    assert not client.handle(encoded(instance="pod-b", seq=1))
    assert client.handle(encoded(instance="pod-a", seq=2))


def test_received_is_the_sum_of_outcomes(client: RouterClient) -> None:
    client.handle(encoded(seq=2))
    client.handle(encoded(seq=2))
    client.handle(encoded(seq=1))
    client.handle(encoded(seq=3, started=1.0))
    client.handle(b"{")
    client.handle(b" " * (MAX_MESSAGE_BYTES + 1))

    stats = client.stats
    counts = (stats.accepted, stats.duplicates, stats.out_of_order, stats.superseded, stats.invalid, stats.oversized)
    assert counts == (1, 1, 1, 1, 1, 1)
    assert stats.received == 6


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"stale_after": 0}, "stale_after"),
        ({"stale_after": -1.0}, "stale_after"),
        ({"stale_after": math.nan}, "stale_after"),
        ({"stale_after": math.inf}, "stale_after"),
        ({"max_instances": 0}, "max_instances"),
        ({"coalesce_reads": -0.001}, "coalesce_reads"),
        ({"coalesce_reads": 2.0}, "coalesce_reads"),
        ({"subject": ""}, "subject"),
        ({"subject": "a b"}, "subject"),
        ({"subject": "x", "snapshot_subject": "x"}, "snapshot_subject"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict[str, Any], argument: str) -> None:
    with pytest.raises(ConfigError) as raised:
        RouterClient(**kwargs)
    assert raised.value.setting == argument
    assert isinstance(raised.value, ValueError)


def test_settings_and_connection_are_exclusive() -> None:
    with pytest.raises(ConfigError) as raised:
        RouterClient(nats_settings=NatsSettings(), nc=Client())
    assert raised.value.setting == "nc"


def test_step_age_tells_a_hung_engine_from_an_idle_one(client: RouterClient, clock: ManualClock) -> None:
    step = {"timestamp": 1_700_000_000.0, "last_step_at": 1_700_000_000.0, "num_requests_running": 4}
    assert client.handle(encoded(seq=1, **step))
    clock.now += 0.5
    state = client.get("pod-a")
    assert state is not None
    assert state.last_step_at == 1_700_000_000.0
    assert state.step_age(clock.now) == 0.5

    # Ten seconds later the API server still heartbeats, with requests running and no step since: hung.
    heartbeat = {**step, "timestamp": 1_700_000_010.0, "heartbeat": True}
    assert client.handle(encoded(seq=2, **heartbeat))
    clock.now += 0.25
    state = client.get("pod-a")
    assert state is not None
    assert state.message.num_requests_running == 4
    assert state.step_age(clock.now) == 10.25


def test_step_age_is_unknown_without_last_step_at(client: RouterClient) -> None:
    assert client.handle(encoded())
    state = client.get("pod-a")
    assert state is not None
    assert state.last_step_at is None
    assert state.step_age(0.0) is None
