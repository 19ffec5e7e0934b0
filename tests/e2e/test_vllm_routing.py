"""A real vLLM server on CPU publishes routing messages over a real NATS server, as a router would see them.

The server runs a tiny random-weight Llama (``tiny_model.py``) with the ``eagle_eye`` stat-logger plugin that
installing this package registers. Completions use ``ignore_eos`` so that each one generates exactly
``max_tokens`` tokens. What one engine step looks like on the wire (measured with vLLM 0.32 on CPU): a
16-token completion takes 16 steps (prefill plus first token, then 15 decodes), each giving one step message,
and vLLM adds one stats-only call after the batch drains, so 17 step messages in all; the step that finishes
the request already reports ``num_requests_running == 0``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import msgspec
import nats
import pytest

from eagleeye_otel.nats_flush import flush
from eagleeye_otel.nats_server import EmbeddedNatsServer, free_port
from eagleeye_otel.routing import MAX_MESSAGE_BYTES, RouterClient, RoutingMessage
from eagleeye_otel.settings import NatsSettings

INSTANCE_ID = "e2e-vllm"
SERVED_MODEL = "tiny"
HEARTBEAT_INTERVAL_S = 0.5
SNAPSHOT_SUBJECT = "eagle_eye.routing_snapshot"
MAX_TOKENS = 16

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(600),
]


def _steps(received: list[Any]) -> list[RoutingMessage]:
    return [r.message for r in received if not r.message.heartbeat]


def _drained(received: list[Any]) -> bool:
    """True once the window holds step messages and, after the last one, an idle heartbeat."""
    steps = [i for i, r in enumerate(received) if not r.message.heartbeat]
    if not steps:
        return False
    last_step = received[steps[-1]].message
    after = received[steps[-1] + 1 :]
    return (
        last_step.num_requests_running == 0
        and last_step.num_requests_waiting == 0
        and any(r.message.heartbeat for r in after)
    )


def _assert_plugin_loaded(log: str) -> None:
    """vLLM logs the entry point it found even when importing it fails, so look for the failure too."""
    assert "eagle_eye -> eagleeye_otel.instrumentation.vllm:EagleEyeStatLogger" in log
    assert "Failed to load plugin eagle_eye" not in log, log[-6000:]
    assert "Eagle Eye is disabled" not in log, log[-6000:]
    assert "Traceback" not in log, log[-6000:]


def _check_common(received: list[Any]) -> None:
    """What every message from this server must satisfy, whatever its kind."""
    assert received, "no routing messages"
    started = received[0].message.started
    assert started is not None
    for r in received:
        m = r.message
        assert len(r.raw) < MAX_MESSAGE_BYTES
        assert (m.version, m.instance, m.model, m.engine) == (1, INSTANCE_ID, SERVED_MODEL, 0), r.raw
        assert m.started == started, "`started` changed although the server did not restart"
        assert 0.0 <= m.kv_cache_usage <= 1.0
        assert m.num_requests_running >= 0
        assert m.num_requests_waiting >= 0
    seqs = [r.message.seq for r in received]
    assert all(b > a for a, b in itertools.pairwise(seqs)), f"seq not strictly increasing: {seqs}"


@pytest.mark.usefixtures("routed_vllm")
class TestRoutingPush:
    """One vLLM server for the whole class; the tests run in order and build on its state."""

    def test_announced_when_ready(self, routed_vllm: Any, routing_collector: Any) -> None:
        """Routers see the idle engine before its first request, without asking."""
        _assert_plugin_loaded(routed_vllm.log_text())
        received = routing_collector.wait_for(lambda rs: len(rs) >= 1, timeout=5)
        assert not routing_collector.decode_errors
        first = received[0].message
        assert first.seq == 1, "the collector subscribed before vLLM started, so it must see the first message"
        assert (first.num_requests_running, first.num_requests_waiting, first.kv_cache_usage) == (0, 0, 0.0)
        assert first.generation_tokens_total == 0
        assert first.prompt_tokens_total == 0
        _check_common(received)
        print(f"vLLM healthy after {routed_vllm.ready_after_s:.1f} s; first message: {received[0].raw.decode()}")

    def test_single_completion_one_message_per_step(self, routed_vllm: Any, routing_collector: Any) -> None:
        mark = routing_collector.count()
        before = routing_collector.since(0)[-1].message
        result = routed_vllm.complete("Hello world, how are you today?", max_tokens=MAX_TOKENS)
        usage = result["usage"]
        assert usage["completion_tokens"] == MAX_TOKENS

        window = routing_collector.wait_for(_drained, mark=mark, timeout=10)
        assert not routing_collector.decode_errors
        _check_common(routing_collector.since(0))
        steps = _steps(window)
        busy = [m for m in steps if m.num_requests_running > 0]

        # One message per engine step: 16 token steps plus vLLM's trailing stats-only call (17 measured).
        # Fewer would mean the publisher coalesced steps on an idle machine; a few more is allowed
        # (e.g. a step that only schedules).
        assert MAX_TOKENS <= len(steps) <= MAX_TOKENS + 3, [m.generation_tokens_total for m in steps]
        assert len(busy) >= MAX_TOKENS - 1
        for m in busy:
            assert m.num_requests_running == 1
            assert 0.0 < m.kv_cache_usage <= 1.0
        # Each step of a lone request yields one token, so the running totals step by one.
        generated = [m.generation_tokens_total - before.generation_tokens_total for m in steps]
        assert sorted(set(generated)) == list(range(1, MAX_TOKENS + 1)), generated

        last = steps[-1]
        assert (last.num_requests_running, last.num_requests_waiting, last.kv_cache_usage) == (0, 0, 0.0)
        assert last.generation_tokens_total - before.generation_tokens_total == usage["completion_tokens"]
        assert last.prompt_tokens_total - before.prompt_tokens_total == usage["prompt_tokens"]
        assert last.timestamp >= steps[0].timestamp
        print(
            f"16-token completion: {len(steps)} step messages ({len(busy)} with running > 0), "
            f"kv_cache_usage while running {busy[0].kv_cache_usage:.6f}, "
            f"{(last.timestamp - steps[0].timestamp) * 1000:.1f} ms from first to last step"
        )

    def test_concurrent_completions(self, routed_vllm: Any, routing_collector: Any) -> None:
        async def run_all() -> list[dict[str, Any]]:
            return await asyncio.gather(
                *(
                    asyncio.to_thread(routed_vllm.complete, f"Request number {i} asks the tiny model", MAX_TOKENS)
                    for i in range(4)
                )
            )

        mark = routing_collector.count()
        before = routing_collector.since(0)[-1].message
        results = asyncio.run(run_all())
        completion_tokens = sum(r["usage"]["completion_tokens"] for r in results)
        prompt_tokens = sum(r["usage"]["prompt_tokens"] for r in results)
        assert completion_tokens == 4 * MAX_TOKENS

        window = routing_collector.wait_for(_drained, mark=mark, timeout=10)
        _check_common(routing_collector.since(0))
        steps = _steps(window)
        # Batched decoding: the longest request needs MAX_TOKENS steps, and all four need far fewer than 4x.
        assert len(steps) >= MAX_TOKENS
        assert max(m.num_requests_running for m in steps) >= 2, [m.num_requests_running for m in steps]
        for m in steps:
            if m.num_requests_running > 0:
                assert m.kv_cache_usage > 0.0
        totals = [m.generation_tokens_total for m in steps]
        assert totals == sorted(totals)
        last = steps[-1]
        assert (last.num_requests_running, last.num_requests_waiting) == (0, 0)
        assert last.generation_tokens_total - before.generation_tokens_total >= completion_tokens
        assert last.prompt_tokens_total - before.prompt_tokens_total >= prompt_tokens
        print(
            f"4 concurrent 16-token completions: {len(steps)} step messages, "
            f"running per step {[m.num_requests_running for m in steps]}, "
            f"generated {last.generation_tokens_total - before.generation_tokens_total} tokens"
        )

    def test_idle_heartbeats(self, routing_collector: Any) -> None:
        """After a drain the idle state keeps coming about every 0.5 s, flagged as heartbeats."""
        mark = routing_collector.count()
        window = routing_collector.wait_for(lambda rs: len(rs) >= 6, mark=mark, timeout=6)
        _check_common(routing_collector.since(0))
        everything = routing_collector.since(0)
        last_step = _steps(everything)[-1]
        assert all(r.message.heartbeat for r in window), "a step message arrived while no request ran"
        for r in window:
            m = r.message
            assert (m.num_requests_running, m.num_requests_waiting, m.kv_cache_usage) == (0, 0, 0.0)
            assert m.generation_tokens_total == last_step.generation_tokens_total
        stamps = [r.message.timestamp for r in window]
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        assert all(0.3 <= g <= 1.0 for g in gaps), gaps
        assert 0.4 <= sum(gaps) / len(gaps) <= 0.7, gaps
        seqs = [r.message.seq for r in window]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"lost heartbeats: {seqs}"
        print(f"idle heartbeat gaps (s): {[round(g, 3) for g in gaps]}")

    async def test_late_router_gets_snapshot(self, routed_vllm: Any, routing_nats: Any, routing_collector: Any) -> None:
        """A router that joins while the engine idles learns its state at once from the snapshot request."""
        decoder = msgspec.json.Decoder(RoutingMessage)
        nc = await nats.connect(routing_nats.url, name="e2e-late-router")
        try:
            replies: asyncio.Queue[tuple[float, RoutingMessage]] = asyncio.Queue()

            async def on_reply(msg: Any) -> None:
                replies.put_nowait((time.monotonic(), decoder.decode(msg.data)))

            inbox = nc.new_inbox()
            await nc.subscribe(inbox, cb=on_reply)
            await flush(nc)
            asked = time.monotonic()
            await nc.publish(SNAPSHOT_SUBJECT, b"", reply=inbox)
            arrived, reply = await asyncio.wait_for(replies.get(), timeout=5)
        finally:
            await nc.close()

        # Well before the next heartbeat would have told the router anything.
        assert arrived - asked < HEARTBEAT_INTERVAL_S, arrived - asked
        assert (reply.version, reply.instance, reply.model, reply.engine) == (1, INSTANCE_ID, SERVED_MODEL, 0)
        assert (reply.num_requests_running, reply.num_requests_waiting) == (0, 0)
        # The reply repeats a message already sent on the routing subject: same seq, same totals.
        seen = {r.message.seq: r.message for r in routing_collector.since(0)}
        assert reply.seq in seen, (reply.seq, max(seen))
        assert reply.generation_tokens_total == seen[reply.seq].generation_tokens_total
        assert reply.generation_tokens_total >= 5 * MAX_TOKENS
        assert reply.started == seen[reply.seq].started
        print(f"snapshot reply after {(arrived - asked) * 1000:.1f} ms: seq {reply.seq}, heartbeat {reply.heartbeat}")

    async def test_router_client_view(self, routed_vllm: Any, routing_nats: Any) -> None:
        """Eagle Eye's own RouterClient, joining late, sees the idle engine at once and follows a request."""
        router = RouterClient(nats_settings=NatsSettings(servers=(routing_nats.url,)), stale_after=3.0)
        joined = time.monotonic()
        await router.start()
        try:
            while router.get(INSTANCE_ID, 0) is None:
                assert time.monotonic() - joined < 5, "RouterClient never saw the engine"
                await asyncio.sleep(0.005)
            learned_after = time.monotonic() - joined
            assert learned_after < HEARTBEAT_INTERVAL_S, learned_after
            picked = router.pick(SERVED_MODEL)
            assert picked is not None
            assert (picked.message.instance, picked.message.engine) == (INSTANCE_ID, 0)
            assert router.pick("some-other-model") is None
            before = router.get(INSTANCE_ID, 0).message

            result = await asyncio.to_thread(routed_vllm.complete, "The router is watching", MAX_TOKENS)
            tokens = result["usage"]["completion_tokens"]
            deadline = time.monotonic() + 5
            while True:
                state = router.get(INSTANCE_ID, 0)
                if (
                    state is not None
                    and state.message.generation_tokens_total >= before.generation_tokens_total + tokens
                ):
                    break
                assert time.monotonic() < deadline, "RouterClient did not follow the completion"
                await asyncio.sleep(0.01)
            await asyncio.sleep(2 * HEARTBEAT_INTERVAL_S)  # let the drain and a heartbeat land
            now = router.get(INSTANCE_ID, 0)
            assert now is not None
            assert (now.message.num_requests_running, now.message.num_requests_waiting) == (0, 0)
            assert now.message.generation_tokens_total == before.generation_tokens_total + tokens
            stats = router.stats
            assert stats.invalid == 0 and stats.oversized == 0
            assert stats.accepted >= MAX_TOKENS
            print(f"RouterClient learned the idle engine in {learned_after * 1000:.1f} ms; stats {stats}")
        finally:
            await router.close()

    def test_no_errors_in_server_log(self, routed_vllm: Any) -> None:
        _assert_plugin_loaded(routed_vllm.log_text())


