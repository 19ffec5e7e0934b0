"""Time from a fault in the NVML test double to the finding on NATS, beside the telemetry floor of the same run.

Three processes, as deployed: ``eagle-eye hardware-monitor`` on the test suite's NVML C double (8 GPUs, exporting
every ``--interval`` seconds), ``eagle-eye diagnose`` (the service), and this script, which subscribes to
``eagle_eye.>`` on a real ``nats-server`` and writes faults into the double's scenario. Each cycle picks the next
GPU and a fault (uncorrectable ECC, hardware thermal slowdown, row-remap failure: each critical, so it opens at its
first sighting), waits a random fraction of the period so the fault lands anywhere in it, writes it (the previous
GPU's fault clears in the same write), and records when

- the first hardware export that shows it arrives (``fault→export``: the **named baseline**, the floor any consumer
  of the telemetry has, set by the collection period);
- the finding arrives on ``eagle_eye.diagnosis.<node>`` (``fault→finding``, the figure the 2 s target is about);

and their difference (``export→finding``: what the diagnosis adds: NATS in, OTLP decode, rules, NATS out). The CPU
of the service process per second of running is printed too. Target: fault→finding ≤ 2 s at a 1 s period.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from _common import OUT_DIR, aggregate, calib_ns_per_iter, fmt, machine_info, print_table, summarize, wait_quiet
from _common import write_json as save
from bench_hardware_sweep import build_double

ROOT = Path(__file__).resolve().parent.parent
EAGLE_EYE = str(Path(sys.executable).parent / "eagle-eye")
NODE = "bench-node"

FAULTS: dict[str, tuple[str, str, str]] = {
    # name: (scenario line for GPU {i}, fault id, (metric, attribute key=value or "") that shows it)
    "ecc_uncorrected": ("gpu {i} field 4 1", "gpu_ecc_uncorrected", "hw.errors|error.type=uncorrected"),
    "hw_thermal_slowdown": (
        "gpu {i} clock_reasons 0x40",
        "gpu_hw_thermal_slowdown",
        "eagleeye.hw.gpu.clock_event.active|eagleeye.hw.gpu.clock_event.reason=hw_thermal_slowdown",
    ),
    "row_remap_failure": ("gpu {i} field 145 1", "gpu_row_remap_failure", "eagleeye.hw.gpu.remapped_rows.failure|"),
}


def uuid(i: int) -> str:
    return f"GPU-{i:08x}-1111-2222-3333-444444444444"


def scenario(gpus: int, fault: str = "") -> str:
    """``gpus`` healthy H100s (ECC, remap and PCIe counters at 0), then ``fault``'s line (later lines win)."""
    lines = ["driver_version 570.124.06", "nvml_version 12.570.124.06"]
    values = {
        "name": "NVIDIA H100 80GB HBM3", "util_gpu": 80, "util_mem": 40, "mem_total": 85899345920,
        "mem_used": 64424509440, "temp": 60, "temp_slowdown": 87, "temp_shutdown": 92, "power_mw": 450000,
        "power_limit_mw": 700000, "energy_mj": 123456789, "clock_sm_mhz": 1980, "clock_mem_mhz": 2619,
        "clock_reasons": 0, "pcie_gen": 5, "pcie_width": 16, "pcie_tx_kbps": 1000, "pcie_rx_kbps": 2000,
    }  # fmt: skip
    fields = {82: 70, 3: 0, 4: 0, 5: 0, 6: 0, 142: 0, 143: 0, 144: 0, 145: 0, 94: 0, 230: 0, 38: 0, 52: 0}
    for i in range(gpus):
        lines += [f"gpu {i} uuid {uuid(i)}", f"gpu {i} pci_bus_id 00000000:{0x18 + i:02X}:00.0"]
        lines += [f"gpu {i} {key} {value}" for key, value in values.items()]
        lines += [f"gpu {i} field {field} {value}" for field, value in fields.items()]
    return "\n".join([*lines, fault]) + "\n"


