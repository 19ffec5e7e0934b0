"""The diagnosis service's settings, read once from the environment and validated.

Kept beside the service, as the SDK pipeline's are, so that a bad diagnosis setting concerns only the service: it
stops at start with a :class:`~eagleeye_otel.errors.ConfigError` naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from opentelemetry.environment_variables import OTEL_LOGS_EXPORTER
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_LOGS_ENDPOINT,
    OTEL_EXPORTER_OTLP_LOGS_PROTOCOL,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_PROMETHEUS_HOST,
    OTEL_EXPORTER_PROMETHEUS_PORT,
)

from eagleeye_otel import environment_variables as ev
from eagleeye_otel.errors import ConfigError
from eagleeye_otel.nats_subjects import check_subject, subject_token
from eagleeye_otel.sdk import PipelineSettings
from eagleeye_otel.semconv import DEFAULT_DIAGNOSIS_SUBJECT_PREFIX, DEFAULT_HARDWARE_SUBJECT_PREFIX
from eagleeye_otel.settings import EnvReader

__all__ = [
    "DEFAULT_DIAGNOSIS_HTTP_PORT",
    "DEFAULT_DIAGNOSIS_PROMETHEUS_PORT",
    "DiagnosisSettings",
]

DEFAULT_DIAGNOSIS_PROMETHEUS_PORT: Final = 9466
"""After the vLLM plugin's 9464 and the hardware monitor's 9465, so ``eagle-eye up`` runs all three on one host."""
DEFAULT_DIAGNOSIS_HTTP_PORT: Final = 9467
"""The report page and the JSON API."""

_LOG_PROTOCOLS: Final = ("grpc", "http/protobuf")
_MAX_REFRESH_S: Final = 300.0


@dataclass(frozen=True)
class DiagnosisSettings:
    """Where the service reads telemetry, publishes findings and serves its report.

    Attributes:
        input_subject: the subscription for OTLP hardware metrics (wildcards allowed).
        subject_prefix: findings go to ``<prefix>.<node token>`` (:meth:`subject`).
        http_host: where the report page and the JSON API listen.
        http_port: their port (0: a free one); None turns them off.
        refresh_interval: seconds between two restatements of the active findings on NATS.
        logs_protocol: ``grpc`` or ``http/protobuf`` to send findings as OTel log events over OTLP; None: not sent.
        pipeline: the metric exporters (Prometheus on :data:`DEFAULT_DIAGNOSIS_PROMETHEUS_PORT` by default).
    """

    input_subject: str = f"{DEFAULT_HARDWARE_SUBJECT_PREFIX}.>"
    subject_prefix: str = DEFAULT_DIAGNOSIS_SUBJECT_PREFIX
    http_host: str = "0.0.0.0"  # a Deployment's report is opened from other hosts
    http_port: int | None = DEFAULT_DIAGNOSIS_HTTP_PORT
    refresh_interval: float = 5.0
    logs_protocol: str | None = None
    pipeline: PipelineSettings = field(
        default_factory=lambda: PipelineSettings(
            prometheus_host="0.0.0.0", prometheus_port=DEFAULT_DIAGNOSIS_PROMETHEUS_PORT
        )
    )

    def subject(self, node: str) -> str:
        """The subject of ``node``'s findings: the hardware monitor's token rule, so both name a node alike."""
        return f"{self.subject_prefix}.{subject_token(node)}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DiagnosisSettings:
        """Read and validate the settings.

        Args:
            environ: the variables to read; defaults to ``os.environ``.

        Raises:
            ConfigError: a variable has a value that cannot be used; the error names it.
        """
        raw = os.environ if environ is None else environ
        get = EnvReader(raw).get

        hardware_prefix = get(ev.EAGLEEYE_HARDWARE_SUBJECT_PREFIX) or DEFAULT_HARDWARE_SUBJECT_PREFIX
        check_subject(ev.EAGLEEYE_HARDWARE_SUBJECT_PREFIX, hardware_prefix)  # blamed on itself, not on the input
        input_subject = get(ev.EAGLEEYE_DIAGNOSIS_INPUT_SUBJECT) or f"{hardware_prefix}.>"
        check_subject(ev.EAGLEEYE_DIAGNOSIS_INPUT_SUBJECT, input_subject, wildcards=True)
        prefix = get(ev.EAGLEEYE_DIAGNOSIS_SUBJECT_PREFIX) or DEFAULT_DIAGNOSIS_SUBJECT_PREFIX
        check_subject(ev.EAGLEEYE_DIAGNOSIS_SUBJECT_PREFIX, prefix)
        http_host, http_port = _http(get(ev.EAGLEEYE_DIAGNOSIS_HTTP))
        pipeline_env = {
            OTEL_EXPORTER_PROMETHEUS_HOST: "0.0.0.0",
            OTEL_EXPORTER_PROMETHEUS_PORT: str(DEFAULT_DIAGNOSIS_PROMETHEUS_PORT),
            **{name: value for name, value in raw.items() if value.strip()},
        }
        return cls(
            input_subject=input_subject,
            subject_prefix=prefix,
            http_host=http_host,
            http_port=http_port,
            refresh_interval=_refresh(get(ev.EAGLEEYE_DIAGNOSIS_REFRESH_INTERVAL)),
            logs_protocol=_logs_protocol(get),
            pipeline=PipelineSettings.from_env(pipeline_env),
        )


def _http(value: str | None) -> tuple[str, int | None]:
    if value is None:
        return "0.0.0.0", DEFAULT_DIAGNOSIS_HTTP_PORT
    if value.lower() == "off":
        return "0.0.0.0", None
    host, colon, port = value.rpartition(":")
    if not colon or not port.isdigit() or int(port) > 65535:
        raise ConfigError(ev.EAGLEEYE_DIAGNOSIS_HTTP, value, "expected host:port (port 0 picks a free one) or off")
    return host.strip("[]") or "0.0.0.0", int(port)


def _refresh(value: str | None) -> float:
    if value is None:
        return 5.0
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(ev.EAGLEEYE_DIAGNOSIS_REFRESH_INTERVAL, value, "must be a number of seconds") from None
    if not 0 < seconds <= _MAX_REFRESH_S:
        raise ConfigError(ev.EAGLEEYE_DIAGNOSIS_REFRESH_INTERVAL, value, f"must be in (0, {_MAX_REFRESH_S:g}]")
    return seconds


def _logs_protocol(get: Callable[[str], str | None]) -> str | None:
    """OTLP log events are sent when ``OTEL_LOGS_EXPORTER`` names ``otlp``, or is unset and an endpoint is set."""
    exporters = get(OTEL_LOGS_EXPORTER)
    if exporters is None:
        if get(OTEL_EXPORTER_OTLP_LOGS_ENDPOINT) is None and get(OTEL_EXPORTER_OTLP_ENDPOINT) is None:
            return None
    else:
        names = {name.strip().lower() for name in exporters.split(",")}
        if names == {"none"}:
            return None
        if names != {"otlp"}:
            raise ConfigError(OTEL_LOGS_EXPORTER, exporters, "the diagnosis service exports log events with otlp only")
    variable = OTEL_EXPORTER_OTLP_LOGS_PROTOCOL
    protocol = get(variable)
    if protocol is None:
        variable, protocol = OTEL_EXPORTER_OTLP_PROTOCOL, get(OTEL_EXPORTER_OTLP_PROTOCOL)
    protocol = protocol or "grpc"
    if protocol not in _LOG_PROTOCOLS:
        raise ConfigError(variable, protocol, f"must be one of {', '.join(_LOG_PROTOCOLS)}")
    return protocol
