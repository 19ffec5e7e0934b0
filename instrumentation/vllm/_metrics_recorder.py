"""Turns vLLM's per-step stats into the OTel instruments of :data:`~eagleeye_otel.semconv.VLLM_METRICS`.

``record()`` runs on vLLM's event loop after every engine step, and an SDK histogram costs microseconds per sample
(a step carries one inter-token latency per running request), so the hot path records nothing: it keeps the
latest scheduler stats for the gauges' callbacks and appends the step's stats objects to a bounded per-engine
queue. A daemon thread drains the queues every ``drain_interval_s``, as does every collection (the gauges'
callbacks drain first, so a scrape sees every step before it), and :meth:`MetricsRecorder.drain` on demand.

A drain costs the process CPU and holds the GIL that vLLM's loop needs, so it does per step only what the output
needs: it folds the queued steps into counter sums and one list of samples per enabled histogram (a disabled one
is never read), then hands the SDK each sample once (the API has no weighted or batched record: every sample is
one call) and each counter's sum once, skipping sums of zero once the series exists. Fields vLLM added or removed
across versions are read with defaults; a forked child records nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from opentelemetry.metrics import (
    CallbackOptions,
    Counter,
    Histogram,
    Meter,
    MeterProvider,
    NoOpMeter,
    Observation,
)

from eagleeye_otel import semconv as sc
from eagleeye_otel.fork_guard import ForkGuard
from eagleeye_otel.log_limiter import LogLimiter
from eagleeye_otel.thread_names import name_os_thread
from eagleeye_otel.version import __version__

__all__ = ["DRAIN_INTERVAL_S", "METER_NAME", "EngineMetrics", "MetricsRecorder", "shared_metrics_recorder"]

_logger = logging.getLogger(__name__)

METER_NAME = "eagleeye_otel.instrumentation.vllm"
"""The instrumentation scope of every vLLM metric."""
DRAIN_INTERVAL_S = 1.0
"""How often the drain thread records what is queued. Collections drain first, so this bounds only the queue (and
what an idle Prometheus or OTLP reader would miss); each wake-up costs CPU whether steps are queued or not."""
_YIELD_EVERY_S = 0.0002
"""Longest stretch a drain holds the GIL before handing it to vLLM's event loop."""
_NAP_S = 0.00005
"""How long the drain sleeps to hand the GIL over: ``sleep(0)`` mostly takes it straight back."""

_FINISHED_HISTOGRAMS = (
    ("e2e_latency", sc.GEN_AI_SERVER_REQUEST_DURATION),
    ("queued_time", sc.VLLM_REQUEST_QUEUE_TIME),
    ("prefill_time", sc.VLLM_REQUEST_PREFILL_TIME),
    ("decode_time", sc.VLLM_REQUEST_DECODE_TIME),
    ("inference_time", sc.VLLM_REQUEST_INFERENCE_TIME),
    ("mean_time_per_output_token", sc.GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN),
    ("num_prompt_tokens", sc.VLLM_REQUEST_PROMPT_TOKENS),
    ("num_generation_tokens", sc.VLLM_REQUEST_GENERATION_TOKENS),
)
"""``FinishedRequestStats`` field to the histogram that records it, one sample per finished request."""

_StepStats = tuple[Any, Any]


class EngineMetrics:
    """One data-parallel engine: the queue and latest stats ``record()`` writes on the event loop, read by drains."""

    def __init__(self, attributes: dict[str, str | int], *, max_pending: int, fork_guard: ForkGuard) -> None:
        self.attributes = attributes
        self.latest: Any = None
        """The newest ``SchedulerStats``, read by the gauges' callbacks."""
        self.pending: deque[_StepStats] = deque(maxlen=max_pending)
        self.dropped = 0
        """Steps dropped, oldest first, because :attr:`pending` was full."""
        self.dropped_reported = 0
        """Of :attr:`dropped`, how many the drains have added to the counter."""
        self.counted = False
        """Whether a drain has added every counter once (zero included), so that each series exists."""
        self.reason_attributes: dict[object, dict[str, str | int]] = {}
        self._fork_guard = fork_guard

    def record(self, scheduler_stats: Any, iteration_stats: Any) -> None:
        """Keep one step's stats for the next drain; O(1), records no instrument."""
        if self._fork_guard.in_child:
            return
        if scheduler_stats is not None:
            self.latest = scheduler_stats
        elif iteration_stats is None:
            return
        pending = self.pending
        if len(pending) == pending.maxlen:
            self.dropped += 1
        pending.append((scheduler_stats, iteration_stats))


