"""``opentelemetry-instrument`` support: the ``eagle_eye`` distro and configurator.

``opentelemetry-instrument`` runs, in every Python process it reaches (and since contrib 0.63b0 in every spawned
child too), first the distro, then one configurator, then the instrumentors. The distro only sets defaults with
``os.environ.setdefault``, so the user's values always win. The configurator builds Eagle Eye's metrics pipeline
once, in the owner process only (see :mod:`eagleeye_otel.sdk._gate`), and makes it the global meter provider.
It configures metrics only: traces and logs are not Eagle Eye's business (vLLM exports its own traces).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from typing import Any

from opentelemetry import metrics
from opentelemetry.environment_variables import OTEL_METRICS_EXPORTER
from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]  # module is untyped
from opentelemetry.instrumentation.environment_variables import OTEL_PYTHON_CONFIGURATOR
from opentelemetry.sdk.metrics import MeterProvider

from eagleeye_otel.errors import ConfigError
from eagleeye_otel.receivers.hardware import register_cgroup_metrics
from eagleeye_otel.sdk._gate import claim_ownership
from eagleeye_otel.sdk._pipeline import build_meter_provider, shutdown_meter_provider
from eagleeye_otel.sdk._settings import DEFAULT_EXPORTERS, PipelineSettings

__all__ = [
    "ENTRY_POINT_NAME",
    "SHUTDOWN_DEADLINE_S",
    "EagleEyeConfigurator",
    "EagleEyeDistro",
    "configure_global_meter_provider",
]

_logger = logging.getLogger(__name__)

SHUTDOWN_DEADLINE_S = 5.0
"""How long the final flush and exporter shutdown at exit may take, all readers together."""

ENTRY_POINT_NAME = "eagle_eye"
"""The name of both the distro and the configurator entry points."""

_lock = threading.Lock()
_configured_pid: int | None = None


class EagleEyeDistro(BaseDistro):  # type: ignore[misc]  # BaseDistro is untyped
    """Eagle Eye's defaults for ``opentelemetry-instrument``: Prometheus metrics, and Eagle Eye's configurator.

    Choosing the configurator here makes the choice independent of entry-point order when
    ``opentelemetry-distro`` is installed as well.
    """

    def _configure(self, **kwargs: Any) -> None:
        os.environ.setdefault(OTEL_METRICS_EXPORTER, ",".join(DEFAULT_EXPORTERS))
        os.environ.setdefault(OTEL_PYTHON_CONFIGURATOR, ENTRY_POINT_NAME)


class EagleEyeConfigurator:
    """The ``eagle_eye`` configurator: ``opentelemetry-instrument`` calls ``configure()`` once per process.

    The instrumentation package has no public configurator base class (the SDK's is the private
    ``_OTelSDKConfigurator``); the loader only needs ``configure(**kwargs)``.
    """

    def configure(self, **kwargs: Any) -> None:
        """Set up the global meter provider; a bad setting logs one error and leaves the application alone."""
        try:
            configure_global_meter_provider()
        except ConfigError as error:
            _logger.error("Eagle Eye metrics are disabled: %s", error)


def configure_global_meter_provider() -> MeterProvider | None:
    """Build the pipeline from the environment and make it the global meter provider, once per process.

    Returns:
        The global SDK provider: Eagle Eye's, or one the application had already set. ``None`` in a process
        whose ancestor owns the pipeline (vLLM's engine core, workers, multiprocessing helpers).

    Raises:
        ConfigError: a setting is unusable or the Prometheus port is taken; nothing was set up.
    """
    global _configured_pid  # noqa: PLW0603 - once per process, by design
    with _lock:
        current = metrics.get_meter_provider()
        if _configured_pid == os.getpid():
            return current if isinstance(current, MeterProvider) else None
        if not claim_ownership():
            return None
        if isinstance(current, MeterProvider):
            _logger.info("Eagle Eye: a meter provider is already configured; using it")
            _configured_pid = os.getpid()
            return current
        provider = build_meter_provider(PipelineSettings.from_env())
        metrics.set_meter_provider(provider)
        if metrics.get_meter_provider() is not provider:
            # Another (non-SDK) provider was set first; the API refuses to replace it. Free the port again.
            shutdown_meter_provider(provider, SHUTDOWN_DEADLINE_S)
            _logger.warning("Eagle Eye: the global meter provider was already set; Eagle Eye metrics are off")
            return None
        # Host and process metrics come from opentelemetry-instrument's own system_metrics instrumentor.
        register_cgroup_metrics(provider)
        atexit.register(shutdown_meter_provider, provider, SHUTDOWN_DEADLINE_S)
        _configured_pid = os.getpid()
        return provider
