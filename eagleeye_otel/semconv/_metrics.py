"""Every vLLM metric Eagle Eye records: name, instrument, unit, attributes and buckets, in one table.

``gen_ai.server.*`` names are copied from the OpenTelemetry semantic conventions
(``opentelemetry.semconv._incubating.metrics.gen_ai_metrics``; a test checks they still match). The rest mirror
vLLM's own Prometheus metrics, ``vllm:<name>`` becoming ``vllm.<name>`` (OTel names cannot hold ``:``) without
the unit suffix or ``_total`` that the Prometheus exporter adds back. Histogram buckets are vLLM's, which extend
the semconv advice into the long tails a loaded engine reaches. ``docs/metrics.md`` is checked against this table.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Final

from eagleeye_otel.semconv._attributes import EAGLEEYE_INSTANCE_ID, ENGINE_ATTRIBUTES, VLLM_FINISHED_REASON

VLLM_NUM_REQUESTS_WAITING: Final = "vllm.num_requests_waiting"
VLLM_NUM_REQUESTS_RUNNING: Final = "vllm.num_requests_running"
VLLM_KV_CACHE_USAGE: Final = "vllm.kv_cache_usage"
VLLM_PREFIX_CACHE_QUERIES: Final = "vllm.prefix_cache_queries"
VLLM_PREFIX_CACHE_HITS: Final = "vllm.prefix_cache_hits"
VLLM_NUM_PREEMPTIONS: Final = "vllm.num_preemptions"
VLLM_PROMPT_TOKENS: Final = "vllm.prompt_tokens"
VLLM_GENERATION_TOKENS: Final = "vllm.generation_tokens"
VLLM_REQUEST_SUCCESS: Final = "vllm.request_success"
VLLM_ITERATION_TOKENS: Final = "vllm.iteration_tokens"
GEN_AI_SERVER_TIME_TO_FIRST_TOKEN: Final = "gen_ai.server.time_to_first_token"
VLLM_INTER_TOKEN_LATENCY: Final = "vllm.inter_token_latency"
GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN: Final = "gen_ai.server.time_per_output_token"
GEN_AI_SERVER_REQUEST_DURATION: Final = "gen_ai.server.request.duration"
VLLM_REQUEST_QUEUE_TIME: Final = "vllm.request_queue_time"
VLLM_REQUEST_PREFILL_TIME: Final = "vllm.request_prefill_time"
VLLM_REQUEST_DECODE_TIME: Final = "vllm.request_decode_time"
VLLM_REQUEST_INFERENCE_TIME: Final = "vllm.request_inference_time"
VLLM_REQUEST_PROMPT_TOKENS: Final = "vllm.request_prompt_tokens"
VLLM_REQUEST_GENERATION_TOKENS: Final = "vllm.request_generation_tokens"
VLLM_SPEC_DECODE_NUM_DRAFTS: Final = "vllm.spec_decode_num_drafts"
VLLM_SPEC_DECODE_NUM_DRAFT_TOKENS: Final = "vllm.spec_decode_num_draft_tokens"
VLLM_SPEC_DECODE_NUM_ACCEPTED_TOKENS: Final = "vllm.spec_decode_num_accepted_tokens"
EAGLEEYE_VLLM_STATS_DROPPED: Final = "eagleeye.vllm.stats_dropped"
EAGLEEYE_VLLM_RECORD_FAILURES: Final = "eagleeye.vllm.record_failures"
EAGLEEYE_ROUTING_OFFERED: Final = "eagleeye.routing.offered"
EAGLEEYE_ROUTING_PUBLISHED: Final = "eagleeye.routing.published"
EAGLEEYE_ROUTING_HEARTBEATS: Final = "eagleeye.routing.heartbeats"
EAGLEEYE_ROUTING_COALESCED: Final = "eagleeye.routing.coalesced"
EAGLEEYE_ROUTING_DROPPED: Final = "eagleeye.routing.dropped"
EAGLEEYE_ROUTING_ERRORS: Final = "eagleeye.routing.errors"
EAGLEEYE_ROUTING_RECONNECTS: Final = "eagleeye.routing.reconnects"
EAGLEEYE_ROUTING_CONNECTED: Final = "eagleeye.routing.connected"

GEN_AI_SERVER_TIME_TO_FIRST_TOKEN_BUCKETS: Final = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
"""The semconv's advised TTFT boundaries (s)."""

GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN_BUCKETS: Final = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
)  # fmt: skip
"""The semconv's advised TPOT boundaries (s)."""

