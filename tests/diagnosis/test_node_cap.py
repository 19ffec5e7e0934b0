"""The node cap under a flood of made-up node names: they keep real nodes out only while they are fresh, nodes
silent for ``Limits.node_idle_s`` make room (their findings resolved), and a node that keeps reporting is never
forgotten."""

from __future__ import annotations

import gc
import tracemalloc

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

from eagleeye_otel.diagnosis import Limits
from eagleeye_otel.semconv import _hardware as hw_names

FAULT = "gpu_row_remap_failure"
DEFAULT_LIMITS = Limits()


def _fake(name: str) -> bytes:
    """An export of one made-up node: one gauge, no device."""
    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    resource_metrics.resource.attributes.append(
        KeyValue(key=hw_names.EAGLEEYE_NODE_NAME, value=AnyValue(string_value=name))
    )
    metric = Metric(name="made.up")
    metric.gauge.data_points.add(as_double=1.0)
    resource_metrics.scope_metrics.add().metrics.append(metric)
    return request.SerializeToString()


def _as_node(payload: bytes, name: str) -> bytes:
    """The monitor's export ``payload`` as if another node had sent it."""
    request = ExportMetricsServiceRequest.FromString(payload)
    for resource_metrics in request.resource_metrics:
        for attribute in resource_metrics.resource.attributes:
            if attribute.key == hw_names.EAGLEEYE_NODE_NAME:
                attribute.value.string_value = name
    return request.SerializeToString()


def test_fresh_fake_nodes_keep_a_real_node_out_until_they_are_idle(make_run, hw):
    run = make_run()
    engine = run.engine
    start = run.clock.now
    for i in range(DEFAULT_LIMITS.nodes):
        engine.ingest_otlp(_fake(f"fake-{i}"))
    assert len(engine.nodes) == DEFAULT_LIMITS.nodes
    for seconds in (1.0, 300.0, DEFAULT_LIMITS.node_idle_s):
        run.clock.now = start + seconds
        engine.ingest_otlp(hw.otlp(hw.gpu(0), at=run.clock.now))
        assert hw.node not in engine.nodes
    assert (engine.stats.dropped, engine.stats.forgotten) == (3, 0)

    run.clock.now = start + DEFAULT_LIMITS.node_idle_s * 1.1  # the next sweep (one per tenth of the limit) is due
    assert run.step(hw.gpu(0, remapped_rows_failure=True), seconds=0.0) == {FAULT}
    assert list(engine.nodes) == [hw.node]  # every fake node was idle, so every one was forgotten
    assert (engine.stats.dropped, engine.stats.forgotten) == (3, DEFAULT_LIMITS.nodes)
    assert engine.nodes[hw.node].updated_at == run.clock.now


def test_a_node_that_keeps_reporting_is_never_forgotten_nor_its_findings(make_run, hw):
    run = make_run(limits=Limits(nodes=2, node_idle_s=60.0))
    engine = run.engine
    assert run.step(hw.gpu(0, remapped_rows_failure=True)) == {FAULT}
    first_seen = run.finding(FAULT).first_seen
    for i in range(600):  # ten minutes of a new made-up node every second, the real node reporting every 5 s
        run.clock.now += 1.0
        engine.ingest_otlp(_fake(f"fake-{i}"))
        if i % 5 == 4:
            assert run.step(hw.gpu(0, remapped_rows_failure=True), seconds=0.0) == {FAULT}
            assert not run.changes.resolved
            assert hw.node in engine.nodes
    assert run.finding(FAULT).first_seen == first_seen
    stats = engine.stats
    assert stats.forgotten > 5  # made-up nodes did take the other slot in turn
    assert stats.forgotten + stats.dropped == 600 - 1
    assert (stats.resolved, stats.active) == (0, 1)


def test_a_silent_node_keeps_its_findings_until_it_is_forgotten_then_they_resolve(make_run, hw):
    run = make_run(limits=Limits(nodes=2, node_idle_s=600.0))
    engine = run.engine
    run.step(hw.gpu(0, remapped_rows_failure=True))
    finding = run.finding(FAULT)
    last_heard = run.clock.now
    engine.ingest_otlp(_fake("fake-0"))  # the cap is now full

    run.clock.now += 3600.0  # silent for an hour, no new node: as before, the finding stays open
    assert not engine.evaluate()
    assert [f.fault for f in engine.active()] == [FAULT]

    engine.ingest_otlp(_fake("fake-1"))  # a new node needs room: both idle nodes are forgotten
    assert set(engine.nodes) == {"fake-1"}
    assert engine.active() == []
    changes = engine.evaluate()
    (resolved,) = changes.resolved
    assert (resolved.node, resolved.device, resolved.fault) == (finding.node, finding.device, finding.fault)
    assert resolved.resolved_at == run.clock.now
    assert resolved.evidence == {**finding.evidence, "silent_s": run.clock.now - last_heard}
    assert not engine.evaluate()  # reported once
    assert (engine.stats.resolved, engine.stats.active, engine.stats.forgotten) == (1, 0, 2)

    # the node comes back: a new view, evaluated from scratch, its fault found again
    run.clock.now += 700.0
    assert run.step(hw.gpu(0, remapped_rows_failure=True), seconds=0.0) == {FAULT}
    assert run.finding(FAULT).first_seen == run.clock.now


def test_sweeps_for_idle_nodes_run_at_most_once_per_tenth_of_the_idle_limit(make_run, hw):
    run = make_run(limits=Limits(nodes=1, node_idle_s=100.0))
    engine = run.engine
    engine.ingest_otlp(_fake("fake-0"))
    run.clock.now += 95.0
    engine.ingest_otlp(_fake("fake-1"))  # a sweep finds fake-0 fresh; the next is due 10 s later
    run.clock.now += 6.0
    engine.ingest_otlp(_fake("fake-2"))  # fake-0 is idle now, but no sweep is due yet
    assert list(engine.nodes) == ["fake-0"]
    run.clock.now += 4.0
    engine.ingest_otlp(_fake("fake-3"))
    assert list(engine.nodes) == ["fake-3"]
    assert (engine.stats.dropped, engine.stats.forgotten) == (2, 1)


def test_a_rotating_flood_of_nodes_with_findings_retains_no_memory(make_run, hw):
    """Waves of made-up nodes, each with a finding, each forgotten after the idle limit: nothing accumulates."""
    run = make_run(limits=Limits(nodes=8, node_idle_s=20.0))
    engine = run.engine
    payload = hw.otlp(hw.gpu(0, remapped_rows_failure=True), at=run.clock.now)

    def flood(first: int, count: int) -> None:
        for i in range(first, first + count):
            run.clock.now += 1.0
            engine.ingest_otlp(_as_node(payload, f"fake-{i}"))
            if i % 4 == 3:
                engine.evaluate()

    flood(0, 400)
    gc.collect()
    tracemalloc.start()
    try:
        flood(400, 800)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
        flood(1200, 1600)  # twice as many nodes forgotten again: what is held does not grow with them
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - held
    finally:
        tracemalloc.stop()
    assert grown < 32 * 1024
    stats = engine.stats
    assert len(engine.nodes) <= 8
    assert stats.active <= 8
    assert stats.forgotten > 2400 // 25
    assert stats.resolved == stats.opened - stats.active
