"""What one engine step's ``record()`` costs vLLM's event loop: Eagle Eye's stat logger vs vLLM's own.

Real ``VllmConfig`` of a tiny local model (no engine started), real vLLM loggers, and our
``EagleEyeStatLogger`` as vLLM builds it, with a real nats-server so that its publisher really sends. Both get
the same pool of recorded steps, shaped like 32 decoding requests (``reference/baselines.md`` §1). Whatever
``record()`` does at run time is measured, OTel instruments included, and the CPU that background threads
(publisher, metrics drain, readers) spend per step is reported beside it: it leaves vLLM's event loop but not
the process. Run: ``HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_record.py --help``.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import (
    OUT_DIR,
    OtherLoad,
    aggregate,
    calib_ns_per_iter,
    fmt,
    machine_info,
    print_table,
    summarize,
    wait_quiet,
    write_json,
)
from _record_rss import measure_rss
from _record_setup import (
    BASELINE,
    CASES,
    MANAGER,
    MANAGER_OURS,
    OURS,
    Step,
    build_loggers,
    install_sdk_meter_provider,
    make_pool,
    metrics_handle,
    runtime_info,
    tiny_model,
    vllm_config,
    wait_connected,
)

from eagleeye_otel.nats_server import EmbeddedNatsServer, free_port

TARGET_P50_US, TARGET_P99_US, TARGET_RSS_MB = 10.0, 50.0, 20.0
OURS_CASES = (OURS, MANAGER_OURS)
Record = Callable[..., Any]


# -- measurement ---------------------------------------------------------------------------------------------


def thread_cpu_ns() -> dict[str, int]:
    """CPU time of every Python thread but the main one, by thread name."""
    out: dict[str, int] = {}
    for thread in threading.enumerate():
        if thread is threading.main_thread() or thread.ident is None:
            continue
        try:
            ns = time.clock_gettime_ns(time.pthread_getcpuclockid(thread.ident))
        except (OSError, AttributeError):
            continue
        out[thread.name] = out.get(thread.name, 0) + ns
    return out


def settle(window_s: float = 0.25, max_s: float = 5.0) -> None:
    """Wait until other threads of this process use < 1% of a core over ``window_s`` (> the drain interval)."""
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        p0, m0 = time.process_time_ns(), time.thread_time_ns()
        time.sleep(window_s)
        if (time.process_time_ns() - p0) - (time.thread_time_ns() - m0) < window_s * 1e7:
            return


def run_case(record: Record, pool: list[Step], calls: int, pace_s: float) -> tuple[array[int], dict[str, Any]]:
    """Time ``calls`` record() calls; returns latencies (ns) and the CPU other threads spent for them.

    Work a run leaves queued (a drain, the publisher catching up) is waited for and counted with the run.
    """
    settle()
    lat = array("q", bytes(8 * calls))
    n, clock, sleep = len(pool), time.perf_counter_ns, time.sleep
    threads0, proc0, main0 = thread_cpu_ns(), time.process_time_ns(), time.thread_time_ns()
    for i in range(calls):
        sched, it = pool[i % n]
        t0 = clock()
        record(sched, it, mm_cache_stats=None, engine_idx=0)
        lat[i] = clock() - t0
        if pace_s:
            sleep(pace_s)
    settle()
    bg_ns = (time.process_time_ns() - proc0) - (time.thread_time_ns() - main0)
    threads1 = thread_cpu_ns()
    by_thread = {k: (v - threads0.get(k, 0)) / calls / 1e3 for k, v in threads1.items() if v > threads0.get(k, 0)}
    record_us = sum(lat) / calls / 1e3
    bg_us = max(0, bg_ns) / calls / 1e3
    return lat, {"record_mean": record_us, "bg_cpu": bg_us, "total_cpu": record_us + bg_us, "bg_by_thread": by_thread}


def plugin_counts(publisher: Any, handle: Any) -> dict[str, int]:
    """Cumulative counters of the routing publisher and of the metrics queue (steps dropped before a drain)."""
    counts: dict[str, int] = {}
    if publisher is not None:
        s = publisher.stats
        counts = {k: getattr(s, k, 0) for k in ("offered", "published", "coalesced", "dropped", "heartbeats", "errors")}
    if handle is not None:
        counts["metrics_dropped"] = int(getattr(handle, "dropped", 0))
    return counts


# -- report --------------------------------------------------------------------------------------------------


def _numeric(runs: list[dict[str, Any]]) -> list[dict[str, float]]:
    return [{k: v for k, v in r.items() if isinstance(v, int | float)} for r in runs]


def report(results: dict[str, list[dict[str, Any]]], plugin_runs: dict[str, list[dict[str, int]]]) -> None:
    rows, ratio_rows, thread_rows = [], [], []
    for group in sorted({k.rsplit("|", 1)[0] for k in results}):
        regime, variant = group.split("|")
        runs = {c: results[f"{group}|{c}"] for c in CASES if f"{group}|{c}" in results}
        per = {c: aggregate(_numeric(r)) for c, r in runs.items()}
        for case, agg in per.items():
            target = ""
            if case == OURS:
                ok = agg["p50"]["median"] <= TARGET_P50_US and agg["p99"]["median"] <= TARGET_P99_US
                target = f"p50<={TARGET_P50_US:g} p99<={TARGET_P99_US:g}: {'PASS' if ok else 'FAIL'}"
            rows.append(
                [regime, variant, case, *(fmt(agg[k]["median"], 2) for k in ("p50", "p90", "p99", "p999"))]
                + [f"{fmt(agg[k]['min'])}-{fmt(agg[k]['max'])}" for k in ("p50", "p99")]
                + [fmt(agg[k]["median"], 2) for k in ("record_mean", "bg_cpu", "total_cpu")]
                + [target]
            )
            if case in OURS_CASES:
                names = sorted({name for r in runs[case] for name in r["bg_by_thread"]})
                for name in names:
                    agg_t = aggregate([{"v": r["bg_by_thread"].get(name, 0.0)} for r in runs[case]])["v"]
                    thread_rows.append([regime, variant, case, name, fmt(agg_t["median"], 2)])
        for ref in (BASELINE, MANAGER):
            if OURS in per and ref in per:
                pairs = list(zip(runs[OURS], runs[ref], strict=True))
                ratio = {k: aggregate([{"r": a[k] / b[k]} for a, b in pairs])["r"]["median"] for k in ("p50", "p99")}
                below = all(per[OURS][k]["median"] < per[ref][k]["median"] for k in ("p50", "p99"))
                rows_ = [fmt(ratio["p50"], 3), fmt(ratio["p99"], 3), "PASS" if below else "FAIL"]
                ratio_rows.append([regime, variant, f"{OURS} / {ref}", *rows_])
        if MANAGER in per and MANAGER_OURS in per:
            d = {k: per[MANAGER_OURS][k]["median"] - per[MANAGER][k]["median"] for k in ("p50", "p99")}
            marginal = [fmt(d["p50"], 2), fmt(d["p99"], 2), "marginal cost; a noisy difference"]
            ratio_rows.append([regime, variant, "(manager+eagle_eye) - manager, µs", *marginal])
    heads: list[str] = ["regime", "variant", "logger", "p50", "p90", "p99", "p99.9", "p50 range", "p99 range"]
    heads += ["mean", "bg CPU/step", "total CPU/step", "target (ours)"]
    print_table(heads, rows, "record() latency, µs (median over reps of per-rep percentiles; CPU/step = mean µs)")
    print_table(
        ["regime", "variant", "ratio", "p50", "p99", "ours below vLLM's (p50 and p99)"],
        ratio_rows,
        "Eagle Eye vs vLLM's own loggers (median of per-rep ratios)",
    )
    if thread_rows:
        title = "Background CPU of the plugin's threads, µs per recorded step (median over reps)"
        print_table(["regime", "variant", "logger", "thread", "µs/step"], thread_rows, title)
    plugin_rows = []
    for key, rs in sorted(plugin_runs.items()):
        fields = ("offered", "published", "coalesced", "dropped", "errors", "metrics_dropped")
        plugin_rows.append([key.replace("|", " "), *(str(sum(r.get(k, 0) for r in rs)) for k in fields)])
    if plugin_rows:
        heads = ["run", "offered", "published", "coalesced", "dropped", "errors", "metrics steps dropped"]
        print_table(heads, plugin_rows, "Routing publisher and metrics queue during the runs (sum over reps)")


def report_rss(rss: list[dict[str, Any]]) -> None:
    rows = []
    for r in rss:
        target = ""
        if r["case"] == OURS:
            target = f"<= {TARGET_RSS_MB:g} MB: {'PASS' if r['added_mb'] <= TARGET_RSS_MB else 'FAIL'}"
        sizes = (fmt(r[k], 1) for k in ("rss_before_mb", "import_mb", "construct_mb", "exercise_mb", "added_mb"))
        rows.append([r["case"], *sizes, str(r["threads_added"]), target])
    heads = ["logger", "RSS before", "+import", "+construct", "+3000 steps", "added", "threads", "target"]
    print_table(heads, rows, "RSS a logger adds to a vLLM process, MB (fresh child process each)")


# -- main ----------------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=100_000, help="calls per case per rep, tight regime")
    p.add_argument("--paced-calls", type=int, default=10_000, help="calls per case per rep, paced regime")
    p.add_argument("--pace-us", type=float, default=1000.0, help="sleep between paced calls (µs)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--pool", type=int, default=1000, help="distinct recorded steps")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma list of {', '.join(CASES)}")
    p.add_argument("--variants", default="faithful,stats_only", help="faithful, stats_only (iteration_stats=None)")
    p.add_argument("--regimes", default="tight,paced")
    p.add_argument(
        "--meter-provider",
        choices=("runtime", "sdk"),
        default="runtime",
        help="runtime: what the plugin picks by itself (its own pipeline from OTEL_* when no SDK provider is "
        "global); sdk: a global OTel SDK provider (InMemoryMetricReader) first, as opentelemetry-instrument would",
    )
    p.add_argument("--no-rss", action="store_true", help="skip the RSS child processes")
    p.add_argument("--max-quiet-wait", type=float, default=60.0, help="seconds to wait for an idle machine")
    p.add_argument("--model", type=Path, default=OUT_DIR / "tiny-model", help="built on first use")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    cases = [c for c in args.cases.split(",") if c]
    if set(cases) - set(CASES):
        raise SystemExit(f"unknown cases: {sorted(set(cases) - set(CASES))}")
    for name in [n for n in os.environ if n.startswith("EAGLEEYE_")]:
        del os.environ[name]  # the developer's own settings must not change what is measured
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_NO_USAGE_STATS="1")
    os.environ.setdefault("OTEL_EXPORTER_PROMETHEUS_PORT", str(free_port()))  # not :9464, which may be taken
    model = tiny_model(args.model)
    sdk = args.meter_provider == "sdk"
    with EmbeddedNatsServer() as server:
        os.environ.update(EAGLEEYE_NATS_URL=server.url, EAGLEEYE_INSTANCE_ID="bench-record")
        rss = [] if args.no_rss else measure_rss([BASELINE, OURS], model, sdk)
        cfg = vllm_config(model)
        pools = {v: make_pool(args.pool, faithful=v == "faithful") for v in args.variants.split(",")}
        if sdk:
            install_sdk_meter_provider()
        loggers = build_loggers(cfg, cases)
        if MANAGER in loggers:
            print("vllm_manager loggers:", [type(x).__name__ for x in loggers[MANAGER].stat_loggers])
        publisher, info = runtime_info() if set(OURS_CASES) & set(cases) else (None, {})
        handle = metrics_handle(loggers)
        info["connected"] = wait_connected(publisher)
        print("Eagle Eye plugin:", info, "| threads:", sorted(t.name for t in threading.enumerate()))
        results: dict[str, list[dict[str, Any]]] = {}
        plugin_runs: dict[str, list[dict[str, int]]] = {}
        reps_meta = []
        regimes = [(r, args.calls if r == "tight" else args.paced_calls) for r in args.regimes.split(",")]
        for rep in range(args.reps):
            quiet = wait_quiet(max_wait=args.max_quiet_wait)
            calib = calib_ns_per_iter()
            reps_meta.append({"quiet": quiet, "calib_ns_per_iter": calib, "loadavg": os.getloadavg()})
            print(
                f"\nrep {rep + 1}/{args.reps}: quiet={quiet.quiet} (busy {quiet.busy:.0%}, "
                f"waited {quiet.waited_s:.1f} s) calib={calib:.1f} ns/iter"
            )
            other = OtherLoad()
            order = cases[rep % len(cases) :] + cases[: rep % len(cases)]  # rotate: no case always runs first
            for regime, calls in regimes:
                pace = args.pace_us / 1e6 if regime == "paced" else 0.0
                for variant, pool in pools.items():
                    for case in order:
                        before = plugin_counts(publisher, handle)
                        lat, cpu = run_case(loggers[case].record, pool, calls, pace)
                        after = plugin_counts(publisher, handle)
                        summary = {**summarize(lat, 1e-3), **cpu, "calib": calib}
                        key = f"{regime}|{variant}|{case}"
                        results.setdefault(key, []).append(summary)
                        if case in OURS_CASES:
                            plugin_runs.setdefault(key, []).append({k: after[k] - before[k] for k in after})
                        print(
                            f"  {regime:5} {variant:10} {case:24} p50 {summary['p50']:7.2f}  p99 "
                            f"{summary['p99']:8.2f}  bg {cpu['bg_cpu']:6.2f} µs/step"
                        )
            reps_meta[-1]["other_load_cores"] = other.cores()
            print(f"  other load during the rep: {reps_meta[-1]['other_load_cores']:.2f} cores")
        print(f"\nnats-server {server.url}; plugin: {info}")
        report(results, plugin_runs)
        if rss:
            report_rss(rss)
        totals = plugin_counts(publisher, handle)
        print("\nplugin totals:", totals)
        if publisher is not None:
            publisher.stop(1.0)
        payload = {"args": vars(args), "machine": machine_info(), "plugin": info, "reps": reps_meta}
        payload |= {"results": results, "plugin_runs": plugin_runs, "plugin_totals": totals, "rss": rss}
        print(f"results: {write_json('bench_record', payload)}")


if __name__ == "__main__":
    main()
