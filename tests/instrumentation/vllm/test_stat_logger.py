"""EagleEyeStatLogger built from a real VllmConfig, the way vLLM builds it, recording into a real SDK provider."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from vllm.config import VllmConfig
from vllm.engine.arg_utils import EngineArgs
from vllm.v1.metrics.loggers import StatLoggerBase
from vllm.v1.metrics.stats import IterationStats, SchedulerStats

from eagleeye_otel import semconv as sc
from eagleeye_otel.instrumentation.vllm import EagleEyeStatLogger
from eagleeye_otel.instrumentation.vllm._metrics_recorder import shared_metrics_recorder
from eagleeye_otel.instrumentation.vllm._runtime import PluginRuntime
from eagleeye_otel.settings import RoutingSettings, Settings

# A Llama shape vLLM's CPU backend accepts (head size 32); only the config is read, no weights.
_TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "max_position_embeddings": 256,
    "torch_dtype": "float32",
}


@pytest.fixture(scope="module")
def vllm_config(tmp_path_factory: pytest.TempPathFactory) -> VllmConfig:
    model_dir: Path = tmp_path_factory.mktemp("tiny-llama")
    (model_dir / "config.json").write_text(json.dumps(_TINY_LLAMA))
    args = EngineArgs(
        model=str(model_dir),
        served_model_name=["tiny"],
        skip_tokenizer_init=True,
        max_model_len=256,
        dtype="float32",
        enforce_eager=True,
    )
    return args.create_engine_config()


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def runtime(reader: InMemoryMetricReader) -> Iterator[PluginRuntime]:
    provider = MeterProvider(metric_readers=[reader])
    yield PluginRuntime(
        settings=Settings(routing=RoutingSettings(enabled=False, instance_id="pod-1")),
        publisher=None,
        started=time.time(),
        meter_provider=provider,
    )
    shared_metrics_recorder(provider).shutdown()
    provider.shutdown()


def _points(reader: InMemoryMetricReader, name: str) -> list[dict[str, object]]:
    data = reader.get_metrics_data()
    assert data is not None
    return [
        {**point.attributes, "value": point.value}
        for rm in data.resource_metrics
        for scope in rm.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


def test_is_a_per_engine_stat_logger():
    assert issubclass(EagleEyeStatLogger, StatLoggerBase)


def test_records_steps_as_metrics_of_the_served_model_and_engine(vllm_config, runtime, reader):
    logger = EagleEyeStatLogger(vllm_config, 1, runtime=runtime)
    logger.log_engine_initialized()
    step = IterationStats()
    step.num_generation_tokens = 4
    logger.record(SchedulerStats(num_running_reqs=4, kv_cache_usage=0.5), step, None, engine_idx=1)
    logger.record(SchedulerStats(num_running_reqs=2), None, 1)  # vLLM <= 0.11.0 passes engine_idx by position

    attributes = {
        sc.GEN_AI_PROVIDER_NAME: "vllm",
        sc.GEN_AI_REQUEST_MODEL: "tiny",
        sc.EAGLEEYE_INSTANCE_ID: "pod-1",
        sc.VLLM_ENGINE: 1,
    }
    assert _points(reader, sc.VLLM_NUM_REQUESTS_RUNNING) == [{**attributes, "value": 2}]
    assert _points(reader, sc.VLLM_GENERATION_TOKENS) == [{**attributes, "value": 4}]


def test_engines_share_one_recorder(vllm_config, runtime, reader):
    for index in (0, 1):
        EagleEyeStatLogger(vllm_config, index, runtime=runtime).record(
            SchedulerStats(num_running_reqs=10 + index), None
        )
    running = {p[sc.VLLM_ENGINE]: p["value"] for p in _points(reader, sc.VLLM_NUM_REQUESTS_RUNNING)}
    assert running == {0: 10, 1: 11}


def test_record_never_raises(vllm_config, runtime, reader):
    logger = EagleEyeStatLogger(vllm_config, 0, runtime=runtime)
    logger.record(object(), object())
    logger.record(SimpleNamespace(num_running_reqs=None), SimpleNamespace(finished_requests=None))
    logger.record(None, None, None, None, engine_idx="x")
    _points(reader, sc.VLLM_NUM_REQUESTS_RUNNING)


class _Offers:
    """A stand-in for the routing publisher: keeps what is offered."""

    def __init__(self) -> None:
        self.offered: list[object] = []

    def offer(self, message: object) -> None:
        self.offered.append(message)


def test_routing_messages_say_which_node_and_devices_the_instance_uses(vllm_config, reader):
    publisher = _Offers()
    routing = RoutingSettings(instance_id="pod-1", node="gpu-node-1", devices=("GPU-aaaa", "GPU-bbbb"))
    provider = MeterProvider(metric_readers=[reader])
    runtime = PluginRuntime(
        settings=Settings(routing=routing), publisher=publisher, started=time.time(), meter_provider=provider
    )
    EagleEyeStatLogger(vllm_config, 0, runtime=runtime).record(SchedulerStats(num_running_reqs=1), None)
    assert [(m.node, m.devices) for m in publisher.offered] == [("gpu-node-1", ("GPU-aaaa", "GPU-bbbb"))]
    shared_metrics_recorder(provider).shutdown()
    provider.shutdown()


def test_last_step_at_tells_a_real_step_from_the_start_announcement(vllm_config, reader):
    publisher = _Offers()
    provider = MeterProvider(metric_readers=[reader])
    runtime = PluginRuntime(
        settings=Settings(routing=RoutingSettings(instance_id="pod-1")),
        publisher=publisher,
        started=time.time(),
        meter_provider=provider,
    )
    logger = EagleEyeStatLogger(vllm_config, 0, runtime=runtime)
    logger.log_engine_initialized()
    logger.record(SchedulerStats(num_running_reqs=1), None)
    logger.record(None, IterationStats())  # no scheduler stats: no new state
    announced, stepped = publisher.offered
    assert announced.last_step_at is None
    assert stepped.last_step_at == stepped.timestamp
    shared_metrics_recorder(provider).shutdown()
    provider.shutdown()
