"""The router client's ingest rate on one core, end to end over NATS, beside two baselines of the same run.

The method of ``reference/baselines.md`` §4: a real ``nats-server`` and a raw-socket ``PUB`` flood (real encoded
:class:`~eagleeye_otel.routing.RoutingMessage` bytes from ``--instances`` distinct instances, each with a rising
``seq`` and token total, so every message is a genuine update that validation accepts) pinned to one CPU; the
subscriber, a fresh process per measurement, pinned to the other with ``taskset``. Rate = messages processed
between the first and the last observation of the subscriber's count, divided by the time between them. The
subscriber's own loop reads the count every 2 ms, the same way for every variant:

- ``inline``: the **ceiling**: :class:`~eagleeye_otel.routing._inline.InlineDeliveryClient`, the delivery path
  ``RouterClient`` itself uses (each read's ``MSG`` frames cut out of the read and handed over as one list), with
  an ingest that only counts: what the router's delivery costs without decoding anything;
- ``json``: the seed's sample subscriber, ``json.loads(data.decode())`` into a dict per instance, given the same
  inline delivery (**baseline**, like for like);
- ``router``: :class:`~eagleeye_otel.routing.RouterClient` on its own connection, so with inline delivery: size
  bound, full validation, order and restart checks, the per-instance view updated, counters;
- ``top``: the same, with ``eagle-eye top``'s screen rendered every 0.5 s (into memory) in the same process;
- context, not ceilings: ``per-message``, the same count delivered by nats-py's own parser one message at a time
  (the router's delivery path before batching), and ``none``, nats-py's subscription callback that only counts.

Target: ``router`` at least 85% of ``inline``. The flood must outrun the subscriber for the figure to mean
anything: the publisher's own rate is printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import msgspec
from _common import (
    OtherLoad,
    calib_ns_per_iter,
    fmt,
    machine_info,
    print_table,
    raw_nats_connection,
    wait_pong,
    wait_quiet,
    write_json,
)
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.protocol.parser import Parser

from eagleeye_otel.nats_flush import flush
from eagleeye_otel.nats_server import EmbeddedNatsServer
from eagleeye_otel.routing import RouterClient, RoutingMessage
from eagleeye_otel.routing._inline import InlineDeliveryClient
from eagleeye_otel.settings import NatsSettings

SUBJECT = "eagle_eye.routing_metrics"
VARIANTS = ("inline", "json", "router", "top", "per-message", "none")
CEILING = "inline"
_SEQ, _TOKENS = 987654321, 876543219
"""Placeholders encoded into each instance's message, replaced by the real values as it is sent."""


# -- publisher -------------------------------------------------------------------------------------------------


def templates(instances: int) -> list[bytes]:
    """One ``PUB`` frame template per instance: a realistic, fully populated message with ``%d`` for seq/tokens."""
    out = []
    for i in range(instances):
        message = RoutingMessage(
            version=1,
            instance=f"vllm-{i:04d}-7d9f8c6b5-x2x4z",
            model="meta-llama/Llama-3.1-8B-Instruct",
            engine=0,
            timestamp=1_764_000_000.123456,
            seq=_SEQ,
            num_requests_waiting=i % 7,
            num_requests_running=8 + i % 24,
            kv_cache_usage=round((i % 100) / 100, 2),
            started=1_763_990_000.5,
            endpoint=f"http://10.0.{i // 250}.{i % 250}:8000",
            node=f"node-{i // 8:03d}",
            devices=(f"GPU-{i:08x}-1111-2222-3333-444444444444",),
            prefix_cache_queries_total=123456,
            prefix_cache_hits_total=65432,
            prompt_tokens_total=987654,
            generation_tokens_total=_TOKENS,
        )
        payload = msgspec.json.encode(message).replace(b"%", b"%%")
        payload = payload.replace(b"%d" % _SEQ, b"%d").replace(b"%d" % _TOKENS, b"%d")
        out.append(payload)
    return out


def flood(url: str, payloads: list[bytes], n: int) -> float:
    """Send ``n`` messages round-robin over the instances as fast as TCP takes them; returns messages/s."""
    subject = SUBJECT.encode()
    with raw_nats_connection(url, name="bench-flood") as sock:
        start = time.perf_counter()
        sent, seq = 0, 0
        while sent < n:
            seq += 1
            batch = payloads[: min(len(payloads), n - sent)]
            frames = []
            for template in batch:
                payload = template % (seq, seq * 37)
                frames.append(b"PUB %s %d\r\n%s\r\n" % (subject, len(payload), payload))
            sock.sendall(b"".join(frames))
            sent += len(batch)
        sock.sendall(b"PING\r\n")
        wait_pong(sock)
        return n / (time.perf_counter() - start)