def test_serves_without_nats_then_connects(start_vllm: Any) -> None:
    """NATS down at start: vLLM still becomes healthy and serves; once NATS appears, the state flows."""
    port = free_port()  # nothing listens here until we start a server on it below
    server = start_vllm(
        "no-nats",
        EAGLEEYE_NATS_URL=f"nats://127.0.0.1:{port}",
        EAGLEEYE_HEARTBEAT_INTERVAL=str(HEARTBEAT_INTERVAL_S),
    )
    try:
        _assert_plugin_loaded(server.log_text())
        began = time.monotonic()
        result = server.complete("Is anybody listening?", max_tokens=MAX_TOKENS)
        elapsed = time.monotonic() - began
        assert result["usage"]["completion_tokens"] == MAX_TOKENS
        assert result["choices"][0]["finish_reason"] == "length"
        assert elapsed < 10, f"a 16-token completion took {elapsed:.2f} s with NATS down"

        with EmbeddedNatsServer(port=port) as nats_server:
            first_after, messages = asyncio.run(_late_nats_scenario(nats_server.url, server))
        first = messages[0]
        assert (first.version, first.instance, first.model, first.engine) == (1, INSTANCE_ID, SERVED_MODEL, 0)
        # Nothing was sent while NATS was down, so numbering starts at 1 on the first real send (the
        # publisher may win the race to the new server by a heartbeat or two), and the state it carries is
        # the current one: the request above already counted.
        assert first.seq <= 3
        assert first.generation_tokens_total == MAX_TOKENS
        assert (first.num_requests_running, first.num_requests_waiting) == (0, 0)
        seqs = [m.seq for m in messages]
        assert all(b > a for a, b in itertools.pairwise(seqs)), seqs
        steps = [m for m in messages if not m.heartbeat]
        assert len(steps) >= MAX_TOKENS
        assert any(m.num_requests_running > 0 for m in steps)
        assert steps[-1].generation_tokens_total == 2 * MAX_TOKENS
        assert (steps[-1].num_requests_running, steps[-1].num_requests_waiting) == (0, 0)
        _assert_plugin_loaded(server.log_text())
        print(
            f"NATS down: vLLM healthy after {server.ready_after_s:.1f} s, completion in {elapsed * 1000:.0f} ms; "
            f"first message {first_after:.2f} s after NATS came up (seq {first.seq}); "
            f"{len(steps)} step messages for the next completion"
        )
    finally:
        server.stop()