def write_scenario(path: Path, text: str) -> float:
    """Replace the scenario atomically (the double rereads it at its next call); returns when it was in place."""
    staging = path.with_suffix(".new")
    staging.write_text(text)
    staging.replace(path)
    return time.time()


def shows(payload: bytes, device: str, signal: str) -> bool:
    """Whether an OTLP export carries ``signal`` (``metric|key=value``) at 1 for ``device``."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (  # noqa: PLC0415
        ExportMetricsServiceRequest,
    )

    metric_name, _, attribute = signal.partition("|")
    for resource_metrics in ExportMetricsServiceRequest.FromString(payload).resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name != metric_name:
                    continue
                for point in getattr(metric, metric.WhichOneof("data")).data_points:
                    attributes = {a.key: a.value.string_value for a in point.attributes}
                    if attributes.get("hw.id") != device:
                        continue
                    key, _, value = attribute.partition("=")
                    if key and attributes.get(key) != value:
                        continue
                    if (point.as_double if point.WhichOneof("value") == "as_double" else point.as_int) >= 1:
                        return True
    return False


@dataclass
class Sample:
    fault: str
    export_s: float
    finding_s: float


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(url: str, scenario_path: Path, args: argparse.Namespace, rep: int) -> list[Sample]:
    """One repetition: ``args.faults`` cycles, each a fault on the next GPU."""
    import msgspec  # noqa: PLC0415
    import nats  # noqa: PLC0415
    from nats.aio.msg import Msg  # noqa: PLC0415

    from eagleeye_otel.diagnosis import FindingChange, FindingMessage  # noqa: PLC0415

    decode = msgspec.json.Decoder(FindingMessage).decode
    exports: list[tuple[float, bytes]] = []
    findings: list[tuple[float, FindingMessage]] = []

    async def received(msg: Msg) -> None:
        now = time.time()
        if msg.subject.startswith("eagle_eye.hardware."):
            exports.append((now, msg.data))
        else:
            findings.append((now, decode(msg.data)))

    nc = await nats.connect(url)
    await nc.subscribe("eagle_eye.>", cb=received)
    samples: list[Sample] = []
    names = list(FAULTS)
    try:
        for cycle in range(args.faults):
            gpu = (rep * args.faults + cycle) % args.gpus
            name = names[cycle % len(names)]
            line, fault, signal = FAULTS[name]
            await asyncio.sleep(random.uniform(0, args.interval))
            written = write_scenario(scenario_path, scenario(args.gpus, line.format(i=gpu)))
            deadline = time.monotonic() + 10 * args.interval + 10
            found: tuple[float, FindingMessage] | None = None
            while found is None and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
                found = next(
                    (
                        (at, f)
                        for at, f in findings
                        if at >= written
                        and f.change is FindingChange.OPENED
                        and (f.fault, f.device) == (fault, uuid(gpu))
                    ),
                    None,
                )
            if found is None:
                sys.exit(f"no {fault} finding for GPU {gpu} within the deadline; is the service up?")
            shown = next(at for at, payload in exports if at >= written and shows(payload, uuid(gpu), signal))
            samples.append(Sample(name, shown - written, found[0] - written))
            await asyncio.sleep(args.interval)  # let the next write land on a monitor that saw this one
    finally:
        await nc.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--interval", type=float, default=1.0, help="the monitor's export period, seconds")
    parser.add_argument("--faults", type=int, default=30, help="fault cycles per repetition")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--max-quiet-wait", type=float, default=30.0)
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from eagleeye_otel.nats_server import EmbeddedNatsServer  # noqa: PLC0415

    library = build_double(OUT_DIR / "nvml-double")
    scenario_path = library.parent / "latency-scenario.txt"
    write_scenario(scenario_path, scenario(args.gpus))
    server = EmbeddedNatsServer()
    server.start()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("EAGLEEYE_", "OTEL_"))}
    common = {**base, "EAGLEEYE_NATS_URL": server.url, "OTEL_METRICS_EXPORTER": "none"}
    monitor_env = {
        **common,
        "EAGLEEYE_NODE_NAME": NODE,
        "EAGLEEYE_NVML_LIBRARY": str(library),
        "EAGLEEYE_NVML_DOUBLE_SCENARIO": str(scenario_path),
        "EAGLEEYE_KERNEL_LOG": "off",
    }
    logs = OUT_DIR / "diagnosis-latency"
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / "service.log").open("w") as service_log, (logs / "monitor.log").open("w") as monitor_log:
        service = subprocess.Popen(
            [EAGLE_EYE, "diagnose"],
            env={**common, "EAGLEEYE_DIAGNOSIS_HTTP": "off"},
            stdout=service_log,
            stderr=subprocess.STDOUT,
        )
        monitor = subprocess.Popen(
            [EAGLE_EYE, "hardware-monitor", "--no-prometheus", "--interval", str(args.interval)],
            env=monitor_env,
            stdout=monitor_log,
            stderr=subprocess.STDOUT,
        )
    try:
        time.sleep(3)  # both connected and the first exports out
        per_rep: list[dict[str, float]] = []
        reps_info = []
        every: list[Sample] = []
        for rep in range(args.reps):
            quiet = wait_quiet(max_wait=args.max_quiet_wait)
            calib = calib_ns_per_iter()
            cpu0, t0 = process_cpu_s(service.pid), time.monotonic()
            samples = asyncio.run(measure(server.url, scenario_path, args, rep))
            service_cpu = (process_cpu_s(service.pid) - cpu0) / (time.monotonic() - t0)
            every += samples
            summary = {
                **{f"export_{k}": v for k, v in summarize([s.export_s for s in samples], 1e3).items()},
                **{f"finding_{k}": v for k, v in summarize([s.finding_s for s in samples], 1e3).items()},
                **{f"added_{k}": v for k, v in summarize([s.finding_s - s.export_s for s in samples], 1e3).items()},
                "service_cpu_pct": service_cpu * 100,
            }
            per_rep.append(summary)
            reps_info.append({"quiet": quiet, "calib_ns": calib})
            print(
                f"rep {rep + 1}: quiet={quiet.quiet} calib={calib:.1f} ns/iter  fault→finding p50 "
                f"{summary['finding_p50']:.0f} ms, max {summary['finding_max']:.0f} ms; service CPU "
                f"{service_cpu * 100:.2f} % of a core"
            )
    finally:
        for process in (monitor, service):
            process.terminate()
            process.wait(30)
        server.stop()

    result = aggregate(per_rep)
    rows = [
        [label, *(fmt(result[f"{key}_{p}"]["median"]) for p in ("p50", "p90", "p99", "max", "mean"))]
        for label, key in (
            ("fault→export (baseline: the telemetry floor)", "export"),
            ("fault→finding on NATS", "finding"),
            ("export→finding (added by the diagnosis)", "added"),
        )
    ]
    title = f"{args.gpus} GPUs, {args.interval:g} s period, {args.faults} faults x {args.reps} reps (median over reps)"
    print_table(["ms", "p50", "p90", "p99", "max", "mean"], rows, title)
    worst = max(s.finding_s for s in every)
    ratio = result["finding_mean"]["median"] / result["export_mean"]["median"]
    print(f"\nfault→finding / fault→export, mean: {ratio:.3f}x")
    print(f"service CPU: {result['service_cpu_pct']['median']:.2f} % of a core (1 node, {args.gpus} GPUs)")
    verdict = "met" if worst <= 2.0 * args.interval else "MISSED"
    print(f"target (every finding within 2 s of the fault at a 1 s period): worst {worst * 1e3:.0f} ms: {verdict}")
    path = save(
        "bench_diagnosis_latency",
        {"machine": machine_info(), "args": vars(args), "reps": reps_info, "per_rep": per_rep, "summary": result},
    )
    print(f"saved {path}")


if __name__ == "__main__":
    main()
