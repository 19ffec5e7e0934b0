"""Step-to-router latency over loopback NATS, 100 instances x 50 steps/s, beside a raw-PUB floor and a scrape router.

Push: a real nats-server; publisher processes, each running a share of the instances, every instance a real
``RoutingPublisher`` fed by the plugin's own ``RoutingRecorder`` from a simulated engine loop (steps evenly staggered
across all instances); one router process with a real ``RouterClient`` on its own delivery path (the connection
class it opens itself, which hands it each read's messages at once). Latency = ``time.time()`` when the router's
ingest returned minus the message's ``timestamp`` (taken in ``RoutingRecorder`` at the step), for step messages
after the warm-up. CPU: the router's event-loop thread CPU clock per message received (it includes the
benchmark's own latency probe, printed beside it); the publisher processes' threads other than the simulated
engine loop, summed from each thread's CPU clock, per message sent; the engine loop's own thread per step.

Floor (**baseline**), in the same run at the same rate: the same publisher processes and pacing, but each instance
a plain TCP connection to nats-server on which the engine loop itself writes a ``PUB`` frame stamped just before
(no thread, no event loop, no client library), and a bare nats-py subscriber callback; the ratios push / floor
are printed. Then the scrape baseline (see _scrape.py): age of the data when the router has
parsed it. Run: ``.venv/bin/python bench/bench_latency.py --help``.
"""

# ruff: noqa: PLC0415 - each role imports only what it needs

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import queue
import subprocess
import sys
import threading
import time
import types
from array import array
from pathlib import Path
from typing import Any

import _scrape
from _common import (
    OtherLoad,
    aggregate,
    calib_ns_per_iter,
    fmt,
    machine_info,
    print_table,
    raw_nats_connection,
    summarize,
    thread_cpu_ns,
    wait_quiet,
    write_json,
)

TARGET_P50_MS, TARGET_P99_MS = 0.5, 2.0
TARGET_ROUTER_US_PER_MSG = 20.0
SCRIPT = str(Path(__file__).resolve())


# -- router process ------------------------------------------------------------------------------------------


def _probe_decoder() -> Any:
    """Decodes what the benchmark needs to know of a routing message, skipping the rest."""
    import msgspec

    class Probe(msgspec.Struct):
        instance: str
        engine: int
        seq: int
        timestamp: float
        heartbeat: bool = False

    return msgspec.json.Decoder(Probe).decode


class _Arrivals:
    """Latency (ms) of step messages past the warm-up, seq gaps, heartbeats and the CPU the probing itself took."""

    def __init__(self) -> None:
        self.decode = _probe_decoder()
        self.lat = array("d")
        self.c = {"steps": 0, "heartbeats": 0, "gaps": 0, "deliveries": 0, "probe_s": 0.0, "warm_until": math.inf}
        self.last_seq: dict[tuple[str, int], int] = {}

    def note(self, payloads: list[bytes], done: float) -> None:
        c, decode, last_seq, lat = self.c, self.decode, self.last_seq, self.lat
        t0 = time.thread_time()
        c["deliveries"] += 1
        for data in payloads:
            m = decode(data)
            key = (m.instance, m.engine)
            prev = last_seq.get(key, 0)
            c["gaps"] += max(0, m.seq - prev - 1)  # lost between publisher and router (seq is set when sent)
            last_seq[key] = max(prev, m.seq)
            if m.heartbeat:
                c["heartbeats"] += 1
            else:
                c["steps"] += 1
                if m.timestamp >= c["warm_until"]:
                    lat.append(done - m.timestamp)
        c["probe_s"] += time.thread_time() - t0

    def result(self, cpu_s: float, errors: list[str]) -> dict[str, Any]:
        c = self.c
        messages = max(1, c["steps"] + c["heartbeats"])
        out: dict[str, Any] = {k: v for k, v in c.items() if k not in ("warm_until", "probe_s")}
        out |= {"latency_ms": summarize(self.lat, 1e3), "errors": errors, "cpu_us_per_msg": cpu_s * 1e6 / messages}
        out |= {
            "probe_us_per_msg": c["probe_s"] * 1e6 / messages,
            "msgs_per_delivery": messages / max(1, c["deliveries"]),
        }
        return out


async def _serve_until_stop(arrivals: _Arrivals) -> float:
    """READY, then GO <warm-up end>, then STOP; returns the loop thread's CPU seconds between GO and STOP."""
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    arrivals.c["warm_until"] = float((await loop.run_in_executor(None, sys.stdin.readline)).split()[1])
    cpu0 = time.thread_time()
    await loop.run_in_executor(None, sys.stdin.readline)  # STOP
    return time.thread_time() - cpu0