class _Batch:
    """What one drain of one engine folded from its queued steps: counter sums and histogram samples."""

    __slots__ = (
        "accepted",
        "draft_tokens",
        "drafts",
        "finished",
        "finished_samples",
        "generation",
        "iteration_tokens",
        "itl",
        "preemptions",
        "prefix_hits",
        "prefix_queries",
        "prompt",
        "samples",
        "spec",
        "ttft",
    )

    def __init__(self, histograms: Mapping[str, Histogram]) -> None:
        self.prefix_queries = self.prefix_hits = self.preemptions = self.prompt = self.generation = 0
        self.drafts = self.draft_tokens = self.accepted = 0
        self.spec = False
        self.finished: dict[object, int] = {}
        self.samples: dict[str, list[Any]] = {name: [] for name in histograms}
        """Per enabled histogram, its samples in step order; a disabled histogram has no list and is not read."""
        self.iteration_tokens = self.samples.get(sc.VLLM_ITERATION_TOKENS)
        self.ttft = self.samples.get(sc.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN)
        self.itl = self.samples.get(sc.VLLM_INTER_TOKEN_LATENCY)
        self.finished_samples = [(field, self.samples[n]) for field, n in _FINISHED_HISTOGRAMS if n in self.samples]

    def fold_scheduler(self, stats: Any) -> None:
        prefix = getattr(stats, "prefix_cache_stats", None)
        if prefix is not None:
            self.prefix_queries += getattr(prefix, "queries", 0)
            self.prefix_hits += getattr(prefix, "hits", 0)
        spec = getattr(stats, "spec_decoding_stats", None)
        if spec is not None:
            self.spec = True
            self.drafts += getattr(spec, "num_drafts", 0)
            self.draft_tokens += getattr(spec, "num_draft_tokens", 0)
            self.accepted += getattr(spec, "num_accepted_tokens", 0)

    def fold_iteration(self, stats: Any) -> None:
        generation = getattr(stats, "num_generation_tokens", 0)
        prompt = getattr(stats, "num_prompt_tokens", 0)
        self.generation += generation
        self.prompt += prompt
        self.preemptions += getattr(stats, "num_preempted_reqs", 0)
        if self.iteration_tokens is not None:
            # vLLM 0.17+ counts only the prompt tokens computed this step (cache hits excluded).
            computed = getattr(getattr(stats, "prompt_token_stats", None), "computed", prompt)
            self.iteration_tokens.append(computed + generation)
        if self.ttft is not None:
            self.ttft.extend(getattr(stats, "time_to_first_tokens_iter", ()))
        if self.itl is not None:
            self.itl.extend(getattr(stats, "inter_token_latencies_iter", ()))
        for finished in getattr(stats, "finished_requests", ()):
            reason = getattr(finished, "finish_reason", None)
            self.finished[reason] = self.finished.get(reason, 0) + 1
            for field, samples in self.finished_samples:
                value = getattr(finished, field, None)
                if value is not None:
                    samples.append(value)


