"""Process-wide state of the vLLM plugin: settings, the one routing publisher and the meter provider.

vLLM builds one stat logger per data-parallel engine; they share one NATS connection and one meter provider.
Everything here is created on first use, in the process that serves (vLLM loads stat-logger plugins only in its
API-server process) and only if that process owns Eagle Eye's pipeline (:func:`~eagleeye_otel.sdk.claim_ownership`:
a child of the owner sets nothing up). A bad setting disables that part of Eagle Eye with one logged error
instead of failing vLLM.

The meter provider is, in order: the one given to ``VllmInstrumentor().instrument(meter_provider=...)``; the
global SDK provider when one is configured (``opentelemetry-instrument``, or the application's own); otherwise
a provider built from the standard ``OTEL_*`` variables (:func:`~eagleeye_otel.sdk.build_meter_provider`,
Prometheus on :9464 by default), which this module owns and shuts down at exit with a deadline. It is not made
global, so an application that sets its own provider later is not refused.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import threading
import time
from dataclasses import dataclass

from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider

from eagleeye_otel.errors import ConfigError
from eagleeye_otel.exporters.nats import RoutingPublisher
from eagleeye_otel.instrumentation.vllm._health_metrics import register_health_metrics
from eagleeye_otel.instrumentation.vllm._logging import follow_vllm_logging
from eagleeye_otel.instrumentation.vllm._metrics_recorder import shared_metrics_recorder
from eagleeye_otel.log_limiter import LogLimiter
from eagleeye_otel.receivers.hardware import instrument_system_metrics, register_cgroup_metrics
from eagleeye_otel.sdk import PipelineSettings, build_meter_provider, claim_ownership, shutdown_meter_provider
from eagleeye_otel.settings import Settings

__all__ = ["SHUTDOWN_DEADLINE_S", "PluginRuntime", "plugin_runtime", "use_meter_provider"]

_logger = logging.getLogger(__name__)

SHUTDOWN_DEADLINE_S = 5.0
"""How long stopping the publisher, recording queued steps and the final export may take at exit, together."""


@dataclass(frozen=True)
class PluginRuntime:
    """What the stat loggers of this process share."""

    settings: Settings
    publisher: RoutingPublisher | None
    """``None`` when the routing push is turned off."""
    started: float
    """Unix time this runtime was created."""
    meter_provider: metrics.MeterProvider
    """Where the plugin's OTel instruments live."""
    failures: LogLimiter = dataclasses.field(default_factory=lambda: LogLimiter(_logger))
    """Where every stat logger of the process counts (and logs, at most once a minute) what raised inside it."""


_lock = threading.Lock()
_runtime: PluginRuntime | None = None
_runtime_pid: int | None = None
_override: metrics.MeterProvider | None = None


def plugin_runtime() -> PluginRuntime | None:
    """The runtime of this process, created on first call.

    Returns:
        ``None`` when the settings are unusable or another process owns Eagle Eye's pipeline.
    """
    global _runtime, _runtime_pid  # noqa: PLW0603 - one runtime per process, by design
    with _lock:
        if _runtime_pid != os.getpid():
            _runtime_pid = os.getpid()
            _runtime = _create()
        if _runtime is not None and _override is not None:
            return dataclasses.replace(_runtime, meter_provider=_override)
        return _runtime


def use_meter_provider(provider: metrics.MeterProvider | None) -> None:
    """Make stat loggers created from now on record into ``provider``; ``None`` restores the default choice."""
    global _override  # noqa: PLW0603 - set by the instrumentor, read when stat loggers are built
    with _lock:
        _override = provider


def _create() -> PluginRuntime | None:
    follow_vllm_logging()
    if not claim_ownership():
        _logger.debug("Eagle Eye stays off in process %d: a parent process owns it", os.getpid())
        return None
    try:
        settings = Settings.from_env()
    except ConfigError as error:
        _logger.error("Eagle Eye is disabled in this vLLM process: %s", error)
        return None
    publisher = None
    if settings.routing.enabled:
        publisher = RoutingPublisher(
            nats_settings=settings.nats,
            routing=settings.routing,
            client_name=f"eagle-eye-routing:{settings.routing.instance_id}",
        )
        publisher.start()
        _logger.info(
            "Eagle Eye routing push: instance %s to %s on %s",
            settings.routing.instance_id,
            ",".join(settings.nats.urls),
            settings.routing.subject,
        )
    provider, owned = _meter_provider()
    atexit.register(_shutdown, publisher, provider, owned)
    runtime = PluginRuntime(settings=settings, publisher=publisher, started=time.time(), meter_provider=provider)
    try:
        register_health_metrics(
            provider, instance=settings.routing.instance_id, publisher=publisher, failures=runtime.failures
        )
    except Exception:  # never a reason to lose the serving metrics or the push
        _logger.warning("Eagle Eye's own health metrics are off", exc_info=True)
    return runtime


def _meter_provider() -> tuple[metrics.MeterProvider, bool]:
    """The provider to record into, and whether this module built it (and so must shut it down)."""
    current = metrics.get_meter_provider()
    if isinstance(current, MeterProvider):
        return current, False
    try:
        provider = build_meter_provider(PipelineSettings.from_env())
    except ConfigError as error:
        _logger.error("Eagle Eye metrics are disabled in this vLLM process: %s", error)
        return metrics.NoOpMeterProvider(), False
    except Exception:
        _logger.error("Eagle Eye metrics are disabled in this vLLM process", exc_info=True)
        return metrics.NoOpMeterProvider(), False
    try:  # the system runtime beside the serving metrics; never a reason to lose the latter
        instrument_system_metrics(provider)
        register_cgroup_metrics(provider)
    except Exception:
        _logger.warning("Eagle Eye system and container metrics are off", exc_info=True)
    return provider, True


def _shutdown(publisher: RoutingPublisher | None, provider: metrics.MeterProvider, owned: bool) -> None:
    """At exit: stop the publisher, record the steps still queued, then export once more and close the readers.

    A provider this module did not build belongs to whoever built it; its queued steps are still recorded so that
    its own shutdown exports them.
    """
    deadline = time.monotonic() + SHUTDOWN_DEADLINE_S
    if publisher is not None:
        publisher.stop(min(1.0, SHUTDOWN_DEADLINE_S / 2))
    try:
        shared_metrics_recorder(provider).shutdown(max(0.0, min(1.0, deadline - time.monotonic())))
    except Exception:
        _logger.warning("Eagle Eye could not record the last vLLM steps", exc_info=True)
    if owned and isinstance(provider, MeterProvider):
        shutdown_meter_provider(provider, max(0.1, deadline - time.monotonic()))