async def router(url: str, coalesce_ms: float) -> None:
    """A real RouterClient on its own delivery path; latency = when its ingest returned minus the step's timestamp."""
    from eagleeye_otel.routing import RouterClient
    from eagleeye_otel.routing._inline import Ingest, InlineDeliveryClient

    arrivals = _Arrivals()
    errors: list[str] = []

    class ProbedClient(InlineDeliveryClient):
        """RouterClient's own connection class; each read's messages are noted once the router has taken them."""

        def _deliver(self, ingest: Ingest, payloads: list[bytes], size: int) -> None:
            super()._deliver(ingest, payloads, size)
            arrivals.note(payloads, time.time())

    async def on_error(error: Exception) -> None:
        errors.append(type(error).__name__)  # SlowConsumerError here means messages dropped by nats-py

    nc = ProbedClient(coalesce_s=(coalesce_ms or 0.0) / 1e3)  # what RouterClient(coalesce_reads=...) opens
    await nc.connect(servers=[url], name="bench-router", error_cb=on_error)
    client = RouterClient(nc=nc)
    await client.start()
    cpu_s = await _serve_until_stop(arrivals)
    await client.close()
    stats = client.stats
    await nc.drain()
    out = arrivals.result(cpu_s, errors)
    out |= {"router_stats": {k: getattr(stats, k) for k in ("received", "accepted", "invalid", "out_of_order")}}
    print("RESULT " + json.dumps(out), flush=True)


async def floor_subscriber(url: str) -> None:
    """The floor's receiving end: a bare nats-py subscription whose callback notes each message as it arrives."""
    import nats

    from eagleeye_otel.nats_flush import flush
    from eagleeye_otel.semconv import DEFAULT_ROUTING_SUBJECT

    arrivals = _Arrivals()
    errors: list[str] = []

    async def on_error(error: Exception) -> None:
        errors.append(type(error).__name__)

    async def on_message(msg: Any) -> None:
        arrivals.note([msg.data], time.time())

    nc = await nats.connect(url, name="bench-floor-sub", error_cb=on_error)
    await nc.subscribe(DEFAULT_ROUTING_SUBJECT, cb=on_message)
    await flush(nc)
    cpu_s = await _serve_until_stop(arrivals)
    await nc.drain()
    print("RESULT " + json.dumps(arrivals.result(cpu_s, errors)), flush=True)


# -- publisher process ---------------------------------------------------------------------------------------


def _routing_recorder_class() -> Any:
    """The plugin's RoutingRecorder without importing vLLM (the package's __init__ does; this module does not)."""
    import importlib

    name = "eagleeye_otel.instrumentation.vllm"
    if name not in sys.modules:
        parent = importlib.import_module("eagleeye_otel.instrumentation")
        stub = types.ModuleType(name)
        stub.__path__ = [str(Path(parent.__path__[0]) / "vllm")]
        sys.modules[name] = stub
    return importlib.import_module(name + "._routing_recorder").RoutingRecorder


