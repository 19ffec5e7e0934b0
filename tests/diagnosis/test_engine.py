"""The engine's intake: OTLP payloads of any shape (never an exception), snapshots, caps, counters."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AGGREGATION_TEMPORALITY_DELTA, Metric

from eagleeye_otel.cli._hardware_output import sweep_document
from eagleeye_otel.diagnosis import DiagnosisEngine, Limits, load_knowledge_base
from eagleeye_otel.errors import ConfigError
from eagleeye_otel.receivers.hardware._model import DeviceStatus, Sweep
from eagleeye_otel.semconv import _hardware as semconv

_KB = load_knowledge_base()


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=2048))
def test_random_bytes_never_raise(payload):
    engine = DiagnosisEngine(_KB)
    points = engine.ingest_otlp(payload)
    stats = engine.stats
    assert stats.payloads == 1
    assert points == 0 or stats.malformed == 0
    engine.evaluate()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=255)), max_size=8))
def test_corrupted_monitor_payloads_never_raise(hw, flips):
    payload = bytearray(hw.otlp(hw.gpu(0, xid_counts={79: 1}), at=1.8e9))
    for position, value in flips:
        payload[position % len(payload)] = value
    engine = DiagnosisEngine(_KB)
    engine.ingest_otlp(bytes(payload))
    engine.evaluate()
    engine.active()


def test_a_payload_that_is_not_protobuf_is_counted():
    engine = DiagnosisEngine(_KB)
    assert engine.ingest_otlp(b"\xff\xff\xff\xff not protobuf") == 0
    assert engine.ingest_otlp("text, not bytes") == 0  # type: ignore[arg-type]
    assert engine.stats.malformed == 2


def _request(node_attribute: str, node: str, *metrics: Metric) -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    resource_metrics.resource.attributes.append(KeyValue(key=node_attribute, value=AnyValue(string_value=node)))
    resource_metrics.scope_metrics.add().metrics.extend(metrics)
    return request


def _gauge(name: str, value: float, **attributes: str | int) -> Metric:
    metric = Metric(name=name)
    point = metric.gauge.data_points.add(as_double=value, time_unix_nano=1)
    for key, attribute in attributes.items():
        any_value = AnyValue(int_value=attribute) if isinstance(attribute, int) else AnyValue(string_value=attribute)
        point.attributes.append(KeyValue(key=key.replace("__", "."), value=any_value))
    return metric


def test_any_producer_with_the_same_names_works():
    """No eagleeye.node.name (host.name instead), no hw.status, int attributes: still judged."""
    engine = DiagnosisEngine(_KB, hysteresis=False)
    identity = {"hw__id": "GPU-x", "hw__type": "gpu", "hw__sensor_location": "die"}
    request = _request(
        "host.name",
        "other-host",
        _gauge(semconv.HW_TEMPERATURE, 95.0, **identity),
        _gauge(semconv.HW_TEMPERATURE_LIMIT, 90.0, **identity, hw__limit_type="throttled"),
        _gauge("some.other.metric", 1.0, hw__id="GPU-x", extra=3),
    )
    assert engine.ingest_otlp(request) == 3
    engine.evaluate()
    found = {(f.node, f.device, f.fault) for f in engine.active()}
    assert found == {
        ("other-host", "GPU-x", "gpu_temperature_slowdown"),
        ("other-host", "GPU-x", "gpu_temperature_near_slowdown"),
    }


def test_delta_counters_are_summed():
    engine = DiagnosisEngine(_KB, hysteresis=False)
    metric = Metric(name=semconv.HW_ERRORS)
    metric.sum.aggregation_temporality = AGGREGATION_TEMPORALITY_DELTA
    point = metric.sum.data_points.add(as_int=1, time_unix_nano=10**9)
    for key, value in ((semconv.HW_ID, "GPU-x"), (semconv.HW_TYPE, "gpu"), (semconv.ERROR_TYPE, "uncorrected")):
        point.attributes.append(KeyValue(key=key, value=AnyValue(string_value=value)))
    for _ in range(3):
        engine.ingest_otlp(_request(semconv.EAGLEEYE_NODE_NAME, "n", metric))
    series = engine.nodes["n"].devices["GPU-x"].series[semconv.HW_ERRORS][((semconv.ERROR_TYPE, "uncorrected"),)]
    assert series.value == 3
    engine.evaluate()
    assert [f.fault for f in engine.active()] == ["gpu_ecc_uncorrected"]


def test_histograms_and_points_without_a_value_are_skipped():
    metric = Metric(name="latency")
    metric.histogram.data_points.add(count=3)
    engine = DiagnosisEngine(_KB)
    assert engine.ingest_otlp(_request(semconv.EAGLEEYE_NODE_NAME, "n", metric, Metric(name="empty"))) == 0
    assert engine.stats.malformed == 0


def test_caps_bound_what_is_kept(hw):
    engine = DiagnosisEngine(_KB, limits=Limits(devices_per_node=2, series_per_device=10))
    engine.ingest_otlp(hw.otlp(hw.gpu(0), hw.gpu(1), hw.gpu(2), at=1.8e9))
    node = engine.nodes[hw.node]
    assert len(node.devices) == 2
    assert all(device.series_count <= 10 for device in node.devices.values())
    assert engine.stats.dropped > 0


def test_a_node_cap(hw):
    engine = DiagnosisEngine(_KB, limits=Limits(nodes=1))
    engine.ingest_otlp(_request(semconv.EAGLEEYE_NODE_NAME, "a", _gauge("x", 1.0)))
    engine.ingest_otlp(_request(semconv.EAGLEEYE_NODE_NAME, "b", _gauge("x", 1.0)))
    assert list(engine.nodes) == ["a"]
    assert engine.stats.dropped == 1


def test_a_failing_rule_is_counted_and_the_others_still_run(hw, monkeypatch):
    engine = DiagnosisEngine(_KB, hysteresis=False)
    rule = engine.knowledge.rule("gpu_temperature_slowdown")

    def broken(*_args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(rule, "evaluate", broken)
    engine.ingest_otlp(hw.otlp(hw.gpu(0, temperature_c=90.0), at=1.8e9))
    engine.evaluate()
    assert engine.stats.rule_failures == 1
    assert "gpu_temperature_near_shutdown" in {f.fault for f in engine.active()}


def test_stats_count_what_came_in_and_went_out(run, hw):
    run.step(hw.gpu(0, remapped_rows_failure=True))
    for _ in range(3):
        run.step(hw.gpu(0))
    stats = run.engine.stats
    assert (stats.payloads, stats.evaluations, stats.opened, stats.resolved, stats.active) == (4, 4, 1, 1, 0)
    assert stats.rules_evaluated >= 4 * 30


def test_a_snapshot_is_judged_like_the_monitors_export(hw):
    sweep = Sweep(
        hw.node,
        1.8e9,
        gpus=(
            hw.gpu(0, temperature_c=88.0, xid_counts={79: 1}),
            hw.gpu(1, status=DeviceStatus.LOST, detail="GPU is lost"),
            hw.gpu(2, status=DeviceStatus.RESET_REQUIRED),
        ),
        npus=(hw.npu(0, health=2, error_codes=(0x80E18402,)),),
        kernel_log=hw.kernel_log({("xid", "48", "0000:3b:00.0"): 2, ("ascend", "0x40F84E00", "0"): 1}),
    )
    engine = DiagnosisEngine(_KB, hysteresis=False)
    engine.ingest_snapshot(sweep_document(sweep))
    engine.evaluate()
    found = {(f.device, f.fault) for f in engine.active()}
    gpu = [hw.gpu_identity(i).id for i in range(3)]
    assert found >= {
        (gpu[0], "gpu_temperature_slowdown"),
        (gpu[0], "xid_79"),
        (gpu[0], "xid_48"),  # the kernel log's PCI address is GPU 0's
        (gpu[1], "gpu_lost"),
        (gpu[2], "gpu_reset_required"),
        ("npu-0-0", "npu_health"),
        ("npu-0-0", "npu_hbm_isolated_rows_limit"),
        ("npu-0-0", "npu_heartbeat_lost"),
    }
    lost = next(f for f in engine.active() if f.fault == "gpu_lost")
    assert lost.evidence["value"] == "lost"
    assert engine.stats.snapshots == 1


def test_snapshot_entries_that_do_not_parse_are_skipped_and_counted(hw):
    document = sweep_document(Sweep(hw.node, 1.8e9, gpus=(hw.gpu(0, temperature_c=95.0),)))
    document["gpus"] += [{"identity": "nonsense"}, 42, {"identity": {"id": "GPU-y"}, "temperature_c": "hot"}]
    document["kernel_log"] = {"events": [{"kind": "martian", "code": "1"}, "x"]}
    engine = DiagnosisEngine(_KB, hysteresis=False)
    engine.ingest_snapshot(document)
    engine.evaluate()
    assert engine.stats.malformed == 5
    assert "gpu_temperature_slowdown" in {f.fault for f in engine.active()}


@pytest.mark.parametrize("document", [[], {"gpus": []}, {"node": "n", "gpus": {}}, {"node": ""}])
def test_a_document_that_is_not_a_snapshot(document):
    with pytest.raises(ConfigError, match="snapshot"):
        DiagnosisEngine(_KB).ingest_snapshot(document)  # type: ignore[arg-type]
