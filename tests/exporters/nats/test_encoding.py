"""Golden tests of the NATS metric encoding: SDK MetricsData in, OTLP ExportMetricsServiceRequest out."""

from __future__ import annotations

import json

import pytest
from google.protobuf.json_format import Parse
from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from eagleeye_otel.exporters.nats import OTLP_JSON, OTLP_PROTOBUF
from eagleeye_otel.exporters.nats._encoding import encode_otlp_json, encode_otlp_protobuf

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
SPAN_ID = 0xB7AD6B7169203331
CUMULATIVE = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE


@pytest.fixture(scope="module")
def metrics_data() -> MetricsData:
    """One collection covering every instrument kind the exporters see, with attributes and an exemplar."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(
        resource=Resource.create({"service.name": "golden", "k8s.node.name": "node-1"}), metric_readers=[reader]
    )
    meter = provider.get_meter("eagleeye.test", "1.2.3")
    requests = meter.create_counter("test.requests", unit="{request}", description="requests served")
    requests.add(3, {"model": "a"})
    requests.add(4, {"model": "b"})
    sampled = trace.set_span_in_context(
        NonRecordingSpan(SpanContext(TRACE_ID, SPAN_ID, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED)))
    )
    requests.add(2, {"model": "a"}, context=sampled)
    meter.create_up_down_counter("test.running", unit="{request}").add(-2, {"model": "a"})
    latency = meter.create_histogram("test.latency", unit="s", explicit_bucket_boundaries_advisory=[0.1, 1.0])
    for value in (0.05, 0.5, 2.0):
        latency.record(value, {"model": "a"})

    def temperature(_options: CallbackOptions) -> list[Observation]:
        return [Observation(71.5, {"hw.id": "gpu-0"})]

    meter.create_observable_gauge("test.temperature", [temperature], unit="Cel")
    data = reader.get_metrics_data()
    provider.shutdown()
    assert data is not None
    return data


def by_name(request: ExportMetricsServiceRequest) -> dict[str, metrics_pb2.Metric]:
    (resource_metrics,) = request.resource_metrics
    (scope_metrics,) = resource_metrics.scope_metrics
    return {metric.name: metric for metric in scope_metrics.metrics}


def attributes(point: metrics_pb2.NumberDataPoint | metrics_pb2.HistogramDataPoint) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in point.attributes}


def test_protobuf_round_trip_keeps_resource_scope_names_units_and_points(metrics_data: MetricsData) -> None:
    request = ExportMetricsServiceRequest.FromString(encode_otlp_protobuf(metrics_data))

    (resource_metrics,) = request.resource_metrics
    resource = {kv.key: kv.value.string_value for kv in resource_metrics.resource.attributes}
    assert resource["service.name"] == "golden"
    assert resource["k8s.node.name"] == "node-1"
    (scope_metrics,) = resource_metrics.scope_metrics
    assert (scope_metrics.scope.name, scope_metrics.scope.version) == ("eagleeye.test", "1.2.3")

    metrics = by_name(request)
    assert set(metrics) == {"test.requests", "test.running", "test.latency", "test.temperature"}

    requests = metrics["test.requests"]
    assert (requests.unit, requests.description) == ("{request}", "requests served")
    assert requests.sum.is_monotonic
    assert requests.sum.aggregation_temporality == CUMULATIVE
    assert {attributes(p)["model"]: p.as_int for p in requests.sum.data_points} == {"a": 5, "b": 4}
    for point in requests.sum.data_points:
        assert point.time_unix_nano >= point.start_time_unix_nano > 0

    running = metrics["test.running"]
    assert not running.sum.is_monotonic
    assert [p.as_int for p in running.sum.data_points] == [-2]

    latency = metrics["test.latency"]
    assert latency.unit == "s"
    (histogram,) = latency.histogram.data_points
    assert latency.histogram.aggregation_temporality == CUMULATIVE
    assert list(histogram.explicit_bounds) == [0.1, 1.0]
    assert list(histogram.bucket_counts) == [1, 1, 1]
    assert histogram.count == 3
    assert histogram.sum == pytest.approx(2.55)
    assert (histogram.min, histogram.max) == (0.05, 2.0)

    temperature = metrics["test.temperature"]
    assert temperature.unit == "Cel"
    (gauge_point,) = temperature.gauge.data_points
    assert gauge_point.as_double == 71.5
    assert attributes(gauge_point) == {"hw.id": "gpu-0"}


def test_exemplar_carries_the_sampled_trace(metrics_data: MetricsData) -> None:
    request = ExportMetricsServiceRequest.FromString(encode_otlp_protobuf(metrics_data))
    exemplars = [e for p in by_name(request)["test.requests"].sum.data_points for e in p.exemplars]
    assert [(e.trace_id, e.span_id) for e in exemplars] == [(TRACE_ID.to_bytes(16, "big"), SPAN_ID.to_bytes(8, "big"))]


def test_json_is_otlp_json_of_the_same_request(metrics_data: MetricsData) -> None:
    payload = encode_otlp_json(metrics_data)
    document = json.loads(payload)

    assert payload == json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()  # compact
    (resource_metrics,) = document["resourceMetrics"]
    metrics = {m["name"]: m for m in resource_metrics["scopeMetrics"][0]["metrics"]}
    requests = metrics["test.requests"]["sum"]
    assert requests["aggregationTemporality"] == CUMULATIVE  # OTLP/JSON: enums are integers, not names
    assert sorted(p["asInt"] for p in requests["dataPoints"]) == ["4", "5"]  # 64-bit ints as decimal strings
    (exemplar,) = [e for p in requests["dataPoints"] for e in p.get("exemplars", [])]
    assert exemplar["traceId"] == f"{TRACE_ID:032x}"  # OTLP/JSON: ids are hex, not base64
    assert exemplar["spanId"] == f"{SPAN_ID:016x}"

    # Apart from the id spelling, it is the protobuf request, field for field.
    for point in requests["dataPoints"]:
        for example in point.get("exemplars", []):
            example.pop("traceId")
            example.pop("spanId")
    decoded = Parse(json.dumps(document), ExportMetricsServiceRequest())
    expected = ExportMetricsServiceRequest.FromString(encode_otlp_protobuf(metrics_data))
    for point in by_name(expected)["test.requests"].sum.data_points:
        for example in point.exemplars:
            example.ClearField("trace_id")
            example.ClearField("span_id")
    assert decoded == expected


def test_encodings_announce_their_content_type() -> None:
    assert (OTLP_PROTOBUF.name, OTLP_PROTOBUF.content_type) == ("otlp_proto", "application/x-protobuf")
    assert (OTLP_JSON.name, OTLP_JSON.content_type) == ("otlp_json", "application/json")
    assert OTLP_PROTOBUF.encode is encode_otlp_protobuf
    assert OTLP_JSON.encode is encode_otlp_json


def test_empty_collection_encodes_to_an_empty_request() -> None:
    empty = MetricsData(resource_metrics=[])
    assert ExportMetricsServiceRequest.FromString(encode_otlp_protobuf(empty)) == ExportMetricsServiceRequest()
    assert json.loads(encode_otlp_json(empty)) == {}
