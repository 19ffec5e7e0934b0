"""Eagle Eye's OTel SDK assembly: the metrics pipeline, the main-process gate and ``opentelemetry-instrument``
support (the ``eagle_eye`` distro and configurator)."""

from eagleeye_otel.sdk._distro import (
    ENTRY_POINT_NAME,
    SHUTDOWN_DEADLINE_S,
    EagleEyeConfigurator,
    EagleEyeDistro,
    configure_global_meter_provider,
)
from eagleeye_otel.sdk._gate import EAGLEEYE_OWNER_PID, CreatorPid, claim_ownership
from eagleeye_otel.sdk._pipeline import (
    METRICS_EXPORTER_GROUP,
    PROMETHEUS_NAMES,
    OwnerOnlyPeriodicReader,
    build_meter_provider,
    build_metric_readers,
    load_metric_exporter,
    shutdown_meter_provider,
)
from eagleeye_otel.sdk._prometheus import PrometheusServingReader
from eagleeye_otel.sdk._settings import DEFAULT_EXPORTERS, DEFAULT_PROMETHEUS_PORT, PipelineSettings

__all__ = [
    "DEFAULT_EXPORTERS",
    "DEFAULT_PROMETHEUS_PORT",
    "EAGLEEYE_OWNER_PID",
    "ENTRY_POINT_NAME",
    "METRICS_EXPORTER_GROUP",
    "PROMETHEUS_NAMES",
    "SHUTDOWN_DEADLINE_S",
    "CreatorPid",
    "EagleEyeConfigurator",
    "EagleEyeDistro",
    "OwnerOnlyPeriodicReader",
    "PipelineSettings",
    "PrometheusServingReader",
    "build_meter_provider",
    "build_metric_readers",
    "claim_ownership",
    "configure_global_meter_provider",
    "load_metric_exporter",
    "shutdown_meter_provider",
]
