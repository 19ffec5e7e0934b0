"""OTLP export end to end: real vLLM stats, the pipeline built from ``OTEL_*`` variables as users set them, and a
real OTLP endpoint (gRPC ``MetricsService`` or HTTP ``POST /v1/metrics``) that decodes what it receives."""

from __future__ import annotations

import gzip
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from unittest.mock import patch

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2_grpc import (
    MetricsServiceServicer,
    add_MetricsServiceServicer_to_server,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality, Metric
from vllm.v1.engine import FinishReason

from eagleeye_otel import semconv as sc
from eagleeye_otel.instrumentation.vllm._metrics_recorder import METER_NAME, MetricsRecorder
from eagleeye_otel.sdk import PipelineSettings, build_meter_provider
from eagleeye_otel.version import __version__
from tests.helpers.vllm_stats import finished, iteration, scheduler

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SERVICE_NAME = "vllm-otlp-test"
ATTRS = {
    sc.GEN_AI_PROVIDER_NAME: "vllm",
    sc.GEN_AI_REQUEST_MODEL: "tiny",
    sc.EAGLEEYE_INSTANCE_ID: "pod-1",
    sc.VLLM_ENGINE: 0,
}
SPECS = {spec.name: spec for spec in sc.VLLM_METRICS}
CUMULATIVE = AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE


# -- a real OTLP endpoint ----------------------------------------------------------------------------------------


@dataclass
class Received:
    """What the endpoint decoded, in arrival order, with each request's path and headers (lower-case names)."""

    requests: list[ExportMetricsServiceRequest] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, request: ExportMetricsServiceRequest, path: str, headers: dict[str, str]) -> None:
        with self.lock:
            self.requests.append(request)
            self.paths.append(path)
            self.headers.append(headers)

    def header(self, name: str) -> set[str | None]:
        """The values of one header over all requests."""
        with self.lock:
            return {headers.get(name) for headers in self.headers}


class _MetricsService(MetricsServiceServicer):
    def __init__(self, received: Received) -> None:
        self._received = received

    def Export(self, request: ExportMetricsServiceRequest, context: grpc.ServicerContext) -> Any:
        metadata = {key.lower(): value for key, value in context.invocation_metadata()}
        self._received.add(request, "MetricsService/Export", metadata)
        return ExportMetricsServiceResponse()


