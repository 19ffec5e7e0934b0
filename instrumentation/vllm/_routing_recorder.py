"""Turns vLLM's per-step stats into routing messages for the publisher.

It runs inside ``record()`` on vLLM's event loop, so it only reads a few attributes, adds a few integers and
hands one object over. Fields that vLLM added or removed across versions are read with defaults.
"""

from __future__ import annotations

import time
from typing import Any

from eagleeye_otel.exporters.nats import RoutingPublisher
from eagleeye_otel.routing import RoutingMessage
from eagleeye_otel.semconv import ROUTING_MESSAGE_VERSION

__all__ = ["RoutingRecorder"]


class RoutingRecorder:
    """Builds the routing message of one engine and offers it to the publisher.

    Args:
        publisher: the process's running publisher.
        instance: routing instance id.
        model: served model name.
        engine: data-parallel engine index.
        started: Unix time the publisher started (lets routers tell a restart from a replay).
        endpoint: where routers send this instance's requests, if configured.
        node: the node the instance runs on, so routers can match the diagnosis' findings to it.
        devices: the accelerators it uses (GPU UUIDs, ``npu-<card>-<device>``), for the same purpose.
    """

    def __init__(
        self,
        publisher: RoutingPublisher,
        *,
        instance: str,
        model: str,
        engine: int,
        started: float,
        endpoint: str | None,
        node: str | None = None,
        devices: tuple[str, ...] = (),
    ) -> None:
        self._publisher = publisher
        self._instance = instance
        self._model = model
        self._engine = engine
        self._started = started
        self._endpoint = endpoint
        self._node = node
        self._devices = devices
        self._prefix_queries = 0
        self._prefix_hits = 0
        self._prompt_tokens = 0
        self._generation_tokens = 0
        self._preemptions = 0
        self._last_step_at: float | None = None

    def announce(self) -> None:
        """Offer an idle state, so routers see the engine as soon as it is up, before its first request."""
        self._offer(time.time(), waiting=0, running=0, kv_cache_usage=0.0)

    def record(self, scheduler_stats: Any, iteration_stats: Any) -> None:
        """Fold one step's stats into the totals and offer the new state (when the step has scheduler stats)."""
        if iteration_stats is not None:
            self._generation_tokens += iteration_stats.num_generation_tokens
            self._prompt_tokens += iteration_stats.num_prompt_tokens
            self._preemptions += iteration_stats.num_preempted_reqs
        if scheduler_stats is None:
            return
        self._last_step_at = now = time.time()
        prefix = getattr(scheduler_stats, "prefix_cache_stats", None)
        if prefix is not None:
            self._prefix_queries += prefix.queries
            self._prefix_hits += prefix.hits
        self._offer(
            now,
            # vLLM 0.20 split deferred requests out of num_waiting_reqs; routers want both.
            waiting=scheduler_stats.num_waiting_reqs + getattr(scheduler_stats, "num_skipped_waiting_reqs", 0),
            running=scheduler_stats.num_running_reqs,
            kv_cache_usage=min(max(scheduler_stats.kv_cache_usage, 0.0), 1.0),
        )

    def _offer(self, timestamp: float, *, waiting: int, running: int, kv_cache_usage: float) -> None:
        self._publisher.offer(
            RoutingMessage(
                version=ROUTING_MESSAGE_VERSION,
                instance=self._instance,
                model=self._model,
                engine=self._engine,
                timestamp=timestamp,
                last_step_at=self._last_step_at,
                seq=0,
                num_requests_waiting=waiting,
                num_requests_running=running,
                kv_cache_usage=kv_cache_usage,
                started=self._started,
                endpoint=self._endpoint,
                node=self._node,
                devices=self._devices,
                prefix_cache_queries_total=self._prefix_queries,
                prefix_cache_hits_total=self._prefix_hits,
                prompt_tokens_total=self._prompt_tokens,
                generation_tokens_total=self._generation_tokens,
                preemptions_total=self._preemptions,
            )
        )
