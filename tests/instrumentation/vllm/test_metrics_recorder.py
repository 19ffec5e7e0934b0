"""MetricsRecorder fed with real vLLM stats objects, read back through real SDK readers."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader, Metric
from prometheus_client import CollectorRegistry, generate_latest
from vllm.v1.engine import FinishReason
from vllm.v1.spec_decode.metrics import SpecDecodingStats

from eagleeye_otel import semconv as sc
from eagleeye_otel.instrumentation.vllm._metrics_recorder import (
    METER_NAME,
    MetricsRecorder,
    shared_metrics_recorder,
)
from eagleeye_otel.version import __version__
from tests.helpers.vllm_stats import finished, iteration, scheduler

DOCS = Path(__file__).resolve().parents[3] / "docs" / "metrics.md"
ATTRS = {
    sc.GEN_AI_PROVIDER_NAME: "vllm",
    sc.GEN_AI_REQUEST_MODEL: "tiny",
    sc.EAGLEEYE_INSTANCE_ID: "pod-1",
    sc.VLLM_ENGINE: 0,
}


class Readout:
    """The metrics of one collection, by name."""

    def __init__(self, reader: InMemoryMetricReader) -> None:
        data = reader.get_metrics_data()
        self.metrics: dict[str, Metric] = {}
        for resource_metrics in data.resource_metrics if data else ():
            for scope_metrics in resource_metrics.scope_metrics:
                assert scope_metrics.scope.name == METER_NAME
                assert scope_metrics.scope.version == __version__
                self.metrics.update({m.name: m for m in scope_metrics.metrics})

    def points(self, name: str) -> list[Any]:
        return list(self.metrics[name].data.data_points)

    def value(self, name: str, **extra: object) -> Any:
        wanted = {**ATTRS, **extra}
        (point,) = [p for p in self.points(name) if dict(p.attributes) == wanted]
        return point.value

    def histogram(self, name: str) -> tuple[int, float]:
        (point,) = self.points(name)
        assert dict(point.attributes) == ATTRS
        return point.count, point.sum


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def provider(reader: InMemoryMetricReader) -> Iterator[MeterProvider]:
    provider = MeterProvider(metric_readers=[reader])
    yield provider
    provider.shutdown()


ALL_ON = {spec.name: True for spec in sc.VLLM_METRICS}
"""Every instrument on, including those off by default, so that each is checked."""


@pytest.fixture
def recorder(provider: MeterProvider) -> Iterator[MetricsRecorder]:
    recorder = MetricsRecorder(provider, drain_interval_s=0, enabled=ALL_ON)
    yield recorder
    recorder.shutdown()


def engine(recorder: MetricsRecorder, index: int = 0) -> Any:
    return recorder.engine(model="tiny", instance="pod-1", engine=index)


def test_gauges_report_the_latest_scheduler_stats(recorder, reader):
    handle = engine(recorder)
    handle.record(scheduler(running=1, waiting=9), None)
    handle.record(scheduler(running=3, waiting=2, skipped=1, kv=0.25), None)

    out = Readout(reader)
    assert out.value(sc.VLLM_NUM_REQUESTS_RUNNING) == 3
    assert out.value(sc.VLLM_NUM_REQUESTS_WAITING) == 3  # deferred ones included, as vLLM's gauge
    assert out.value(sc.VLLM_KV_CACHE_USAGE) == 0.25
    assert out.metrics[sc.VLLM_KV_CACHE_USAGE].unit == "1"
    assert out.metrics[sc.VLLM_NUM_REQUESTS_WAITING].unit == "{request}"


def test_gauges_read_zero_before_the_first_step(recorder, reader):
    engine(recorder)
    out = Readout(reader)
    assert out.value(sc.VLLM_NUM_REQUESTS_RUNNING) == 0
    assert out.value(sc.VLLM_KV_CACHE_USAGE) == 0


def test_counters_and_histograms_equal_what_vllm_reported(recorder, reader):
    handle = engine(recorder)
    ttfts, itls = (0.05, 0.07, 30.0), (0.01, 0.02, 0.03, 0.04, 6.0)
    done = (
        finished(FinishReason.STOP, 1.0, prompt=7, generated=5),
        finished(FinishReason.STOP, 2.0, prompt=9, generated=3),
        finished(FinishReason.LENGTH, 3.0, prompt=11, generated=16),
    )
    handle.record(scheduler(queries=100, hits=40), iteration(generated=3, computed=20, cached=8, ttfts=ttfts))
    handle.record(scheduler(queries=50, hits=10), iteration(generated=5, preempted=2, itls=itls, done=done))
    handle.record(scheduler(), None)
    recorder.drain()

    out = Readout(reader)
    assert out.value(sc.VLLM_PREFIX_CACHE_QUERIES) == 150
    assert out.value(sc.VLLM_PREFIX_CACHE_HITS) == 50
    assert out.value(sc.VLLM_PROMPT_TOKENS) == 28
    assert out.value(sc.VLLM_GENERATION_TOKENS) == 8
    assert out.value(sc.VLLM_NUM_PREEMPTIONS) == 2
    assert out.value(sc.VLLM_REQUEST_SUCCESS, **{sc.VLLM_FINISHED_REASON: "stop"}) == 2
    assert out.value(sc.VLLM_REQUEST_SUCCESS, **{sc.VLLM_FINISHED_REASON: "length"}) == 1
    assert out.histogram(sc.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN) == (3, pytest.approx(sum(ttfts)))
    assert out.histogram(sc.VLLM_INTER_TOKEN_LATENCY) == (5, pytest.approx(sum(itls)))
    assert out.histogram(sc.VLLM_ITERATION_TOKENS) == (2, 28)  # computed prompt tokens + generated, per step
    assert out.histogram(sc.GEN_AI_SERVER_REQUEST_DURATION) == (3, pytest.approx(6.0))
    assert out.histogram(sc.VLLM_REQUEST_QUEUE_TIME) == (3, pytest.approx(0.03))
    assert out.histogram(sc.VLLM_REQUEST_PREFILL_TIME) == (3, pytest.approx(0.06))
    assert out.histogram(sc.VLLM_REQUEST_INFERENCE_TIME) == (3, pytest.approx(5.97))
    assert out.histogram(sc.VLLM_REQUEST_DECODE_TIME) == (3, pytest.approx(5.91))
    assert out.histogram(sc.GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN) == (3, pytest.approx(0.015))
    assert out.histogram(sc.VLLM_REQUEST_PROMPT_TOKENS) == (3, 27)
    assert out.histogram(sc.VLLM_REQUEST_GENERATION_TOKENS) == (3, 24)
    assert sc.VLLM_SPEC_DECODE_NUM_DRAFTS not in out.metrics  # no speculative decoding, no series


def test_histograms_use_the_table_buckets_and_units(recorder, reader):
    engine(recorder).record(scheduler(), iteration(generated=1, ttfts=(2000.0,), itls=(70.0,)))
    recorder.drain()
    out = Readout(reader)
    for spec in sc.VLLM_METRICS:
        if spec.name in out.metrics and spec.buckets is not None:
            (point,) = out.points(spec.name)
            assert tuple(point.explicit_bounds) == spec.buckets, spec.name
    (ttft,) = out.points(sc.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN)
    assert ttft.bucket_counts[-2] == 1  # 2000 s lands in (640, 2560], not +Inf


def test_speculative_decoding_counters(recorder, reader):
    handle = engine(recorder)
    for drafts in (2, 3):
        stats = scheduler()
        stats.spec_decoding_stats = SpecDecodingStats(
            num_spec_tokens=4, num_drafts=drafts, num_draft_tokens=4 * drafts, num_accepted_tokens=drafts + 1
        )
        handle.record(stats, None)
    recorder.drain()
    out = Readout(reader)
    assert out.value(sc.VLLM_SPEC_DECODE_NUM_DRAFTS) == 5
    assert out.value(sc.VLLM_SPEC_DECODE_NUM_DRAFT_TOKENS) == 20
    assert out.value(sc.VLLM_SPEC_DECODE_NUM_ACCEPTED_TOKENS) == 7


def test_collection_drains_first(recorder, reader):
    engine(recorder).record(scheduler(), iteration(generated=4))
    assert Readout(reader).value(sc.VLLM_GENERATION_TOKENS) == 4


def test_drain_thread_empties_the_queue(provider):
    recorder = MetricsRecorder(provider, drain_interval_s=0.01)
    try:
        handle = engine(recorder)
        handle.record(scheduler(), iteration(generated=4))
        deadline = time.monotonic() + 5
        while handle.pending and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not handle.pending
    finally:
        recorder.shutdown()


def test_every_counter_series_exists_from_the_first_step_and_keeps_its_total():
    reader = InMemoryMetricReader(preferred_temporality={Counter: AggregationTemporality.DELTA})
    provider = MeterProvider(metric_readers=[reader])
    recorder = MetricsRecorder(provider, drain_interval_s=0)
    handle = engine(recorder)
    handle.record(scheduler(), iteration(generated=3))
    first = Readout(reader)
    assert first.value(sc.VLLM_NUM_PREEMPTIONS) == 0  # a zero is reported once, as vLLM's own series start at 0
    assert first.value(sc.VLLM_GENERATION_TOKENS) == 3

    handle.record(scheduler(), iteration(generated=4))
    second = Readout(reader)
    assert second.value(sc.VLLM_GENERATION_TOKENS) == 4  # this interval's tokens
    assert sc.VLLM_NUM_PREEMPTIONS not in second.metrics  # nothing happened: no zero point to store and send
    recorder.shutdown()
    provider.shutdown()


def test_drain_thread_carries_its_name_in_the_kernel(provider):
    recorder = MetricsRecorder(provider, drain_interval_s=0.01)
    try:
        (thread,) = [t for t in threading.enumerate() if t.name == "eagleeye-vllm-metrics"]
        comm = Path(f"/proc/self/task/{thread.native_id}/comm")
        deadline = time.monotonic() + 5
        while comm.read_text().strip() != "eagleeye-vllm-m" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert comm.read_text().strip() == "eagleeye-vllm-m"  # what top -H shows: its first 15 bytes
    finally:
        recorder.shutdown()


def test_full_queue_drops_oldest_and_counts_it(provider, reader):
    recorder = MetricsRecorder(provider, max_pending=3, drain_interval_s=0)
    handle = engine(recorder)
    for generated in (1, 2, 3, 4, 5):
        handle.record(scheduler(), iteration(generated=generated))
    assert handle.dropped == 2
    recorder.shutdown()

    out = Readout(reader)
    assert out.value(sc.EAGLEEYE_VLLM_STATS_DROPPED) == 2
    assert out.value(sc.VLLM_GENERATION_TOKENS) == 3 + 4 + 5


def test_every_instrument_is_in_the_table(recorder, reader):
    handle = engine(recorder)
    stats = scheduler(queries=1, hits=1)
    stats.spec_decoding_stats = SpecDecodingStats(num_spec_tokens=1, num_drafts=1)
    handle.record(stats, iteration(generated=1, ttfts=(0.1,), itls=(0.1,), done=(finished(FinishReason.STOP, 1),)))
    handle.dropped = 1  # as if a step had been dropped
    recorder.drain()

    out = Readout(reader)
    specs = {spec.name: spec for spec in sc.VLLM_METRICS}
    assert set(out.metrics) == set(specs)
    for name, metric in out.metrics.items():
        assert metric.unit == specs[name].unit
        assert metric.description == specs[name].description


def test_per_token_latency_is_off_by_default(provider, reader):
    recorder = MetricsRecorder(provider, drain_interval_s=0)
    engine(recorder).record(scheduler(), iteration(generated=2, itls=(0.1, 0.2)))
    recorder.shutdown()
    out = Readout(reader)
    assert sc.VLLM_INTER_TOKEN_LATENCY not in out.metrics
    assert out.value(sc.VLLM_GENERATION_TOKENS) == 2


def test_a_metric_on_by_default_can_be_turned_off(provider, reader):
    recorder = MetricsRecorder(provider, drain_interval_s=0, enabled={sc.VLLM_GENERATION_TOKENS: False})
    engine(recorder).record(scheduler(), iteration(generated=2))
    recorder.shutdown()
    assert sc.VLLM_GENERATION_TOKENS not in Readout(reader).metrics


def test_engines_are_told_apart(recorder, reader):
    assert engine(recorder, 1) is engine(recorder, 1)
    engine(recorder, 0).record(scheduler(running=5), None)
    engine(recorder, 1).record(scheduler(running=7), None)
    points = Readout(reader).points(sc.VLLM_NUM_REQUESTS_RUNNING)
    assert {p.attributes[sc.VLLM_ENGINE]: p.value for p in points} == {0: 5, 1: 7}


def test_garbage_never_raises_and_later_steps_still_count(recorder, reader):
    handle = engine(recorder)
    bad_finished = SimpleNamespace(finish_reason=[], e2e_latency="slow")
    handle.record(object(), object())
    handle.record(SimpleNamespace(prefix_cache_stats=SimpleNamespace(queries="x")), None)
    handle.record(None, SimpleNamespace(num_generation_tokens=None, finished_requests=[bad_finished]))
    handle.record(None, SimpleNamespace(time_to_first_tokens_iter=["a", None], inter_token_latencies_iter=5))
    handle.record(SimpleNamespace(num_running_reqs="many"), None)
    recorder.drain()
    Readout(reader)  # the gauge callbacks swallow the unreadable latest stats

    handle.record(scheduler(running=2), iteration(generated=6, ttfts=(0.2,)))
    out = Readout(reader)
    assert out.value(sc.VLLM_NUM_REQUESTS_RUNNING) == 2
    assert out.value(sc.VLLM_GENERATION_TOKENS) == 6
    assert out.histogram(sc.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN)[0] == 1


def test_forked_child_records_nothing(recorder):
    handle = engine(recorder)
    handle.record(scheduler(), iteration(generated=1))
    pid = os.fork()
    if pid == 0:  # the child: no drain thread, no recording, nothing drained
        handle.record(scheduler(), iteration(generated=1))
        recorder.drain()
        os._exit(0 if len(handle.pending) == 1 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert len(handle.pending) == 1


def test_one_shared_recorder_per_meter_provider(provider):
    shared = shared_metrics_recorder(provider)
    try:
        assert shared_metrics_recorder(provider) is shared
        other = MeterProvider()
        assert shared_metrics_recorder(other) is not shared
        shared_metrics_recorder(other).shutdown()
    finally:
        shared.shutdown()


@pytest.fixture(scope="module")
def prometheus_families() -> set[str]:
    """The series families the real Prometheus exporter writes for one step that touches every instrument."""
    registry = CollectorRegistry()
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)])
    recorder = MetricsRecorder(provider, drain_interval_s=0, enabled=ALL_ON)
    try:
        handle = engine(recorder)
        stats = scheduler(queries=1, hits=1)
        stats.spec_decoding_stats = SpecDecodingStats(num_spec_tokens=1, num_drafts=1)
        done = (finished(FinishReason.STOP, 1),)
        handle.record(stats, iteration(generated=1, ttfts=(0.1,), itls=(0.1,), done=done))
        handle.dropped = 1
        recorder.drain()
        text = generate_latest(registry).decode()
    finally:
        recorder.shutdown()
        provider.shutdown()
    return set(re.findall(r"^# TYPE (\S+) ", text, re.M))


def test_docs_list_every_metric_with_its_prometheus_name(prometheus_families):
    docs = DOCS.read_text()
    for spec in sc.VLLM_METRICS:
        sanitized = re.sub(r"[^a-zA-Z0-9]+", "_", spec.name)
        (family,) = [f for f in prometheus_families if re.fullmatch(sanitized + r"(_[a-z]+)?", f)]
        row = f"| `{spec.name}` | {spec.kind.value} | `{spec.unit}` | `{family}` |"
        assert row in docs, row
