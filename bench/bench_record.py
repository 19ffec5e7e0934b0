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
    thread_cpu_ns,
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

from eagleeye_otel.instrumentation.vllm._metrics_recorder import DRAIN_INTERVAL_S
from eagleeye_otel.nats_server import EmbeddedNatsServer, free_port

TARGET_P50_US, TARGET_P99_US, TARGET_RSS_MB, TARGET_TOTAL_RATIO = 10.0, 50.0, 20.0, 1.0
DRAIN_THREAD = "eagleeye-vllm-metrics"
PUBLISHER_THREAD_PREFIX = "eagle-eye-"
"""The routing publisher's thread and its NATS connection's (``exporters/nats``)."""
OURS_CASES = (OURS, MANAGER_OURS)
Record = Callable[..., Any]


# -- measurement ---------------------------------------------------------------------------------------------


def settle(window_s: float = DRAIN_INTERVAL_S + 0.25, max_s: float = 10.0) -> None:
    """Wait until other threads of this process use < 1% of a core over ``window_s`` (> the drain interval)."""
    deadline = time.monotonic() + max_s
    while time.monotonic() < deadline:
        p0, m0 = time.process_time_ns(), time.thread_time_ns()
        time.sleep(window_s)
        if (time.process_time_ns() - p0) - (time.thread_time_ns() - m0) < window_s * 1e7:
            return


def run_case(
    record: Record, pool: list[Step], calls: int, pace_s: float, plugin_tids: set[int] | None
) -> tuple[array[int], dict[str, Any]]:
    """Time ``calls`` record() calls; returns latencies (ns) and the CPU the process spent for them, per step.

    The loop's share is the CPU clock of the calling thread inside record(); every other thread's is its CPU clock
    over the run, work left queued (a drain, the publisher catching up) waited for and counted with the run.
    Threads in ``plugin_tids`` (Eagle Eye's, idle during vLLM's runs) are counted only when that set is None.
    """
    settle()
    lat = array("q", bytes(8 * calls))
    n, clock, cpu_clock, sleep = len(pool), time.perf_counter_ns, time.thread_time_ns, time.sleep
    loop_ns = 0
    threads0, proc0, main0 = thread_cpu_ns(), time.process_time_ns(), time.thread_time_ns()
    for i in range(calls):
        sched, it = pool[i % n]
        c0 = cpu_clock()
        t0 = clock()
        record(sched, it, mm_cache_stats=None, engine_idx=0)
        lat[i] = clock() - t0
        loop_ns += cpu_clock() - c0
        if pace_s:
            sleep(pace_s)
    settle()
    threads1, main_ns = thread_cpu_ns(), time.thread_time_ns() - main0
    proc_ns = time.process_time_ns() - proc0
    main_tid = threading.main_thread().native_id
    by_thread: dict[str, float] = {}
    counted_ns = seen_ns = 0
    for tid, (name, ns) in threads1.items():
        delta = ns - threads0.get(tid, (name, 0))[1]
        if tid == main_tid or delta <= 0:
            continue
        seen_ns += delta
        if plugin_tids is None or tid not in plugin_tids:
            counted_ns += delta
            by_thread[name] = by_thread.get(name, 0.0) + delta / calls / 1e3
    exited_ns = max(0, proc_ns - main_ns - seen_ns)  # threads that ended during the run
    if exited_ns:
        by_thread["(exited threads)"] = exited_ns / calls / 1e3
    loop_us, bg_us = loop_ns / calls / 1e3, (counted_ns + exited_ns) / calls / 1e3
    cpu = {"record_mean": sum(lat) / calls / 1e3, "loop_cpu": loop_us, "bg_cpu": bg_us, "total_cpu": loop_us + bg_us}
    return lat, {**cpu, "bg_by_thread": by_thread}


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
    groups = {}
    for group in sorted({k.rsplit("|", 1)[0] for k in results}):
        groups[group] = {c: results[f"{group}|{c}"] for c in CASES if f"{group}|{c}" in results}
    report_latency(groups)
    report_cpu(groups)
    plugin_rows = []
    for key, rs in sorted(plugin_runs.items()):
        fields = ("offered", "published", "coalesced", "dropped", "errors", "metrics_dropped")
        plugin_rows.append([key.replace("|", " "), *(str(sum(r.get(k, 0) for r in rs)) for k in fields)])
    if plugin_rows:
        heads = ["run", "offered", "published", "coalesced", "dropped", "errors", "metrics steps dropped"]
        print_table(heads, plugin_rows, "Routing publisher and metrics queue during the runs (sum over reps)")


Runs = dict[str, dict[str, list[dict[str, Any]]]]
"""regime|variant -> case -> one summary per repetition."""


def _paired_ratio(ours: list[dict[str, Any]], ref: list[dict[str, Any]], key: str) -> float:
    """Median over repetitions of ours / ref for ``key``, each repetition's pair measured in the same rep."""
    return aggregate([{"r": a[key] / b[key]} for a, b in zip(ours, ref, strict=True)])["r"]["median"]


