"""Process-wide state of the vLLM plugin: settings and the one routing publisher.

vLLM builds one stat logger per data-parallel engine; they share one NATS connection. Everything here is
created on first use in the process that serves (vLLM loads stat-logger plugins only in its API-server
process), and a bad setting disables the routing push with one logged error instead of failing vLLM.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from dataclasses import dataclass

from opentelemetry import metrics

from eagleeye_otel.errors import ConfigError
from eagleeye_otel.exporters.nats import RoutingPublisher
from eagleeye_otel.settings import Settings

__all__ = ["PluginRuntime", "plugin_runtime"]

_logger = logging.getLogger(__name__)


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


_lock = threading.Lock()
_runtime: PluginRuntime | None = None
_runtime_pid: int | None = None


def plugin_runtime() -> PluginRuntime | None:
    """The runtime of this process, created on first call; ``None`` when the settings are unusable."""
    global _runtime, _runtime_pid  # noqa: PLW0603 - one runtime per process, by design
    with _lock:
        if _runtime_pid == os.getpid():
            return _runtime
        _runtime_pid = os.getpid()
        _runtime = _create()
        return _runtime


def _create() -> PluginRuntime | None:
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
        atexit.register(publisher.stop, 1.0)
        _logger.info(
            "Eagle Eye routing push: instance %s to %s on %s",
            settings.routing.instance_id,
            ",".join(settings.nats.urls),
            settings.routing.subject,
        )
    return PluginRuntime(
        settings=settings, publisher=publisher, started=time.time(), meter_provider=metrics.get_meter_provider()
    )