def publishers(url: str, proc: int, procs: int, instances: int, rate: float) -> None:
    from eagleeye_otel.exporters.nats import RoutingPublisher
    from eagleeye_otel.settings import NatsSettings, RoutingSettings

    recorder_cls = _routing_recorder_class()
    mine = list(range(proc, instances, procs))  # global instance numbers run by this process
    pubs, recorders = [], []
    for g in mine:
        instance = f"bench-{g:04d}"
        pub = RoutingPublisher(
            nats_settings=NatsSettings(servers=(url,)),
            routing=RoutingSettings(instance_id=instance),
            client_name=f"bench-pub-{g}",
        )
        pub.start()
        pubs.append(pub)
        recorders.append(
            recorder_cls(pub, instance=instance, model="bench", engine=0, started=time.time(), endpoint=None)
        )
    deadline = time.monotonic() + 30
    while not all(p.stats.connected for p in pubs) and time.monotonic() < deadline:
        time.sleep(0.05)
    print(f"READY {sum(p.stats.connected for p in pubs)}", flush=True)
    t0, t_end = (float(x) for x in sys.stdin.readline().split()[1:3])
    period = 1.0 / rate
    offsets = [g / instances * period for g in mine]
    mono0 = time.monotonic() + (t0 - time.time())
    mono_end = mono0 + (t_end - t0)
    sched = types.SimpleNamespace(num_running_reqs=32, num_waiting_reqs=5, kv_cache_usage=0.6, step_counter=0)
    sched.prefix_cache_stats = types.SimpleNamespace(queries=512, hits=128)
    it = types.SimpleNamespace(num_generation_tokens=32, num_prompt_tokens=0, num_preempted_reqs=0)
    late = array("d")
    threads0, main0, k = thread_cpu_ns(), time.thread_time(), 0
    while mono0 + k * period < mono_end:
        for offset, recorder in zip(offsets, recorders, strict=True):
            due = mono0 + k * period + offset
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                late.append(-delay)
            sched.step_counter = k
            sched.num_waiting_reqs = k % 7
            recorder.record(sched, it)
        k += 1
    time.sleep(0.5)  # let the publishers send the last steps
    main_s = time.thread_time() - main0
    threads = _publisher_threads_cpu_s(threads0, thread_cpu_ns())
    totals: dict[str, Any] = {"steps_per_instance": k, "instances": len(mine)}
    for key in ("offered", "published", "coalesced", "dropped", "heartbeats", "errors", "connected"):
        totals[key] = sum(getattr(p.stats, key, 0) for p in pubs)
    sent = max(1, totals["published"] + totals["heartbeats"])
    totals["loop_cpu_us_per_step"] = main_s * 1e6 / max(1, totals["offered"])
    totals["pub_cpu_us_per_msg"] = sum(threads.values()) * 1e6 / sent
    totals["pub_threads_cpu_s"] = threads
    totals["late_steps"] = len(late)
    totals["late_max_ms"] = max(late, default=0.0) * 1e3
    for pub in pubs:
        pub.stop(1.0)
    print("RESULT " + json.dumps(totals), flush=True)


def _publisher_threads_cpu_s(before: dict[int, tuple[str, int]], after: dict[int, tuple[str, int]]) -> dict[str, float]:
    """CPU seconds of every thread but the main one (the simulated engine loop) between two samples, by name."""
    main = threading.main_thread().native_id
    by_name: dict[str, float] = {}
    for tid, (name, ns) in after.items():
        if tid != main:
            by_name[name] = by_name.get(name, 0.0) + (ns - before.get(tid, (name, 0))[1]) / 1e9
    return by_name


def floor_publishers(url: str, proc: int, procs: int, instances: int, rate: float) -> None:
    """The floor's sending end: per instance a plain TCP connection to nats-server, and the simulated engine loop
    itself writes each step's ``PUB`` frame (the message stamped just before) with one ``send``: no thread, no
    event loop, no client library; the NATS protocol's least."""
    import msgspec

    from eagleeye_otel.routing import RoutingMessage
    from eagleeye_otel.semconv import DEFAULT_ROUTING_SUBJECT

    mine = list(range(proc, instances, procs))
    socks = [raw_nats_connection(url) for _ in mine]
    print(f"READY {len(socks)}", flush=True)
    t0, t_end = (float(x) for x in sys.stdin.readline().split()[1:3])
    encode, started, subject = msgspec.json.Encoder().encode, time.time(), DEFAULT_ROUTING_SUBJECT.encode()
    period = 1.0 / rate
    offsets = [g / instances * period for g in mine]
    mono0 = time.monotonic() + (t0 - time.time())
    mono_end = mono0 + (t_end - t0)
    late = array("d")
    cpu0, k, sent = time.process_time(), 0, 0
    while mono0 + k * period < mono_end:
        for g, offset, sock in zip(mine, offsets, socks, strict=True):
            delay = mono0 + k * period + offset - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                late.append(-delay)
            message = RoutingMessage(
                version=1,
                instance=f"bench-{g:04d}",
                model="bench",
                engine=0,
                timestamp=time.time(),
                seq=k + 1,
                num_requests_waiting=k % 7,
                num_requests_running=32,
                kv_cache_usage=0.6,
                started=started,
            )
            payload = encode(message)
            sock.sendall(b"PUB %s %d\r\n%s\r\n" % (subject, len(payload), payload))
            sent += 1
        k += 1
    cpu_s = time.process_time() - cpu0
    time.sleep(0.5)
    for sock in socks:
        sock.close()
    totals: dict[str, Any] = {"offered": sent, "published": sent, "coalesced": 0, "dropped": 0, "heartbeats": 0}
    totals |= {
        "errors": 0,
        "connected": len(socks),
        "late_steps": len(late),
        "late_max_ms": max(late, default=0.0) * 1e3,
    }
    totals |= {"loop_cpu_us_per_step": cpu_s * 1e6 / max(1, sent), "pub_cpu_us_per_msg": 0.0, "pub_threads_cpu_s": {}}
    print("RESULT " + json.dumps(totals), flush=True)


