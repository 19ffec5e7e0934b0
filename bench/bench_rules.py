"""Diagnosis rule evaluation throughput, in metric points per second of CPU on one core, beside a plain decode.

The payloads are the hardware monitor's own: hand-built sweeps of 8 H100s per node go through the monitor's
instruments (``register_hardware_metrics``) and the NATS exporter's encoder, one OTLP protobuf payload per node and
second, with temperatures and power that move, counters that grow and a few faults planted (a hot GPU, an Xid 79,
a noisy PCIe link, a power cap), so the rules have real work. Cases, interleaved in a rotated order in every
repetition, each over the same pool of payloads in time order (a fresh engine per repetition):

- ``decode`` (named baseline): ``ExportMetricsServiceRequest.FromString`` and a walk over every point's value and
  attributes: the least any consumer of these payloads does.
- ``ingest``: ``DiagnosisEngine.ingest_otlp`` (decode into the per-node, per-device view with its history).
- ``ingest+evaluate``: ``ingest_otlp`` then ``evaluate()`` after every payload, as the service does: the figure the
  target is about (>= 100 000 points per second on one core).

CPU is the calling thread's (``time.thread_time_ns``); everything runs on it, so the figures are one core's.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import OtherLoad, aggregate, calib_ns_per_iter, fmt, machine_info, print_table, wait_quiet
from _common import write_json as save
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource

from eagleeye_otel.diagnosis import DiagnosisEngine, load_knowledge_base
from eagleeye_otel.exporters.nats._encoding import encode_otlp_protobuf
from eagleeye_otel.receivers.hardware._instruments import register_hardware_metrics
from eagleeye_otel.receivers.hardware._model import DeviceIdentity, GpuReading, Sweep
from eagleeye_otel.semconv import _hardware as hw

TARGET_POINTS_PER_S = 100_000
T0 = 1_800_000_000.0


def gpu(node: int, index: int, step: int) -> GpuReading:
    """GPU ``index`` of node ``node`` at second ``step``: healthy, with values that move, and planted faults."""
    wobble = (step * 7 + index * 3) % 5
    reading = GpuReading(
        identity=DeviceIdentity(
            id=f"GPU-{node:04d}{index:04d}-1111-2222-3333-444444444444",
            type=hw.HW_TYPE_GPU,
            vendor="nvidia",
            index=index,
            model="NVIDIA H100 80GB HBM3",
            pci_bus_id=f"0000:{0x18 + index * 0x10:02x}:00.0",
            driver_version="570.124.06",
        ),
        utilization=0.8 + wobble / 100,
        memory_utilization=0.4,
        memory_used_bytes=60 * 2**30,
        memory_total_bytes=80 * 2**30,
        temperature_c=64.0 + wobble,
        memory_temperature_c=70.0 + wobble,
        slowdown_temperature_c=87.0,
        shutdown_temperature_c=92.0,
        power_w=450.0 + 10 * wobble,
        power_limit_w=700.0,
        energy_j=1.0e6 + 450.0 * step,
        sm_clock_hz=1.98e9,
        memory_clock_hz=2.619e9,
        clock_event_reasons=frozenset(),
        ecc_corrected_volatile=step // 10,
        ecc_uncorrected_volatile=0,
        ecc_corrected_aggregate=100 + step // 10,
        ecc_uncorrected_aggregate=0,
        retired_pages_sbe=0,
        retired_pages_dbe=0,
        retired_pages_pending=False,
        remapped_rows_correctable=1,
        remapped_rows_uncorrectable=0,
        remapped_rows_pending=False,
        remapped_rows_failure=False,
        pcie_replays=step // 4,
        pcie_link_generation=5,
        pcie_link_width=16,
        pcie_tx_bytes_per_s=1.0e9,
        pcie_rx_bytes_per_s=2.0e9,
        nvlink_errors={"crc_flit": 0, "crc_data": 0, "replay": 0, "recovery": 0},
        recovery_action=0,
    )
    if node % 4 == 0 and index == 3:  # hotter than its peers
        reading = dataclasses.replace(reading, temperature_c=80.0 + wobble)
    if node % 4 == 1 and index == 5 and step >= 5:  # an Xid 79
        reading = dataclasses.replace(reading, xid_counts={79: 1})
    if node % 4 == 2 and index == 1:  # a noisy PCIe link
        reading = dataclasses.replace(reading, pcie_replays=step * 2)
    if node % 4 == 3 and index == 6:  # at its power cap
        reading = dataclasses.replace(reading, power_w=690.0, clock_event_reasons=frozenset({"sw_power_cap"}))
    return reading


def payloads(nodes: int, gpus: int, steps: int) -> list[tuple[float, bytes]]:
    """(time, payload) in time order: one OTLP export per node and second, as the monitors publish them."""
    providers = []
    current: list[Sweep] = []
    for node in range(nodes):
        reader = InMemoryMetricReader()
        resource = Resource.create({hw.EAGLEEYE_NODE_NAME: f"node-{node:04d}"})
        provider = MeterProvider(metric_readers=[reader], resource=resource)
        current.append(Sweep(f"node-{node:04d}", T0))
        register_hardware_metrics(provider, lambda node=node: current[node], max_age_s=0.0)
        providers.append((provider, reader))
    pool = []
    for step in range(steps):
        at = T0 + step
        for node, (_, reader) in enumerate(providers):
            current[node] = Sweep(f"node-{node:04d}", at, tuple(gpu(node, i, step) for i in range(gpus)))
            request = ExportMetricsServiceRequest.FromString(encode_otlp_protobuf(reader.get_metrics_data()))
            for resource_metrics in request.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        data = metric.gauge if metric.HasField("gauge") else metric.sum
                        for point in data.data_points:
                            point.time_unix_nano = int(at * 1e9)
            pool.append((at, request.SerializeToString()))
    for provider, _ in providers:
        provider.shutdown()
    return pool


def decode(pool: list[tuple[float, bytes]]) -> int:
    """The baseline: decode each payload and read every point's value and attributes."""
    points = 0
    for _, payload in pool:
        request = ExportMetricsServiceRequest.FromString(payload)
        for resource_metrics in request.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    data = metric.gauge if metric.WhichOneof("data") == "gauge" else metric.sum
                    for point in data.data_points:
                        _ = point.as_double if point.WhichOneof("value") == "as_double" else point.as_int
                        for attribute in point.attributes:
                            _ = (attribute.key, attribute.value.string_value)
                        points += 1
    return points