# -- subscriber (a separate, pinned process) -------------------------------------------------------------------


async def subscribe(url: str, variant: str, n: int, instances: int) -> dict[str, Any]:
    """Subscribe as ``variant``, say READY, then observe the count until ``n`` messages or 3 s without progress."""
    nc = InlineDeliveryClient() if variant in ("inline", "json", "per-message") else Client()
    if variant == "per-message":
        nc._ps = Parser(nc)  # nats-py's own parser: inline payloads reach the ingest one _process_msg at a time
    await nc.connect(servers=[url], name=f"bench-{variant}", allow_reconnect=False)
    counter = [0]
    client: RouterClient | None = None
    latest: dict[str, Any] = {}
    if variant in ("none", "inline", "json", "per-message"):

        async def on_count(msg: Msg) -> None:
            counter[0] += 1

        subscription = await nc.subscribe(SUBJECT, cb=on_count)
        ingest = _json_into(latest, counter) if variant == "json" else _count_into(counter)
        if isinstance(nc, InlineDeliveryClient) and not nc.deliver_inline(subscription, ingest):
            raise RuntimeError("this nats-py does not allow inline delivery")
    else:  # the router opens its own connection (started, so subscribed, before READY), as an application's does
        client = RouterClient(nats_settings=NatsSettings(servers=(url,)), subject=SUBJECT, stale_after=60.0)
        await client.start()
    render_task = asyncio.create_task(_render_forever(client)) if variant == "top" and client else None
    await flush(nc)
    count: Callable[[], int] = (lambda: client.stats.received) if client is not None else (lambda: counter[0])
    print("READY", flush=True)

    first: tuple[float, int] | None = None
    last = (time.perf_counter(), 0)
    deadline = time.perf_counter() + 60.0
    while True:
        await asyncio.sleep(0.002)
        now, seen = time.perf_counter(), count()
        if seen != last[1]:
            last = (now, seen)
            if first is None:
                first = last
        if seen >= n or now > (deadline if first is None else last[0] + 3.0):
            break
    if render_task is not None:
        render_task.cancel()
    result: dict[str, Any] = {"variant": variant, "received": last[1], "rate": 0.0}
    if first is not None and last[0] > first[0]:
        result["rate"] = (last[1] - first[1]) / (last[0] - first[0])
        result["seconds"] = last[0] - first[0]
    if client is not None:
        stats = client.stats
        result.update(accepted=stats.accepted, rejected=stats.received - stats.accepted)
        result["view"] = len(client.instances())
        await client.close()
    else:
        result["view"] = len(latest) if variant == "json" else instances
    await nc.close()
    return result


def _count_into(counter: list[int]) -> Callable[[list[bytes]], None]:
    def count(payloads: list[bytes]) -> None:
        counter[0] += len(payloads)

    return count


def _json_into(latest: dict[str, Any], counter: list[int]) -> Callable[[list[bytes]], None]:
    """The seed's subscriber body, ``json.loads(msg.data.decode())`` into a dict per instance, fed inline."""

    def decode(payloads: list[bytes]) -> None:
        for payload in payloads:
            data = json.loads(payload.decode())
            latest[data["instance"]] = data
        counter[0] += len(payloads)

    return decode


async def _render_forever(client: RouterClient) -> None:
    """What ``eagle-eye top`` adds to the router client: its screen, every 0.5 s, into memory."""
    from rich.console import Console  # noqa: PLC0415 - only this variant needs it

    from eagleeye_otel.cli._top import TopScreen  # noqa: PLC0415
    from eagleeye_otel.cli._top_model import Sort  # noqa: PLC0415

    screen = TopScreen(stale=3.0, sort=Sort("w"))
    console = Console(file=io.StringIO(), width=180, height=50, force_terminal=True)
    while True:
        console.file = io.StringIO()
        console.print(screen.render(client, time.monotonic(), 50))
        await asyncio.sleep(0.5)


# -- orchestration ---------------------------------------------------------------------------------------------


