"""Hostile OTLP exports into the diagnosis: any well-formed export is taken in (never counted malformed, never a
rule failure, every finding it causes publishable and readable by routers), any broken one is counted, and
neither retains memory beyond the caps. The service exports the counts as ``eagleeye.diagnosis.rejected``."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AGGREGATION_TEMPORALITY_CUMULATIVE,
    AGGREGATION_TEMPORALITY_DELTA,
    Metric,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from eagleeye_otel.diagnosis import DiagnosisEngine, Limits, load_knowledge_base
from eagleeye_otel.diagnosis._outputs import FindingChange, encode_message, register_intake_metrics
from eagleeye_otel.routing import InstanceHealth
from eagleeye_otel.semconv import _diagnosis as dx
from eagleeye_otel.semconv import _hardware as hw
from tests.helpers.clock import ManualClock
from tests.helpers.hostile_protobuf import HOSTILE_OTLP, deep_attribute_export
from tests.helpers.memory import retained_bytes

KB = load_knowledge_base()
NOW = 1_800_000_000.0
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- well-formed exports of any content ----------------------------------------------------------------------

_texts = st.text(max_size=30) | st.text(min_size=250, max_size=300)
_node_names = st.sampled_from(["gpu-node-1", "gpu-node-2", ""]) | _texts
_metric_names = (
    st.sampled_from(
        [
            hw.HW_STATUS,
            hw.HW_TEMPERATURE,
            hw.HW_ERRORS,
            hw.HW_GPU_UTILIZATION,
            hw.HW_GPU_MEMORY_USAGE,
            hw.EAGLEEYE_HW_GPU_XID,
            hw.EAGLEEYE_KERNEL_LOG_EVENTS,
            hw.EAGLEEYE_HW_GPU_REMAPPED_ROWS_FAILURE,
            hw.EAGLEEYE_HW_NPU_HEALTH,
            hw.EAGLEEYE_HW_NPU_ERROR_CODE_ACTIVE,
        ]
    )
    | _texts
)
_attribute_keys = (
    st.sampled_from(
        [
            hw.HW_ID,
            hw.HW_NAME,
            hw.HW_TYPE,
            hw.HW_STATE,
            hw.HW_SENSOR_LOCATION,
            hw.EAGLEEYE_HW_GPU_XID_CODE,
            hw.EAGLEEYE_HW_PCI_BUS_ID,
            hw.EAGLEEYE_KERNEL_LOG_KIND,
            hw.EAGLEEYE_KERNEL_LOG_CODE,
            hw.EAGLEEYE_KERNEL_LOG_DEVICE,
            hw.EAGLEEYE_HW_NPU_ERROR_CODE,
        ]
    )
    | _texts
)
_scalar_values = st.one_of(
    st.builds(
        lambda s: AnyValue(string_value=s), st.sampled_from(["gpu", "npu", "failed", "ok", "xid", "79"]) | _texts
    ),
    st.builds(lambda i: AnyValue(int_value=i), st.integers(-(2**63), 2**63 - 1)),
    st.builds(lambda b: AnyValue(bool_value=b), st.booleans()),
    st.builds(lambda f: AnyValue(double_value=f), st.floats()),
    st.builds(lambda b: AnyValue(bytes_value=b), st.binary(max_size=10)),
)


def _array(values: list[AnyValue]) -> AnyValue:
    value = AnyValue()
    value.array_value.values.extend(values)
    return value


_any_values = st.recursive(_scalar_values, lambda children: st.lists(children, max_size=3).map(_array), max_leaves=6)
_attributes = st.lists(st.builds(lambda k, v: KeyValue(key=k, value=v), _attribute_keys, _any_values), max_size=20)
_numbers = st.one_of(
    st.floats(),  # NaN and both infinities included
    st.sampled_from([0.0, 1.0, 79.0, 1e300, -1e300, 5e-324]),
    st.integers(-(2**63), 2**63 - 1),
)


@st.composite
def metrics(draw: st.DrawFn) -> Metric:
    metric = Metric(name=draw(_metric_names))
    kind = draw(st.sampled_from(["gauge", "sum", "histogram", "none"]))
    if kind == "none":
        return metric
    if kind == "histogram":
        metric.histogram.data_points.add(count=draw(st.integers(0, 2**64 - 1)))
        return metric
    data = metric.gauge if kind == "gauge" else metric.sum
    if kind == "sum":
        metric.sum.aggregation_temporality = draw(
            st.sampled_from([AGGREGATION_TEMPORALITY_CUMULATIVE, AGGREGATION_TEMPORALITY_DELTA, 0])
        )
        metric.sum.is_monotonic = draw(st.booleans())
    for _ in range(draw(st.integers(0, 4))):
        point = data.data_points.add(time_unix_nano=draw(st.integers(0, 2**64 - 1) | st.just(0)))
        value = draw(_numbers)
        if isinstance(value, float):
            point.as_double = value
        else:
            point.as_int = value
        point.attributes.extend(draw(_attributes))
    return metric


@st.composite
def exports(draw: st.DrawFn) -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    for _ in range(draw(st.integers(0, 2))):
        resource_metrics = request.resource_metrics.add()
        node_key = draw(st.sampled_from([hw.EAGLEEYE_NODE_NAME, "host.name", "other"]))
        resource_metrics.resource.attributes.append(
            KeyValue(key=node_key, value=AnyValue(string_value=draw(_node_names)))
        )
        resource_metrics.resource.attributes.extend(draw(_attributes))
        for _ in range(draw(st.integers(0, 2))):
            resource_metrics.scope_metrics.add().metrics.extend(draw(st.lists(metrics(), max_size=5)))
    return request


@FUZZ
@given(requests=st.lists(exports(), min_size=1, max_size=4), serialized=st.booleans())
def test_any_well_formed_export_is_taken_in_and_its_findings_reach_routers(
    requests: list[ExportMetricsServiceRequest], serialized: bool
) -> None:
    clock = ManualClock(NOW)
    engine = DiagnosisEngine(KB, clock=clock, hysteresis=False)
    for request in requests:
        engine.ingest_otlp(request.SerializeToString() if serialized else request)
        engine.evaluate()
        clock.now += 1.0
    stats = engine.stats
    assert (stats.payloads, stats.malformed, stats.rule_failures) == (len(requests), 0, 0)
    health = InstanceHealth()
    for finding in engine.active():
        assert health.handle(encode_message(finding, FindingChange.OPENED)), finding
    assert health.invalid == 0


@FUZZ
@given(request=exports(), flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=6))
def test_corrupted_exports_are_counted_never_raised(request: ExportMetricsServiceRequest, flips: Any) -> None:
    payload = bytearray(request.SerializeToString() or b"\x0a")
    for position, value in flips:
        payload[position % len(payload)] = value
    engine = DiagnosisEngine(KB, clock=ManualClock(NOW))
    engine.ingest_otlp(bytes(payload))
    engine.evaluate()
    assert engine.stats.payloads == 1
    assert engine.stats.rule_failures == 0


@pytest.mark.parametrize("payload", HOSTILE_OTLP.values(), ids=HOSTILE_OTLP.keys())
def test_hostile_payloads_are_counted_as_malformed(payload: bytes) -> None:
    engine = DiagnosisEngine(KB, clock=ManualClock(NOW))
    assert engine.ingest_otlp(payload) == 0
    assert (engine.stats.payloads, engine.stats.malformed) == (1, 1)
    assert engine.nodes == {}


def _request(*metrics: Metric, node: str = "gpu-node-1") -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    resource_metrics.resource.attributes.append(KeyValue(key=hw.EAGLEEYE_NODE_NAME, value=AnyValue(string_value=node)))
    resource_metrics.scope_metrics.add().metrics.extend(metrics)
    return request


def _gauge(name: str, *points: tuple[float, dict[str, str]], delta_sum: bool = False) -> Metric:
    metric = Metric(name=name)
    if delta_sum:
        metric.sum.aggregation_temporality = AGGREGATION_TEMPORALITY_DELTA
    data = metric.sum if delta_sum else metric.gauge
    for value, attributes in points:
        point = data.data_points.add(as_double=value)
        point.attributes.extend(KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in attributes.items())
    return metric


def test_a_huge_repeated_field_keeps_only_what_the_caps_allow() -> None:
    """200,000 points without a device in one export: the node's own series are capped like a device's."""
    limits = Limits(series_per_device=1024)
    engine = DiagnosisEngine(KB, clock=ManualClock(NOW), limits=limits)
    points = [(1.0, {"series": str(i)}) for i in range(200_000)]
    payload = _request(_gauge("made.up", *points)).SerializeToString()
    assert engine.ingest_otlp(payload) == 1024
    assert engine.stats.dropped == 200_000 - 1024
    assert engine.nodes["gpu-node-1"].series_count == 1024


def test_series_of_a_device_at_its_cap_leave_nothing_behind() -> None:
    engine = DiagnosisEngine(KB, clock=ManualClock(NOW), limits=Limits(series_per_device=4))
    engine.ingest_otlp(_request(*(_gauge(f"metric.{i}", (1.0, {hw.HW_ID: "GPU-1"})) for i in range(100))))
    device = engine.nodes["gpu-node-1"].devices["GPU-1"]
    assert len(device.series) == 4  # no empty table per rejected metric name
    assert engine.stats.dropped == 96


def test_values_that_are_not_finite_are_dropped_and_do_not_poison_a_total() -> None:
    engine = DiagnosisEngine(KB, clock=ManualClock(NOW))
    errors = {hw.HW_ID: "GPU-1", hw.HW_TYPE: "gpu"}
    for value in (2.0, math.nan, math.inf, 3.0):
        engine.ingest_otlp(_request(_gauge(hw.HW_ERRORS, (value, errors), delta_sum=True)))
    (series,) = engine.nodes["gpu-node-1"].devices["GPU-1"].series[hw.HW_ERRORS].values()
    assert series.value == 5.0
    assert (engine.stats.malformed, engine.stats.dropped) == (0, 2)


def test_an_infinite_xid_count_is_dropped_not_a_malformed_payload() -> None:
    """It used to raise OverflowError half-way through the export, losing the rest of it."""
    engine = DiagnosisEngine(KB, clock=ManualClock(NOW), hysteresis=False)
    xid = {hw.HW_ID: "GPU-1", hw.HW_TYPE: "gpu", hw.EAGLEEYE_HW_GPU_XID_CODE: "79"}
    temperature = {hw.HW_ID: "GPU-1", hw.HW_TYPE: "gpu", hw.HW_SENSOR_LOCATION: "die"}
    request = _request(_gauge(hw.EAGLEEYE_HW_GPU_XID, (math.inf, xid)), _gauge(hw.HW_TEMPERATURE, (50.0, temperature)))
    assert engine.ingest_otlp(request) == 1
    assert (engine.stats.malformed, engine.stats.dropped) == (0, 1)
    assert engine.evaluate().opened == ()


@pytest.mark.parametrize("where", ["node", "metric", "attribute-key", "attribute-value", "device"])
def test_names_over_256_characters_are_dropped(where: str) -> None:
    long = "x" * 257
    engine = DiagnosisEngine(KB, clock=ManualClock(NOW))
    attributes = {hw.HW_ID: long if where == "device" else "GPU-1", "k": "v"}
    if where.startswith("attribute"):
        attributes = {
            hw.HW_ID: "GPU-1",
            (long if where == "attribute-key" else "k"): (long if "value" in where else "v"),
        }
    metric = _gauge(long if where == "metric" else hw.HW_TEMPERATURE, (1.0, attributes))
    assert engine.ingest_otlp(_request(metric, node=long if where == "node" else "gpu-node-1")) == 0
    assert engine.stats.dropped == 1
    assert all(not node.devices and not node.series for node in engine.nodes.values())


def test_too_many_series_attributes_are_dropped() -> None:
    engine = DiagnosisEngine(KB, clock=ManualClock(NOW))
    attributes = {hw.HW_ID: "GPU-1", **{f"k{i}": "v" for i in range(17)}}
    assert engine.ingest_otlp(_request(_gauge(hw.HW_TEMPERATURE, (1.0, attributes)))) == 0
    assert engine.stats.dropped == 1


def test_a_hostile_flood_retains_no_memory() -> None:
    """10,000 hostile exports after the caps are reached: what is held no longer grows."""
    limits = Limits(nodes=4, devices_per_node=4, series_per_device=8)
    engine = DiagnosisEngine(KB, clock=ManualClock(NOW), limits=limits)
    kinds: list[Callable[[int], bytes]] = [
        lambda i: deep_attribute_export(60 + i % 40),
        lambda i: b"\x0a" + bytes([i % 256]) * 50,
        lambda i: _request(_gauge(f"m.{i}", (1.0, {hw.HW_ID: f"GPU-{i % 4}"}))).SerializeToString(),
        lambda i: _request(_gauge(f"n.{i}", (1.0, {"k": str(i)}))).SerializeToString(),
        lambda i: _request(_gauge("m", (1.0, {hw.HW_ID: f"GPU-{i}"}))).SerializeToString(),
        lambda i: _request(_gauge("m", (1.0, {})), node=f"node-{i}").SerializeToString(),
        lambda i: _request(_gauge("m", (math.nan, {hw.HW_ID: "GPU-0", "k": str(i)}))).SerializeToString(),
        lambda i: _request(_gauge("m", (1.0, {hw.HW_ID: "GPU-0", "k": "x" * (257 + i)}))).SerializeToString(),
    ]
    payloads = [kinds[i % len(kinds)](i) for i in range(10_000)]
    assert retained_bytes(engine.ingest_otlp, payloads, warmup=200) < 256 * 1024
    stats = engine.stats
    assert stats.malformed == 2 * 10_200 // len(kinds)
    assert stats.dropped > 6 * 10_000 // len(kinds)


# -- the counter users see -----------------------------------------------------------------------------------


def test_rejections_are_exported_as_a_counter_by_reason() -> None:
    engine = DiagnosisEngine(KB, clock=ManualClock(NOW))
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    register_intake_metrics(provider, lambda: engine.stats)
    engine.ingest_otlp(b"not protobuf")
    engine.ingest_otlp(deep_attribute_export(100_000))
    engine.ingest_otlp(_request(_gauge(hw.HW_TEMPERATURE, (math.nan, {hw.HW_ID: "GPU-1"}))))
    data = reader.get_metrics_data()
    assert data is not None
    (metric,) = [m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]
    assert (metric.name, metric.unit, metric.data.is_monotonic) == (dx.EAGLEEYE_DIAGNOSIS_REJECTED, "{item}", True)
    counts = {p.attributes[dx.EAGLEEYE_DIAGNOSIS_REASON]: p.value for p in metric.data.data_points}
    assert counts == {dx.REJECTED_MALFORMED: 2, dx.REJECTED_DROPPED: 1}
    provider.shutdown()
