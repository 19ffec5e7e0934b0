"""The hardware metrics of a sweep as one OTLP ``ExportMetricsServiceRequest``, without the SDK's per-point work.

The monitor publishes every hardware point each second. Through the SDK (observable callbacks, a ``Measurement``, an
attribute hash and an aggregation per point, a data point object, then ``encode_metrics`` building a protobuf
object per point and per attribute) that cost 14 times the sweep it reports (``bench/bench_hardware_sweep.py``). Here
the points come straight from the sweep (:class:`~eagleeye_otel.receivers.hardware._points.HardwarePoints`, the same
mapping the instruments use) and each series' attributes are encoded once, by the SDK's own encoder
(``encode_metrics``), and reused: a point costs its value, its timestamps and a join.

The message is what the SDK pipeline sends for the same sweep with the default (cumulative) temporality: the same
resource, scope, metrics in ``HARDWARE_METRICS`` order with their name, description and unit, a gauge or a sum
(cumulative, monotonic for counters), points in the same order with the same attributes and value types, a sum's
``start_time_unix_nano`` fixed when its series first appears, non-finite values dropped, metrics without points left
out (``tests/receivers/hardware/test_otlp.py`` compares the two).
"""

from __future__ import annotations

import math
import struct
import time
from typing import Final

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1 import metrics_pb2 as pb2
from opentelemetry.sdk.metrics.export import (
    Gauge,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from eagleeye_otel.receivers.hardware._instruments import HARDWARE_METER_NAME
from eagleeye_otel.receivers.hardware._model import Sweep
from eagleeye_otel.receivers.hardware._points import HardwarePoints
from eagleeye_otel.receivers.hardware._series import Attributes
from eagleeye_otel.semconv import _hardware as hw
from eagleeye_otel.version import __version__

__all__ = ["SweepEncoder"]

_MAX_SERIES: Final = 65536
"""Encoded attribute sets kept; past it the cache starts over (and sums' start times with it)."""

# Wire tags (field number << 3 | wire type) of what each second re-encodes.
_DATA_POINT = 1 << 3 | 2  # Gauge.data_points and Sum.data_points
_START = struct.Struct("<BQ")  # NumberDataPoint.start_time_unix_nano (field 2), fixed64
_TIME_DOUBLE = struct.Struct("<BQBd")  # NumberDataPoint.time_unix_nano (field 3, fixed64), as_double (field 4)
_TIME_INT = struct.Struct("<BQBq")  # NumberDataPoint.time_unix_nano, as_int (field 6, sfixed64)
_START_TAG, _TIME_TAG, _DOUBLE_TAG, _INT_TAG = 2 << 3 | 1, 3 << 3 | 1, 4 << 3 | 1, 6 << 3 | 1
_GAUGE, _SUM = 5, 7  # Metric.gauge, Metric.sum
_METRICS, _SCOPE_METRICS, _RESOURCE_METRICS = 2, 2, 1  # ScopeMetrics.metrics, ResourceMetrics.scope_metrics, request


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


class _Layout:
    """One metric's fixed parts: its header (name, description, unit), where its points go, and the trailer."""

    def __init__(self, metric: hw.HardwareMetric) -> None:
        self.header = pb2.Metric(name=metric.name, description=metric.description, unit=metric.unit).SerializeToString()
        self.is_sum = metric.instrument is not hw.HwInstrument.GAUGE
        self.data_field = _SUM if self.is_sum else _GAUGE
        monotonic = metric.instrument is hw.HwInstrument.COUNTER
        trailer = pb2.Sum(aggregation_temporality=pb2.AGGREGATION_TEMPORALITY_CUMULATIVE, is_monotonic=monotonic)
        self.trailer = trailer.SerializeToString() if self.is_sum else b""
        self.series: dict[int, tuple[bytes, bytes]] = {}
        """Per series (the id of its attributes, held by the encoder): the point's framing, with a sum's start time
        fixed when the series first appears, and the encoded attributes."""


class SweepEncoder:
    """Encodes sweeps as the hardware monitor's OTLP protobuf batch.

    Not thread-safe: one exporting thread uses it.

    Args:
        resource: the node's resource, as given to the meter provider.
        metrics: what to encode; the hardware metrics table by default.
    """

    def __init__(self, resource: Resource, metrics: tuple[hw.HardwareMetric, ...] = hw.HARDWARE_METRICS) -> None:
        self._resource = resource
        self._scope = InstrumentationScope(HARDWARE_METER_NAME, __version__)
        self._points = HardwarePoints(metrics)
        self._layouts = [_Layout(metric) for metric in metrics]
        stub = self._sdk_encoded({})
        (resource_metrics,) = stub.resource_metrics
        (scope_metrics,) = resource_metrics.scope_metrics
        self._resource_head = pb2.ResourceMetrics(
            resource=resource_metrics.resource, schema_url=resource_metrics.schema_url
        ).SerializeToString()
        self._scope_head = pb2.ScopeMetrics(
            scope=scope_metrics.scope, schema_url=scope_metrics.schema_url
        ).SerializeToString()
        self._attributes: dict[int, tuple[Attributes, bytes]] = {}
        """Each series' attributes (held, so that their id stays theirs) and their encoding."""

    def encode(self, sweep: Sweep, time_unix_nano: int | None = None) -> bytes | None:
        """The request for ``sweep``, stamped ``time_unix_nano`` (now by default); None when it has no point.

        Args:
            sweep: what to report.
            time_unix_nano: the collection's time, on every point.
        """
        now = time.time_ns() if time_unix_nano is None else time_unix_nano
        metrics = []
        for layout, points in zip(self._layouts, self._points(sweep), strict=True):
            if points:
                body = self._data_points(layout, points, now)
                if body:
                    data = _length_delimited(layout.data_field, body + layout.trailer)
                    metrics.append(_length_delimited(_METRICS, layout.header + data))
        if not metrics:
            return None
        scope_metrics = self._scope_head + b"".join(metrics)
        resource_metrics = self._resource_head + _length_delimited(_SCOPE_METRICS, scope_metrics)
        return _length_delimited(_RESOURCE_METRICS, resource_metrics)

    def _data_points(self, layout: _Layout, points: list[tuple[int | float, Attributes]], now: int) -> bytes:
        parts: list[bytes] = []
        append = parts.append
        known = layout.series
        for value, attributes in points:
            if isinstance(value, int):
                stamped = _TIME_INT.pack(_TIME_TAG, now, _INT_TAG, value)
            elif math.isfinite(value):
                stamped = _TIME_DOUBLE.pack(_TIME_TAG, now, _DOUBLE_TAG, value)
            else:
                continue  # as the SDK drops it
            series = known.get(id(attributes))
            if series is None:
                series = self._new_series(layout, attributes, now)
            append(series[0])
            append(stamped)
            append(series[1])
        return b"".join(parts)

    def _new_series(self, layout: _Layout, attributes: Attributes, now: int) -> tuple[bytes, bytes]:
        """A series' first point in ``layout``: its framing (and a sum's start time) and its encoded attributes."""
        key = id(attributes)
        held = self._attributes.get(key)
        if held is None:
            if len(self._attributes) >= _MAX_SERIES:
                self._attributes.clear()
                for each in self._layouts:
                    each.series.clear()
            held = self._attributes[key] = (attributes, self._encoded_attributes(attributes))
        pairs = held[1]
        fixed = _START.size + _TIME_INT.size if layout.is_sum else _TIME_INT.size
        head = bytes([_DATA_POINT]) + _varint(fixed + len(pairs))
        if layout.is_sum:
            head += _START.pack(_START_TAG, now)
        series = layout.series[key] = (head, pairs)
        return series

    def _encoded_attributes(self, attributes: Attributes) -> bytes:
        """``NumberDataPoint.attributes`` as the SDK's encoder writes them."""
        (resource_metrics,) = self._sdk_encoded(attributes).resource_metrics
        (point,) = resource_metrics.scope_metrics[0].metrics[0].gauge.data_points
        return pb2.NumberDataPoint(attributes=point.attributes).SerializeToString()

    def _sdk_encoded(self, attributes: Attributes) -> ExportMetricsServiceRequest:
        point = NumberDataPoint(attributes=dict(attributes), start_time_unix_nano=0, time_unix_nano=0, value=0)
        metric = Metric(name="stub", description="", unit="", data=Gauge(data_points=[point]))
        scope_metrics = ScopeMetrics(scope=self._scope, metrics=[metric], schema_url=self._scope.schema_url or "")
        return encode_metrics(
            MetricsData([ResourceMetrics(self._resource, [scope_metrics], schema_url=self._resource.schema_url)])
        )
