"""CPU per routing message of the publisher inside vLLM's API server, beside the floor of sending it at all.

Every case publishes the same routing message (built and encoded the same way, one per engine step, paced like
vLLM's steps at ``--pace-us``) to a real nats-server on loopback, from a thread standing in for vLLM's event loop,
and measures the CPU the whole process spends per message (every thread: ``time.process_time``), minus the CPU of
the same paced loop doing nothing. Cases:

- ``floor_send`` (**named baseline**): the offering thread encodes the message and writes the ``PUB`` frame with one
  non-blocking ``socket.send`` on an already connected socket: the least any publisher can spend per message.
- ``eagle_eye``: ``RoutingPublisher.offer()`` as the plugin calls it (plain TCP: the direct send).
- ``eagle_eye_thread_path``: the same publisher with the direct send off, so every message goes through the
  publisher's own thread, as it does over TLS or while the socket is full.
- ``nats_py_loop``: the previous design, for reference: an asyncio loop thread woken per message with
  ``call_soon_threadsafe`` that calls nats-py's ``publish`` (its flusher task writes).

Run: ``.venv/bin/python bench/bench_publisher.py --help``.
"""

# ruff: noqa: PLC0415 - each case imports only what it needs

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from _common import (
    OtherLoad,
    calib_ns_per_iter,
    fmt,
    machine_info,
    print_table,
    raw_nats_connection,
    wait_quiet,
    write_json,
)

TARGET_US = 30.0
CASES = ("floor_send", "eagle_eye", "eagle_eye_thread_path", "nats_py_loop")


def _message(i: int) -> Any:
    from eagleeye_otel.routing import RoutingMessage

    return RoutingMessage(
        version=1,
        instance="bench-pod-1234",
        model="meta-llama/Llama-3.1-8B-Instruct",
        engine=0,
        timestamp=time.time(),
        last_step_at=time.time(),
        seq=0,
        num_requests_waiting=i % 7,
        num_requests_running=32,
        kv_cache_usage=0.61,
        started=1_765_000_000.25,
        endpoint="http://10.0.0.7:8000",
        prefix_cache_queries_total=512 * i,
        prefix_cache_hits_total=128 * i,
        prompt_tokens_total=900 * i,
        generation_tokens_total=32 * i,
    )


def _paced_cpu_s(step: Callable[[int], None], n: int, pace_s: float) -> float:
    """Process CPU (all threads) over ``n`` paced calls of ``step``, with a short tail for threads to finish."""
    start = time.process_time()
    for i in range(n):
        step(i)
        time.sleep(pace_s)
    time.sleep(0.05)
    return time.process_time() - start


def _floor(url: str) -> tuple[Callable[[int], None], Callable[[], None]]:
    import msgspec

    sock = raw_nats_connection(url)
    sock.setblocking(False)
    encode = msgspec.json.Encoder().encode
    prefix = b"PUB eagle_eye.routing_metrics "

    def step(i: int) -> None:
        message = _message(i)
        message.seq = i + 1
        payload = encode(message)
        sock.send(b"%s%d\r\n%s\r\n" % (prefix, len(payload), payload))

    return step, sock.close


def _eagle_eye(url: str, *, direct: bool) -> tuple[Callable[[int], None], Callable[[], None]]:
    from eagleeye_otel.exporters.nats import RoutingPublisher
    from eagleeye_otel.exporters.nats._sync_connection import SyncConnection
    from eagleeye_otel.settings import Settings

    if not direct:  # every message through the publisher's thread, as over TLS
        SyncConnection.direct_send = property(lambda self: False)  # type: ignore[method-assign,assignment]
    settings = Settings.from_env({"EAGLEEYE_NATS_URL": url})
    publisher = RoutingPublisher(nats_settings=settings.nats, routing=settings.routing, client_name="bench")
    publisher.start()
    deadline = time.monotonic() + 10
    while not publisher.stats.connected:
        if time.monotonic() > deadline:
            raise SystemExit("the publisher did not connect")
        time.sleep(0.01)

    def stop() -> None:
        stats = publisher.stats
        publisher.stop()
        if stats.published + stats.coalesced != stats.offered:
            raise SystemExit(f"messages went missing: {stats}")

    return lambda i: publisher.offer(_message(i)), stop


