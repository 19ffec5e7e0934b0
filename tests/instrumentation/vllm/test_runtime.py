"""The plugin runtime's meter provider: instrumentor's choice, else the global SDK one, else its own pipeline."""

from __future__ import annotations

import logging
import os
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any
from unittest.mock import patch

import pytest
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from vllm.v1.metrics.stats import SchedulerStats

from eagleeye_otel.instrumentation.vllm import EagleEyeStatLogger, _runtime
from eagleeye_otel.nats_server import EmbeddedNatsServer, free_port
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


def _sample(exposition: str, family: str) -> float | None:
    """The value of the one series of ``family`` in a Prometheus exposition, or ``None`` when it is absent."""
    for line in exposition.splitlines():
        if line.startswith(family + "{") or line.startswith(family + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_the_push_and_record_failures_are_visible_on_metrics(
    fresh: list[Callable[[], None]], nats_server: EmbeddedNatsServer
) -> None:
    """What an operator checks on the plugin's /metrics: is the routing push connected and flowing, does it fail."""
    port = free_port()
    os.environ.update(
        OTEL_EXPORTER_PROMETHEUS_HOST="127.0.0.1",
        OTEL_EXPORTER_PROMETHEUS_PORT=str(port),
        EAGLEEYE_ROUTING_ENABLED="true",
        EAGLEEYE_NATS_URL=nats_server.url,
        EAGLEEYE_INSTANCE_ID="pod-h",
    )
    runtime = _runtime.plugin_runtime()
    assert runtime is not None and runtime.publisher is not None
    config = SimpleNamespace(model_config=SimpleNamespace(served_model_name="tiny", model="tiny"))
    logger = EagleEyeStatLogger(config, 0)  # type: ignore[arg-type]
    deadline = time.monotonic() + 10
    while not runtime.publisher.stats.connected:
        assert time.monotonic() < deadline, "the publisher never connected"
        time.sleep(0.02)
    logger.record(SchedulerStats(num_running_reqs=3), None)
    logger.record(object(), None)  # raises inside Eagle Eye: counted, never into vLLM

    exposition = _scrape(port)
    assert 'eagleeye_instance_id="pod-h"' in exposition
    assert _sample(exposition, "eagleeye_routing_connected") == 1
    assert _sample(exposition, "eagleeye_routing_offered_total") == 1
    assert _sample(exposition, "eagleeye_routing_published_total") == 1
    assert _sample(exposition, "eagleeye_routing_dropped_total") == 0
    assert _sample(exposition, "eagleeye_vllm_record_failures_total") == 1

    nats_server.stop()
    while runtime.publisher.stats.connected:
        assert time.monotonic() < deadline + 10, "the publisher never saw the server go"
        time.sleep(0.02)
    exposition = _scrape(port)
    assert _sample(exposition, "eagleeye_routing_connected") == 0
    assert _sample(exposition, "eagleeye_routing_errors_total") == 1


def test_a_stat_logger_that_cannot_be_built_stays_quiet_and_never_raises_into_vllm(
    fresh: list[Callable[[], None]], caplog: pytest.LogCaptureFixture
) -> None:
    broken_config = SimpleNamespace()  # no model_config: reading the served model name raises
    logger = EagleEyeStatLogger(broken_config, 3)  # type: ignore[arg-type]
    logger.record(SchedulerStats(num_running_reqs=3), None)
    logger.log_engine_initialized()
    assert any("Eagle Eye is off for engine 3" in r.getMessage() for r in caplog.records)
