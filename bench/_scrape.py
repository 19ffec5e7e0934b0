"""The scrape-router baseline of bench_latency.py: a vLLM-like /metrics endpoint and a router that polls it.

The server serves the real 58 KB vLLM 0.32 ``/metrics`` dump with live values substituted at every simulated
step (``rate`` a second on average, each interval uniform in 0.5-1.5 periods, so that steps and polls do not
phase-lock; waiting, running, KV-cache usage, plus one extra gauge holding the step's Unix time, so the router can
tell how old what it reads is). It renders the body at each step instead of calling ``generate_latest`` at each
GET, which spares the scrape ~6 ms per request (baselines.md §1): the baseline is optimistic for scraping.
The poller GETs on a keep-alive connection every ``interval`` and parses with prometheus_client's parser.
"""

from __future__ import annotations

import http.client
import random
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["DEFAULT_DUMP", "poll", "serve"]

DEFAULT_DUMP = Path("/work/shared/reference/vllm-0.32-metrics-dump.txt")
WAITING, RUNNING, KV = "vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc"
STEP_TS = "eagle_eye_bench_step_timestamp_seconds"
_LIVE = (WAITING, RUNNING, KV, STEP_TS)


def _template(dump: Path) -> list[str | int]:
    """The dump as text pieces and slot numbers (index into ``_LIVE``) where live values go."""
    text = dump.read_text(encoding="utf-8").rstrip("\n")
    text += f"\n# HELP {STEP_TS} Unix time of the engine step these values are from.\n# TYPE {STEP_TS} gauge\n"
    text += STEP_TS + '{engine="0"} 0.0\n'
    pieces: list[str | int] = []
    buf: list[str] = []
    for line in text.splitlines(keepends=True):
        slot = next((i for i, name in enumerate(_LIVE) if line.startswith(name + "{")), None)
        if slot is None or 'engine="0"' not in line:
            buf.append(line)
            continue
        head = line.rsplit(" ", 1)[0]
        buf.append(head + " ")
        pieces += ["".join(buf), slot]
        buf = ["\n"]
    pieces.append("".join(buf))
    found = {p for p in pieces if isinstance(p, int)}
    if found != set(range(len(_LIVE))):
        raise SystemExit(f"{dump}: did not find every live gauge ({sorted(found)})")
    return pieces


def serve(dump: Path, rate: float) -> None:
    """Serve the dump on a free port, updating it ``rate`` times a second; prints ``READY port``, stops on EOF."""
    pieces = _template(dump)
    current = {"body": b""}
    rng = random.Random(2)

    def render(values: tuple[float, ...]) -> bytes:
        return "".join(p if isinstance(p, str) else repr(float(values[p])) for p in pieces).encode()

    def tick() -> None:
        period, next_t = 1.0 / rate, time.monotonic()
        while True:
            values = (rng.randint(0, 8), 32 + rng.randint(-2, 2), rng.uniform(0.5, 0.7), time.time())
            current["body"] = render(values)
            next_t += period * rng.uniform(0.5, 1.5)  # engine steps are not periodic: no phase lock with the poll
            time.sleep(max(0.0, next_t - time.monotonic()))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_GET(self) -> None:
            body = current["body"]
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    current["body"] = render((0, 0, 0.0, time.time()))
    threading.Thread(target=tick, daemon=True).start()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"READY {server.server_address[1]}", flush=True)
    sys.stdin.readline()
    server.shutdown()


def poll(port: int, duration: float, warmup: float, interval: float) -> dict[str, Any]:
    """Poll every ``interval`` s for ``duration`` s; per poll after ``warmup``: age of the data and fetch+parse time."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    ages, costs = [], []
    skipped = total = 0
    start = next_t = time.monotonic()
    cpu0 = time.process_time()
    while (now := time.monotonic()) - start < duration:
        if next_t > now:
            time.sleep(next_t - now)
        t0 = time.perf_counter()
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        values = {f.name: f.samples[0].value for f in text_string_to_metric_families(text) if f.name in _LIVE}
        done = time.time()
        cost = time.perf_counter() - t0
        total += 1
        if time.monotonic() - start >= warmup:
            ages.append(done - values[STEP_TS])
            costs.append(cost)
        next_t += interval
        if next_t < time.monotonic():  # the poll overran its slot: skip to the next one, as a poller would
            missed = int((time.monotonic() - next_t) / interval) + 1
            skipped += missed
            next_t += missed * interval
    conn.close()
    cpu_ms = (time.process_time() - cpu0) * 1e3 / max(1, total)
    return {"ages": ages, "costs": costs, "polls": total, "skipped_slots": skipped, "cpu_ms_per_poll": cpu_ms}


if __name__ == "__main__":
    serve(Path(sys.argv[1]), float(sys.argv[2]))
