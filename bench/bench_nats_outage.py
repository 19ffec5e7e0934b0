"""vLLM's step rate and ready time with Eagle Eye while NATS fails, beside vLLM without Eagle Eye, in one run.

Each case starts a real ``vllm serve`` on CPU (the e2e suite's tiny model), waits until ``/health`` answers (the
ready time), puts a closed-loop load on it (``--concurrency`` clients, each sending completions of up to
``--max-tokens`` one after another), and measures engine steps and generated tokens per second from vLLM's own
``/metrics`` over a ``--window`` of seconds. Cases, in every repetition in this order, each a fresh server:

- ``no_eagle_eye`` (named baseline): ``VLLM_PLUGINS`` lists every installed vLLM plugin but ``eagle_eye``.
- ``eagle_eye``: the plugin as installed, publishing to a real ``nats-server`` that stays up.
- ``eagle_eye_nats_killed``: the same, but ``nats-server`` gets SIGKILL as the window opens and comes back on its
  port when it closes: the window is the outage.
- ``eagle_eye_nats_unreachable``: the plugin pointed at a closed port and at a socket that accepts connections
  but never speaks; its ready time is the figure the issue asks about.
- ``no_eagle_eye_again``: the baseline once more, last, so that its ratio to the first shows the run-to-run noise.

Printed per case (median over repetitions, ratios to the baseline of the same repetition): the ready time; over
the window, steps and tokens per second (vLLM's counters at its edges) and the slowest whole second's steps (where a
stall would show); completions, their median latency and failed requests (any status but 200, or a short
completion, over the whole case); the API server's RSS growth; and the other load, in cores (machine busy time less
the CPU of this process, vLLM's processes and nats-server) while starting and in the window: a disturbed case.
Run: ``HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_nats_outage.py --help``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import psutil
from _common import OUT_DIR, calib_ns_per_iter, fmt, machine_info, print_table, wait_quiet, write_json
from _record_setup import tiny_model

from eagleeye_otel.nats_server import EmbeddedNatsServer, free_port

BASELINE = "no_eagle_eye"
CASES = (BASELINE, "eagle_eye", "eagle_eye_nats_killed", "eagle_eye_nats_unreachable", "no_eagle_eye_again")
_COUNTER = re.compile(rb"^(vllm:generation_tokens_total|vllm:iteration_tokens_total_count)\{[^}]*\} (\S+)$", re.M)


class Server:
    """``python -m vllm.entrypoints.openai.api_server`` in its own process group, logging to a file."""

    def __init__(self, model: Path, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        args = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model)]
        args += ["--served-model-name", "tiny", "--dtype", "float32", "--enforce-eager", "--max-model-len", "256"]
        args += ["--host", "127.0.0.1", "--port", str(self.port)]
        began = time.monotonic()
        with open(log, "wb") as out:
            self.process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        while self._get("/health") is None:
            if self.process.poll() is not None or time.monotonic() - began > 300:
                self.stop()
                sys.exit(f"vLLM did not become ready; see {log}")
            time.sleep(0.05)
        self.ready_s = time.monotonic() - began

    def _get(self, path: str) -> bytes | None:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                connection.request("GET", path)
                response = connection.getresponse()
                return response.read() if response.status == 200 else None
            finally:
                connection.close()
        except OSError:
            return None

    def counters(self) -> tuple[float, float, float]:
        """(monotonic time, generated tokens, engine steps) from vLLM's own ``/metrics``."""
        text = self._get("/metrics") or b""
        found = {name: float(value) for name, value in _COUNTER.findall(text)}
        return time.monotonic(), found[b"vllm:generation_tokens_total"], found[b"vllm:iteration_tokens_total_count"]

    def complete(self, max_tokens: int) -> tuple[int, int]:
        """One completion: (HTTP status or -1, completion tokens or -1)."""
        body = {"model": "tiny", "prompt": "A steady load", "max_tokens": max_tokens, "ignore_eos": True}
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            try:
                connection.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
                response = connection.getresponse()
                payload = response.read()
            finally:
                connection.close()
        except (OSError, http.client.HTTPException):
            return -1, -1
        tokens = json.loads(payload)["usage"]["completion_tokens"] if response.status == 200 else -1
        return response.status, tokens

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass


