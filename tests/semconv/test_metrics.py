"""The vLLM metric table: well-formed, and its copies of upstream values still match upstream."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics

from eagleeye_otel import semconv as sc

# OTel API instrument-name syntax (no ':'), and the UCUM units this table may use.
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.\-/]{0,254}")
_UNIT = re.compile(r"s|1|\{[a-z_]+\}")


def test_names_are_unique_and_valid():
    names = [spec.name for spec in sc.VLLM_METRICS]
    assert len(names) == len(set(names))
    for name in names:
        assert _NAME.fullmatch(name), name
        assert name.startswith(("vllm.", "gen_ai.server.", "eagleeye.vllm.")), name


def test_units_are_ucum():
    for spec in sc.VLLM_METRICS:
        assert _UNIT.fullmatch(spec.unit), (spec.name, spec.unit)


def test_histograms_and_only_histograms_have_increasing_buckets():
    for spec in sc.VLLM_METRICS:
        if spec.kind is sc.InstrumentKind.HISTOGRAM:
            assert spec.buckets, spec.name
            assert spec.buckets[0] > 0
            assert list(spec.buckets) == sorted(set(spec.buckets)), spec.name
        else:
            assert spec.buckets is None, spec.name


def test_every_metric_carries_the_engine_attributes_once():
    for spec in sc.VLLM_METRICS:
        assert spec.attributes[: len(sc.ENGINE_ATTRIBUTES)] == sc.ENGINE_ATTRIBUTES
        assert len(spec.attributes) == len(set(spec.attributes)), spec.name
        assert spec.description.endswith("."), spec.name


def test_vllm_names_are_the_vllm_metric_renamed():
    for spec in sc.VLLM_METRICS:
        if spec.vllm_name is None or not spec.name.startswith("vllm."):
            continue
        stem = spec.vllm_name.removeprefix("vllm:").removesuffix("_seconds").removesuffix("_total")
        assert spec.name == "vllm." + stem or spec.name == sc.VLLM_KV_CACHE_USAGE, spec.name


@pytest.mark.parametrize(
    ("ours", "factory"),
    [
        (sc.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN, gen_ai_metrics.create_gen_ai_server_time_to_first_token),
        (sc.GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN, gen_ai_metrics.create_gen_ai_server_time_per_output_token),
        (sc.GEN_AI_SERVER_REQUEST_DURATION, gen_ai_metrics.create_gen_ai_server_request_duration),
    ],
)
def test_gen_ai_metrics_match_upstream(ours, factory):
    meter = MeterProvider().get_meter("test")
    upstream = factory(meter)
    (spec,) = [spec for spec in sc.VLLM_METRICS if spec.name == ours]
    assert (spec.name, spec.unit, spec.kind) == (upstream.name, upstream.unit, sc.InstrumentKind.HISTOGRAM)


def test_gen_ai_attributes_match_upstream():
    assert sc.GEN_AI_PROVIDER_NAME == gen_ai_attributes.GEN_AI_PROVIDER_NAME
    assert sc.GEN_AI_REQUEST_MODEL == gen_ai_attributes.GEN_AI_REQUEST_MODEL
    assert sc.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN == gen_ai_metrics.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN
    assert sc.GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN == gen_ai_metrics.GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN
    assert sc.GEN_AI_SERVER_REQUEST_DURATION == gen_ai_metrics.GEN_AI_SERVER_REQUEST_DURATION


def test_buckets_extend_the_semconv_advice():
    ttft = sc.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN_BUCKETS
    tpot = sc.GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN_BUCKETS
    assert sc.TIME_TO_FIRST_TOKEN_BUCKETS[: len(ttft)] == ttft
    assert sc.INTER_TOKEN_LATENCY_BUCKETS[: len(tpot)] == tpot


def test_docs_list_every_plugin_health_metric_with_its_prometheus_name():
    docs = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    for spec in sc.PLUGIN_HEALTH_METRICS:
        family = re.sub(r"[^a-zA-Z0-9]+", "_", spec.name)
        if spec.kind is sc.InstrumentKind.OBSERVABLE_COUNTER:
            family += "_total"
        assert f"| `{spec.name}` | {spec.kind.value} | `{spec.unit}` | `{family}` | {spec.description} |" in docs
