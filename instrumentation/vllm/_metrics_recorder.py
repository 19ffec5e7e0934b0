"""Turns vLLM's per-step stats into the OTel instruments of :data:`~eagleeye_otel.semconv.VLLM_METRICS`.

``record()`` runs on vLLM's event loop after every engine step, and an SDK histogram costs microseconds per sample
(a step carries one inter-token latency per running request), so the hot path records nothing: it keeps the
latest scheduler stats for the gauges' callbacks and appends the step's stats objects to a bounded per-engine
queue. A daemon thread drains the queues every ``drain_interval_s``, as does every collection (the gauges'
callbacks drain first, so a scrape sees every step before it), and :meth:`MetricsRecorder.drain` on demand.
Counters are summed over a drain and added once. Fields vLLM added or removed across versions are read with
defaults; a forked child records nothing.
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
from eagleeye_otel.version import __version__

__all__ = ["METER_NAME", "EngineMetrics", "MetricsRecorder", "shared_metrics_recorder"]

_logger = logging.getLogger(__name__)

METER_NAME = "eagleeye_otel.instrumentation.vllm"
"""The instrumentation scope of every vLLM metric."""
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


class _Totals:
    """Counter deltas summed over one drain of one engine."""

    __slots__ = (
        "accepted",
        "draft_tokens",
        "drafts",
        "finished",
        "generation",
        "preemptions",
        "prefix_hits",
        "prefix_queries",
        "prompt",
        "spec",
    )

    def __init__(self) -> None:
        self.prefix_queries = self.prefix_hits = self.preemptions = self.prompt = self.generation = 0
        self.drafts = self.draft_tokens = self.accepted = 0
        self.spec = False
        self.finished: dict[object, int] = {}


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
        drain_interval_s: float = 0.1,
        enabled: Mapping[str, bool] | None = None,
    ) -> None:
        self._fork_guard = ForkGuard()
        self._max_pending = max_pending
        self._engines: dict[tuple[str, str, int], EngineMetrics] = {}
        self._lock = threading.Lock()
        self._failures = LogLimiter(_logger)
        self._counters: dict[str, Counter] = {}
        self._histograms: dict[str, Histogram] = {}
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
            target = meter if enabled.get(spec.name, spec.enabled) else noop
            if spec.kind is sc.InstrumentKind.COUNTER:
                self._counters[spec.name] = target.create_counter(spec.name, spec.unit, spec.description)
            elif spec.kind is sc.InstrumentKind.HISTOGRAM:
                self._histograms[spec.name] = target.create_histogram(
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
        totals = _Totals()
        for _ in range(count):
            scheduler_stats, iteration_stats = pending.popleft()
            try:
                if scheduler_stats is not None:
                    _fold_scheduler(scheduler_stats, totals)
                if iteration_stats is not None:
                    self._record_iteration(iteration_stats, engine, totals)
            except Exception:
                self._failures.warning("Eagle Eye skipped unreadable vLLM stats", exc_info=True)
            self._pace()
        self._add_totals(engine, totals, dropped)

    def _pace(self) -> None:
        """Sleep briefly after every ``_YIELD_EVERY_S`` of drain work, so vLLM's event loop gets the GIL."""
        if time.perf_counter() - self._yielded > _YIELD_EVERY_S:
            time.sleep(_NAP_S)
            self._yielded = time.perf_counter()

    def _record_iteration(self, stats: Any, engine: EngineMetrics, totals: _Totals) -> None:
        attributes = engine.attributes
        generation = getattr(stats, "num_generation_tokens", 0)
        prompt = getattr(stats, "num_prompt_tokens", 0)
        totals.generation += generation
        totals.prompt += prompt
        totals.preemptions += getattr(stats, "num_preempted_reqs", 0)
        # vLLM 0.17+ counts only the prompt tokens computed this step (cache hits excluded).
        computed = getattr(getattr(stats, "prompt_token_stats", None), "computed", prompt)
        histograms = self._histograms
        histograms[sc.VLLM_ITERATION_TOKENS].record(computed + generation, attributes)
        record = histograms[sc.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN].record
        for value in getattr(stats, "time_to_first_tokens_iter", ()):
            record(value, attributes)
        record = histograms[sc.VLLM_INTER_TOKEN_LATENCY].record
        for value in getattr(stats, "inter_token_latencies_iter", ()):
            record(value, attributes)
            self._pace()  # one sample per running request: hundreds on a big batch
        for finished in getattr(stats, "finished_requests", ()):
            reason = getattr(finished, "finish_reason", None)
            totals.finished[reason] = totals.finished.get(reason, 0) + 1
            for field, name in _FINISHED_HISTOGRAMS:
                value = getattr(finished, field, None)
                if value is not None:
                    histograms[name].record(value, attributes)

    def _add_totals(self, engine: EngineMetrics, totals: _Totals, dropped: int) -> None:
        attributes = engine.attributes
        counters = self._counters
        counters[sc.VLLM_PREFIX_CACHE_QUERIES].add(totals.prefix_queries, attributes)
        counters[sc.VLLM_PREFIX_CACHE_HITS].add(totals.prefix_hits, attributes)
        counters[sc.VLLM_NUM_PREEMPTIONS].add(totals.preemptions, attributes)
        counters[sc.VLLM_PROMPT_TOKENS].add(totals.prompt, attributes)
        counters[sc.VLLM_GENERATION_TOKENS].add(totals.generation, attributes)
        if totals.spec:
            counters[sc.VLLM_SPEC_DECODE_NUM_DRAFTS].add(totals.drafts, attributes)
            counters[sc.VLLM_SPEC_DECODE_NUM_DRAFT_TOKENS].add(totals.draft_tokens, attributes)
            counters[sc.VLLM_SPEC_DECODE_NUM_ACCEPTED_TOKENS].add(totals.accepted, attributes)
        for reason, count in totals.finished.items():
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


def _fold_scheduler(stats: Any, totals: _Totals) -> None:
    prefix = getattr(stats, "prefix_cache_stats", None)
    if prefix is not None:
        totals.prefix_queries += getattr(prefix, "queries", 0)
        totals.prefix_hits += getattr(prefix, "hits", 0)
    spec = getattr(stats, "spec_decoding_stats", None)
    if spec is not None:
        totals.spec = True
        totals.drafts += getattr(spec, "num_drafts", 0)
        totals.draft_tokens += getattr(spec, "num_draft_tokens", 0)
        totals.accepted += getattr(spec, "num_accepted_tokens", 0)


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
