"""The standard ``OTEL_*`` variables that shape Eagle Eye's metrics pipeline, read once and validated.

The OTel SDK warns and falls back on a bad value; Eagle Eye raises :class:`~eagleeye_otel.errors.ConfigError`
naming the variable, so that a service stops at start and the vLLM plugin logs one clear error. OTLP endpoint,
headers, TLS and temporality variables are left to the OTLP exporter classes, which read them themselves.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from opentelemetry.environment_variables import OTEL_METRICS_EXPORTER
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_PROMETHEUS_HOST,
    OTEL_EXPORTER_PROMETHEUS_PORT,
    OTEL_METRIC_EXPORT_INTERVAL,
    OTEL_METRIC_EXPORT_TIMEOUT,
)

from eagleeye_otel.errors import ConfigError

__all__ = ["DEFAULT_EXPORTERS", "DEFAULT_PROMETHEUS_PORT", "PipelineSettings"]

DEFAULT_EXPORTERS: tuple[str, ...] = ("prometheus",)
"""What Eagle Eye exports when :envvar:`OTEL_METRICS_EXPORTER` is unset: a scrape endpoint, no network push."""

DEFAULT_PROMETHEUS_PORT = 9464
"""The OTel default; it never collides with vLLM's own server on 8000."""

_Getter = Callable[[str], "str | None"]

_OTLP_BY_PROTOCOL = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}
_MAX_PORT = 65535


@dataclass(frozen=True)
class PipelineSettings:
    """How to build the meter provider.

    Attributes:
        exporters: ``opentelemetry_metrics_exporter`` entry-point names, ``otlp`` already resolved to the
            protocol's exporter; empty means export nothing.
        prometheus_host: address the Prometheus endpoint listens on.
        prometheus_port: its port.
        export_interval_millis: how often push exporters (OTLP, NATS) export.
        export_timeout_millis: how long one push export may take.
    """

    exporters: tuple[str, ...] = DEFAULT_EXPORTERS
    prometheus_host: str = "localhost"
    prometheus_port: int = DEFAULT_PROMETHEUS_PORT
    export_interval_millis: float = 60_000.0
    export_timeout_millis: float = 30_000.0

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, default_exporters: tuple[str, ...] = DEFAULT_EXPORTERS
    ) -> PipelineSettings:
        """Read and validate the settings.

        Args:
            environ: the variables to read; ``os.environ`` by default.
            default_exporters: the exporters when :envvar:`OTEL_METRICS_EXPORTER` is unset or empty.

        Raises:
            ConfigError: a variable has a value that cannot be used; the error names it.
        """
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        return cls(
            exporters=_exporters(get(OTEL_METRICS_EXPORTER), default_exporters, get),
            prometheus_host=get(OTEL_EXPORTER_PROMETHEUS_HOST) or "localhost",
            prometheus_port=_port(get(OTEL_EXPORTER_PROMETHEUS_PORT)),
            export_interval_millis=_millis(OTEL_METRIC_EXPORT_INTERVAL, get(OTEL_METRIC_EXPORT_INTERVAL), 60_000.0),
            export_timeout_millis=_millis(OTEL_METRIC_EXPORT_TIMEOUT, get(OTEL_METRIC_EXPORT_TIMEOUT), 30_000.0),
        )


def _exporters(value: str | None, default: tuple[str, ...], get: _Getter) -> tuple[str, ...]:
    names = tuple(n.strip() for n in value.split(",")) if value is not None else default
    if any(not n for n in names):
        raise ConfigError(OTEL_METRICS_EXPORTER, value, "empty name in the comma-separated list")
    if any(n.lower() == "none" for n in names):
        if len(names) > 1:
            raise ConfigError(OTEL_METRICS_EXPORTER, value, "'none' cannot be combined with other exporters")
        return ()
    resolved = tuple(_resolve_otlp(n, get) for n in names)
    duplicates = sorted({n for n in resolved if resolved.count(n) > 1})
    if duplicates:
        raise ConfigError(OTEL_METRICS_EXPORTER, value, f"{', '.join(duplicates)} given more than once")
    return resolved


def _resolve_otlp(name: str, get: _Getter) -> str:
    """``otlp`` means the exporter of the configured protocol, as in the OTel SDK; gRPC when none is set."""
    if name != "otlp":
        return name
    variable = OTEL_EXPORTER_OTLP_METRICS_PROTOCOL
    protocol = get(variable)
    if protocol is None:
        variable, protocol = OTEL_EXPORTER_OTLP_PROTOCOL, get(OTEL_EXPORTER_OTLP_PROTOCOL)
    if protocol is None:
        return _OTLP_BY_PROTOCOL["grpc"]
    if protocol not in _OTLP_BY_PROTOCOL:
        raise ConfigError(variable, protocol, f"must be one of {', '.join(_OTLP_BY_PROTOCOL)}")
    return _OTLP_BY_PROTOCOL[protocol]


def _port(value: str | None) -> int:
    if value is None:
        return DEFAULT_PROMETHEUS_PORT
    try:
        port = int(value)
    except ValueError:
        raise ConfigError(OTEL_EXPORTER_PROMETHEUS_PORT, value, "must be a port number") from None
    if not 0 < port <= _MAX_PORT:
        raise ConfigError(OTEL_EXPORTER_PROMETHEUS_PORT, value, f"must be in 1..{_MAX_PORT}")
    return port


def _millis(name: str, value: str | None, default: float) -> float:
    if value is None:
        return default
    try:
        millis = float(value)
    except ValueError:
        raise ConfigError(name, value, "must be a number of milliseconds") from None
    if not 0 < millis < math.inf:
        raise ConfigError(name, value, "must be a positive, finite number of milliseconds")
    return millis
