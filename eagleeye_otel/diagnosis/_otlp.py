"""OTLP metric exports into the telemetry view: each gauge and sum point to its node, device and series.

Only what the rules use is kept per point: the device identity (``hw.id``, ``hw.name``, ``hw.type``), the series
attributes, and on ``hw.status`` points the device's description. Delta sums are added up into totals, so a producer
that exports deltas is judged like the monitor, which exports cumulative counters. After each export every device
of the node gets its ``hw.state`` and whether it answered: one that reports ``hw.status`` but no reading did not.

Whatever the export holds, what is kept stays small: a point whose value is not a finite number, whose metric name,
device or attribute text is over 256 characters, or that has more than 16 series attributes is dropped and counted
in ``telemetry.dropped``, and so is every point of a node whose name is over 256 characters.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AGGREGATION_TEMPORALITY_DELTA, Metric

from eagleeye_otel.diagnosis._telemetry import NodeView, SeriesKey, Telemetry
from eagleeye_otel.semconv import _hardware as hw

__all__ = ["ingest_request"]

_HOST_NAME: Final = "host.name"
_NOT_SERIES: Final = frozenset({hw.HW_ID, hw.HW_NAME, hw.HW_TYPE, *hw.DEVICE_DESCRIPTION_ATTRIBUTES})
_NOT_READINGS: Final = frozenset(
    {hw.HW_STATUS, hw.EAGLEEYE_HW_READ_STATUS, hw.EAGLEEYE_HW_GPU_XID, hw.EAGLEEYE_HW_GPU_XID_LAST_EVENT_TIME}
)
"""What a device that did not answer still reports; anything else current means it answered."""
_EVENT_COUNTERS: Final = frozenset({hw.EAGLEEYE_HW_GPU_XID, hw.EAGLEEYE_KERNEL_LOG_EVENTS})
_READ: Final = hw.EAGLEEYE_HW_READ_STATUS
_MAX_TEXT: Final = 256
"""Longest node name, metric name, device id or attribute kept; real ones are under 100 characters."""
_MAX_SERIES_ATTRIBUTES: Final = 16
"""Most attributes a series may have besides the device's; the monitor's have at most three."""


def ingest_request(telemetry: Telemetry, request: ExportMetricsServiceRequest, now: float) -> int:
    """Take one OTLP export into ``telemetry``: every gauge and sum point; returns how many points were kept."""
    points = 0
    updated: dict[str, NodeView] = {}
    for resource_metrics in request.resource_metrics:
        name = _node_name(resource_metrics.resource.attributes)
        view = updated.get(name)
        if view is None:
            if len(name) > _MAX_TEXT:
                telemetry.dropped += 1
                continue
            view = telemetry.node(name, now)
            if view is None:
                continue
            view.seq += 1
            view.updated_at, view.dirty = now, True
            updated[name] = view
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                points += _metric(telemetry, view, metric, now)
    for view in updated.values():
        _settle(view)
    return points


def _metric(telemetry: Telemetry, node: NodeView, metric: Metric, now: float) -> int:
    kind = metric.WhichOneof("data")
    if kind == "gauge":
        data_points, delta = metric.gauge.data_points, False
    elif kind == "sum":
        data_points = metric.sum.data_points
        delta = metric.sum.aggregation_temporality == AGGREGATION_TEMPORALITY_DELTA
    else:
        return 0
    name = metric.name
    if len(name) > _MAX_TEXT:
        telemetry.dropped += len(data_points)
        return 0
    kept = 0
    for point in data_points:
        value = point.as_double if point.WhichOneof("value") == "as_double" else float(point.as_int)
        if not math.isfinite(value):  # NaN would poison a delta total, infinity an event count
            telemetry.dropped += 1
            continue
        time = point.time_unix_nano / 1e9 or now
        kept += _point(telemetry, node, name, point.attributes, value, time=time, delta=delta)
    return kept


def _point(
    telemetry: Telemetry,
    node: NodeView,
    metric: str,
    attributes: Iterable[KeyValue],
    value: float,
    *,
    time: float,
    delta: bool,
) -> int:
    split = _split(attributes, described=metric == hw.HW_STATUS)
    if split is None:
        telemetry.dropped += 1
        return 0
    identity, series_key, described = split
    device_id, device_name, device_type = identity
    device = None
    if device_id is not None:
        device = telemetry.device(node, device_id, device_name, device_type or "")
        if device is None:
            return 0
        device.seq = node.seq
        if metric not in _NOT_READINGS:
            device.readings_seq = node.seq
        elif described:
            device.description.update(described)
    series = telemetry.series(node, device, metric, series_key)
    if series is None:
        return 0
    previous = series.value if series.seq >= 0 else None
    if delta:
        value += previous or 0.0
    series.add(time, value, node.seq)
    if metric in _EVENT_COUNTERS:
        telemetry.count_events(node, device_id, series, previous, time)
    return 1


def _split(
    attributes: Iterable[KeyValue], *, described: bool
) -> tuple[tuple[str | None, str | None, str | None], SeriesKey, dict[str, str]] | None:
    """A point's attributes as (device id, name, type), its series key, and (``described``) its description;
    None when they are too many or too long to keep."""
    device_id = device_name = device_type = None
    extra: list[tuple[str, str]] = []
    description: dict[str, str] = {}
    for attribute in attributes:
        key, text = attribute.key, _text(attribute.value)
        if len(key) > _MAX_TEXT or len(text) > _MAX_TEXT:
            return None
        if key == hw.HW_ID:
            device_id = text
        elif key == hw.HW_NAME:
            device_name = text
        elif key == hw.HW_TYPE:
            device_type = text
        elif key not in _NOT_SERIES:
            extra.append((key, text))
        elif described:
            description[key] = text
    if len(extra) > _MAX_SERIES_ATTRIBUTES:
        return None
    return (device_id, device_name, device_type), tuple(sorted(extra)) if len(extra) > 1 else tuple(extra), description


def _settle(node: NodeView) -> None:
    """After an update: each device's state from its ``hw.status``, whether it answered at all, and the events'
    dates."""
    node.date_events()
    seq = node.seq
    for device in node.devices.values():
        if device.seq != seq:
            continue
        state = next((s.attributes.get(hw.HW_STATE) for s in node.current(device, hw.HW_STATUS) if s.value), None)
        device.state = state
        read = next((s.attributes.get(hw.EAGLEEYE_HW_READ_STATE) for s in node.current(device, _READ) if s.value), None)
        if read is not None:  # the monitor says how the driver answered: lost, hung, ...
            device.status = read
        elif device.readings_seq == seq or state in (None, "ok"):
            device.status = "ok"
        else:
            device.status = "unreachable" if state == "failed" else "error"


def _node_name(attributes: Iterable[KeyValue]) -> str:
    """The node an export came from: ``eagleeye.node.name``, else ``host.name``, else ``unknown``."""
    host = None
    for attribute in attributes:
        if attribute.key == hw.EAGLEEYE_NODE_NAME:
            return _text(attribute.value)
        if attribute.key == _HOST_NAME:
            host = _text(attribute.value)
    return host or "unknown"


def _text(value: AnyValue) -> str:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return str(value.int_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "double_value":
        return repr(value.double_value)
    return ""