class MetricsRecorder:
    """The vLLM plugin's instruments on one meter provider, fed by one :class:`EngineMetrics` per engine.

    Args:
        meter_provider: where the instruments are created.
        max_pending: steps each engine may queue between drains; past it the oldest are dropped and counted.
        drain_interval_s: how often the background thread drains; ``0`` starts no thread.
        enabled: per-metric overrides of :attr:`~eagleeye_otel.semconv.MetricSpec.enabled`.
    """

    def __init__(
        self,
        meter_provider: MeterProvider,
        *,
        max_pending: int = 4096,
        drain_interval_s: float = DRAIN_INTERVAL_S,
        enabled: Mapping[str, bool] | None = None,
    ) -> None:
        self._fork_guard = ForkGuard()
        self._max_pending = max_pending
        self._engines: dict[tuple[str, str, int], EngineMetrics] = {}
        self._lock = threading.Lock()
        self._failures = LogLimiter(_logger)
        self._counters: dict[str, Counter] = {}
        self._histograms: dict[str, Histogram] = {}
        """The enabled histograms only: a drain collects samples for these alone."""
        self._create_instruments(meter_provider.get_meter(METER_NAME, __version__), enabled or {})
        self._yielded = time.perf_counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if drain_interval_s > 0:
            self._thread = threading.Thread(
                target=self._run, args=(drain_interval_s,), name="eagleeye-vllm-metrics", daemon=True
            )
            self._thread.start()

    def engine(self, *, model: str, instance: str, engine: int) -> EngineMetrics:
        """The recording handle of one engine; the same handle for the same model, instance and engine."""
        with self._lock:
            key = (model, instance, engine)
            handle = self._engines.get(key)
            if handle is None:
                attributes: dict[str, str | int] = {
                    sc.GEN_AI_PROVIDER_NAME: sc.GEN_AI_PROVIDER_NAME_VLLM,
                    sc.GEN_AI_REQUEST_MODEL: model,
                    sc.EAGLEEYE_INSTANCE_ID: instance,
                    sc.VLLM_ENGINE: engine,
                }
                handle = EngineMetrics(attributes, max_pending=self._max_pending, fork_guard=self._fork_guard)
                self._engines = {**self._engines, key: handle}
            return handle

    def drain(self) -> None:
        """Record every queued step into the instruments now (before a collection, at shutdown); never raises."""
        if self._fork_guard.in_child:
            return
        with self._lock:
            for engine in self._engines.values():
                try:
                    self._drain_engine(engine)
                except Exception:
                    self._failures.warning("Eagle Eye failed to record vLLM metrics", exc_info=True)

    def shutdown(self, timeout_s: float = 1.0) -> None:
        """Stop the drain thread and record what is still queued."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        self.drain()

    def _run(self, interval_s: float) -> None:
        name_os_thread(threading.current_thread().name)
        while not self._stop.wait(interval_s):
            self.drain()

    def _create_instruments(self, meter: Meter, enabled: Mapping[str, bool]) -> None:
        noop = NoOpMeter(METER_NAME)
        gauge_callbacks = {
            sc.VLLM_NUM_REQUESTS_WAITING: self._observe_waiting,
            sc.VLLM_NUM_REQUESTS_RUNNING: self._observe_running,
            sc.VLLM_KV_CACHE_USAGE: self._observe_kv_cache_usage,
        }
        for spec in sc.VLLM_METRICS:
            on = enabled.get(spec.name, spec.enabled)
            target = meter if on else noop
            if spec.kind is sc.InstrumentKind.COUNTER:
                self._counters[spec.name] = target.create_counter(spec.name, spec.unit, spec.description)
            elif spec.kind is sc.InstrumentKind.HISTOGRAM:
                if on:
                    self._histograms[spec.name] = meter.create_histogram(
                        spec.name, spec.unit, spec.description, explicit_bucket_boundaries_advisory=spec.buckets
                    )
            else:
                target.create_observable_gauge(spec.name, [gauge_callbacks[spec.name]], spec.unit, spec.description)

    def _drain_engine(self, engine: EngineMetrics) -> None:
        pending = engine.pending
        count = len(pending)
        dropped = engine.dropped - engine.dropped_reported
        if count == 0 and dropped == 0:
            return
        batch = _Batch(self._histograms)
        for _ in range(count):
            scheduler_stats, iteration_stats = pending.popleft()
            try:
                if scheduler_stats is not None:
                    batch.fold_scheduler(scheduler_stats)
                if iteration_stats is not None:
                    batch.fold_iteration(iteration_stats)
            except Exception:
                self._failures.warning("Eagle Eye skipped unreadable vLLM stats", exc_info=True)
            self._pace()
        self._record_samples(engine, batch)
        self._add_totals(engine, batch, dropped)

    def _pace(self) -> None:
        """Sleep briefly after every ``_YIELD_EVERY_S`` of drain work, so vLLM's event loop gets the GIL."""
        if time.perf_counter() - self._yielded > _YIELD_EVERY_S:
            time.sleep(_NAP_S)
            self._yielded = time.perf_counter()

    def _record_samples(self, engine: EngineMetrics, batch: _Batch) -> None:
        attributes, pace = engine.attributes, self._pace
        for name, samples in batch.samples.items():
            record = self._histograms[name].record
            for value in samples:
                try:
                    record(value, attributes)
                except Exception:
                    self._failures.warning("Eagle Eye skipped an unreadable vLLM sample", exc_info=True)
                pace()  # one SDK call per sample: hundreds on a big batch

    def _add_totals(self, engine: EngineMetrics, batch: _Batch, dropped: int) -> None:
        attributes, counters = engine.attributes, self._counters
        sums = [
            (sc.VLLM_PREFIX_CACHE_QUERIES, batch.prefix_queries),
            (sc.VLLM_PREFIX_CACHE_HITS, batch.prefix_hits),
            (sc.VLLM_NUM_PREEMPTIONS, batch.preemptions),
            (sc.VLLM_PROMPT_TOKENS, batch.prompt),
            (sc.VLLM_GENERATION_TOKENS, batch.generation),
        ]
        if batch.spec:
            sums.append((sc.VLLM_SPEC_DECODE_NUM_DRAFTS, batch.drafts))
            sums.append((sc.VLLM_SPEC_DECODE_NUM_DRAFT_TOKENS, batch.draft_tokens))
            sums.append((sc.VLLM_SPEC_DECODE_NUM_ACCEPTED_TOKENS, batch.accepted))
        for name, value in sums:
            if value or not engine.counted:  # a zero adds nothing once the series exists
                counters[name].add(value, attributes)
        engine.counted = True
        for reason, count in batch.finished.items():
            counters[sc.VLLM_REQUEST_SUCCESS].add(count, _reason_attributes(engine, reason))
        if dropped:
            counters[sc.EAGLEEYE_VLLM_STATS_DROPPED].add(dropped, attributes)
            engine.dropped_reported += dropped

    def _observe_waiting(self, options: CallbackOptions) -> Iterator[Observation]:
        return self._observe(
            lambda s: int(getattr(s, "num_waiting_reqs", 0)) + int(getattr(s, "num_skipped_waiting_reqs", 0))
        )

    def _observe_running(self, options: CallbackOptions) -> Iterator[Observation]:
        return self._observe(lambda s: int(getattr(s, "num_running_reqs", 0)))

    def _observe_kv_cache_usage(self, options: CallbackOptions) -> Iterator[Observation]:
        return self._observe(lambda s: float(getattr(s, "kv_cache_usage", 0.0)))

    def _observe(self, read: Callable[[Any], float]) -> Iterator[Observation]:
        """Drain first, so the collection that runs this callback also sees every queued step."""
        if self._fork_guard.in_child:
            return iter(())
        self.drain()
        observations = []
        for engine in self._engines.values():
            try:
                value = 0 if engine.latest is None else read(engine.latest)
                observations.append(Observation(value, engine.attributes))
            except Exception:
                self._failures.warning("Eagle Eye skipped an unreadable vLLM gauge", exc_info=True)
        return iter(observations)


def _reason_attributes(engine: EngineMetrics, reason: object) -> dict[str, str | int]:
    """The engine's attributes plus the finish reason, built once per reason (``FinishReason`` prints as ``stop``)."""
    attributes = engine.reason_attributes.get(reason)
    if attributes is None:
        attributes = {**engine.attributes, sc.VLLM_FINISHED_REASON: "unknown" if reason is None else str(reason)}
        engine.reason_attributes[reason] = attributes
    return attributes


_shared_lock = threading.Lock()
_shared: dict[MeterProvider, MetricsRecorder] = {}


def shared_metrics_recorder(
    meter_provider: MeterProvider, *, enabled: Mapping[str, bool] | None = None
) -> MetricsRecorder:
    """The process's one recorder on ``meter_provider``, created on first call (with ``enabled``, see
    :class:`MetricsRecorder`).

    vLLM builds one stat logger per data-parallel engine. They must share instruments: the SDK drops a second
    observable gauge of the same name on a meter, callback included.
    """
    with _shared_lock:
        recorder = _shared.get(meter_provider)
        if recorder is None:
            recorder = _shared[meter_provider] = MetricsRecorder(meter_provider, enabled=enabled)
        return recorder