def report_latency(groups: Runs) -> None:
    rows, ratio_rows = [], []
    for group, runs in groups.items():
        regime, variant = group.split("|")
        per = {c: aggregate(_numeric(r)) for c, r in runs.items()}
        for case, agg in per.items():
            target = ""
            if case == OURS:
                ok = agg["p50"]["median"] <= TARGET_P50_US and agg["p99"]["median"] <= TARGET_P99_US
                target = f"p50<={TARGET_P50_US:g} p99<={TARGET_P99_US:g}: {'PASS' if ok else 'FAIL'}"
            rows.append(
                [regime, variant, case, *(fmt(agg[k]["median"], 2) for k in ("p50", "p90", "p99", "p999"))]
                + [f"{fmt(agg[k]['min'])}-{fmt(agg[k]['max'])}" for k in ("p50", "p99")]
                + [fmt(agg["record_mean"]["median"], 2), target]
            )
        for ref in (BASELINE, MANAGER):
            if OURS in per and ref in per:
                below = all(per[OURS][k]["median"] < per[ref][k]["median"] for k in ("p50", "p99"))
                ratios = [fmt(_paired_ratio(runs[OURS], runs[ref], k), 3) for k in ("p50", "p99")]
                ratio_rows.append([regime, variant, f"{OURS} / {ref}", *ratios, "PASS" if below else "FAIL"])
        if MANAGER in per and MANAGER_OURS in per:
            d = {k: per[MANAGER_OURS][k]["median"] - per[MANAGER][k]["median"] for k in ("p50", "p99")}
            marginal = [fmt(d["p50"], 2), fmt(d["p99"], 2), "marginal cost; a noisy difference"]
            ratio_rows.append([regime, variant, "(manager+eagle_eye) - manager, µs", *marginal])
    heads = ["regime", "variant", "logger", "p50", "p90", "p99", "p99.9", "p50 range", "p99 range", "mean"]
    print_table([*heads, "target (ours)"], rows, "record() latency, µs (median over reps of per-rep percentiles)")
    print_table(
        ["regime", "variant", "ratio", "p50", "p99", "ours below vLLM's (p50 and p99)"],
        ratio_rows,
        "Eagle Eye vs vLLM's own loggers (median of per-rep ratios)",
    )


def _thread_kind(name: str) -> str:
    if name == DRAIN_THREAD:
        return "drain"
    return "publisher" if name.startswith(PUBLISHER_THREAD_PREFIX) else "other"


def report_cpu(groups: Runs) -> None:
    """Total CPU per step, every thread of the process, beside vLLM's own logger's total in the same run."""
    rows, thread_rows = [], []
    for group, runs in groups.items():
        regime, variant = group.split("|")
        for case, reps in runs.items():
            for rep in reps:
                for kind in ("drain", "publisher", "other"):
                    rep[kind] = sum(v for k, v in rep["bg_by_thread"].items() if _thread_kind(k) == kind)
            agg = aggregate(_numeric(reps))
            ratio, target = "", ""
            ref = MANAGER if case == MANAGER_OURS else BASELINE
            if case in OURS_CASES and ref in runs:
                r = _paired_ratio(reps, runs[ref], "total_cpu")
                ratio = f"{fmt(r, 3)} of {ref}"
                target = f"<= {TARGET_TOTAL_RATIO:g}: {'PASS' if r <= TARGET_TOTAL_RATIO else 'FAIL'}"
            parts = ("loop_cpu", "drain", "publisher", "other", "total_cpu")
            rows.append([regime, variant, case, *(fmt(agg[k]["median"], 2) for k in parts), ratio, target])
            for name in sorted({name for r in reps for name in r["bg_by_thread"]}):
                agg_t = aggregate([{"v": r["bg_by_thread"].get(name, 0.0)} for r in reps])["v"]
                thread_rows.append([regime, variant, case, name, fmt(agg_t["median"], 2)])
    heads = ["regime", "variant", "logger", "loop", "drain", "publisher", "other threads", "total", "ratio"]
    title = (
        "Total CPU per step, µs: the loop's inside record() + every other thread's (per-thread CPU clocks; median "
        "over reps; ratio = median of per-rep ratios; Eagle Eye's idle threads are not counted in vLLM's runs)"
    )
    print_table([*heads, "target"], rows, title)
    if thread_rows:
        title = "CPU of each other thread, µs per recorded step (median over reps)"
        print_table(["regime", "variant", "logger", "thread", "µs/step"], thread_rows, title)


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
        tids_before = set(thread_cpu_ns())
        loggers = build_loggers(cfg, cases)
        if MANAGER in loggers:
            print("vllm_manager loggers:", [type(x).__name__ for x in loggers[MANAGER].stat_loggers])
        publisher, info = runtime_info() if set(OURS_CASES) & set(cases) else (None, {})
        handle = metrics_handle(loggers)
        info["connected"] = wait_connected(publisher)
        plugin_tids = set(thread_cpu_ns()) - tids_before  # vLLM's loggers start no thread; the plugin does
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
                        counted = None if case in OURS_CASES else plugin_tids
                        lat, cpu = run_case(loggers[case].record, pool, calls, pace, counted)
                        after = plugin_counts(publisher, handle)
                        summary = {**summarize(lat, 1e-3), **cpu, "calib": calib}
                        key = f"{regime}|{variant}|{case}"
                        results.setdefault(key, []).append(summary)
                        if case in OURS_CASES:
                            plugin_runs.setdefault(key, []).append({k: after[k] - before[k] for k in after})
                        print(
                            f"  {regime:5} {variant:10} {case:24} p50 {summary['p50']:7.2f}  p99 "
                            f"{summary['p99']:8.2f}  CPU/step: loop {cpu['loop_cpu']:6.2f} + threads "
                            f"{cpu['bg_cpu']:6.2f} = {cpu['total_cpu']:6.2f} µs"
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
