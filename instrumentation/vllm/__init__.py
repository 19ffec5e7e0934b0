"""Eagle Eye's vLLM instrumentation: the stat-logger plugin vLLM loads from the ``eagle_eye`` entry point."""

from eagleeye_otel.instrumentation.vllm._stat_logger import EagleEyeStatLogger

__all__ = ["EagleEyeStatLogger"]