@pytest.fixture
def grpc_endpoint() -> Iterator[tuple[str, Received]]:
    """A gRPC ``MetricsService`` on a free loopback port; yields its ``http://host:port`` and what it received."""
    received = Received()
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    add_MetricsServiceServicer_to_server(_MetricsService(received), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        server.stop(grace=None).wait()


@pytest.fixture
def http_endpoint() -> Iterator[tuple[str, Received]]:
    """An OTLP/HTTP receiver (``POST /v1/metrics``, protobuf, gzip honoured); yields its metrics URL."""
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path != "/v1/metrics":
                self.send_error(404)
                return
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            request = ExportMetricsServiceRequest.FromString(body)
            received.add(request, self.path, {key.lower(): value for key, value in self.headers.items()})
            reply = ExportMetricsServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="otlp-http-endpoint", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/metrics", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# -- real vLLM stats ---------------------------------------------------------------------------------------------


def serve_two_requests(recorder: MetricsRecorder) -> None:
    """Two requests prefilled in one step (24 of 40 prompt tokens computed, 16 from the prefix cache), then a
    decode step in which the first finishes with 4 tokens after 1.5 s."""
    handle = recorder.engine(model="tiny", instance="pod-1", engine=0)
    handle.record(
        scheduler(running=2, waiting=1, skipped=0, kv=0.5, queries=40, hits=16),
        iteration(generated=2, computed=24, cached=16, ttfts=(0.05, 0.12), itls=(0.01, 0.01)),
    )
    handle.record(
        scheduler(running=1, waiting=0, skipped=0, kv=0.25),
        iteration(
            generated=3,
            itls=(0.01, 0.01, 0.01),
            done=(finished(FinishReason.STOP, 1.5, 20, 4, queued=0.1, prefill=0.2, time_per_output_token=0.4),),
        ),
    )


# -- reading back what the endpoint decoded ----------------------------------------------------------------------


def _value(value: AnyValue) -> Any:
    return getattr(value, value.WhichOneof("value"))


def attributes(pairs: list[KeyValue]) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


class Export:
    """The newest point of every (metric, attributes) over all requests: OTLP points are cumulative here, so the
    newest one holds the totals, whichever periodic export carried it."""

    def __init__(self, received: Received) -> None:
        with received.lock:
            requests = list(received.requests)
        assert requests, "the endpoint received nothing"
        self.resources: list[dict[str, Any]] = []
        self.scopes: set[tuple[str, str]] = set()
        self.metrics: dict[str, Metric] = {}
        self.newest: dict[str, dict[tuple[tuple[str, Any], ...], Any]] = {}
        for request in requests:
            for resource_metrics in request.resource_metrics:
                self.resources.append(attributes(resource_metrics.resource.attributes))
                for scope_metrics in resource_metrics.scope_metrics:
                    self.scopes.add((scope_metrics.scope.name, scope_metrics.scope.version))
                    for metric in scope_metrics.metrics:
                        self.metrics[metric.name] = metric
                        kind = metric.WhichOneof("data")
                        for point in getattr(metric, kind).data_points:
                            key = tuple(sorted(attributes(point.attributes).items()))
                            held = self.newest.setdefault(metric.name, {}).get(key)
                            if held is None or point.time_unix_nano >= held.time_unix_nano:
                                self.newest[metric.name][key] = point

    def point(self, name: str, **extra: Any) -> Any:
        wanted = {**ATTRS, **extra}
        points = self.newest[name]
        assert [dict(key) for key in points] == [wanted], f"{name} points: {[dict(k) for k in points]}"
        return next(iter(points.values()))


# -- the tests ---------------------------------------------------------------------------------------------------


def export_through_env(env: dict[str, str], exporter: str) -> None:
    """Build the pipeline as a user does, from ``OTEL_*`` variables only, record two requests and shut down."""
    variables = {
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_METRIC_EXPORT_INTERVAL": "200",
        "OTEL_METRIC_EXPORT_TIMEOUT": "10000",
        "OTEL_SERVICE_NAME": SERVICE_NAME,
        **env,
    }
    with patch.dict(os.environ, variables):
        for name in [n for n in os.environ if n.startswith("OTEL_") and n not in variables]:
            del os.environ[name]  # restored by patch.dict; keeps a stray OTEL_* of the shell out of the test
        settings = PipelineSettings.from_env()
        assert settings.exporters == (exporter,)
        provider = build_meter_provider(settings)
    recorder = MetricsRecorder(provider, drain_interval_s=0)
    try:
        serve_two_requests(recorder)
        recorder.drain()
        provider.force_flush(timeout_millis=10_000)
    finally:
        recorder.shutdown()
        provider.shutdown(timeout_millis=10_000)


def check_export(export: Export) -> None:
    """What a user checks in their backend after those two requests."""
    assert export.resources
    for resource in export.resources:
        assert resource["service.name"] == SERVICE_NAME
        assert resource["telemetry.sdk.name"] == "opentelemetry"
    assert export.scopes == {(METER_NAME, __version__)}

    expected_names = {
        sc.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN,
        sc.GEN_AI_SERVER_REQUEST_DURATION,
        sc.GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN,
        sc.VLLM_GENERATION_TOKENS,
        sc.VLLM_PROMPT_TOKENS,
        sc.VLLM_PREFIX_CACHE_QUERIES,
        sc.VLLM_PREFIX_CACHE_HITS,
        sc.VLLM_REQUEST_SUCCESS,
        sc.VLLM_NUM_REQUESTS_RUNNING,
        sc.VLLM_NUM_REQUESTS_WAITING,
        sc.VLLM_KV_CACHE_USAGE,
        sc.VLLM_ITERATION_TOKENS,
        sc.VLLM_REQUEST_PROMPT_TOKENS,
        sc.VLLM_REQUEST_GENERATION_TOKENS,
    }
    assert expected_names <= set(export.metrics), expected_names - set(export.metrics)
    assert sc.VLLM_INTER_TOKEN_LATENCY not in export.metrics  # off by default, even though vLLM reported it
    for name, metric in export.metrics.items():
        assert metric.unit == SPECS[name].unit, name
        assert metric.description == SPECS[name].description, name

    ttft = export.point(sc.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN)
    assert export.metrics[sc.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN].unit == "s"
    assert export.metrics[sc.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN].histogram.aggregation_temporality == CUMULATIVE
    assert (ttft.count, ttft.sum) == (2, pytest.approx(0.17))
    assert tuple(ttft.explicit_bounds) == sc.TIME_TO_FIRST_TOKEN_BUCKETS
    assert sum(ttft.bucket_counts) == 2
    assert ttft.bucket_counts[sc.TIME_TO_FIRST_TOKEN_BUCKETS.index(0.06)] == 1  # 0.05 s in (0.04, 0.06]
    assert ttft.bucket_counts[sc.TIME_TO_FIRST_TOKEN_BUCKETS.index(0.25)] == 1  # 0.12 s in (0.1, 0.25]
    assert (ttft.min, ttft.max) == (pytest.approx(0.05), pytest.approx(0.12))

    duration = export.point(sc.GEN_AI_SERVER_REQUEST_DURATION)
    assert export.metrics[sc.GEN_AI_SERVER_REQUEST_DURATION].unit == "s"
    assert (duration.count, duration.sum) == (1, pytest.approx(1.5))
    assert tuple(duration.explicit_bounds) == sc.REQUEST_LATENCY_BUCKETS
    tpot = export.point(sc.GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN)
    assert (tpot.count, tpot.sum) == (1, pytest.approx(0.4))
    request_tokens = export.point(sc.VLLM_REQUEST_GENERATION_TOKENS)
    assert (request_tokens.count, request_tokens.sum) == (1, 4)
    step_tokens = export.point(sc.VLLM_ITERATION_TOKENS)
    assert (step_tokens.count, step_tokens.sum) == (2, 24 + 2 + 3)  # computed prompt + generated, per step

    generation = export.metrics[sc.VLLM_GENERATION_TOKENS]
    assert generation.unit == "{token}"
    assert generation.sum.is_monotonic
    assert generation.sum.aggregation_temporality == CUMULATIVE
    assert export.point(sc.VLLM_GENERATION_TOKENS).as_int == 5
    assert export.point(sc.VLLM_PROMPT_TOKENS).as_int == 40
    assert export.point(sc.VLLM_PREFIX_CACHE_QUERIES).as_int == 40
    assert export.point(sc.VLLM_PREFIX_CACHE_HITS).as_int == 16
    assert export.point(sc.VLLM_REQUEST_SUCCESS, **{sc.VLLM_FINISHED_REASON: "stop"}).as_int == 1

    assert export.metrics[sc.VLLM_NUM_REQUESTS_RUNNING].unit == "{request}"
    assert export.metrics[sc.VLLM_NUM_REQUESTS_RUNNING].WhichOneof("data") == "gauge"
    assert export.point(sc.VLLM_NUM_REQUESTS_RUNNING).as_int == 1  # the latest step's, not a sum
    assert export.point(sc.VLLM_NUM_REQUESTS_WAITING).as_int == 0
    assert export.point(sc.VLLM_KV_CACHE_USAGE).as_double == 0.25


def test_otlp_grpc_receives_vllm_metrics(grpc_endpoint) -> None:
    endpoint, received = grpc_endpoint
    export_through_env(
        {
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_METRICS_INSECURE": "true",
        },
        "otlp_proto_grpc",
    )
    (agent,) = received.header("user-agent")
    assert agent is not None and agent.startswith("OTel-OTLP-Exporter-Python/")
    check_export(Export(received))


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_otlp_http_receives_vllm_metrics(http_endpoint, compression) -> None:
    endpoint, received = http_endpoint
    export_through_env(
        {
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION": compression,
        },
        "otlp_proto_http",
    )
    assert set(received.paths) == {"/v1/metrics"}
    assert received.header("content-type") == {"application/x-protobuf"}
    assert received.header("content-encoding") == {"gzip" if compression == "gzip" else None}
    check_export(Export(received))
