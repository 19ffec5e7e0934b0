"""What a vLLM user feels: a real ``vllm serve`` under steady streaming load, without and with Eagle Eye.

Each server is a fresh OpenAI-compatible vLLM (``python -m vllm.entrypoints.openai.api_server``): warmed up with
one wave of requests, then measured over ``--runs`` back-to-back runs of ``--requests`` streaming completions
(``/v1/completions``, ``stream``, ``ignore_eos``, ``--max-tokens`` each) from ``--concurrency`` clients in a
closed loop, then stopped. Arms, alternating in every round (``without, with`` then ``with, without``, so that a
drift hits both alike):

- ``without`` (named baseline): ``VLLM_PLUGINS`` names every installed vLLM plugin but ``eagle_eye``.
- ``with``: the plugin as installed: routing push to a real ``nats-server`` and OTel metrics (Prometheus reader on
  a free port); after the runs one scrape checks that its metrics are there.

Per run: output tokens per second over the run; TTFT, inter-token latency (gaps between streamed chunks; a lagging
API server sends several at once, so its p50 can be near zero) and time per output token (a request's last chunk
minus its first, over its tokens after the first), p50 and p99, as the client sees them; the CPU seconds of the
API-server process and of its children (the engine core) over the run, and the API server's per engine step
(vLLM's own ``vllm:iteration_tokens_total`` count at the run's edges). Printed: each arm's median over runs, the
ratio with/without (median over runs paired in a round) and the baseline's own run-to-run noise (ratios of
consecutive ``without`` runs). Target: every ratio within that noise.
Run: ``.venv/bin/python bench/bench_serving.py --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from _common import OUT_DIR, calib_ns_per_iter, fmt, machine_info, percentile, print_table, wait_quiet, write_json
from _record_setup import tiny_model
from bench_nats_outage import plugins_without_eagle_eye

from eagleeye_otel.nats_server import EmbeddedNatsServer, free_port

BASELINE, OURS = "without", "with"
SERVED_MODEL = "bench"
PROMPT = "Eagle Eye watches the serving loop while the model writes a long and steady answer:"
FIGURES = (
    ("tokens_per_s", "throughput, output tok/s"),
    ("ttft_p50_ms", "TTFT p50, ms"),
    ("ttft_p99_ms", "TTFT p99, ms"),
    ("itl_p50_ms", "inter-token p50, ms"),
    ("itl_p99_ms", "inter-token p99, ms"),
    ("tpot_p50_ms", "time per output token p50, ms"),
    ("tpot_p99_ms", "time per output token p99, ms"),
    ("api_cpu_s", "API-server CPU, s"),
    ("api_cpu_per_step_us", "API-server CPU per engine step, µs"),
    ("engine_cpu_s", "engine-core CPU, s"),
)


_STEPS = re.compile(rb"^vllm:iteration_tokens_total_count\{[^}]*\} (\S+)$", re.M)


class Server:
    """A vLLM OpenAI server in its own process group (so that stopping it stops its engine core too)."""

    def __init__(self, args: argparse.Namespace, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(args.model)]
        cmd += ["--served-model-name", SERVED_MODEL, "--max-model-len", str(args.max_model_len)]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port), "--disable-uvicorn-access-log"]
        if args.device == "cpu":
            cmd += ["--dtype", "float32", "--enforce-eager"]
        cmd += args.vllm_arg
        began = time.monotonic()
        with open(log, "wb") as out:
            self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        while not self._healthy():
            if self.process.poll() is not None or time.monotonic() - began > args.start_timeout:
                self.stop()
                sys.exit(f"vLLM did not become ready; see {log}")
            time.sleep(0.2)
        self.ready_s = time.monotonic() - began
        self.api = psutil.Process(self.process.pid)

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def steps(self) -> float:
        """Engine steps so far, from vLLM's own ``/metrics``."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as response:
            return float(_STEPS.findall(response.read())[0])

    def cpu_s(self) -> tuple[float, float]:
        """CPU seconds so far of the API-server process, and of its children (the engine core, workers)."""
        api = self.api.cpu_times()
        children = 0.0
        for child in self.api.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                times = child.cpu_times()
                children += times.user + times.system
        return api.user + api.system, children

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@dataclass
class Reply:
    """One streamed completion as the client saw it (perf_counter seconds)."""

    began: float
    chunks: list[float] = field(default_factory=list)
    """Arrival time of every chunk that carried text."""
    tokens: int = 0
    """``completion_tokens`` from the final usage chunk."""
    error: str | None = None


