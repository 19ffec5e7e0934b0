"""build_meter_provider: exporters loaded by name from entry points, the private Prometheus endpoint, fork safety."""

from __future__ import annotations

import multiprocessing
import os
import socket
import sys
import threading
import time
import types
import urllib.request
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import ClassVar

import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricsData,
)
from opentelemetry.sdk.resources import Resource
from prometheus_client import REGISTRY, generate_latest

from eagleeye_otel.errors import ConfigError
from eagleeye_otel.nats_server import free_port
from eagleeye_otel.sdk import (
    OwnerOnlyPeriodicReader,
    PipelineSettings,
    PrometheusServingReader,
    _pipeline,
    build_meter_provider,
    build_metric_readers,
    load_metric_exporter,
    shutdown_meter_provider,
)
from eagleeye_otel.sdk._prometheus import _AutoPrometheusServingReader


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("console", ConsoleMetricExporter),
        ("otlp_proto_grpc", GrpcExporter),
        ("otlp_proto_http", HttpExporter),
        ("eagle_eye_prometheus", _AutoPrometheusServingReader),
    ],
)
def test_exporters_load_by_entry_point_name(name: str, expected: type) -> None:
    assert load_metric_exporter(name) is expected


def test_an_unknown_exporter_names_the_variable_and_lists_what_is_installed() -> None:
    with pytest.raises(ConfigError) as caught:
        load_metric_exporter("zipkin")
    assert caught.value.setting == "OTEL_METRICS_EXPORTER"
    assert "console" in str(caught.value) and "prometheus" in str(caught.value)


class RecordingExporter(MetricExporter):
    """A push exporter with a no-argument constructor, as the entry-point contract requires."""

    exported: ClassVar[list[MetricsData]] = []

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: object) -> MetricExportResult:
        self.exported.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: object) -> None:
        pass


_GROUP = _pipeline.METRICS_EXPORTER_GROUP
_EXTRA = {
    "recording": EntryPoint(name="recording", value="eagleeye_test_exporters:RecordingExporter", group=_GROUP),
    "memory": EntryPoint(name="memory", value="opentelemetry.sdk.metrics.export:InMemoryMetricReader", group=_GROUP),
    "bogus": EntryPoint(name="bogus", value="os:getcwd", group=_GROUP),
}


@pytest.fixture
def extra_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    """Installed entry points plus three test ones, loaded through the same importlib.metadata objects."""
    module = types.ModuleType("eagleeye_test_exporters")
    module.RecordingExporter = RecordingExporter  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    RecordingExporter.exported.clear()
    real = _pipeline.entry_points

    def entry_points(*, group: str, name: str | None = None) -> tuple[EntryPoint, ...]:
        if name in _EXTRA:
            return (_EXTRA[name],)
        if name is None:
            return (*real(group=group), *_EXTRA.values())
        return tuple(real(group=group, name=name))

    monkeypatch.setattr(_pipeline, "entry_points", entry_points)


@pytest.mark.usefixtures("extra_entry_points")
def test_an_entry_point_that_is_not_an_exporter_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        load_metric_exporter("bogus")
    assert caught.value.setting == "OTEL_METRICS_EXPORTER"
    assert "os:getcwd" in str(caught.value)


def test_no_exporters_means_no_readers() -> None:
    assert build_metric_readers(PipelineSettings(exporters=())) == []


@pytest.mark.usefixtures("extra_entry_points")
def test_pull_readers_are_used_as_they_are() -> None:
    (reader,) = build_metric_readers(PipelineSettings(exporters=("memory",)))
    assert type(reader) is InMemoryMetricReader


@pytest.mark.usefixtures("extra_entry_points")
def test_push_exporters_get_an_owner_only_periodic_reader_with_the_settings() -> None:
    settings = PipelineSettings(exporters=("recording",), export_interval_millis=3_600_000, export_timeout_millis=1234)
    (reader,) = build_metric_readers(settings)
    assert isinstance(reader, OwnerOnlyPeriodicReader)
    assert (reader._export_interval_millis, reader._export_timeout_millis) == (3_600_000, 1234)
    reader.shutdown()