# -- orchestration -------------------------------------------------------------------------------------------


class Child:
    """A child process speaking line by line on stdin/stdout; its stderr goes to ours."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, SCRIPT, *args] if args[0] == "--role" else [sys.executable, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    raise SystemExit(
                        f"child {self.proc.args!r} exited ({self.proc.returncode}) before {prefix!r}"
                    ) from None
                continue
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
        self.proc.kill()
        raise SystemExit(f"child {self.proc.args!r} sent no {prefix!r} within {timeout:g} s")

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()


def push_phase(args: argparse.Namespace, sub_role: str = "router", pub_role: str = "pub") -> dict[str, Any]:
    """One run of publishers and a subscriber over a fresh nats-server: ours, or the floor's bare nats-py pair."""
    from eagleeye_otel.nats_server import EmbeddedNatsServer

    children: list[Child] = []
    with EmbeddedNatsServer() as server:
        try:
            router_proc = Child("--role", sub_role, "--url", server.url, "--coalesce-ms", str(args.coalesce_ms))
            children.append(router_proc)
            router_proc.expect("READY", 60)
            common = ["--url", server.url, "--procs", str(args.procs), "--instances", str(args.instances)]
            common += ["--rate", str(args.rate)]
            pubs = [Child("--role", pub_role, "--proc", str(p), *common) for p in range(args.procs)]
            children += pubs
            connected = sum(int(p.expect("READY", 120)) for p in pubs)
            if connected < args.instances:
                print(f"  WARNING: only {connected} of {args.instances} publishers connected within 30 s")
            t0 = time.time() + 0.5
            router_proc.send(f"GO {t0 + args.warmup}")
            for p in pubs:
                p.send(f"GO {t0} {t0 + args.duration}")
            pub_results = [json.loads(p.expect("RESULT", args.duration + 60)) for p in pubs]
            time.sleep(0.5)  # messages still in flight reach the router
            router_proc.send("STOP")
            routed = json.loads(router_proc.expect("RESULT", 60))
            for child in children:
                child.proc.wait(10)
        finally:
            for child in children:
                if child.proc.poll() is None:
                    child.proc.kill()
    pub = {k: sum(r[k] for r in pub_results) for k in ("offered", "published", "coalesced", "dropped", "errors")}
    pub |= {"heartbeats": sum(r["heartbeats"] for r in pub_results), "connected_at_start": connected}
    pub["late_steps"] = sum(r["late_steps"] for r in pub_results)
    pub["late_max_ms"] = max(r["late_max_ms"] for r in pub_results)
    pub["loop_cpu_us_per_step"] = sum(r["loop_cpu_us_per_step"] for r in pub_results) / len(pub_results)
    threads: dict[str, float] = {}
    for r in pub_results:
        for name, cpu_s in r["pub_threads_cpu_s"].items():
            threads[name] = threads.get(name, 0.0) + cpu_s
    pub["pub_threads_cpu_s"] = threads
    pub["pub_cpu_us_per_msg"] = sum(threads.values()) * 1e6 / max(1, pub["published"] + pub["heartbeats"])
    pub["rate_msg_s"] = pub["offered"] / args.duration
    return {"publishers": pub, "router": routed, "lost": pub["published"] - routed["steps"]}


