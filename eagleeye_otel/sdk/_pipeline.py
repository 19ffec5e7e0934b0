"""Assemble a real SDK ``MeterProvider`` from :class:`PipelineSettings`, with the SDK's public pieces only.

Exporter names are ``opentelemetry_metrics_exporter`` entry points, loaded by name as the SDK configurator does
(so ``otlp_proto_grpc``, ``console``, ``eagle_eye_nats`` and third-party exporters all work); a push exporter is
wrapped in a periodic reader, a pull reader is used as is. ``prometheus`` and ``eagle_eye_prometheus`` both mean
:class:`PrometheusServingReader` (private registry, own port; see its module for why). The SDK's private
``_OTelSDKConfigurator`` is not used: it also sets up traces and logs, is not idempotent, and warns instead of
failing on bad values.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from opentelemetry.environment_variables import OTEL_METRICS_EXPORTER
from opentelemetry.sdk.environment_variables import OTEL_EXPORTER_PROMETHEUS_PORT
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.util._importlib_metadata import entry_points

from eagleeye_otel.errors import ConfigError
from eagleeye_otel.sdk._gate import CreatorPid
from eagleeye_otel.sdk._prometheus import PrometheusServingReader
from eagleeye_otel.sdk._settings import PipelineSettings

__all__ = [
    "METRICS_EXPORTER_GROUP",
    "PROMETHEUS_NAMES",
    "OwnerOnlyPeriodicReader",
    "build_meter_provider",
    "build_metric_readers",
    "load_metric_exporter",
    "shutdown_meter_provider",
]

_logger = logging.getLogger(__name__)

METRICS_EXPORTER_GROUP = "opentelemetry_metrics_exporter"
"""The entry-point group :envvar:`OTEL_METRICS_EXPORTER` names come from."""

PROMETHEUS_NAMES = frozenset({"prometheus", "eagle_eye_prometheus"})
"""Exporter names served by :class:`PrometheusServingReader`."""


class OwnerOnlyPeriodicReader(PeriodicExportingMetricReader):
    """A periodic reader that exports only from the process that built it.

    After a fork the SDK restarts the reader's thread in the child, which would then export a frozen copy of the
    parent's series under the parent's resource; here the child's collections are not exported, and so is its
    shutdown, so that it never closes the parent's connections either.
    """

    def __init__(
        self, exporter: MetricExporter, *, export_interval_millis: float, export_timeout_millis: float
    ) -> None:
        self._creator = CreatorPid()
        super().__init__(
            exporter, export_interval_millis=export_interval_millis, export_timeout_millis=export_timeout_millis
        )

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        """Export a collection, in the owner process only."""
        if self._creator.is_current:
            super()._receive_metrics(metrics_data, timeout_millis=timeout_millis, **kwargs)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Stop the thread, export once more and shut the exporter down, in the owner process only."""
        if self._creator.is_current:
            super().shutdown(timeout_millis=timeout_millis, **kwargs)


def load_metric_exporter(name: str) -> type[MetricExporter] | type[MetricReader]:
    """Load an ``opentelemetry_metrics_exporter`` entry point by name.

    Raises:
        ConfigError: no such entry point, or it is neither a ``MetricExporter`` nor a ``MetricReader``;
            the error names :envvar:`OTEL_METRICS_EXPORTER`.
    """
    found = tuple(entry_points(group=METRICS_EXPORTER_GROUP, name=name))
    if not found:
        installed = sorted({ep.name for ep in entry_points(group=METRICS_EXPORTER_GROUP)} | PROMETHEUS_NAMES)
        raise ConfigError(OTEL_METRICS_EXPORTER, name, f"no such exporter; installed: {', '.join(installed)}")
    loaded = found[0].load()
    if not (isinstance(loaded, type) and issubclass(loaded, (MetricExporter, MetricReader))):
        raise ConfigError(OTEL_METRICS_EXPORTER, name, f"{found[0].value} is not a MetricExporter or MetricReader")
    return loaded


def build_metric_readers(settings: PipelineSettings) -> list[MetricReader]:
    """One reader per configured exporter, in order; if one fails, those already built are shut down.

    Raises:
        ConfigError: an exporter is unknown, rejects its settings, or the Prometheus port cannot be bound.
    """
    readers: list[MetricReader] = []
    try:
        for name in settings.exporters:
            readers.append(_reader(name, settings))
    except BaseException:
        for reader in readers:
            reader.shutdown()
        raise
    return readers


def build_meter_provider(settings: PipelineSettings, *, resource: Resource | None = None) -> MeterProvider:
    """Build a provider with :func:`build_metric_readers`.

    The provider does not shut itself down at exit: its owner does, with a deadline
    (:func:`shutdown_meter_provider`), after recording what is still queued.

    Args:
        settings: which exporters, where Prometheus listens, how often to push.
        resource: the resource; by default ``Resource.create()``, which reads :envvar:`OTEL_SERVICE_NAME` and
            :envvar:`OTEL_RESOURCE_ATTRIBUTES`.

    Raises:
        ConfigError: as :func:`build_metric_readers`.
    """
    return MeterProvider(
        resource=Resource.create() if resource is None else resource,
        metric_readers=build_metric_readers(settings),
        shutdown_on_exit=False,
    )


def shutdown_meter_provider(provider: MeterProvider, deadline_s: float) -> None:
    """Flush and shut ``provider`` down within ``deadline_s`` seconds; failures are logged, never raised."""
    began = time.monotonic()
    try:
        provider.shutdown(timeout_millis=deadline_s * 1000)
    except Exception:
        _logger.warning("Eagle Eye metrics did not shut down cleanly", exc_info=True)
    _logger.debug("Eagle Eye metrics shut down in %.3f s", time.monotonic() - began)


def _reader(name: str, settings: PipelineSettings) -> MetricReader:
    if name in PROMETHEUS_NAMES:
        try:
            return PrometheusServingReader(host=settings.prometheus_host, port=settings.prometheus_port)
        except OSError as error:
            raise ConfigError(
                OTEL_EXPORTER_PROMETHEUS_PORT,
                settings.prometheus_port,
                f"cannot listen on {settings.prometheus_host}:{settings.prometheus_port}: {error.strerror or error}",
            ) from error
    component = load_metric_exporter(name)
    if issubclass(component, MetricReader):
        return component()
    return OwnerOnlyPeriodicReader(
        component(),
        export_interval_millis=settings.export_interval_millis,
        export_timeout_millis=settings.export_timeout_millis,
    )
