"""The plugin runtime's meter provider: instrumentor's choice, else the global SDK one, else its own pipeline."""

from __future__ import annotations

import logging
import os
import socket
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any
from unittest.mock import patch

import pytest
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from eagleeye_otel.instrumentation.vllm import _runtime
from eagleeye_otel.nats_server import free_port
from eagleeye_otel.sdk import EAGLEEYE_OWNER_PID


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Callable[[], None]]]:
    """A process with no runtime yet, no owner mark, no global SDK provider, routing off; collects atexit hooks."""
    monkeypatch.setattr(_runtime, "_runtime", None)
    monkeypatch.setattr(_runtime, "_runtime_pid", None)
    monkeypatch.setattr(_runtime, "_override", None)
    monkeypatch.setattr(_runtime.metrics, "get_meter_provider", metrics.NoOpMeterProvider)
    at_exit: list[Callable[[], None]] = []

    def register(function: Callable[..., None], *args: Any) -> None:
        at_exit.append(lambda: function(*args))

    monkeypatch.setattr(_runtime.atexit, "register", register)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "EAGLEEYE_"))}
    with patch.dict(os.environ, {**clean, "EAGLEEYE_ROUTING_ENABLED": "false"}, clear=True):
        yield at_exit
        for hook in at_exit:
            hook()


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body: bytes = response.read()
    return body.decode()


def test_without_a_configured_provider_it_builds_prometheus_and_closes_it_at_exit(
    fresh: list[Callable[[], None]],
) -> None:
    port = free_port()
    os.environ.update(OTEL_EXPORTER_PROMETHEUS_HOST="127.0.0.1", OTEL_EXPORTER_PROMETHEUS_PORT=str(port))
    runtime = _runtime.plugin_runtime()
    assert runtime is not None
    assert _runtime.plugin_runtime() is runtime, "one runtime per process"
    assert isinstance(runtime.meter_provider, MeterProvider)
    assert os.environ[EAGLEEYE_OWNER_PID] == str(os.getpid())
    runtime.meter_provider.get_meter("test").create_counter("runtime.steps").add(4)
    exposition = _scrape(port)
    assert "runtime_steps_total" in exposition
    # The system runtime comes with it: this process's own CPU time and memory.
    assert "process_cpu_time_seconds_total" in exposition
    assert "process_memory_usage_bytes" in exposition
    assert len(fresh) == 1
    fresh.pop()()
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))  # nothing listens there any more


def test_a_global_sdk_provider_is_reused_and_left_to_its_owner(
    fresh: list[Callable[[], None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = InMemoryMetricReader()
    configured = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    monkeypatch.setattr(_runtime.metrics, "get_meter_provider", lambda: configured)
    runtime = _runtime.plugin_runtime()
    assert runtime is not None and runtime.meter_provider is configured
    for hook in fresh:
        hook()
    fresh.clear()
    configured.get_meter("test").create_counter("runtime.after_exit").add(1)
    assert reader.get_metrics_data() is not None, "the runtime must not shut down a provider it did not build"
    configured.shutdown()


def test_a_bad_setting_turns_metrics_off_with_one_error_naming_it(
    fresh: list[Callable[[], None]], caplog: pytest.LogCaptureFixture
) -> None:
    os.environ["OTEL_EXPORTER_PROMETHEUS_PORT"] = "ninety"
    with caplog.at_level(logging.ERROR):
        runtime = _runtime.plugin_runtime()
    assert runtime is not None, "routing and the rest of the plugin stay on"
    assert isinstance(runtime.meter_provider, metrics.NoOpMeterProvider)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "OTEL_EXPORTER_PROMETHEUS_PORT='ninety'" in errors[0].getMessage()


@pytest.mark.usefixtures("fresh")
def test_a_child_of_the_owner_gets_no_runtime() -> None:
    os.environ[EAGLEEYE_OWNER_PID] = str(os.getppid())
    assert _runtime.plugin_runtime() is None


@pytest.mark.usefixtures("fresh")
def test_the_instrumentors_provider_wins_until_it_is_withdrawn() -> None:
    os.environ["OTEL_METRICS_EXPORTER"] = "none"
    chosen = MeterProvider(shutdown_on_exit=False)
    _runtime.use_meter_provider(chosen)
    runtime = _runtime.plugin_runtime()
    assert runtime is not None and runtime.meter_provider is chosen
    _runtime.use_meter_provider(None)
    runtime = _runtime.plugin_runtime()
    assert runtime is not None and runtime.meter_provider is not chosen
