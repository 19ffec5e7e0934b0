"""A ``hardware-monitor --once --format json`` document as the OTLP export the monitor would have sent.

The document's readings are rebuilt as :class:`Sweep` objects and collected through the monitor's own instruments
(:func:`register_hardware_metrics`) on a private meter provider, so a snapshot and a live export reach the rules
under the same names, attributes and units, with no second mapping to keep in step. What OTLP does not carry
travels beside it: each device's exact status (lost or reset required) and the kernel-log events with their last
message. A device entry that does not parse is skipped and counted.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource

from eagleeye_otel.errors import ConfigError
from eagleeye_otel.log_limiter import LogLimiter
from eagleeye_otel.receivers.hardware._instruments import register_hardware_metrics
from eagleeye_otel.receivers.hardware._model import GpuReading, KernelEventKind, NpuReading, Sweep
from eagleeye_otel.semconv import _hardware as hw

__all__ = ["SnapshotContent", "SnapshotEvent", "read_snapshot"]

_logger = logging.getLogger(__name__)
_skipped_log = LogLimiter(_logger)
"""A document may hold a million bad entries: they are counted, and logged once a minute."""
_KINDS = frozenset(kind.value for kind in KernelEventKind)
_Reading = TypeVar("_Reading", GpuReading, NpuReading)


@dataclass(frozen=True)
class SnapshotEvent:
    """One kernel-log entry of the snapshot: its key, how many times it was seen and its last message."""

    kind: str
    code: str
    device: str | None
    count: int
    message: str | None


@dataclass(frozen=True)
class SnapshotContent:
    """What a snapshot holds, ready for the engine.

    Attributes:
        node: the node it was taken on.
        request: its readings as an OTLP export.
        statuses: device id to how it answered (``ok``, ``lost``, ``reset_required``, ``error``).
        events: its kernel-log events.
        skipped: device and event entries that did not parse.
    """

    node: str
    request: ExportMetricsServiceRequest
    statuses: dict[str, str]
    events: tuple[SnapshotEvent, ...]
    skipped: int


def read_snapshot(document: Mapping[str, Any]) -> SnapshotContent:
    """Rebuild a snapshot's sweep and collect it through the hardware instruments.

    Raises:
        ConfigError: the document is not a hardware-monitor snapshot (no node name, lists of the wrong type).
    """
    if not isinstance(document, Mapping):
        raise ConfigError("snapshot", type(document).__name__, "expected the JSON object hardware-monitor prints")
    node = document.get("node")
    if not isinstance(node, str) or not node:
        raise ConfigError("snapshot.node", node, "expected the node name hardware-monitor --once prints")
    gpus, bad_gpus = _readings(document, "gpus", GpuReading)
    npus, bad_npus = _readings(document, "npus", NpuReading)
    events, bad_events = _events(document.get("kernel_log"))
    sweep = Sweep(node, _seconds(document.get("taken_at")), tuple(gpus), tuple(npus))
    statuses = {gpu.identity.id: gpu.status.value for gpu in gpus}
    statuses.update((npu.identity.id, npu.status.value) for npu in npus)
    return SnapshotContent(node, _collect(sweep), statuses, events, bad_gpus + bad_npus + bad_events)


def _readings(document: Mapping[str, Any], key: str, kind: type[_Reading]) -> tuple[list[_Reading], int]:
    """The device entries under ``key`` as readings, and how many were skipped because they did not parse."""
    entries = document.get(key)
    if entries is None:
        return [], 0
    if not isinstance(entries, list):
        raise ConfigError(f"snapshot.{key}", type(entries).__name__, "expected a list")
    readings, skipped = [], 0
    for index, entry in enumerate(entries):
        try:
            readings.append(msgspec.convert(_reading_fields(entry), kind, strict=False))
        except (msgspec.ValidationError, TypeError, ValueError) as error:
            skipped += 1
            _skipped_log.warning("snapshot %s[%d] skipped: %s", key, index, error)
    return readings, skipped


def _reading_fields(entry: object) -> dict[str, Any]:
    """A device entry as the reading's fields: without the derived ``state``, NPU codes back to numbers."""
    if not isinstance(entry, dict):
        raise TypeError(f"expected an object, got {type(entry).__name__}")
    fields = {key: value for key, value in entry.items() if key != "state"}
    codes = fields.get("error_codes")
    if isinstance(codes, list):
        fields["error_codes"] = [int(code, 16) if isinstance(code, str) else code for code in codes]
    return fields


def _seconds(taken_at: object) -> float:
    """``taken_at`` as Unix seconds; 0 (unknown) unless a finite number (JSON allows 1e999, Python NaN)."""
    if not isinstance(taken_at, int | float) or isinstance(taken_at, bool):
        return 0.0
    try:
        seconds = float(taken_at)
    except OverflowError:  # an integer too large for a float
        return 0.0
    return seconds if math.isfinite(seconds) else 0.0


def _events(kernel_log: object) -> tuple[tuple[SnapshotEvent, ...], int]:
    if not isinstance(kernel_log, dict):
        return (), 0
    entries = kernel_log.get("events")
    if entries is None:
        return (), 0
    if not isinstance(entries, list):
        raise ConfigError("snapshot.kernel_log.events", type(entries).__name__, "expected a list")
    events, skipped = [], 0
    for entry in entries:
        try:
            kind, code, device, count = entry["kind"], entry["code"], entry.get("device"), entry.get("count", 1)
            if kind not in _KINDS or not isinstance(code, str) or not isinstance(count, int) or count < 1:
                raise ValueError(entry)
            message = entry.get("last_message")
            events.append(
                SnapshotEvent(
                    kind,
                    code,
                    device if isinstance(device, str) else None,
                    count,
                    message if isinstance(message, str) else None,
                )
            )
        except (KeyError, TypeError, ValueError):
            skipped += 1
    return tuple(events), skipped


def _collect(sweep: Sweep) -> ExportMetricsServiceRequest:
    """One collection of the hardware instruments over ``sweep``, as the OTLP request the monitor would send."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], resource=Resource.create({hw.EAGLEEYE_NODE_NAME: sweep.node}))
    try:
        register_hardware_metrics(provider, lambda: sweep)
        data = reader.get_metrics_data()
    finally:
        provider.shutdown()
    return ExportMetricsServiceRequest() if data is None else encode_metrics(data)
