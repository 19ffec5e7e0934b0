"""The metric table still matches the vLLM it mirrors: its metric names and its bucket defaults."""

from __future__ import annotations

import inspect

from vllm.v1.metrics import buckets, loggers
from vllm.v1.spec_decode import metrics as spec_decode_metrics

from eagleeye_otel import semconv as sc


def test_vllm_buckets_are_vllms_defaults():
    assert sc.TIME_TO_FIRST_TOKEN_BUCKETS == buckets.TIME_TO_FIRST_TOKEN_BUCKETS
    assert sc.INTER_TOKEN_LATENCY_BUCKETS == buckets.INTER_TOKEN_LATENCY_BUCKETS
    assert sc.REQUEST_LATENCY_BUCKETS == buckets.REQUEST_LATENCY_BUCKETS
    assert sc.ITERATION_TOKENS_BUCKETS == buckets.ITERATION_TOKENS_BUCKETS


def test_request_token_buckets_extend_vllms_for_any_model_length():
    for max_model_len in (256, 8192, 131072, 1_000_000, 10_000_000):
        theirs = buckets.histogram_buckets("request_tokens", max_model_len=max_model_len)
        assert sc.REQUEST_TOKENS_BUCKETS[: len(theirs)] == tuple(theirs)


def test_every_vllm_name_is_a_vllm_metric():
    source = inspect.getsource(loggers) + inspect.getsource(spec_decode_metrics)
    for spec in sc.VLLM_METRICS:
        if spec.vllm_name is not None:
            assert f'"{spec.vllm_name}"' in source, spec.vllm_name
