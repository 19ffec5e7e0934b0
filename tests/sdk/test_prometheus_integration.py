"""A real Prometheus scrapes Eagle Eye's endpoint; PromQL sees the series, types and labels we recorded."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.resources import Resource

from eagleeye_otel.nats_server import free_port
from eagleeye_otel.sdk import PipelineSettings, build_meter_provider, shutdown_meter_provider

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_prometheus_scrapes_counters_histograms_gauges_and_target_info(start_prometheus: Callable[..., object]) -> None:
    port = free_port()
    settings = PipelineSettings(exporters=("prometheus",), prometheus_host="127.0.0.1", prometheus_port=port)
    provider = build_meter_provider(
        settings, resource=Resource.create({"service.name": "vllm", "service.instance.id": "pod-1"})
    )
    try:
        meter = provider.get_meter("eagleeye_otel.test", "1.2.3")
        labels = {"gen_ai.request.model": "tiny", "eagleeye.instance.id": "pod-1"}
        meter.create_counter("test.requests", unit="{request}").add(7, labels)
        latency = meter.create_histogram("test.latency", unit="s", explicit_bucket_boundaries_advisory=[0.1, 1.0])
        for seconds in (0.05, 0.5, 0.5, 2.0):
            latency.record(seconds, labels)

        def waiting(options: CallbackOptions) -> Iterable[Observation]:
            yield Observation(3, labels)

        meter.create_observable_gauge("test.waiting", [waiting], unit="{request}")

        prometheus = start_prometheus([f"127.0.0.1:{port}"])
        ((series, value),) = prometheus.wait_for("test_requests_total")
        assert value == 7
        assert series["gen_ai_request_model"] == "tiny"
        assert series["eagleeye_instance_id"] == "pod-1"
        assert series["otel_scope_name"] == "eagleeye_otel.test"
        assert series["otel_scope_version"] == "1.2.3"
        assert series["job"] == "eagle_eye" and series["instance"] == f"127.0.0.1:{port}"

        assert prometheus.query("test_latency_seconds_count")[0][1] == 4
        assert prometheus.query("test_latency_seconds_sum")[0][1] == pytest.approx(3.05)
        buckets = {s["le"]: v for s, v in prometheus.query("test_latency_seconds_bucket")}
        assert buckets == {"0.1": 1, "1.0": 3, "+Inf": 4}

        ((gauge, gauge_value),) = prometheus.query("test_waiting")
        assert gauge_value == 3 and gauge["gen_ai_request_model"] == "tiny"

        ((info, _),) = prometheus.query("target_info")
        assert (info["service_name"], info["service_instance_id"]) == ("vllm", "pod-1")

        # Counters keep growing across scrapes, as Prometheus's rate() needs.
        meter.create_counter("test.requests", unit="{request}").add(2, labels)
        prometheus.wait_for("test_requests_total", lambda samples: bool(samples) and samples[0][1] == 9)
    finally:
        shutdown_meter_provider(provider, 5.0)
