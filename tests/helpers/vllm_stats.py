"""Real vLLM stats objects, built the way vLLM's scheduler and output processor fill them."""

from __future__ import annotations

from vllm.v1.engine import FinishReason
from vllm.v1.metrics.stats import (
    FinishedRequestStats,
    IterationStats,
    PrefixCacheStats,
    PromptTokenStats,
    SchedulerStats,
)


def scheduler(
    running: int = 3, waiting: int = 2, skipped: int = 1, kv: float = 0.25, queries: int = 0, hits: int = 0
) -> SchedulerStats:
    return SchedulerStats(
        num_running_reqs=running,
        num_waiting_reqs=waiting,
        num_skipped_waiting_reqs=skipped,
        kv_cache_usage=kv,
        prefix_cache_stats=PrefixCacheStats(requests=1 if queries else 0, queries=queries, hits=hits),
    )


def iteration(
    generated: int = 0,
    computed: int = 0,
    cached: int = 0,
    preempted: int = 0,
    ttfts: tuple[float, ...] = (),
    itls: tuple[float, ...] = (),
    done: tuple[FinishedRequestStats, ...] = (),
) -> IterationStats:
    stats = IterationStats()
    stats.num_generation_tokens = generated
    stats.prompt_token_stats = PromptTokenStats(
        computed=computed, local_cache_hit=cached, cached_tokens=cached, total=computed + cached
    )
    stats.num_preempted_reqs = preempted
    stats.time_to_first_tokens_iter = list(ttfts)
    stats.inter_token_latencies_iter = list(itls)
    stats.finished_requests = list(done)
    return stats


def finished(
    reason: FinishReason,
    e2e: float,
    prompt: int = 7,
    generated: int = 5,
    *,
    queued: float = 0.01,
    prefill: float = 0.02,
    time_per_output_token: float = 0.005,
) -> FinishedRequestStats:
    """A finished request; its decode time is what remains of ``e2e`` after queueing and prefill."""
    return FinishedRequestStats(
        finish_reason=reason,
        request_id="r",
        e2e_latency=e2e,
        num_prompt_tokens=prompt,
        num_generation_tokens=generated,
        queued_time=queued,
        prefill_time=prefill,
        inference_time=e2e - queued,
        decode_time=e2e - queued - prefill,
        mean_time_per_output_token=time_per_output_token,
    )