def _nats_py_loop(url: str) -> tuple[Callable[[int], None], Callable[[], None]]:
    import msgspec
    import nats

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    nc = asyncio.run_coroutine_threadsafe(nats.connect(url), loop).result(10)
    encode = msgspec.json.Encoder().encode
    slot: list[Any] = [None]

    async def send() -> None:
        message, slot[0] = slot[0], None
        if message is not None:
            await nc.publish("eagle_eye.routing_metrics", encode(message))

    def step(i: int) -> None:
        slot[0] = _message(i)
        loop.call_soon_threadsafe(lambda: loop.create_task(send()))

    def stop() -> None:
        asyncio.run_coroutine_threadsafe(nc.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)

    return step, stop


def _run_case(case: str, url: str, n: int, pace_s: float) -> float:
    if case == "floor_send":
        step, stop = _floor(url)
    elif case == "nats_py_loop":
        step, stop = _nats_py_loop(url)
    else:
        step, stop = _eagle_eye(url, direct=case == "eagle_eye")
    try:
        _paced_cpu_s(step, min(200, n), pace_s)  # warm-up
        return _paced_cpu_s(step, n, pace_s)
    finally:
        stop()


def _child(case: str, url: str, n: int, pace_s: float) -> None:
    """One case in a fresh process (a case's threads and patches must not leak into the next)."""
    idle = _paced_cpu_s(lambda i: None, n, pace_s)
    busy = _run_case(case, url, n, pace_s)
    print(f"{(busy - idle) / n * 1e6:.3f}")


def main() -> None:
    import subprocess
    import sys

    from eagleeye_otel.nats_server import EmbeddedNatsServer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=3000, help="paced messages per case and repetition")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--pace-us", type=float, default=1000.0, help="pause between two steps")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--max-quiet-wait", type=float, default=30.0)
    parser.add_argument("--child", nargs=2, metavar=("CASE", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    pace_s = args.pace_us / 1e6
    if args.child:
        _child(args.child[0], args.child[1], args.messages, pace_s)
        return
    cases = [c for c in args.cases.split(",") if c]
    results: dict[str, list[float]] = {case: [] for case in cases}
    reps: list[dict[str, Any]] = []
    with EmbeddedNatsServer() as server:
        for rep in range(args.reps):
            quiet = wait_quiet(max_wait=args.max_quiet_wait)
            calib = calib_ns_per_iter()
            load = OtherLoad()
            for case in cases:
                out = subprocess.run(
                    [sys.executable, __file__, "--messages", str(args.messages), "--pace-us", str(args.pace_us),
                     "--child", case, server.url],
                    check=True, capture_output=True, text=True,
                )  # fmt: skip
                results[case].append(float(out.stdout.strip().splitlines()[-1]))
            reps.append({"rep": rep, "quiet": quiet, "calib_ns": calib, "other_load_cores": load.cores()})
            print(f"rep {rep}: quiet={quiet.quiet} calib={calib:.1f} ns/iter other load={load.cores():.2f} cores")
    floor = statistics.median(results["floor_send"]) if "floor_send" in results else float("nan")
    rows = []
    for case in cases:
        values = results[case]
        median = statistics.median(values)
        rows.append(
            [case, fmt(median), f"{fmt(min(values))}-{fmt(max(values))}", fmt(median / floor, 2), fmt(TARGET_US)]
        )
    print_table(
        ["case", "CPU µs/message (median)", "range", "ratio to floor_send", "target µs"],
        rows,
        title=f"Publisher CPU per message, {args.messages} messages every {args.pace_us:g} µs, {args.reps} reps",
    )
    path = write_json(
        "bench_publisher", {"machine": machine_info(), "args": vars(args), "results": results, "reps": reps}
    )
    print(f"saved {path}")


if __name__ == "__main__":
    main()
