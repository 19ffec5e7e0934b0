"""CPU of the hardware monitor's whole second over 8 simulated GPUs, beside a naive one-call-per-field pynvml loop.

The GPUs are the NVML C double of the test suite (``tests/receivers/hardware/doubles/nvml_double.c``), built here
with gcc and reached through the real ``pynvml``, serving every field the NVML source reads. Batches go to a real
``nats-server`` on loopback. Cases, interleaved in a rotated order in every repetition:

- ``naive_pynvml`` (named baseline): per GPU and sweep, the handle, the identity strings and one pynvml call per
  value, each counter through its own ``nvmlDeviceGetFieldValues`` call: what a first-cut exporter does.
- ``eagle_eye_sweep``: ``NvmlSource.sweep()`` (identity read once at open, counters batched in one field-values call,
  unsupported calls remembered).
- ``eagle_eye_second``: what the monitor does each second for NATS (``SweepExport.export``): the sweep, its points
  encoded straight to the OTLP request, and the publish on NATS.
- ``sdk_second``: the same second through the SDK, as the monitor did before: a periodic reader's collection of
  every hardware instrument (the sweep plus ~450 observations aggregated), ``encode_metrics`` and the same publish.

Per call the CPU time of the whole process is measured (``time.process_time_ns``): the monitor reads each device on
a worker thread under a deadline and nats-py writes on its own loop thread, so the calling thread's time alone would
miss them. Targets: the whole second ≤ 2 ms of CPU, and the sweep no slower than the naive loop.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import shutil
import subprocess
import sys
import time
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
)
from _common import write_json as save

ROOT = Path(__file__).resolve().parent.parent
DOUBLE_SOURCE = ROOT / "tests" / "receivers" / "hardware" / "doubles" / "nvml_double.c"

FIELD_IDS = (82, 3, 4, 5, 6, 29, 30, 31, 142, 143, 144, 145, 94, 230, 38, 45, 52, 59)
"""Every ``nvmlDeviceGetFieldValues`` id the NVML source reads (memory temperature, ECC, retired pages, remapped
rows, PCIe replays, recovery action, NVLink totals)."""


def build_double(directory: Path) -> Path:
    """``<directory>/libnvidia-ml.so.1`` from the test double's C source, with the real library's soname."""
    gcc = shutil.which("gcc")
    if gcc is None:
        sys.exit("gcc is needed to build the NVML double")
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "libnvidia-ml.so.1"
    command = [gcc, "-shared", "-fPIC", "-O2", "-Wl,-soname,libnvidia-ml.so.1", "-o", str(target), str(DOUBLE_SOURCE)]
    subprocess.run(command, check=True)
    return target


def scenario(gpus: int) -> str:
    """``gpus`` healthy H100s answering every value and field the source reads."""
    lines = ["driver_version 570.124.06", "nvml_version 12.570.124.06"]
    values = {
        "name": "NVIDIA H100 80GB HBM3", "serial": "1650123456789", "vbios": "96.00.99.00.01", "util_gpu": 87,
        "util_mem": 41, "mem_total": 85899345920, "mem_used": 64424509440, "temp": 66, "temp_slowdown": 87,
        "temp_shutdown": 92, "power_mw": 612000, "power_limit_mw": 700000, "energy_mj": 123456789,
        "clock_sm_mhz": 1980, "clock_mem_mhz": 2619, "clock_reasons": 4, "pcie_gen": 5, "pcie_width": 16,
        "pcie_tx_kbps": 1200000, "pcie_rx_kbps": 300000,
    }  # fmt: skip
    for i in range(gpus):
        lines += [f"gpu {i} uuid GPU-{i:08x}-1111-2222-3333-444444444444", f"gpu {i} pci_bus_id 00000000:{i:02X}:00.0"]
        lines += [f"gpu {i} {key} {value}" for key, value in values.items()]
        lines += [f"gpu {i} field {field} {field % 7}" for field in FIELD_IDS]
    return "\n".join(lines) + "\n"


def naive_sweep(nvml: Any, gpus: int) -> list[dict[str, Any]]:
    """One call per value, identity included, as a first-cut pynvml exporter polls."""
    readings = []
    for index in range(gpus):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        rates = nvml.nvmlDeviceGetUtilizationRates(handle)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        reading = {
            "uuid": nvml.nvmlDeviceGetUUID(handle),
            "name": nvml.nvmlDeviceGetName(handle),
            "serial": nvml.nvmlDeviceGetSerial(handle),
            "vbios": nvml.nvmlDeviceGetVbiosVersion(handle),
            "pci_bus_id": nvml.nvmlDeviceGetPciInfo(handle).busId,
            "utilization": rates.gpu / 100,
            "memory_utilization": rates.memory / 100,
            "memory_used_bytes": memory.used,
            "memory_total_bytes": memory.total,
            "temperature_c": float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
            "slowdown_c": float(
                nvml.nvmlDeviceGetTemperatureThreshold(handle, nvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN)
            ),
            "shutdown_c": float(
                nvml.nvmlDeviceGetTemperatureThreshold(handle, nvml.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN)
            ),
            "power_w": nvml.nvmlDeviceGetPowerUsage(handle) / 1e3,
            "power_limit_w": nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1e3,
            "energy_j": nvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1e3,
            "sm_clock_hz": nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM) * 1e6,
            "memory_clock_hz": nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_MEM) * 1e6,
            "clock_event_reasons": nvml.nvmlDeviceGetCurrentClocksEventReasons(handle),
            "pcie_link_generation": nvml.nvmlDeviceGetCurrPcieLinkGeneration(handle),
            "pcie_link_width": nvml.nvmlDeviceGetCurrPcieLinkWidth(handle),
            "pcie_tx_bytes_per_s": nvml.nvmlDeviceGetPcieThroughput(handle, nvml.NVML_PCIE_UTIL_TX_BYTES) * 1024,
            "pcie_rx_bytes_per_s": nvml.nvmlDeviceGetPcieThroughput(handle, nvml.NVML_PCIE_UTIL_RX_BYTES) * 1024,
        }
        for field in FIELD_IDS:
            (value,) = nvml.nvmlDeviceGetFieldValues(handle, [field])
            reading[f"field_{field}"] = value.value.ullVal if value.nvmlReturn == 0 else None
        readings.append(reading)
    return readings


def nvml_calls_per_sweep(library: Path, sweep: Callable[[], object]) -> int:
    """How many NVML API calls one sweep makes, counted by the double (node-level and every GPU)."""
    double = ctypes.CDLL(str(library))
    double.eagleeye_double_calls.restype = ctypes.c_ulong
    functions = re.findall(r"^nvmlReturn_t (nvml\w+)\(", DOUBLE_SOURCE.read_text(), re.MULTILINE)
    double.eagleeye_double_reset_calls()
    sweep()
    return sum(double.eagleeye_double_calls(name.encode(), -1) for name in functions)


def cpu_per_call(call: Callable[[], object], calls: int) -> list[float]:
    """Process CPU time of each of ``calls`` calls (worker threads included), in µs."""
    samples = []
    for _ in range(calls):
        began = time.process_time_ns()
        call()
        samples.append((time.process_time_ns() - began) / 1e3)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--sweeps", type=int, default=1000, help="calls per case and repetition")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--max-quiet-wait", type=float, default=30.0)
    args = parser.parse_args()

    library = build_double(OUT_DIR / "nvml-double")
    scenario_path = library.parent / "scenario.txt"
    scenario_path.write_text(scenario(args.gpus))
    os.environ["EAGLEEYE_NVML_DOUBLE_SCENARIO"] = str(scenario_path)
    sys.path.insert(0, str(ROOT))
    from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415 (after the double is in place)
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: PLC0415
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415

    from eagleeye_otel.exporters.nats import NatsMetricExporter  # noqa: PLC0415
    from eagleeye_otel.nats_server import EmbeddedNatsServer  # noqa: PLC0415
    from eagleeye_otel.receivers.hardware._instruments import register_hardware_metrics  # noqa: PLC0415
    from eagleeye_otel.receivers.hardware._model import Sweep  # noqa: PLC0415
    from eagleeye_otel.receivers.hardware._nats_export import SweepExport  # noqa: PLC0415
    from eagleeye_otel.receivers.hardware._nvml import NvmlSource  # noqa: PLC0415
    from eagleeye_otel.receivers.hardware._otlp import SweepEncoder  # noqa: PLC0415
    from eagleeye_otel.receivers.hardware._sweep_cache import SweepCache  # noqa: PLC0415
    from eagleeye_otel.settings import NatsSettings  # noqa: PLC0415

    server = EmbeddedNatsServer()
    server.start()
    source = NvmlSource.open(str(library))
    nvml = source.nvml
    resource = Resource.create({"host.name": "bench", "eagleeye.node.name": "bench"})

    def take() -> Sweep:
        return Sweep(node="bench", taken_at=time.time(), gpus=source.sweep())

    def exporter(name: str) -> NatsMetricExporter:
        made = NatsMetricExporter(nats_settings=NatsSettings(servers=(server.url,)), subject=f"bench.{name}")
        deadline = time.monotonic() + 10
        while not made.stats.connected and time.monotonic() < deadline:
            time.sleep(0.01)
        return made

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], resource=resource, shutdown_on_exit=False)
    register_hardware_metrics(provider, take, max_age_s=0)
    sdk_exporter = exporter("sdk")

    def sdk_second() -> None:
        data = reader.get_metrics_data()
        assert data is not None
        sdk_exporter.export(data, 1000)

    export = SweepExport(exporter("eagle"), SweepEncoder(resource), SweepCache(take, max_age_s=0), interval_s=1.0)

    first = source.sweep()
    read = sum(value is not None for reading in first for value in vars(reading).values())
    print(f"{len(first)} GPUs, {read} reading fields filled per sweep, from the double at {library}")
    cases: dict[str, Callable[[], object]] = {
        "naive_pynvml": lambda: naive_sweep(nvml, args.gpus),
        "eagle_eye_sweep": source.sweep,
        "eagle_eye_second": export.export,
        "sdk_second": sdk_second,
    }
    for call in cases.values():
        cpu_per_call(call, 50)  # warm up
    calls = {name: nvml_calls_per_sweep(library, call) for name, call in cases.items()}
    per_rep: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
    reps_info = []
    for rep in range(args.reps):
        quiet = wait_quiet(max_wait=args.max_quiet_wait)
        calib = calib_ns_per_iter()
        load = OtherLoad()
        names = list(cases)[rep % len(cases) :] + list(cases)[: rep % len(cases)]
        for name in names:
            per_rep[name].append(summarize(cpu_per_call(cases[name], args.sweeps)))
        reps_info.append({"quiet": quiet, "calib_ns": calib, "other_load_cores": load.cores()})
        print(f"rep {rep + 1}: quiet={quiet.quiet} calib={calib:.1f} ns/iter other load={load.cores():.2f} cores")

    summary = {name: aggregate(reps) for name, reps in per_rep.items()}
    mean_us = {name: summary[name]["mean"]["median"] for name in cases}
    percentiles = {name: [fmt(summary[name][p]["median"]) for p in ("p50", "p90", "p99", "mean")] for name in cases}
    rows = [[name, str(calls[name]), *percentiles[name], fmt(mean_us[name] / 1e4, 3)] for name in cases]
    headers = ["case", "NVML calls", "p50 µs", "p90 µs", "p99 µs", "mean µs", "% of a core at 1 Hz"]
    print_table(headers, rows, f"CPU per call, {args.gpus} GPUs, process CPU (median over repetitions)")
    naive = mean_us["naive_pynvml"]
    ratios = {name: mean_us[name] / naive for name in cases}
    sweep_ms, second_ms = mean_us["eagle_eye_sweep"] / 1e3, mean_us["eagle_eye_second"] / 1e3
    print(
        f"\nmean CPU over naive_pynvml's: sweep {ratios['eagle_eye_sweep']:.2f}x, whole second "
        f"{ratios['eagle_eye_second']:.2f}x (through the SDK: {ratios['sdk_second']:.2f}x)"
    )
    print(f"sdk_second / eagle_eye_second: {mean_us['sdk_second'] / mean_us['eagle_eye_second']:.1f}x less CPU")
    verdict = "met" if second_ms <= 2 else "MISSED"
    print(f"target (whole second ≤ 2 ms CPU): {second_ms:.3f} ms, {second_ms / 10:.3f} % of a core: {verdict}")
    verdict = "met" if ratios["eagle_eye_sweep"] <= 1 else "MISSED"
    print(f"target (sweep no slower than naive_pynvml): {sweep_ms:.3f} ms vs {naive / 1e3:.3f} ms: {verdict}")
    path = save(
        "bench_hardware_sweep",
        {
            "machine": machine_info(),
            "args": vars(args),
            "reps": reps_info,
            "nvml_calls": calls,
            "per_rep": per_rep,
            "summary": summary,
            "ratios_over_naive": ratios,
        },
    )
    print(f"saved {path}")
    export.stop(2.0)
    sdk_exporter.shutdown(2000)
    provider.shutdown()
    source.close()
    server.stop()


if __name__ == "__main__":
    main()