async def _late_nats_scenario(url: str, server: Any) -> tuple[float, list[RoutingMessage]]:
    """Subscribe to a NATS server that just started, wait for the publisher, then run one more completion."""
    decoder = msgspec.json.Decoder(RoutingMessage)
    up = time.monotonic()
    nc = await nats.connect(url, name="e2e-late-collector")
    messages: list[RoutingMessage] = []

    async def wait_until(predicate: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"routing messages fell short within {timeout:g} s: {messages[-5:]}"
            await asyncio.sleep(0.02)

    try:

        async def on_message(msg: Any) -> None:
            messages.append(decoder.decode(msg.data))

        await nc.subscribe("eagle_eye.routing_metrics", cb=on_message)
        await flush(nc)
        await wait_until(lambda: bool(messages), timeout=15)
        first_after = time.monotonic() - up
        result = await asyncio.to_thread(server.complete, "Now somebody is", MAX_TOKENS)
        assert result["usage"]["completion_tokens"] == MAX_TOKENS

        def drained() -> bool:
            steps = [m for m in messages if not m.heartbeat]
            return (
                bool(steps)
                and steps[-1].generation_tokens_total == 2 * MAX_TOKENS
                and (steps[-1].num_requests_running == 0)
            )

        await wait_until(drained, timeout=10)
        return first_after, list(messages)
    finally:
        await nc.close()
