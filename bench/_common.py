"""Shared helpers for Eagle Eye's benchmarks: percentiles, an idle gate, a reference loop, tables and JSON.

The method follows ``reference/baselines.md``: before each repetition wait until the whole machine is idle
(:func:`wait_quiet`), time a fixed pure-Python loop (:func:`calib_ns_per_iter`) so that host speed changes show,
compute percentiles per repetition, and report the median over repetitions of each percentile with its range.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "OUT_DIR",
    "OtherLoad",
    "Quiet",
    "aggregate",
    "calib_ns_per_iter",
    "cpu_busy",
    "fmt",
    "machine_info",
    "percentile",
    "print_table",
    "raw_nats_connection",
    "rss_bytes",
    "summarize",
    "thread_cpu_ns",
    "wait_pong",
    "wait_quiet",
    "write_json",
]

OUT_DIR = Path(__file__).resolve().parent / "out"
"""Where results go (git-ignored)."""

PERCENTILES: tuple[tuple[str, float], ...] = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9))


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of already sorted values, linearly interpolated; NaN when empty."""
    n = len(sorted_values)
    if n == 0:
        return float("nan")
    rank = (n - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, n - 1)
    return float(sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low))


def summarize(values: Iterable[float], scale: float = 1.0) -> dict[str, float]:
    """p50/p90/p99/p99.9, mean, max and count of ``values``, each multiplied by ``scale`` (e.g. ns → µs)."""
    data = sorted(values)
    out = {name: percentile(data, q) * scale for name, q in PERCENTILES}
    out["mean"] = (sum(data) / len(data)) * scale if data else float("nan")
    out["max"] = data[-1] * scale if data else float("nan")
    out["n"] = float(len(data))
    return out


def aggregate(per_rep: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """For each key: median over repetitions, and min/max across them (the 'range' of baselines.md)."""
    keys = [k for k in per_rep[0] if all(k in r for r in per_rep)] if per_rep else []
    result: dict[str, dict[str, float]] = {}
    for key in keys:
        values = [float(r[key]) for r in per_rep]
        result[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    return result


# -- machine state -------------------------------------------------------------------------------------------


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat; steal counts as busy."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user/nice
    return total - idle, total


def cpu_busy(interval: float) -> float:
    """Fraction (0..1) of all CPUs busy over the next ``interval`` seconds."""
    busy0, total0 = _cpu_times()
    time.sleep(interval)
    busy1, total1 = _cpu_times()
    return (busy1 - busy0) / max(1, total1 - total0)


@dataclass(frozen=True)
class Quiet:
    """Outcome of :func:`wait_quiet`: whether the machine went idle, after how long, and its last busy share."""

    quiet: bool
    waited_s: float
    busy: float


def wait_quiet(threshold: float = 0.12, window: float = 1.0, max_wait: float = 60.0) -> Quiet:
    """Wait until the whole machine is less than ``threshold`` busy for ``window`` seconds, at most ``max_wait``.

    Returns the outcome instead of failing: on a shared machine the run goes on, flagged as not quiet.
    """
    start = time.monotonic()
    busy = 1.0
    while True:
        busy = cpu_busy(window)
        waited = time.monotonic() - start
        if busy < threshold:
            return Quiet(True, waited, busy)
        if waited >= max_wait:
            return Quiet(False, waited, busy)


class OtherLoad:
    """How busy the rest of the machine was while a measurement ran: a noise flag, in cores on average.

    Machine busy time (/proc/stat) minus this process's CPU and that of its children already waited for; kernel
    time spent on our own loopback traffic (softirq) is not attributed to us, so small values are normal.
    """

    def __init__(self) -> None:
        self._busy0 = _cpu_times()[0]
        self._own0 = _own_cpu_s()
        self._t0 = time.monotonic()

    def cores(self) -> float:
        busy_s = (_cpu_times()[0] - self._busy0) / os.sysconf("SC_CLK_TCK")
        return max(0.0, busy_s - (_own_cpu_s() - self._own0)) / max(1e-9, time.monotonic() - self._t0)


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def thread_cpu_ns() -> dict[int, tuple[str, int]]:
    """CPU time (ns) of every thread of this process, by kernel thread id, with its name.

    Read from each thread's CPU clock (nanoseconds; ``/proc``'s utime and stime count 10 ms ticks). The name is
    Python's for a Python thread, else the kernel's (``/proc/self/task/<tid>/comm``). A thread that exits between
    two samples is missing from the second: compare the sum with the process's CPU to see what was lost.
    """
    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    out: dict[int, tuple[str, int]] = {}
    for entry in os.listdir("/proc/self/task"):
        tid = int(entry)
        try:
            ns = time.clock_gettime_ns(((~tid) << 3) | _CPUCLOCK_PERTHREAD_SCHED)
            name = names.get(tid) or Path(f"/proc/self/task/{tid}/comm").read_text(encoding="utf-8").strip()
        except OSError:
            continue  # exited meanwhile
        out[tid] = (name, ns)
    return out


_CPUCLOCK_PERTHREAD_SCHED = 6
"""Linux's clock id of a thread's CPU time is ``(~tid << 3) | 6`` (per-thread, scheduler clock): the same clock
``pthread_getcpuclockid`` gives, for threads that Python did not start too."""


def calib_ns_per_iter(iterations: int = 300_000) -> float:
    """A fixed pure-Python reference loop, ns per iteration (best of 3): moves with host speed, not with our code."""
    best = float("inf")
    for _ in range(3):
        acc = 0
        t0 = time.perf_counter_ns()
        for i in range(iterations):
            acc = (acc + i * 7) ^ (i >> 3)
        best = min(best, (time.perf_counter_ns() - t0) / iterations)
    return best


def rss_bytes() -> int:
    """Resident set size of this process, from /proc/self/statm."""
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def machine_info() -> dict[str, Any]:
    """What the figures were measured on."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "loadavg": os.getloadavg(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# -- output --------------------------------------------------------------------------------------------------


def fmt(value: float, digits: int = 1) -> str:
    """A number for a table cell; '-' for NaN."""
    if value != value:  # NaN
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], title: str | None = None) -> None:
    """A Markdown-style table on stdout, columns padded to their widest cell."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    if title:
        print(f"\n{title}")
    print("| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


def _jsonable(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    if isinstance(value, float) and value != value:
        return None
    return str(value)


def write_json(name: str, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` to ``bench/out/<name>-<timestamp>.json`` and return the path."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    return path


# -- NATS by hand: the floors some benchmarks compare with ------------------------------------------------------


def raw_nats_connection(url: str, *, name: str = "bench-floor") -> socket.socket:
    """A NATS connection by hand (``nats://host:port``): read INFO, send CONNECT, wait for the PONG confirming it."""
    host, port = url.removeprefix("nats://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.recv(65536)  # INFO
    sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"name":"%s"}\r\nPING\r\n' % name.encode())
    wait_pong(sock)
    return sock


def wait_pong(sock: socket.socket) -> None:
    """Read until the server's PONG (what follows a PING we sent)."""
    data = b""
    while b"PONG" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("nats-server closed the connection")
        data += chunk
