"""The hardware-monitor service: a node's sweeps as OTel metrics, scraped by Prometheus and pushed over NATS.

The hardware instruments on a meter provider read by Eagle Eye's private-registry Prometheus reader (for dashboards
and autoscaling), and a thread that publishes an OTLP protobuf batch on ``<prefix>.<node>`` every interval (for the
diagnosis service, within a second), encoded straight from the sweep (:mod:`._nats_export`): the message a periodic
SDK reader would send, at a fraction of its cost. Both read the same points from one shared sweep; a scrape that
comes within half an interval of the NATS export reuses its sweep. The node's identity is the resource, so it is on
every batch and on Prometheus's ``target_info``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Final

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource

from eagleeye_otel.errors import ConfigError
from eagleeye_otel.exporters.nats import NatsMetricExporter
from eagleeye_otel.receivers.hardware._instruments import SweepCache, register_hardware_metrics
from eagleeye_otel.receivers.hardware._monitor import HardwareMonitor
from eagleeye_otel.receivers.hardware._nats_export import SweepExport
from eagleeye_otel.receivers.hardware._otlp import SweepEncoder
from eagleeye_otel.sdk import PrometheusServingReader, shutdown_meter_provider
from eagleeye_otel.semconv._hardware import EAGLEEYE_NODE_NAME
from eagleeye_otel.settings import HardwareSettings, NatsSettings
from eagleeye_otel.version import __version__

__all__ = [
    "DEFAULT_HARDWARE_PROMETHEUS_PORT",
    "HARDWARE_SERVICE_NAME",
    "HardwareService",
    "hardware_resource",
    "start_hardware_service",
]

_logger = logging.getLogger(__name__)

DEFAULT_HARDWARE_PROMETHEUS_PORT: Final = 9465
"""One above the OTel default 9464, which a vLLM pod on the same (host-network) node may already hold."""

HARDWARE_SERVICE_NAME: Final = "eagle-eye-hardware-monitor"

_HOST_NAME, _K8S_NODE_NAME = "host.name", "k8s.node.name"


def hardware_resource(settings: HardwareSettings) -> Resource:
    """The node's identity: ``host.name`` and ``eagleeye.node.name``, plus ``k8s.node.name`` on Kubernetes.

    ``OTEL_RESOURCE_ATTRIBUTES`` adds to these (``Resource.create``) but does not replace them.
    """
    attributes: dict[str, str] = {
        SERVICE_NAME: HARDWARE_SERVICE_NAME,
        SERVICE_VERSION: __version__,
        _HOST_NAME: settings.node_name,
        EAGLEEYE_NODE_NAME: settings.node_name,
    }
    if settings.k8s_node_name is not None:
        attributes[_K8S_NODE_NAME] = settings.k8s_node_name
    return Resource.create(attributes)


@dataclass(frozen=True)
class HardwareService:
    """A running hardware monitor; :meth:`stop` it.

    Attributes:
        monitor: the sources.
        provider: the meter provider of the hardware instruments (read by Prometheus).
        exporter: the NATS exporter (its ``stats`` say what went out).
        export: the thread that publishes each interval's batch through ``exporter``.
        sweeps: the sweep cache (its ``sweeps`` counts sweeps taken).
        prometheus: the Prometheus reader, or None when the endpoint is off.
    """

    monitor: HardwareMonitor
    provider: MeterProvider
    exporter: NatsMetricExporter
    export: SweepExport
    sweeps: SweepCache
    prometheus: PrometheusServingReader | None

    def stop(self, deadline_s: float = 5.0) -> None:
        """Export once more, close NATS and the Prometheus endpoint, then release the sources; never raises."""
        began = time.monotonic()
        try:
            self.export.stop(deadline_s)
        except Exception:
            _logger.warning("the hardware NATS export did not stop cleanly", exc_info=True)
        shutdown_meter_provider(self.provider, max(0.0, deadline_s - (time.monotonic() - began)))
        self.monitor.close()


def start_hardware_service(
    monitor: HardwareMonitor,
    *,
    settings: HardwareSettings,
    nats_settings: NatsSettings,
    prometheus_host: str = "0.0.0.0",  # a node's exporter is scraped from other hosts
    prometheus_port: int | None = DEFAULT_HARDWARE_PROMETHEUS_PORT,
    interval_s: float = 1.0,
) -> HardwareService:
    """Register the hardware instruments and start exporting.

    Args:
        monitor: the open sources; the service closes them when it stops.
        settings: the node's identity and the NATS subject.
        nats_settings: how to reach NATS; an unreachable server only drops batches (counted), never stops the
            service.
        prometheus_host: where the Prometheus endpoint listens.
        prometheus_port: its port (0 picks a free one); None turns the endpoint off.
        interval_s: seconds between two NATS exports.

    Raises:
        ConfigError: ``interval_s`` is not positive, or the Prometheus port cannot be bound (names the option).
    """
    if not interval_s > 0:
        raise ConfigError("--interval", interval_s, "must be a positive number of seconds")
    readers: list[MetricReader] = []
    prometheus = None
    if prometheus_port is not None:
        try:
            prometheus = PrometheusServingReader(host=prometheus_host, port=prometheus_port)
        except OSError as error:
            raise ConfigError(
                "--prometheus-port",
                prometheus_port,
                f"cannot listen on {prometheus_host}:{prometheus_port}: {error.strerror or error}",
            ) from error
        readers.append(prometheus)
    exporter = NatsMetricExporter(
        nats_settings=nats_settings, subject=settings.subject, client_name=HARDWARE_SERVICE_NAME
    )
    resource = hardware_resource(settings)
    provider = MeterProvider(resource=resource, metric_readers=readers, shutdown_on_exit=False)
    sweeps = register_hardware_metrics(provider, monitor.sweep, max_age_s=interval_s / 2)
    export = SweepExport(exporter, SweepEncoder(resource), sweeps, interval_s=interval_s)
    export.start()
    _logger.info(
        "hardware monitor: node %s, OTLP every %g s on NATS %s", settings.node_name, interval_s, exporter.subject
    )
    return HardwareService(
        monitor=monitor, provider=provider, exporter=exporter, export=export, sweeps=sweeps, prometheus=prometheus
    )