@pytest.mark.usefixtures("extra_entry_points")
def test_the_provider_exports_with_its_resource_and_flushes_at_shutdown() -> None:
    settings = PipelineSettings(exporters=("recording",), export_interval_millis=3_600_000)
    provider = build_meter_provider(settings, resource=Resource.create({"service.name": "pipeline-test"}))
    provider.get_meter("test").create_counter("pipeline.pushed").add(2)
    shutdown_meter_provider(provider, 5.0)
    (data,) = RecordingExporter.exported  # the final export of shutdown, nothing earlier
    (resource_metrics,) = data.resource_metrics
    assert resource_metrics.resource.attributes["service.name"] == "pipeline-test"
    (metric,) = resource_metrics.scope_metrics[0].metrics
    assert (metric.name, metric.data.data_points[0].value) == ("pipeline.pushed", 2)


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body: bytes = response.read()
    return body.decode()


@pytest.mark.parametrize("name", ["prometheus", "eagle_eye_prometheus"])
def test_prometheus_serves_a_private_registry_on_its_own_port(name: str) -> None:
    port = free_port()
    (reader,) = build_metric_readers(
        PipelineSettings(exporters=(name,), prometheus_host="127.0.0.1", prometheus_port=port)
    )
    assert isinstance(reader, PrometheusServingReader)
    provider = MeterProvider(
        resource=Resource.create({"service.name": "pipeline-test"}), metric_readers=[reader], shutdown_on_exit=False
    )
    assert reader.port == port
    provider.get_meter("test").create_counter("pipeline.scraped", unit="{request}").add(5, {"model": "tiny"})
    body = _scrape(port)
    assert 'pipeline_scraped_total{model="tiny",otel_scope_name="test"' in body
    assert 'service_name="pipeline-test"' in body
    # Not on prometheus_client's global registry, which vLLM's own /metrics serves.
    assert b"pipeline_scraped" not in generate_latest(REGISTRY)
    shutdown_meter_provider(provider, 5.0)
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a restarted server would
        again.bind(("127.0.0.1", port))  # fails while anything still listens there


def _reader_threads() -> int:
    return sum(t.name == "OtelPeriodicExportingMetricReader" and t.is_alive() for t in threading.enumerate())


def test_a_taken_prometheus_port_names_the_variable_and_leaves_nothing_running() -> None:
    before = _reader_threads()
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        settings = PipelineSettings(
            exporters=("console", "prometheus"), prometheus_host="127.0.0.1", prometheus_port=port
        )
        with pytest.raises(ConfigError) as caught:
            build_metric_readers(settings)
    assert caught.value.setting == "OTEL_EXPORTER_PROMETHEUS_PORT"
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert _reader_threads() == before, "the console reader built before the failure was not shut down"


class _PidFileExporter(MetricExporter):
    """Appends the exporting process's pid to a file: exports from any process end up in one place."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: object) -> MetricExportResult:
        with self.path.open("a") as out:
            out.write(f"{os.getpid()}\n")
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: object) -> None:
        pass


def _in_forked_child(provider: MeterProvider) -> None:
    provider.get_meter("test").create_counter("pipeline.child").add(1)
    provider.force_flush()
    time.sleep(0.3)  # the SDK restarted the reader's 50 ms ticker in this child; let it tick


def test_a_forked_child_exports_nothing(tmp_path: Path) -> None:
    """The SDK restarts the reader thread after fork; the child would otherwise export the parent's series."""
    exports = tmp_path / "exports"
    reader = OwnerOnlyPeriodicReader(_PidFileExporter(exports), export_interval_millis=50, export_timeout_millis=1000)
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    provider.get_meter("test").create_counter("pipeline.parent").add(1)
    child = multiprocessing.get_context("fork").Process(target=_in_forked_child, args=(provider,))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    provider.force_flush()
    shutdown_meter_provider(provider, 5.0)
    pids = set(exports.read_text().split())
    assert pids == {str(os.getpid())}, f"child {child.pid} exported"


def _child_scrape_collects_nothing(reader: PrometheusServingReader) -> None:
    assert list(reader.registry.collect()) == []


def test_a_forked_prometheus_reader_keeps_nothing() -> None:
    (reader,) = build_metric_readers(
        PipelineSettings(exporters=("prometheus",), prometheus_host="127.0.0.1", prometheus_port=free_port())
    )
    assert isinstance(reader, PrometheusServingReader)
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    provider.get_meter("test").create_counter("pipeline.forked").add(1)
    try:
        child = multiprocessing.get_context("fork").Process(target=_child_scrape_collects_nothing, args=(reader,))
        child.start()
        child.join(30)
        assert child.exitcode == 0
        assert any(m.name == "pipeline_forked" for m in reader.registry.collect())
    finally:
        shutdown_meter_provider(provider, 5.0)