class Load:
    """Closed loop: ``concurrency`` threads, each sending one completion after another.

    Lengths are drawn from ``max_tokens // 2 .. max_tokens`` (seeded, the same sequence in every case), so that the
    clients drift apart instead of starting and finishing in lockstep waves. Each reply is (start, end, ok).
    """

    def __init__(self, server: Server, concurrency: int, max_tokens: int) -> None:
        self.replies: list[tuple[float, float, bool]] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(server, max_tokens, random.Random(i)), daemon=True)
            for i in range(concurrency)
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, server: Server, max_tokens: int, rng: random.Random) -> None:
        while not self._stop.is_set():
            wanted = rng.randint(max_tokens // 2, max_tokens)
            began = time.monotonic()
            status, tokens = server.complete(wanted)
            self.replies.append((began, time.monotonic(), status == 200 and tokens == wanted))

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(120)


def base_env() -> dict[str, str]:
    """The caller's environment without Eagle Eye, vLLM or OTel settings, offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EAGLEEYE_", "VLLM_", "OTEL_"))}
    env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    env |= {"VLLM_CPU_KVCACHE_SPACE": "1", "EAGLEEYE_INSTANCE_ID": "bench-nats-outage"}
    env |= {"OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1", "OTEL_EXPORTER_PROMETHEUS_PORT": str(free_port())}
    return env


def plugins_without_eagle_eye() -> str:
    groups = ("vllm.general_plugins", "vllm.platform_plugins", "vllm.stat_logger_plugins")
    names = {ep.name for group in groups for ep in entry_points(group=group)} - {"eagle_eye"}
    return ",".join(sorted(names)) or "none"


def run_case(case: str, model: Path, args: argparse.Namespace, silent_port: int) -> dict[str, Any]:
    env = base_env()
    nats = EmbeddedNatsServer() if case in ("eagle_eye", "eagle_eye_nats_killed") else None
    if case.startswith("no_eagle_eye"):
        env["VLLM_PLUGINS"] = plugins_without_eagle_eye()
    elif nats is not None:
        nats.start()
        env["EAGLEEYE_NATS_URL"] = nats.url
    else:
        env["EAGLEEYE_NATS_URL"] = f"nats://127.0.0.1:{free_port()},nats://127.0.0.1:{silent_port}"
    quiet = wait_quiet(max_wait=args.max_quiet_wait)
    calib = calib_ns_per_iter()
    busy_at_start, own_at_start = machine_busy_s(), cpu_of([psutil.Process()])
    server = Server(model, env, OUT_DIR / f"nats-outage-{case}.log")
    starting = [psutil.Process(), *psutil.Process(server.process.pid).children(recursive=True)]
    start_cpu = cpu_of(starting) - own_at_start + cpu_of([psutil.Process(server.process.pid)])
    other_at_start = (machine_busy_s() - busy_at_start - start_cpu) / server.ready_s
    load = Load(server, args.concurrency, args.max_tokens)
    try:
        while len(load.replies) < args.concurrency:
            time.sleep(0.05)
        time.sleep(args.warmup)
        api = psutil.Process(server.process.pid)
        watched = [psutil.Process(), api, *api.children(recursive=True)]
        if nats is not None and nats.pid is not None:
            watched.append(psutil.Process(nats.pid))
        rss0, cpu0, busy0 = api.memory_info().rss, cpu_of(watched), machine_busy_s()
        samples = [server.counters()]
        t0 = samples[0][0]
        if case == "eagle_eye_nats_killed" and nats is not None and nats.pid is not None:
            os.kill(nats.pid, signal.SIGKILL)
            nats.stop()
        rss_max = rss0
        while time.monotonic() - t0 < args.window:
            time.sleep(0.25)
            samples.append(server.counters())
            rss_max = max(rss_max, api.memory_info().rss)
        t1, tokens1, steps1 = samples[-1]
        other = (machine_busy_s() - busy0 - (cpu_of(watched) - cpu0)) / (t1 - t0)
        if case == "eagle_eye_nats_killed" and nats is not None:
            nats.start()
    finally:
        load.stop()
        server.stop()
        if nats is not None:
            nats.stop()
    inside = [end - began for began, end, _ in load.replies if t0 <= began and end <= t1]
    return {
        "ready_s": server.ready_s,
        "steps_per_s": (steps1 - samples[0][2]) / (t1 - t0),
        "tokens_per_s": (tokens1 - samples[0][1]) / (t1 - t0),
        "slowest_second_steps": slowest_second(samples),
        "completions": len(inside),
        "latency_p50_ms": statistics.median(inside) * 1e3 if inside else float("nan"),
        "failed": sum(1 for _, _, ok in load.replies if not ok),
        "rss_growth_mib": (rss_max - rss0) / 2**20,
        "other_load": other,
        "other_load_at_start": other_at_start,
        "quiet": quiet.quiet,
        "calib_ns": calib,
    }


def slowest_second(samples: list[tuple[float, float, float]]) -> float:
    """The fewest engine steps in any whole second of the window, from the samples bracketing each second."""
    t0, t1 = samples[0][0], samples[-1][0]
    fewest = float("inf")
    for k in range(int(t1 - t0)):
        before = [s for s in samples if s[0] <= t0 + k][-1]
        after = next(s for s in samples if s[0] >= t0 + k + 1)
        fewest = min(fewest, (after[2] - before[2]) / (after[0] - before[0]))
    return fewest


def cpu_of(processes: list[psutil.Process]) -> float:
    """User and system CPU seconds of these processes so far (ones that ended count as nothing)."""
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def machine_busy_s() -> float:
    """CPU seconds all cores have been busy since boot (steal counts as busy)."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + t.irq + t.softirq + t.steal)


def silent_listener() -> socket.socket:
    """A socket that accepts TCP connections (the kernel's backlog) and never sends a byte: a stuck NATS."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--reps", type=int, default=1, help="repetitions of all five cases (~4 min each)")
    parser.add_argument("--window", type=float, default=10.0, help="seconds measured; the outage's length")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before the window")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128, help="completions ask for half of it up to all")
    parser.add_argument("--max-quiet-wait", type=float, default=30.0)
    parser.add_argument("--model", type=Path, default=OUT_DIR / "tiny-model")
    parser.add_argument("--cases", default=",".join(CASES), help="a subset, comma-separated, in the order given")
    args = parser.parse_args()
    args.cases = [c for c in args.cases.split(",") if c]
    if unknown := set(args.cases) - set(CASES):
        parser.error(f"unknown cases {sorted(unknown)}; choose from {', '.join(CASES)}")
    model = tiny_model(args.model)
    # Warm the page cache for vLLM's imports, so that the first case does not pay for it alone.
    subprocess.run([sys.executable, "-c", "import vllm.entrypoints.openai.api_server"], env=base_env(), check=True)
    listener = silent_listener()
    runs: list[dict[str, dict[str, Any]]] = []
    for rep in range(args.reps):
        results: dict[str, dict[str, Any]] = {}
        for case in args.cases:
            results[case] = run_case(case, model, args, listener.getsockname()[1])
            r = results[case]
            print(
                f"rep {rep + 1} {case}: ready {r['ready_s']:.2f} s, {r['steps_per_s']:.0f} steps/s, "
                f"{r['tokens_per_s']:.0f} tokens/s, failed {r['failed']}, other load {r['other_load_at_start']:.2f} "
                f"at start, {r['other_load']:.2f} in the window",
                flush=True,
            )
        runs.append(results)
    listener.close()
    report(runs, args)


def report(runs: list[dict[str, dict[str, Any]]], args: argparse.Namespace) -> None:
    measured = [case for case in CASES if case in runs[0]]
    nan = float("nan")

    def median(case: str, key: str) -> float:
        return statistics.median(float(run[case][key]) for run in runs)

    def ratio(case: str, key: str) -> float:
        """Median over repetitions of the case's figure over the baseline's in the same repetition."""
        if BASELINE not in measured or case not in measured:
            return nan
        return statistics.median(run[case][key] / run[BASELINE][key] for run in runs)

    def later(case: str) -> float:
        """Median over repetitions of how much later than the baseline the case became ready, in seconds."""
        if BASELINE not in measured or case not in measured:
            return nan
        return statistics.median(run[case]["ready_s"] - run[BASELINE]["ready_s"] for run in runs)

    rows = []
    for case in measured:
        rows.append(
            [
                case + (" (baseline)" if case == BASELINE else ""),
                fmt(median(case, "ready_s"), 2),
                fmt(later(case), 2),
                fmt(median(case, "steps_per_s"), 0),
                fmt(ratio(case, "steps_per_s"), 3),
                fmt(median(case, "slowest_second_steps"), 0),
                fmt(ratio(case, "slowest_second_steps"), 3),
                fmt(median(case, "tokens_per_s"), 0),
                fmt(ratio(case, "tokens_per_s"), 3),
                fmt(median(case, "latency_p50_ms"), 0),
                str(sum(run[case]["completions"] for run in runs)),
                str(sum(run[case]["failed"] for run in runs)),
                fmt(max(run[case]["rss_growth_mib"] for run in runs), 1),
                fmt(max(run[case]["other_load_at_start"] for run in runs), 2),
                fmt(max(run[case]["other_load"] for run in runs), 2),
                str(all(run[case]["quiet"] for run in runs)),
            ]
        )
    headers = ["case", "ready s", "later s", "steps/s", "vs base", "slowest s", "vs base", "tokens/s", "vs base"]
    headers += ["p50 ms", "done", "failed", "RSS +MiB", "other at start", "other load", "quiet"]
    print_table(headers, rows, f"{len(runs)} repetition(s), window {args.window:g} s, median over repetitions")
    again = "no_eagle_eye_again"
    print(
        f"\nrun-to-run noise ({again} vs {BASELINE}): steps/s x{ratio(again, 'steps_per_s'):.3f}, "
        f"tokens/s x{ratio(again, 'tokens_per_s'):.3f}, ready {later(again):+.2f} s. Targets: the step rate with NATS "
        "killed within that noise of the baseline; ready with NATS unreachable no later than the baseline."
    )
    path = write_json("bench_nats_outage", {"machine": machine_info(), "args": vars(args), "runs": runs})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