async def complete(session: aiohttp.ClientSession, url: str, max_tokens: int) -> Reply:
    body = {"model": SERVED_MODEL, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0.0}
    body |= {"ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    reply = Reply(time.perf_counter())
    try:
        async with session.post(f"{url}/v1/completions", json=body) as response:
            if response.status != 200:
                reply.error = f"HTTP {response.status}"
                return reply
            async for line in response.content:
                if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                    continue
                now = time.perf_counter()
                chunk = json.loads(line[6:])
                if chunk.get("choices"):
                    reply.chunks.append(now)
                if chunk.get("usage"):
                    reply.tokens = chunk["usage"]["completion_tokens"]
    except (aiohttp.ClientError, TimeoutError) as error:
        reply.error = repr(error)
    return reply


async def load(url: str, requests: int, concurrency: int, max_tokens: int) -> list[Reply]:
    """``requests`` completions, ``concurrency`` at a time (closed loop: each client sends the next when done)."""
    queue = iter(range(requests))
    replies: list[Reply] = []
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def client() -> None:
            for _ in queue:
                replies.append(await complete(session, url, max_tokens))

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return replies


def summarize_run(replies: list[Reply], max_tokens: int) -> dict[str, float]:
    ok = [r for r in replies if r.error is None and r.chunks and r.tokens == max_tokens]
    ttft = sorted(r.chunks[0] - r.began for r in ok)
    itl = sorted(b - a for r in ok for a, b in itertools.pairwise(r.chunks))
    tpot = sorted((r.chunks[-1] - r.chunks[0]) / (r.tokens - 1) for r in ok if r.tokens > 1)
    window = max(r.chunks[-1] for r in ok) - min(r.began for r in ok) if ok else float("nan")
    return {
        "tokens_per_s": sum(r.tokens for r in ok) / window,
        "ttft_p50_ms": percentile(ttft, 50) * 1e3,
        "ttft_p99_ms": percentile(ttft, 99) * 1e3,
        "itl_p50_ms": percentile(itl, 50) * 1e3,
        "itl_p99_ms": percentile(itl, 99) * 1e3,
        "tpot_p50_ms": percentile(tpot, 50) * 1e3,
        "tpot_p99_ms": percentile(tpot, 99) * 1e3,
        "window_s": window,
        "failed": float(len(replies) - len(ok)),
    }


def base_env(args: argparse.Namespace) -> dict[str, str]:
    """The caller's environment without Eagle Eye, vLLM or OTel settings (offline when the model is local)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EAGLEEYE_", "VLLM_", "OTEL_"))}
    env |= {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "EAGLEEYE_INSTANCE_ID": "bench-serving"}
    if Path(args.model).is_dir():
        env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    if args.device == "cpu":
        env["VLLM_CPU_KVCACHE_SPACE"] = str(args.cpu_kv_cache_gib)
    return env


def eagle_eye_metrics(port: int) -> bool:
    """Whether the plugin's Prometheus reader serves its vLLM metrics (one scrape, after the window)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            return b"gen_ai_server_time_to_first_token" in response.read()
    except OSError:
        return False


def run_arm(arm: str, args: argparse.Namespace, nats_url: str, log: Path) -> list[dict[str, Any]]:
    """Start a server for ``arm``, warm it up, measure ``args.runs`` runs back to back, stop it."""
    env = base_env(args)
    metrics_port = free_port()
    if arm == BASELINE:
        env["VLLM_PLUGINS"] = plugins_without_eagle_eye()
    else:
        env |= {"EAGLEEYE_NATS_URL": nats_url, "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1"}
        env["OTEL_EXPORTER_PROMETHEUS_PORT"] = str(metrics_port)
    quiet = wait_quiet(max_wait=args.max_quiet_wait)
    calib = calib_ns_per_iter()
    server = Server(args, env, log)
    runs = []
    try:
        asyncio.run(load(server.url, args.concurrency, args.concurrency, args.max_tokens))  # warm-up wave
        for _ in range(args.runs):
            steps0 = server.steps()
            api0, engine0 = server.cpu_s()
            replies = asyncio.run(load(server.url, args.requests, args.concurrency, args.max_tokens))
            api1, engine1 = server.cpu_s()
            steps = server.steps() - steps0
            result: dict[str, Any] = summarize_run(replies, args.max_tokens)
            result |= {"api_cpu_s": api1 - api0, "engine_cpu_s": engine1 - engine0, "steps": steps}
            result |= {"api_cpu_per_step_us": (api1 - api0) / max(steps, 1) * 1e6}
            result |= {"api_threads": server.api.num_threads(), "api_rss_mib": server.api.memory_info().rss / 2**20}
            result |= {"ready_s": server.ready_s, "quiet": quiet.quiet, "calib_ns": calib}
            runs.append(result)
        served = eagle_eye_metrics(metrics_port) if arm == OURS else None
    finally:
        server.stop()
    for result in runs:
        result["eagle_eye_metrics_served"] = served
    return runs


Rounds = list[dict[str, list[dict[str, Any]]]]
"""Per round, per arm, its runs in order."""


def report(rounds: Rounds, args: argparse.Namespace) -> None:
    baseline_runs = [run for r in rounds for run in r[BASELINE]]  # in time order within each arm
    pairs = [(w, o) for r in rounds for w, o in zip(r[BASELINE], r[OURS], strict=True)]
    rows = []
    for key, label in FIGURES:
        ratios = [o[key] / w[key] for w, o in pairs]
        noise = [b[key] / a[key] for a, b in itertools.pairwise(baseline_runs)]
        spread = max((abs(n - 1) for n in noise), default=float("nan"))
        ratio = statistics.median(ratios)
        verdict = "-" if spread != spread else ("within" if abs(ratio - 1) <= spread else "OUTSIDE")
        ratio_range = f"{fmt(min(ratios), 3)}-{fmt(max(ratios), 3)}"
        noise_runs = ", ".join(fmt(n, 3) for n in noise) or "-"
        medians = [fmt(statistics.median(run[key] for run in runs), 2) for runs in zip(*pairs, strict=True)]
        rows.append([label, *medians, fmt(ratio, 3), ratio_range, noise_runs, f"±{fmt(spread, 3)}", verdict])
    heads = ["figure", BASELINE, OURS, "with/without", "range", "noise: without/without", "noise", "ratio"]
    title = (
        f"{len(pairs)} run(s) per arm ({len(rounds)} rounds x {args.runs} runs per server) of {args.requests} "
        f"streaming completions x {args.max_tokens} tokens, concurrency {args.concurrency}, {args.device}; "
        "medians over runs; with/without = median of ratios of runs paired in a round; noise = consecutive "
        "baseline runs (ratio within noise: |ratio - 1| <= the largest |noise - 1|)"
    )
    print_table(heads, rows, title)
    extra = []
    for arm in (BASELINE, OURS):
        for key in ("ready_s", "steps", "api_threads", "api_rss_mib", "failed", "window_s"):
            extra.append([arm, key, ", ".join(fmt(run[key], 2) for r in rounds for run in r[arm])])
    print_table(["arm", "per run", "values (run order)"], extra, "Context")
    served = [r[OURS][0]["eagle_eye_metrics_served"] for r in rounds]
    print(f"\nEagle Eye's Prometheus reader served its vLLM metrics after each 'with' server: {served}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(OUT_DIR / "tiny-model"), help="a local dir or a model id (tiny by default)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cpu: float32, eager, a 1 GiB KV cache")
    p.add_argument("--rounds", type=int, default=2, help="each round runs both arms, each on a fresh server")
    p.add_argument("--runs", type=int, default=2, help="measured runs per server, back to back")
    p.add_argument("--requests", type=int, default=96, help="streaming completions per measured run")
    p.add_argument("--concurrency", type=int, default=12)
    p.add_argument("--max-tokens", type=int, default=64, help="tokens per completion (ignore_eos)")
    p.add_argument("--max-model-len", type=int, default=256)
    p.add_argument("--cpu-kv-cache-gib", type=int, default=1)
    p.add_argument("--vllm-arg", action="append", default=[], help="extra argument for vLLM, repeatable")
    p.add_argument("--start-timeout", type=float, default=600.0)
    p.add_argument("--max-quiet-wait", type=float, default=20.0)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.model == str(OUT_DIR / "tiny-model"):
        tiny_model(Path(args.model))
    # Warm the page cache for vLLM's imports, so that the first run does not pay for it alone.
    subprocess.run([sys.executable, "-c", "import vllm.entrypoints.openai.api_server"], check=True)
    rounds: Rounds = []
    with EmbeddedNatsServer() as nats:
        for index in range(args.rounds):
            arms = (BASELINE, OURS) if index % 2 == 0 else (OURS, BASELINE)
            results = {}
            for arm in arms:
                results[arm] = run_arm(arm, args, nats.url, OUT_DIR / f"serving-{arm}.log")
                for r in results[arm]:
                    print(
                        f"round {index + 1} {arm:7}: {r['tokens_per_s']:.0f} tok/s, TTFT p50 {r['ttft_p50_ms']:.1f} "
                        f"ms, TPOT p50 {r['tpot_p50_ms']:.2f} ms, API CPU {r['api_cpu_s']:.2f} s "
                        f"({r['api_cpu_per_step_us']:.0f} µs/step), failed {r['failed']:.0f}, "
                        f"ready {r['ready_s']:.0f} s",
                        flush=True,
                    )
            rounds.append(results)
    report(rounds, args)
    print(f"saved {write_json('bench_serving', {'machine': machine_info(), 'args': vars(args), 'rounds': rounds})}")


if __name__ == "__main__":
    main()
