"""Hardware, host and container telemetry sources, exposed as OTel observable instruments."""

from eagleeye_otel.receivers.hardware._cgroup import CGROUP_METER_NAME, register_cgroup_metrics
from eagleeye_otel.receivers.hardware._dcmi import DcmiSource
from eagleeye_otel.receivers.hardware._system import (
    SYSTEM_METRICS_CONFIG,
    SystemMetricsHandle,
    instrument_system_metrics,
)

__all__ = [
    "CGROUP_METER_NAME",
    "SYSTEM_METRICS_CONFIG",
    "DcmiSource",
    "SystemMetricsHandle",
    "instrument_system_metrics",
    "register_cgroup_metrics",
]
