"""One sweep for people and scripts: a JSON document (``--format json``) and rich tables (``--format text``).

The JSON keeps the readings' field names and SI units (``_c`` °C, ``_w`` W, ``_j`` J, ``_bytes``, ``_hz``,
fractions 0..1), adds each device's ``state`` (the ``hw.state`` its metrics report), writes NPU error codes as the
``0x`` hex strings of Huawei's fault tables, and turns the kernel-log counts into a list of events.
"""

from __future__ import annotations

import datetime
from typing import Any

import msgspec
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from eagleeye_otel.receivers.hardware._instruments import gpu_state, npu_state
from eagleeye_otel.receivers.hardware._model import DeviceStatus, GpuReading, KernelLogSummary, NpuReading, Sweep

__all__ = ["print_sweep", "sweep_document"]

_GIB = 2**30


def sweep_document(sweep: Sweep) -> dict[str, Any]:
    """The sweep as JSON-ready builtins: ``node``, ``taken_at``, ``notes``, ``gpus``, ``npus``, ``kernel_log``."""
    return {
        "node": sweep.node,
        "taken_at": sweep.taken_at,
        "notes": list(sweep.notes),
        "gpus": [_gpu_document(gpu) for gpu in sweep.gpus],
        "npus": [_npu_document(npu) for npu in sweep.npus],
        "kernel_log": None if sweep.kernel_log is None else _kernel_log_document(sweep.kernel_log),
    }


def _reading_document(reading: GpuReading | NpuReading, state: str) -> dict[str, Any]:
    document: dict[str, Any] = msgspec.to_builtins(reading, str_keys=True)
    document["state"] = state
    return document


def _gpu_document(gpu: GpuReading) -> dict[str, Any]:
    document = _reading_document(gpu, gpu_state(gpu))
    if gpu.clock_event_reasons is not None:
        document["clock_event_reasons"] = sorted(gpu.clock_event_reasons)
    return document


def _npu_document(npu: NpuReading) -> dict[str, Any]:
    document = _reading_document(npu, npu_state(npu))
    document["error_codes"] = [_hex(code) for code in npu.error_codes]
    return document


def _kernel_log_document(summary: KernelLogSummary) -> dict[str, Any]:
    events = [
        {
            "kind": kind.value,
            "code": code,
            "device": device,
            "count": count,
            "last_message": summary.last_messages.get((kind, code, device)),
        }
        for (kind, code, device), count in sorted(summary.counts.items(), key=lambda item: (-item[1], str(item[0])))
    ]
    return {
        "lines": summary.lines,
        "malformed": summary.malformed,
        "overflow": summary.overflow,
        "lost": summary.lost,
        "events": events,
    }


def _hex(code: int) -> str:
    return f"0x{code:08X}"


def print_sweep(console: Console, sweep: Sweep) -> None:
    """Tables of the GPUs, the NPUs and the kernel-log events, and the notes on what could not be read."""
    taken = datetime.datetime.fromtimestamp(sweep.taken_at).isoformat(timespec="seconds")
    console.print(f"[bold]{sweep.node}[/]  {taken}")
    for note in sweep.notes:
        console.print(f"  [yellow]![/] {escape(note)}")
    if sweep.gpus:
        console.print(_gpu_table(sweep.gpus))
    if sweep.npus:
        console.print(_npu_table(sweep.npus))
    if sweep.kernel_log is not None and sweep.kernel_log.counts:
        console.print(_kernel_log_table(sweep.kernel_log))
    elif sweep.kernel_log is not None:
        console.print(f"kernel log: {sweep.kernel_log.lines} lines, no hardware event")


def _number(value: float | None, scale: float = 1.0, digits: int = 0, suffix: str = "") -> str:
    return "-" if value is None else f"{value / scale:.{digits}f}{suffix}"


def _used(used: int | None, total: int | None) -> str:
    return f"{_number(used, _GIB, 1)}/{_number(total, _GIB, 1)} GiB"


def _state(state: str, status: DeviceStatus, detail: str | None) -> str:
    colour = {"ok": "green", "degraded": "yellow", "predicted_failure": "yellow"}.get(state, "red")
    shown = f"[{colour}]{state}[/]"
    return shown if status is DeviceStatus.OK else f"{shown} ({status.value}: {detail})"


def _gpu_table(gpus: tuple[GpuReading, ...]) -> Table:
    table = Table("GPU", "model", "state", "util", "memory", "temp °C", "power W", "clock events", "ECC c/u", "Xid")
    for gpu in gpus:
        reasons = sorted((gpu.clock_event_reasons or frozenset()) - {"gpu_idle"})
        table.add_row(
            f"{gpu.identity.index} {gpu.identity.id}",
            gpu.identity.model or "-",
            _state(gpu_state(gpu), gpu.status, gpu.detail),
            _number(gpu.utilization, 0.01, 0, "%"),
            _used(gpu.memory_used_bytes, gpu.memory_total_bytes),
            f"{_number(gpu.temperature_c)} (slow {_number(gpu.slowdown_temperature_c)})",
            f"{_number(gpu.power_w)}/{_number(gpu.power_limit_w)}",
            ", ".join(reasons) or "-",
            f"{_number(gpu.ecc_corrected_volatile)}/{_number(gpu.ecc_uncorrected_volatile)}",
            ", ".join(f"{xid}x{count}" for xid, count in sorted(gpu.xid_counts.items())) or "-",
        )
    return table


def _npu_table(npus: tuple[NpuReading, ...]) -> Table:
    table = Table("NPU", "model", "state", "health", "AI Core", "HBM", "temp °C", "power W", "error codes")
    for npu in npus:
        table.add_row(
            f"{npu.identity.index} {npu.identity.id}",
            npu.identity.model or "-",
            _state(npu_state(npu), npu.status, npu.detail),
            _number(npu.health),
            _number(npu.aicore_utilization, 0.01, 0, "%"),
            _used(npu.hbm_used_bytes, npu.hbm_total_bytes),
            _number(npu.temperature_c),
            _number(npu.power_w, 1.0, 1),
            ", ".join(_hex(code) for code in npu.error_codes) or "-",
        )
    return table


def _kernel_log_table(summary: KernelLogSummary) -> Table:
    table = Table("kind", "code", "device", "count", "last message", title=f"kernel log ({summary.lines} lines)")
    for event in _kernel_log_document(summary)["events"]:
        table.add_row(event["kind"], event["code"], event["device"] or "-", str(event["count"]), event["last_message"])
    return table
