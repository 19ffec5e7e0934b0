"""Eagle Eye's vLLM instrumentation: the stat-logger plugin vLLM loads from the ``eagle_eye`` entry point, and the
``vllm`` OTel instrumentor.

Names are imported on first use: the plugin needs vLLM (and so torch), while ``opentelemetry-instrument`` loads
the instrumentor in every Python process it reaches, most of which never touch vLLM.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eagleeye_otel.instrumentation.vllm._instrumentor import VllmInstrumentor
    from eagleeye_otel.instrumentation.vllm._stat_logger import EagleEyeStatLogger

__all__ = ["EagleEyeStatLogger", "VllmInstrumentor"]

_MODULES = {
    "EagleEyeStatLogger": "eagleeye_otel.instrumentation.vllm._stat_logger",
    "VllmInstrumentor": "eagleeye_otel.instrumentation.vllm._instrumentor",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
