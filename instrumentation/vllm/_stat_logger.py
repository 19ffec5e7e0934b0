"""The vLLM stat-logger plugin (entry point ``vllm.stat_logger_plugins:eagle_eye``).

vLLM calls :meth:`EagleEyeStatLogger.record` on its API server's event loop after every engine step, so the
method does in-memory work only and never raises: a failure is counted and logged at most once a minute. Each step
feeds two recorders: the routing push over NATS and the OTel metrics.
"""

from __future__ import annotations

import logging
from typing import Any

from vllm.config import VllmConfig
from vllm.v1.metrics.loggers import StatLoggerBase

from eagleeye_otel.instrumentation.vllm._metrics_recorder import EngineMetrics, shared_metrics_recorder
from eagleeye_otel.instrumentation.vllm._routing_recorder import RoutingRecorder
from eagleeye_otel.instrumentation.vllm._runtime import PluginRuntime, plugin_runtime
from eagleeye_otel.log_limiter import LogLimiter

__all__ = ["EagleEyeStatLogger", "served_model_name"]

_logger = logging.getLogger(__name__)


def served_model_name(vllm_config: VllmConfig) -> str:
    """The model name clients ask for: ``--served-model-name`` if given, else the model path."""
    model_config = vllm_config.model_config
    name = getattr(model_config, "served_model_name", None) or model_config.model
    if isinstance(name, (list, tuple)):
        name = name[0]
    return str(name)


class EagleEyeStatLogger(StatLoggerBase):
    """Publishes each engine step's load to NATS for routers and records it as OTel metrics.

    vLLM builds one instance per data-parallel engine, in the API-server process only.

    Args:
        vllm_config: the engine's configuration (model name).
        engine_index: the data-parallel engine this logger receives stats for.
        runtime: what the stat loggers share; by default the process's (:func:`plugin_runtime`).
    """

    def __init__(
        self,
        vllm_config: VllmConfig,
        engine_index: int = 0,
        *,
        runtime: PluginRuntime | None = None,
    ) -> None:
        self.engine_index = engine_index
        self._failures = LogLimiter(_logger)
        self._routing: RoutingRecorder | None = None
        self._metrics: EngineMetrics | None = None
        try:  # vLLM builds its stat loggers while it starts: nothing here may stop it
            self._set_up(vllm_config, engine_index, runtime or plugin_runtime())
        except Exception:
            self._routing = self._metrics = None
            _logger.error("Eagle Eye is off for engine %d", engine_index, exc_info=True)

    def _set_up(self, vllm_config: VllmConfig, engine_index: int, runtime: PluginRuntime | None) -> None:
        if runtime is None:
            return
        self._failures = runtime.failures
        model = served_model_name(vllm_config)
        instance = runtime.settings.routing.instance_id
        try:
            recorder = shared_metrics_recorder(runtime.meter_provider, enabled=runtime.settings.metrics.overrides)
            self._metrics = recorder.engine(model=model, instance=instance, engine=engine_index)
        except Exception:
            _logger.error("Eagle Eye metrics are off for engine %d", engine_index, exc_info=True)
        if runtime.publisher is not None:
            self._routing = RoutingRecorder(
                runtime.publisher,
                instance=instance,
                model=model,
                engine=engine_index,
                started=runtime.started,
                endpoint=runtime.settings.routing.endpoint,
                node=runtime.settings.routing.node,
                devices=runtime.settings.routing.devices,
            )

    def record(self, scheduler_stats: Any, iteration_stats: Any, *args: Any, **kwargs: Any) -> None:
        """Take one step's stats. Extra arguments (``mm_cache_stats``, ``engine_idx``) vary by vLLM version."""
        try:
            if self._metrics is not None:
                self._metrics.record(scheduler_stats, iteration_stats)
            if self._routing is not None:
                self._routing.record(scheduler_stats, iteration_stats)
        except Exception:
            self._failures.warning("Eagle Eye failed to record engine %d stats", self.engine_index, exc_info=True)

    def log_engine_initialized(self) -> None:
        """Announce the idle engine to routers before its first request."""
        try:
            if self._routing is not None:
                self._routing.announce()
        except Exception:
            self._failures.warning("Eagle Eye failed to announce engine %d", self.engine_index, exc_info=True)