class Clock:
    now = T0

    def __call__(self) -> float:
        return self.now


def engine_case(evaluate: bool) -> Callable[[list[tuple[float, bytes]]], int]:
    knowledge = load_knowledge_base()

    def run(pool: list[tuple[float, bytes]]) -> int:
        clock = Clock()
        engine = DiagnosisEngine(knowledge, clock=clock)
        points = 0
        for at, payload in pool:
            clock.now = at
            points += engine.ingest_otlp(payload)
            if evaluate:
                engine.evaluate()
        run.findings = len(engine.active())  # type: ignore[attr-defined]
        return points

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=32)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30, help="seconds of telemetry per node")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--max-quiet-wait", type=float, default=30.0)
    args = parser.parse_args()

    print(f"building {args.nodes} nodes x {args.gpus} GPUs x {args.steps} s of monitor payloads ...", flush=True)
    pool = payloads(args.nodes, args.gpus, args.steps)
    points = decode(pool)
    print(f"{len(pool)} payloads, {points} points ({points / len(pool):.0f} per payload), "
          f"{sum(len(p) for _, p in pool) / len(pool) / 1024:.1f} KiB per payload")  # fmt: skip
    cases: dict[str, Callable[[list[tuple[float, bytes]]], int]] = {
        "decode": decode,
        "ingest": engine_case(evaluate=False),
        "ingest+evaluate": engine_case(evaluate=True),
    }
    per_rep: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
    reps: list[dict[str, Any]] = []
    for rep in range(args.reps):
        quiet = wait_quiet(max_wait=args.max_quiet_wait)
        calib = calib_ns_per_iter()
        load = OtherLoad()
        names = list(cases)
        names = names[rep % len(names) :] + names[: rep % len(names)]
        for name in names:
            start = time.thread_time_ns()
            counted = cases[name](pool)
            cpu_s = (time.thread_time_ns() - start) / 1e9
            per_rep[name].append({"points_per_s": counted / cpu_s, "us_per_payload": cpu_s / len(pool) * 1e6})
        reps.append({"quiet": quiet.quiet, "calib_ns": calib, "other_load_cores": load.cores()})
        ratio = per_rep["ingest+evaluate"][-1]["points_per_s"] / per_rep["decode"][-1]["points_per_s"]
        print(f"rep {rep + 1}: quiet={quiet.quiet} calib={calib:.1f} ns other load={load.cores():.2f} cores "
              f"ingest+evaluate/decode={ratio:.2f}", flush=True)  # fmt: skip
    summary = {name: aggregate(values) for name, values in per_rep.items()}
    rows = []
    for name in cases:
        throughput, cost = summary[name]["points_per_s"], summary[name]["us_per_payload"]
        rows.append([
            name + (" (baseline)" if name == "decode" else ""),
            f"{fmt(throughput['median'], 0)} ({fmt(throughput['min'], 0)}-{fmt(throughput['max'], 0)})",
            f"{fmt(cost['median'])} ({fmt(cost['min'])}-{fmt(cost['max'])})",
            f"{summary[name]['points_per_s']['median'] / summary['decode']['points_per_s']['median']:.2f}",
        ])  # fmt: skip
    print_table(["case", "points/s of one core", "µs CPU per payload", "x decode"], rows, "median (range)")
    headline = summary["ingest+evaluate"]["points_per_s"]["median"]
    verdict = "met" if headline >= TARGET_POINTS_PER_S else "NOT met"
    print(f"\ntarget: ingest+evaluate >= {TARGET_POINTS_PER_S:,} points/s on one core: {verdict} ({headline:,.0f})")
    print(f"active findings at the end: {cases['ingest+evaluate'].findings}")  # type: ignore[attr-defined]
    path = save(
        "bench_rules",
        {"args": vars(args), "machine": machine_info(), "reps": reps, "per_rep": per_rep, "summary": summary},
    )
    print(f"saved {path}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
