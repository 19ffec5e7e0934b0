"""Setup for bench_record.py: the tiny model, a real VllmConfig, the recorded-steps pool and the loggers.

Imports of vLLM and Eagle Eye happen inside the functions, so that the RSS child process can measure them.
"""

# ruff: noqa: PLC0415 - imports are deferred on purpose (RSS is measured before and after them)

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OURS = "eagle_eye"
BASELINE = "vllm_prometheus"
MANAGER = "vllm_manager"
MANAGER_OURS = "vllm_manager+eagle_eye"
CASES = (BASELINE, MANAGER, OURS, MANAGER_OURS)
"""PrometheusStatLogger (the named baseline), StatLoggerManager (Logging+Prometheus, what vllm serve builds),
our plugin alone, and StatLoggerManager with our plugin loaded as vLLM loads it (wrapped per engine)."""

Step = tuple[Any, Any]
"""(SchedulerStats, IterationStats or None): the arguments of one record() call."""


def tiny_model(path: Path) -> Path:
    """The e2e suite's tiny Llama, built once (in a child process, as tiny_model.py asks) and cached."""
    if not (path / "config.json").is_file():
        subprocess.run([sys.executable, str(REPO / "tests/e2e/tiny_model.py"), str(path)], check=True)
    return path


def vllm_config(model: Path) -> Any:
    from vllm.engine.arg_utils import EngineArgs

    args = EngineArgs(model=str(model), max_model_len=256, dtype="float32", enforce_eager=True, disable_log_stats=False)
    return args.create_engine_config()


def install_sdk_meter_provider() -> None:
    """Stand-in for an OTel pipeline set up before vLLM (``opentelemetry-instrument``): SDK provider, pull reader."""
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))


def make_pool(size: int, *, faithful: bool, seed: int = 1) -> list[Step]:
    """``size`` distinct steps of 32 running requests; ``faithful=False`` gives stats-only steps (no iteration)."""
    from vllm.v1.engine import FinishReason
    from vllm.v1.metrics.stats import FinishedRequestStats, IterationStats, PrefixCacheStats, SchedulerStats

    rng = random.Random(seed)
    base = time.time()
    pool: list[Step] = []
    for i in range(size):
        prefill, finished = i % 10 == 0, i % 10 == 9
        prefix = PrefixCacheStats(requests=1, queries=512, hits=128) if prefill else PrefixCacheStats()
        sched = SchedulerStats(
            num_running_reqs=32,
            num_waiting_reqs=5,
            kv_cache_usage=rng.uniform(0.55, 0.65),
            prefix_cache_stats=prefix,
            step_counter=i,
        )
        if not faithful:
            pool.append((sched, None))
            continue
        it = IterationStats()
        it.iteration_timestamp = base + i * 0.03
        it.num_generation_tokens = 32
        if prefill:  # one request joins the batch: its first token, its prompt, and 31 decode ITLs
            it.time_to_first_tokens_iter.append(rng.uniform(0.05, 0.2))
            pts = it.prompt_token_stats
            pts.total, pts.computed, pts.local_cache_hit, pts.cached_tokens = 512, 384, 128, 128
        it.inter_token_latencies_iter.extend(rng.uniform(0.02, 0.04) for _ in range(31 if prefill else 32))
        if finished:
            it.finished_requests.append(
                FinishedRequestStats(
                    finish_reason=FinishReason.LENGTH,
                    e2e_latency=rng.uniform(3.0, 5.0),
                    num_prompt_tokens=512,
                    num_generation_tokens=128,
                    max_tokens_param=128,
                    queued_time=rng.uniform(0.0, 0.05),
                    prefill_time=rng.uniform(0.05, 0.2),
                    inference_time=rng.uniform(3.0, 4.5),
                    decode_time=rng.uniform(2.9, 4.4),
                    mean_time_per_output_token=rng.uniform(0.02, 0.04),
                    num_cached_tokens=128,
                )
            )
            it.max_num_generation_tokens_iter.append(128)
            it.n_params_iter.append(1)
        pool.append((sched, it))
    return pool


def eagle_eye_class() -> Any:
    """The plugin's class; importing it (through the package's lazy ``__getattr__``) loads the plugin's code."""
    from eagleeye_otel.instrumentation.vllm import EagleEyeStatLogger

    return EagleEyeStatLogger


def build_loggers(cfg: Any, wanted: list[str]) -> dict[str, Any]:
    """The loggers named in ``wanted``, built and announced (``log_engine_initialized``) as vLLM does."""
    from vllm.v1.metrics.loggers import PrometheusStatLogger, StatLoggerManager

    factories: dict[str, Callable[[], Any]] = {
        BASELINE: lambda: PrometheusStatLogger(cfg, [0]),
        MANAGER: lambda: StatLoggerManager(cfg, [0]),
        OURS: lambda: eagle_eye_class()(cfg, 0),
        MANAGER_OURS: lambda: StatLoggerManager(cfg, [0], custom_stat_loggers=[eagle_eye_class()]),
    }
    loggers = {}
    for name in wanted:  # announce before the next one: a new PrometheusStatLogger unregisters vllm:* series
        loggers[name] = factories[name]()
        loggers[name].log_engine_initialized()
    return loggers


def runtime_info() -> tuple[Any, dict[str, Any]]:
    """The plugin's process-wide publisher (or None) and a description of what record() runs with."""
    from eagleeye_otel.instrumentation.vllm._runtime import plugin_runtime

    runtime = plugin_runtime()
    publisher = getattr(runtime, "publisher", None)
    provider = getattr(runtime, "meter_provider", None)
    readers = getattr(provider, "_metric_readers", ())
    return publisher, {
        "runtime": type(runtime).__name__,
        "publisher": type(publisher).__name__ if publisher is not None else None,
        "meter_provider": f"{type(provider).__module__}.{type(provider).__name__}",
        "metric_readers": [type(r).__name__ for r in readers],
    }


def metrics_handle(loggers: dict[str, Any]) -> Any:
    """The plugin's per-engine OTel recording handle (it counts steps dropped before a drain), if it has one."""
    for logger in loggers.values():
        for outer in [logger, *getattr(logger, "stat_loggers", [])]:
            for inner in [outer, *getattr(outer, "per_engine_stat_loggers", {}).values()]:
                handle = getattr(inner, "_metrics", None)
                if handle is not None:
                    return handle
    return None


def wait_connected(publisher: Any, timeout: float = 15.0) -> bool:
    """Wait until the routing publisher is connected to NATS; False when it is not (or there is none)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if publisher is None or publisher.stats.connected:
            return publisher is not None
        time.sleep(0.05)
    return False
