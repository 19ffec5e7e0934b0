"""Hardware, host and container telemetry sources, exposed as OTel observable instruments."""

from eagleeye_otel.receivers.hardware._cgroup import CGROUP_METER_NAME, register_cgroup_metrics
from eagleeye_otel.receivers.hardware._dcmi import DcmiSource
from eagleeye_otel.receivers.hardware._instruments import HARDWARE_METER_NAME, SweepCache, register_hardware_metrics
from eagleeye_otel.receivers.hardware._kmsg import KernelLogReader, open_kernel_log
from eagleeye_otel.receivers.hardware._kmsg_parser import MalformedLine, parse_line
from eagleeye_otel.receivers.hardware._kmsg_sources import DmesgSource, FileSource, KernelLogSource, KmsgSource
from eagleeye_otel.receivers.hardware._monitor import HardwareMonitor
from eagleeye_otel.receivers.hardware._nvml import NvmlSource, XidCounts
from eagleeye_otel.receivers.hardware._nvml_events import NvmlEvent, NvmlEventWatcher
from eagleeye_otel.receivers.hardware._nvml_readers import (
    CLOCK_EVENT_REASONS,
    decode_clock_event_reasons,
)
from eagleeye_otel.receivers.hardware._system import (
    SYSTEM_METRICS_CONFIG,
    SystemMetricsHandle,
    instrument_system_metrics,
)

__all__ = [
    "CGROUP_METER_NAME",
    "CLOCK_EVENT_REASONS",
    "HARDWARE_METER_NAME",
    "SYSTEM_METRICS_CONFIG",
    "DcmiSource",
    "DmesgSource",
    "FileSource",
    "HardwareMonitor",
    "KernelLogReader",
    "KernelLogSource",
    "KmsgSource",
    "MalformedLine",
    "NvmlEvent",
    "NvmlEventWatcher",
    "NvmlSource",
    "SweepCache",
    "SystemMetricsHandle",
    "XidCounts",
    "decode_clock_event_reasons",
    "instrument_system_metrics",
    "open_kernel_log",
    "parse_line",
    "register_cgroup_metrics",
    "register_hardware_metrics",
]
