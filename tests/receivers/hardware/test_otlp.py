"""The NATS batch encoded straight from a sweep is the message the SDK pipeline sends for the same sweep."""

from __future__ import annotations

import dataclasses
import math

from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource

from eagleeye_otel.receivers.hardware._instruments import register_hardware_metrics
from eagleeye_otel.receivers.hardware._model import DeviceStatus, Sweep
from eagleeye_otel.receivers.hardware._otlp import SweepEncoder
from eagleeye_otel.semconv import _hardware as hw
from tests.receivers.hardware.sweeps import GPU, SWEEP

RESOURCE = Resource.create({hw.EAGLEEYE_NODE_NAME: "node-a", "host.name": "node-a"})


class SdkPipeline:
    """The hardware instruments on a meter provider, collected and encoded as a periodic NATS reader would."""

    def __init__(self) -> None:
        self.sweep = SWEEP
        self._reader = InMemoryMetricReader()
        provider = MeterProvider(metric_readers=[self._reader], resource=RESOURCE, shutdown_on_exit=False)
        register_hardware_metrics(provider, lambda: self.sweep, max_age_s=0.0)

    def request(self, sweep: Sweep) -> ExportMetricsServiceRequest:
        self.sweep = sweep
        data = self._reader.get_metrics_data()
        assert data is not None
        return encode_metrics(data)


def _points(request: ExportMetricsServiceRequest):
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                yield metric, getattr(metric, metric.WhichOneof("data")).data_points


def _without_times(request: ExportMetricsServiceRequest) -> ExportMetricsServiceRequest:
    """The request with its timestamps cleared: each process stamps its own clock."""
    copy = ExportMetricsServiceRequest()
    copy.CopyFrom(request)
    for _, points in _points(copy):
        for point in points:
            point.ClearField("time_unix_nano")
            point.ClearField("start_time_unix_nano")
    return copy


def _decoded(encoder: SweepEncoder, sweep: Sweep, now: int) -> ExportMetricsServiceRequest:
    payload = encoder.encode(sweep, now)
    assert payload is not None
    return ExportMetricsServiceRequest.FromString(payload)


def test_the_batch_is_the_sdk_pipelines_message_for_the_same_sweep():
    sdk, encoder = SdkPipeline(), SweepEncoder(RESOURCE)
    ours = _decoded(encoder, SWEEP, 1_800_000_000_000_000_000)
    theirs = sdk.request(SWEEP)
    assert _without_times(ours) == _without_times(theirs)
    assert sum(len(points) for _, points in _points(ours)) > 100


def test_timestamps_are_those_of_an_export_and_sums_keep_their_start():
    encoder = SweepEncoder(RESOURCE)
    first = _decoded(encoder, SWEEP, 1_000)
    second = _decoded(encoder, SWEEP, 2_000)
    for (metric, points), (_, later) in zip(_points(first), _points(second), strict=True):
        for point, next_point in zip(points, later, strict=True):
            assert (point.time_unix_nano, next_point.time_unix_nano) == (1_000, 2_000)
            if metric.WhichOneof("data") == "sum":
                assert point.start_time_unix_nano == next_point.start_time_unix_nano == 1_000, metric.name
            else:
                assert point.start_time_unix_nano == next_point.start_time_unix_nano == 0, metric.name


def test_from_sweep_to_sweep_both_paths_agree_when_devices_and_values_change():
    sdk, encoder = SdkPipeline(), SweepEncoder(RESOURCE)
    lost = dataclasses.replace(GPU, status=DeviceStatus.LOST, detail="GPU is lost")
    not_a_number = dataclasses.replace(GPU, power_w=math.nan, energy_j=math.inf, clock_event_reasons=frozenset())
    for sweep in (SWEEP, dataclasses.replace(SWEEP, gpus=(lost,)), dataclasses.replace(SWEEP, gpus=(not_a_number,))):
        assert _without_times(_decoded(encoder, sweep, 1)) == _without_times(sdk.request(sweep))


def test_a_sweep_without_points_encodes_to_nothing():
    empty = SweepEncoder(RESOURCE, metrics=tuple(m for m in hw.HARDWARE_METRICS if m.sources == (hw.HW_TYPE_NPU,)))
    assert empty.encode(dataclasses.replace(SWEEP, npus=())) is None