TIME_TO_FIRST_TOKEN_BUCKETS: Final = (
    *GEN_AI_SERVER_TIME_TO_FIRST_TOKEN_BUCKETS, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
"""vLLM's TTFT boundaries: the semconv's plus a tail for queued, overloaded engines."""

INTER_TOKEN_LATENCY_BUCKETS: Final = (*GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN_BUCKETS, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
"""vLLM's inter-token boundaries: the semconv's TPOT ones plus a tail for preemption stalls."""

REQUEST_LATENCY_BUCKETS: Final = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0,
    960.0, 1920.0, 7680.0,
)  # fmt: skip
"""vLLM's request-phase boundaries (s), up to two-hour batch requests (semconv advises 0.01 to 81.92)."""

ITERATION_TOKENS_BUCKETS: Final = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
"""vLLM's tokens-per-step boundaries."""

REQUEST_TOKENS_BUCKETS: Final = (*(m * 10**e for e in range(7) for m in (1, 2, 5)), 10**7)
"""1-2-5 series to 10M tokens: vLLM's per-request token buckets, which stop at ``max_model_len``, for any model."""


class InstrumentKind(enum.Enum):
    """The OTel instrument a metric is recorded with."""

    COUNTER = "counter"
    HISTOGRAM = "histogram"
    OBSERVABLE_GAUGE = "observable_gauge"
    OBSERVABLE_COUNTER = "observable_counter"


@dataclass(frozen=True)
class MetricSpec:
    """One metric: what instruments and docs are generated from."""

    name: str
    kind: InstrumentKind
    unit: str
    """UCUM, with ``{annotation}`` for counted things."""
    description: str
    attributes: tuple[str, ...] = ENGINE_ATTRIBUTES
    buckets: tuple[float, ...] | None = None
    """Explicit histogram boundaries; ``None`` for other instruments."""
    enabled: bool = True
    vllm_name: str | None = None
    """vLLM's own Prometheus metric carrying the same data, for dashboards being ported."""


def _counter(name: str, unit: str, description: str, vllm_name: str) -> MetricSpec:
    return MetricSpec(name, InstrumentKind.COUNTER, unit, description, vllm_name=vllm_name)


def _gauge(name: str, unit: str, description: str, vllm_name: str) -> MetricSpec:
    return MetricSpec(name, InstrumentKind.OBSERVABLE_GAUGE, unit, description, vllm_name=vllm_name)


def _histogram(name: str, unit: str, description: str, buckets: tuple[float, ...], vllm_name: str) -> MetricSpec:
    return MetricSpec(name, InstrumentKind.HISTOGRAM, unit, description, buckets=buckets, vllm_name=vllm_name)


VLLM_METRICS: Final[tuple[MetricSpec, ...]] = (
    _gauge(
        VLLM_NUM_REQUESTS_WAITING,
        "{request}",
        "Requests waiting to be scheduled, deferred ones included.",
        "vllm:num_requests_waiting",
    ),
    _gauge(VLLM_NUM_REQUESTS_RUNNING, "{request}", "Requests in the running batch.", "vllm:num_requests_running"),
    _gauge(VLLM_KV_CACHE_USAGE, "1", "Fraction of KV-cache blocks in use (0 to 1).", "vllm:kv_cache_usage_perc"),
    _counter(
        VLLM_PREFIX_CACHE_QUERIES,
        "{token}",
        "Prompt tokens looked up in the prefix cache.",
        "vllm:prefix_cache_queries",
    ),
    _counter(VLLM_PREFIX_CACHE_HITS, "{token}", "Prompt tokens found in the prefix cache.", "vllm:prefix_cache_hits"),
    _counter(VLLM_NUM_PREEMPTIONS, "{preemption}", "Requests preempted by the scheduler.", "vllm:num_preemptions"),
    _counter(VLLM_PROMPT_TOKENS, "{token}", "Prompt tokens prefilled, cached ones included.", "vllm:prompt_tokens"),
    _counter(VLLM_GENERATION_TOKENS, "{token}", "Tokens generated.", "vllm:generation_tokens"),
    MetricSpec(
        VLLM_REQUEST_SUCCESS,
        InstrumentKind.COUNTER,
        "{request}",
        "Finished requests by finish reason (aborted and failed ones too, as in vLLM).",
        attributes=(*ENGINE_ATTRIBUTES, VLLM_FINISHED_REASON),
        vllm_name="vllm:request_success",
    ),
    _histogram(
        VLLM_ITERATION_TOKENS,
        "{token}",
        "Tokens computed per engine step (prefill and decode).",
        ITERATION_TOKENS_BUCKETS,
        "vllm:iteration_tokens_total",
    ),
    _histogram(
        GEN_AI_SERVER_TIME_TO_FIRST_TOKEN,
        "s",
        "Time from a request's arrival to its first output token.",
        TIME_TO_FIRST_TOKEN_BUCKETS,
        "vllm:time_to_first_token_seconds",
    ),
    dataclasses.replace(
        _histogram(
            VLLM_INTER_TOKEN_LATENCY,
            "s",
            "Time between two consecutive output tokens of a request.",
            INTER_TOKEN_LATENCY_BUCKETS,
            "vllm:inter_token_latency_seconds",
        ),
        # One sample per generated token: about 30 of a step's 40 samples at 32 running requests, most of the
        # recording cost. Off unless EAGLEEYE_METRICS_ENABLE names it; vLLM's own /metrics keeps it.
        enabled=False,
    ),
    _histogram(
        GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN,
        "s",
        "Per finished request, decode time over output tokens after the first (0 with one token).",
        INTER_TOKEN_LATENCY_BUCKETS,
        "vllm:request_time_per_output_token_seconds",
    ),
    _histogram(
        GEN_AI_SERVER_REQUEST_DURATION,
        "s",
        "Time from a request's arrival to its last output token.",
        REQUEST_LATENCY_BUCKETS,
        "vllm:e2e_request_latency_seconds",
    ),
    _histogram(
        VLLM_REQUEST_QUEUE_TIME,
        "s",
        "Time a request waited before it was first scheduled.",
        REQUEST_LATENCY_BUCKETS,
        "vllm:request_queue_time_seconds",
    ),
    _histogram(
        VLLM_REQUEST_PREFILL_TIME,
        "s",
        "Time from first scheduling to the first output token.",
        REQUEST_LATENCY_BUCKETS,
        "vllm:request_prefill_time_seconds",
    ),
    _histogram(
        VLLM_REQUEST_DECODE_TIME,
        "s",
        "Time from the first to the last output token.",
        REQUEST_LATENCY_BUCKETS,
        "vllm:request_decode_time_seconds",
    ),
    _histogram(
        VLLM_REQUEST_INFERENCE_TIME,
        "s",
        "Time from first scheduling to the last output token.",
        REQUEST_LATENCY_BUCKETS,
        "vllm:request_inference_time_seconds",
    ),
    _histogram(
        VLLM_REQUEST_PROMPT_TOKENS,
        "{token}",
        "Prompt tokens per finished request.",
        REQUEST_TOKENS_BUCKETS,
        "vllm:request_prompt_tokens",
    ),
    _histogram(
        VLLM_REQUEST_GENERATION_TOKENS,
        "{token}",
        "Output tokens per finished request.",
        REQUEST_TOKENS_BUCKETS,
        "vllm:request_generation_tokens",
    ),
    _counter(
        VLLM_SPEC_DECODE_NUM_DRAFTS, "{draft}", "Speculative-decoding drafts proposed.", "vllm:spec_decode_num_drafts"
    ),
    _counter(
        VLLM_SPEC_DECODE_NUM_DRAFT_TOKENS,
        "{token}",
        "Draft tokens proposed by speculative decoding.",
        "vllm:spec_decode_num_draft_tokens",
    ),
    _counter(
        VLLM_SPEC_DECODE_NUM_ACCEPTED_TOKENS,
        "{token}",
        "Draft tokens the target model accepted.",
        "vllm:spec_decode_num_accepted_tokens",
    ),
    MetricSpec(
        EAGLEEYE_VLLM_STATS_DROPPED,
        InstrumentKind.COUNTER,
        "{step}",
        "Engine steps whose stats Eagle Eye dropped because its bounded queue was full.",
    ),
)
"""Every metric the vLLM plugin records, in documentation order."""


def _health(name: str, kind: InstrumentKind, unit: str, description: str) -> MetricSpec:
    return MetricSpec(name, kind, unit, description, attributes=(EAGLEEYE_INSTANCE_ID,))


PLUGIN_HEALTH_METRICS: Final[tuple[MetricSpec, ...]] = (
    _health(
        EAGLEEYE_ROUTING_OFFERED,
        InstrumentKind.OBSERVABLE_COUNTER,
        "{message}",
        "Engine states handed to the routing publisher (one per engine step, plus one per engine at start).",
    ),
    _health(
        EAGLEEYE_ROUTING_PUBLISHED,
        InstrumentKind.OBSERVABLE_COUNTER,
        "{message}",
        "Step messages written to NATS.",
    ),
    _health(
        EAGLEEYE_ROUTING_HEARTBEATS,
        InstrumentKind.OBSERVABLE_COUNTER,
        "{message}",
        "Heartbeats written to NATS while engines were idle.",
    ),
    _health(
        EAGLEEYE_ROUTING_COALESCED,
        InstrumentKind.OBSERVABLE_COUNTER,
        "{message}",
        "Engine states replaced by a newer one before they could be sent (NATS slow or unreachable).",
    ),
    _health(
        EAGLEEYE_ROUTING_DROPPED,
        InstrumentKind.OBSERVABLE_COUNTER,
        "{message}",
        "Engine states lost: too many engines, or the connection failed with them in flight.",
    ),
    _health(
        EAGLEEYE_ROUTING_ERRORS,
        InstrumentKind.OBSERVABLE_COUNTER,
        "{error}",
        "NATS connections of the routing publisher lost while up.",
    ),
    _health(
        EAGLEEYE_ROUTING_RECONNECTS,
        InstrumentKind.OBSERVABLE_COUNTER,
        "{connection}",
        "NATS connections of the routing publisher made again after one was lost.",
    ),
    _health(
        EAGLEEYE_ROUTING_CONNECTED,
        InstrumentKind.OBSERVABLE_GAUGE,
        "1",
        "1 while the routing publisher's NATS connection is up, else 0.",
    ),
    _health(
        EAGLEEYE_VLLM_RECORD_FAILURES,
        InstrumentKind.OBSERVABLE_COUNTER,
        "{failure}",
        "Calls from vLLM into the plugin that raised inside Eagle Eye (caught, counted, logged at most once a minute).",
    ),
)
"""The vLLM plugin's own health, per process: is the routing push flowing, and is recording failing."""