def scrape_phase(args: argparse.Namespace) -> dict[str, Any]:
    server = Child(str(Path(_scrape.__file__).resolve()), str(args.dump), str(args.rate))
    port = int(server.expect("READY", 30))
    try:
        polled = _scrape.poll(port, args.scrape_duration, args.warmup, args.poll_ms / 1e3)
    finally:
        server.send("STOP")
        server.proc.wait(10)
    ages, costs = polled.pop("ages"), polled.pop("costs")
    return {"age_ms": summarize(ages, 1e3), "fetch_parse_ms": summarize(costs, 1e3), **polled}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--instances", type=int, default=100, help="simulated vLLM instances (one publisher each)")
    p.add_argument("--procs", type=int, default=4, help="publisher processes sharing the instances")
    p.add_argument("--rate", type=float, default=50.0, help="engine steps per second per instance")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of push traffic per rep")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds discarded at the start of each phase")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--scrape-duration", type=float, help="seconds of scraping per rep (default: --duration)")
    p.add_argument("--poll-ms", type=float, default=50.0, help="scrape router poll interval")
    p.add_argument("--dump", type=Path, default=_scrape.DEFAULT_DUMP, help="vLLM /metrics text to serve")
    p.add_argument("--no-scrape", action="store_true")
    p.add_argument("--max-quiet-wait", type=float, default=60.0)
    p.add_argument("--no-floor", action="store_true", help="skip the bare nats-py floor")
    p.add_argument("--coalesce-ms", type=float, default=0.0, help="RouterClient(coalesce_reads=...) in ms (0: off)")
    p.add_argument("--role", choices=("router", "pub", "floor-sub", "floor-pub"), help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--proc", type=int, default=0, help=argparse.SUPPRESS)
    return p.parse_args()


def _row(label: str, agg: dict[str, dict[str, float]], target: str = "") -> list[str]:
    cells = [fmt(agg[k]["median"], 3) for k in ("p50", "p90", "p99", "p999", "max", "mean")]
    return [
        label,
        *cells,
        f"{fmt(agg['p50']['min'], 3)}-{fmt(agg['p50']['max'], 3)}",
        fmt(agg["n"]["median"], 0),
        target,
    ]


def report(reps: list[dict[str, Any]], args: argparse.Namespace) -> None:
    push = aggregate([r["push"]["router"]["latency_ms"] for r in reps])
    ok = push["p50"]["median"] <= TARGET_P50_MS and push["p99"]["median"] <= TARGET_P99_MS
    target = f"p50<={TARGET_P50_MS:g} p99<={TARGET_P99_MS:g}: {'PASS' if ok else 'FAIL'}"
    rows = [_row(f"push: step -> RouterClient ingest done ({args.instances} x {args.rate:g}/s)", push, target)]
    if not args.no_floor:
        floor = aggregate([r["floor"]["router"]["latency_ms"] for r in reps])
        rows.append(_row("floor: raw PUB frame -> bare nats-py callback (same rate)", floor, "baseline"))
    if not args.no_scrape:
        for label, key in (("scrape: age of data when parsed", "age_ms"), ("scrape: GET + parse", "fetch_parse_ms")):
            agg = aggregate([r["scrape"][key] for r in reps])
            rows.append(_row(f"{label} ({args.poll_ms:g} ms poll, 1 instance)", agg))
    heads = ["figure (ms)", "p50", "p90", "p99", "p99.9", "max", "mean", "p50 range", "n", "target"]
    print_table(heads, rows, "Step-to-router latency, ms (median over reps of per-rep percentiles)")
    ratio_rows = []
    for label, other in (("push / floor", "floor"), ("push / scrape data age", "scrape")):
        if all(other in r for r in reps):
            key = "latency_ms" if other == "floor" else "age_ms"
            base = [r[other]["router"][key] if other == "floor" else r[other][key] for r in reps]
            pairs = list(zip([r["push"]["router"]["latency_ms"] for r in reps], base, strict=True))
            cells = [fmt(aggregate([{"r": a[k] / b[k]} for a, b in pairs])["r"]["median"], 3) for k in ("p50", "p99")]
            ratio_rows.append([label, *cells])
    if ratio_rows:
        print_table(["ratio (median of per-rep ratios)", "p50", "p99"], ratio_rows)
    if not args.no_scrape:
        print(
            f"Note: a scrape router decides between polls, so at a random decision time its data is older still by "
            f"U(0, {args.poll_ms:g} ms) (mean +{args.poll_ms / 2:g} ms); it also sees only one step in "
            f"{args.poll_ms * args.rate / 1e3:g}, and parsing costs the router the CPU above per instance per poll."
        )
    count_rows = []
    for i, r in enumerate(reps, 1):
        pub, rt, lost = r["push"]["publishers"], r["push"]["router"], r["push"]["lost"]
        counts = [pub[k] for k in ("offered", "published", "coalesced")] + [pub["dropped"] + pub["errors"]]
        counts += [rt["steps"], lost, rt["gaps"], ",".join(rt["errors"]) or "-", pub["late_steps"]]
        cells = [*map(str, counts), fmt(pub["late_max_ms"], 1), fmt(r["push"]["other_load_cores"], 2)]
        count_rows.append([str(i), fmt(pub["rate_msg_s"], 0), *cells])
    heads = ["rep", "msg/s", "offered", "published", "coalesced", "dropped+err", "router steps", "lost", "seq gaps"]
    heads += ["NATS errors", "late steps", "late max ms", "other load (cores)"]
    print_table(heads, count_rows, "Message counts (all steps, warm-up included)")
    cpu_rows = []
    for i, r in enumerate(reps, 1):
        pub, rt = r["push"]["publishers"], r["push"]["router"]
        cells = [rt["cpu_us_per_msg"], rt["probe_us_per_msg"], rt["msgs_per_delivery"], pub["pub_cpu_us_per_msg"]]
        cells.append(pub["loop_cpu_us_per_step"])
        if "floor" in r:
            cells += [r["floor"]["router"]["cpu_us_per_msg"], r["floor"]["publishers"]["loop_cpu_us_per_step"]]
        cpu_rows.append([str(i), *(fmt(x, 1) for x in cells)])
    heads = ["rep", f"router CPU µs/msg (target <= {TARGET_ROUTER_US_PER_MSG:g})", "of which latency probe"]
    heads += ["msgs per read", "publisher threads CPU µs/msg", "engine-sim loop CPU µs/step"]
    if not args.no_floor:
        heads += ["floor: nats-py subscriber CPU µs/msg", "floor: raw publisher loop CPU µs/msg"]
    print_table(heads, cpu_rows, "CPU per message (thread CPU clocks; the router's is its event-loop thread's)")
    if not args.no_scrape:
        scrape_rows = [
            [
                str(i),
                str(r["scrape"]["polls"]),
                str(r["scrape"]["skipped_slots"]),
                fmt(r["scrape"]["cpu_ms_per_poll"], 2),
            ]
            for i, r in enumerate(reps, 1)
        ]
        print_table(["rep", "polls", "skipped poll slots", "router CPU ms/poll"], scrape_rows, "Scrape router")


def _print_phase(name: str, phase: dict[str, Any], load: float) -> None:
    lat, cpu = phase["router"]["latency_ms"], phase["router"]["cpu_us_per_msg"]
    print(
        f"  {name} p50 {lat['p50']:.3f} ms  p99 {lat['p99']:.3f} ms  max {lat['max']:.2f} ms  n {lat['n']:.0f}  "
        f"receiver CPU {cpu:.1f} µs/msg  (other load {load:.2f} cores)"
    )


def main() -> None:
    args = parse_args()
    if args.role in ("router", "floor-sub"):
        asyncio.run(router(args.url, args.coalesce_ms) if args.role == "router" else floor_subscriber(args.url))
        return
    if args.role in ("pub", "floor-pub"):
        run = publishers if args.role == "pub" else floor_publishers
        run(args.url, args.proc, args.procs, args.instances, args.rate)
        return
    for name in [n for n in os.environ if n.startswith("EAGLEEYE_")]:
        del os.environ[name]
    args.scrape_duration = args.scrape_duration or args.duration
    reps = []
    for rep in range(args.reps):
        quiet = wait_quiet(max_wait=args.max_quiet_wait)
        calib = calib_ns_per_iter()
        print(f"rep {rep + 1}/{args.reps}: quiet={quiet.quiet} (busy {quiet.busy:.0%}) calib={calib:.1f} ns/iter")
        other = OtherLoad()
        result: dict[str, Any] = {"quiet": quiet, "calib_ns_per_iter": calib, "push": push_phase(args)}
        result["push"]["other_load_cores"] = load = other.cores()
        _print_phase("push", result["push"], load)
        if not args.no_floor:
            other = OtherLoad()
            result["floor"] = push_phase(args, "floor-sub", "floor-pub")
            result["floor"]["other_load_cores"] = load = other.cores()
            _print_phase("floor", result["floor"], load)
        if not args.no_scrape:
            other = OtherLoad()
            result["scrape"] = scrape_phase(args)
            result["scrape"]["other_load_cores"] = load = other.cores()
            age = result["scrape"]["age_ms"]
            print(
                f"  scrape age p50 {age['p50']:.2f} ms  p99 {age['p99']:.2f} ms  polls {result['scrape']['polls']}",
                end="",
            )
            print(f"  (other load {load:.2f} cores)")
        reps.append(result)
    report(reps, args)
    print(f"results: {write_json('bench_latency', {'args': vars(args), 'machine': machine_info(), 'reps': reps})}")


if __name__ == "__main__":
    main()
