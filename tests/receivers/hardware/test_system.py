"""Host and process metrics through the upstream instrumentor, with a real SDK pipeline."""

from __future__ import annotations

import os
from unittest.mock import patch

import pytest
from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from eagleeye_otel.receivers.hardware import SYSTEM_METRICS_CONFIG, _system, instrument_system_metrics

SCOPE = "opentelemetry.instrumentation.system_metrics"


def collect(reader: InMemoryMetricReader) -> dict[str, tuple[str, list]]:
    """One collection: name -> (unit, data points)."""
    data = reader.get_metrics_data()
    if data is None:
        return {}
    return {
        metric.name: (metric.unit, list(metric.data.data_points))
        for resource_metrics in data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
    }


def scopes(reader: InMemoryMetricReader) -> set[str]:
    data = reader.get_metrics_data()
    assert data is not None
    return {sm.scope.name for rm in data.resource_metrics for sm in rm.scope_metrics}


class TestInstrument:
    def setup_method(self):
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])
        self.handle = instrument_system_metrics(self.provider)

    def teardown_method(self):
        self.handle.uninstrument()
        self.provider.shutdown()

    def test_process_metrics_report_this_process(self):
        metrics = collect(self.reader)

        unit, (rss,) = metrics["process.memory.usage"]
        assert unit == "By"
        assert rss.value > 1 << 20
        unit, points = metrics["process.cpu.time"]
        assert unit == "s"
        assert {point.attributes["type"] for point in points} == {"user", "system"}
        assert sum(point.value for point in points) > 0
        (threads,) = metrics["process.thread.count"][1]
        assert threads.value >= 1
        (fds,) = metrics["process.open_file_descriptor.count"][1]
        assert fds.value >= 3

    def test_exactly_the_selected_metrics(self):
        metrics = collect(self.reader)

        assert set(metrics) == set(SYSTEM_METRICS_CONFIG)
        assert metrics["system.memory.usage"][0] == "By"
        states = {point.attributes["state"] for point in metrics["system.memory.usage"][1]}
        assert states == {"used", "free", "cached", "buffers"}
        (used,) = metrics["system.memory.utilization"][1]
        assert used.attributes["state"] == "used"
        assert 0 < used.value < 1
        assert metrics["system.cpu.utilization"][0] == "1"
        cpu_states = {point.attributes["state"] for point in metrics["system.cpu.utilization"][1]}
        assert cpu_states == {"user", "system", "iowait"}

    def test_upstream_scope(self):
        assert scopes(self.reader) == {SCOPE}


def test_uninstrument_stops_the_metrics():
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    handle = instrument_system_metrics(provider)
    assert "process.memory.usage" in collect(reader)

    handle.uninstrument()
    handle.uninstrument()  # idempotent

    assert collect(reader) == {}
    assert collect(reader) == {}
    provider.shutdown()


def test_handles_are_independent():
    """Two providers (two handles) do not share the upstream singleton: undoing one keeps the other."""
    first_reader, second_reader = InMemoryMetricReader(), InMemoryMetricReader()
    first = instrument_system_metrics(MeterProvider(metric_readers=[first_reader]))
    second = instrument_system_metrics(
        MeterProvider(metric_readers=[second_reader]), config={"process.memory.usage": None}
    )

    assert set(collect(second_reader)) == {"process.memory.usage"}
    first.uninstrument()
    assert collect(first_reader) == {}
    assert set(collect(second_reader)) == {"process.memory.usage"}
    second.uninstrument()


def test_upstream_singleton_is_left_alone():
    """Auto-instrumentation's instance keeps its own config when Eagle Eye instruments another provider."""
    upstream = SystemMetricsInstrumentor(config={"process.thread.count": None})
    upstream_reader = InMemoryMetricReader()
    upstream.instrument(meter_provider=MeterProvider(metric_readers=[upstream_reader]))
    try:
        handle = instrument_system_metrics(MeterProvider(metric_readers=[InMemoryMetricReader()]))
        assert upstream.is_instrumented_by_opentelemetry
        assert set(collect(upstream_reader)) == {"process.thread.count"}
        handle.uninstrument()
    finally:
        upstream.uninstrument()


def test_explicit_config_ignores_the_environment():
    reader = InMemoryMetricReader()
    with patch.dict(os.environ, {"OTEL_PYTHON_SYSTEM_METRICS_EXCLUDED_METRICS": "process.*,system.*"}):
        handle = instrument_system_metrics(MeterProvider(metric_readers=[reader]))
    assert "process.memory.usage" in collect(reader)
    handle.uninstrument()


@pytest.mark.parametrize("finite", [True, False])
def test_gate_accepts_generator_callbacks(finite):
    """The API allows generator callbacks; the gate turns them into plain ones and silences them too."""

    def observations():
        options = yield
        while True:
            assert isinstance(options, CallbackOptions)
            options = yield [Observation(7)]
            if finite:
                return

    gate = _system._Gate()
    (callback,) = gate.wrap([observations()])
    assert list(callback(CallbackOptions())) == [Observation(7)]
    assert list(callback(CallbackOptions())) == ([] if finite else [Observation(7)])
    gate.is_open = False
    assert list(callback(CallbackOptions())) == []