def measure(args: argparse.Namespace, url: str, variant: str, payloads: list[bytes]) -> dict[str, Any]:
    """One fresh subscriber process pinned to ``--sub-cpu``, flooded once."""
    command = ["taskset", "-c", str(args.sub_cpu), sys.executable, __file__, "--role", "sub"]
    command += ["--variant", variant, "--n", str(args.n), "--instances", str(args.instances), "--url", url]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as sub:
        assert sub.stdout is not None
        if sub.stdout.readline().strip() != "READY":
            raise RuntimeError(f"{variant} subscriber did not start")
        load = OtherLoad()
        published = flood(url, payloads, args.n)
        result: dict[str, Any] = json.loads(sub.stdout.readline())
        sub.wait(30)
    result.update(published_rate=published, other_load=load.cores())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=("main", "sub"), default="main", help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=VARIANTS, default="router", help=argparse.SUPPRESS)
    parser.add_argument("--url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=500_000, help="messages per measurement")
    parser.add_argument("--instances", type=int, default=1000, help="distinct instances in the flood")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--sub-cpu", type=int, default=1, help="CPU of the subscriber")
    parser.add_argument("--pub-cpu", type=int, default=0, help="CPU of nats-server and the publisher")
    parser.add_argument("--max-quiet-wait", type=float, default=30.0)
    args = parser.parse_args()
    if args.role == "sub":
        print(json.dumps(asyncio.run(subscribe(args.url, args.variant, args.n, args.instances))), flush=True)
        return

    variants = args.variants.split(",")
    payloads = templates(args.instances)
    os.sched_setaffinity(0, {args.pub_cpu})
    reps: list[dict[str, Any]] = []
    with EmbeddedNatsServer() as server:
        assert server.pid is not None
        os.sched_setaffinity(server.pid, {args.pub_cpu})
        for rep in range(args.reps):
            quiet = wait_quiet(max_wait=args.max_quiet_wait)
            record: dict[str, Any] = {"quiet": quiet.quiet, "calib_ns": calib_ns_per_iter(), "runs": {}}
            order = variants[rep % len(variants) :] + variants[: rep % len(variants)]  # rotate: no fixed position
            for variant in order:
                record["runs"][variant] = measure(args, server.url, variant, payloads)
            runs = record["runs"]
            print(
                f"rep {rep + 1}: quiet={quiet.quiet} calib={record['calib_ns']:.1f} ns "
                + " ".join(f"{v}={runs[v]['rate'] / 1000:.0f}k" for v in variants),
                flush=True,
            )
            reps.append(record)
    report(args, variants, reps)


def report(args: argparse.Namespace, variants: list[str], reps: list[dict[str, Any]]) -> None:
    rows = []
    for variant in variants:
        runs = [r["runs"][variant] for r in reps]
        rates = [run["rate"] for run in runs]
        ratios = [r["runs"][variant]["rate"] / r["runs"][CEILING]["rate"] for r in reps if CEILING in r["runs"]]
        rows.append(
            [
                variant,
                fmt(statistics.median(rates) / 1000),
                f"{fmt(min(rates) / 1000)}-{fmt(max(rates) / 1000)}",
                fmt(1e6 / statistics.median(rates), 2),
                f"{statistics.median(ratios):.0%}" if ratios else "-",
                str(min(run["received"] for run in runs)),
                str(min(run["view"] for run in runs)),
                fmt(statistics.median(run["published_rate"] for run in runs) / 1000),
                f"{max(run['other_load'] for run in runs):.2f}",
            ]
        )
    headers = ["subscriber", "k msgs/s (median)", "range", "µs/msg", f"of {CEILING}", "received (min)", "view (min)"]
    headers += ["publisher k/s", "other load (max)"]
    print_table(headers, rows, title=f"ingest on one core: {args.n:,} messages from {args.instances} instances")
    print()
    for variant, base, note in (
        ("router", CEILING, " (target ≥ 85%)"),
        ("json", CEILING, ""),
        ("router", "json", ""),
        ("router", "per-message", ": the router with decoding vs nats-py's parser path counting only"),
    ):
        ratios = [
            r["runs"][variant]["rate"] / r["runs"][base]["rate"] for r in reps if {variant, base} <= r["runs"].keys()
        ]
        if ratios:
            print(
                f"{variant} / {base}: {statistics.median(ratios):.2f} (range {min(ratios):.2f}-{max(ratios):.2f}){note}"
            )
    path = write_json("router_ingest", {"args": vars(args), "machine": machine_info(), "reps": reps})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
