"""The NATS metric exporter: each collection, one OTLP ``ExportMetricsServiceRequest`` message on a NATS subject.

Wrap it in a ``PeriodicExportingMetricReader`` (the SDK does so for the ``eagle_eye_nats`` entry point). Each export
encodes the batch (:mod:`._encoding`) and hands it to a connection that lives on its own thread (:mod:`._transport`),
so the reader's thread waits for the hand-over only, and at most ``timeout`` seconds. While NATS is unreachable
batches are dropped and counted, not queued: with the default cumulative temporality the next batch that gets through
carries the totals, so a consumer loses resolution during an outage, not counts.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricsData,
)
from opentelemetry.sdk.metrics.view import Aggregation

from eagleeye_otel.errors import ConfigError
from eagleeye_otel.exporters.nats._encoding import OTLP_PROTOBUF, MetricsEncoding
from eagleeye_otel.exporters.nats._transport import CLOSED, OTHER_PROCESS, NatsTransport, PublishDropped
from eagleeye_otel.log_limiter import LogLimiter
from eagleeye_otel.semconv import DEFAULT_METRICS_SUBJECT
from eagleeye_otel.settings import NatsSettings, Settings

__all__ = ["ENCODING_FAILED", "ExportStats", "NatsMetricExporter"]

_logger = logging.getLogger(__name__)

ENCODING_FAILED: Final = "encoding_failed"
"""Drop reason: the batch could not be encoded (a bug; logged with its traceback)."""

_DEFAULT_CLIENT_NAME: Final = "eagle-eye-metrics"


@dataclass(frozen=True)
class ExportStats:
    """Counts since the exporter was created, for tests, logs and health checks.

    Attributes:
        exported: batches handed over to NATS.
        dropped: batches not sent, by reason: the reason constants of ``_transport`` (``not_connected``,
            ``timed_out``, ``too_large``, ``failed``, ``closed``, ``other_process``) and ``encoding_failed``.
        connected: whether the NATS connection is up now.
    """

    exported: int
    dropped: Mapping[str, int]
    connected: bool


class NatsMetricExporter(MetricExporter):
    """Publishes every export batch as one OTLP message on a NATS subject.

    Args:
        nats_settings: servers, credentials and TLS.
        subject: where to publish; one subject per producer kind (``eagle_eye.hardware.<node>`` for the
            hardware monitor) keeps consumers simple.
        encoding: :data:`OTLP_PROTOBUF` (default) or :data:`OTLP_JSON`; announced in the ``Content-Type`` header.
        preferred_temporality: per instrument class, as for any ``MetricExporter``; the default is cumulative for
            every kind, so a dropped batch loses no counts.
        preferred_aggregation: per instrument class, as for any ``MetricExporter``.
        timeout: most seconds one export waits to hand its batch to the connection; the reader's own
            ``timeout_millis`` lowers it further.
        client_name: the connection's name in NATS monitoring.
        enabled: ``False`` makes an exporter that opens no connection and drops every batch (reason ``closed``)
            without logging; used when the settings are unusable but the metrics pipeline must still be built.

    Raises:
        ConfigError: ``timeout`` is not a positive number of seconds.
    """

    def __init__(
        self,
        *,
        nats_settings: NatsSettings,
        subject: str = DEFAULT_METRICS_SUBJECT,
        encoding: MetricsEncoding = OTLP_PROTOBUF,
        preferred_temporality: dict[type, AggregationTemporality] | None = None,
        preferred_aggregation: dict[type, Aggregation] | None = None,
        timeout: float = 2.0,
        client_name: str = _DEFAULT_CLIENT_NAME,
        enabled: bool = True,
    ) -> None:
        if not timeout > 0:
            raise ConfigError("timeout", timeout, "must be a positive number of seconds")
        super().__init__(preferred_temporality=preferred_temporality, preferred_aggregation=preferred_aggregation)
        self._subject = subject
        self._encoding = encoding
        self._headers = {"Content-Type": encoding.content_type}
        self._timeout = timeout
        self._lock = threading.Lock()
        self._exported = 0
        self._dropped: Counter[str] = Counter()
        self._drop_log = LogLimiter(_logger, every_s=60.0)
        self._transport = NatsTransport(nats_settings=nats_settings, client_name=client_name)
        if enabled:
            self._transport.start()
        else:
            self._transport.close(0.0)

    @property
    def subject(self) -> str:
        """The subject batches are published on."""
        return self._subject

    @property
    def stats(self) -> ExportStats:
        """Counters and connection state."""
        return ExportStats(
            exported=self._exported,
            dropped=MappingProxyType(dict(self._dropped)),
            connected=self._transport.connected,
        )

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        """Encode the batch and hand it to NATS; never raises.

        Args:
            metrics_data: what the reader collected.
            timeout_millis: the reader's budget for this export.

        Returns:
            ``SUCCESS`` once NATS took the batch; ``FAILURE`` when it was dropped (see :attr:`stats`).
        """
        return self._hand_over(functools.partial(self._encoding.encode, metrics_data), timeout_millis)

    def export_encoded(self, payload: bytes, timeout_millis: float = 10_000) -> MetricExportResult:
        """Hand over a batch its producer already encoded in this exporter's encoding; never raises.

        For a producer that encodes its points itself, cheaper than building SDK data for :meth:`export` (the
        hardware monitor encodes its sweep straight to OTLP protobuf each second). Counted and dropped as an export.

        Args:
            payload: the encoded batch, announced with this exporter's ``Content-Type``.
            timeout_millis: the caller's budget for the hand-over.

        Returns:
            ``SUCCESS`` once NATS took the batch; ``FAILURE`` when it was dropped (see :attr:`stats`).
        """
        return self._hand_over(lambda: payload, timeout_millis)

    def _hand_over(self, encode: Callable[[], bytes], timeout_millis: float) -> MetricExportResult:
        """Encode and publish under the export lock, counting the outcome."""
        # Checked before taking the lock: a forked child may inherit it held by the parent's export thread.
        if not self._transport.in_owner_process():
            self._dropped[OTHER_PROCESS] += 1
            return MetricExportResult.FAILURE
        with self._lock:
            try:
                payload = encode()
            except Exception:
                self._dropped[ENCODING_FAILED] += 1
                self._drop_log.warning("cannot encode metrics as %s; batch dropped", self._encoding.name, exc_info=True)
                return MetricExportResult.FAILURE
            try:
                self._transport.publish(
                    self._subject, payload, headers=self._headers, timeout=min(self._timeout, timeout_millis / 1e3)
                )
            except PublishDropped as dropped:
                self._dropped[dropped.reason] += 1
                if dropped.reason != CLOSED:  # closed means shut down or disabled: expected, already reported
                    self._drop_log.warning("metrics for NATS subject %s dropped: %s", self._subject, dropped)
                return MetricExportResult.FAILURE
            self._exported += 1
            return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        """Wait until the NATS server has received every batch exported so far.

        Returns:
            ``True`` when the server confirmed within the timeout; ``False`` otherwise, or when not connected.
        """
        return self._transport.flush(timeout_millis / 1e3)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Send what is buffered and close the connection, within the timeout; later calls do nothing.

        ``PeriodicExportingMetricReader.shutdown`` passes the time it has left as ``timeout=`` (milliseconds)
        rather than ``timeout_millis``; both are honoured. In a forked child this touches nothing.
        """
        timeout_ms = float(kwargs.get("timeout", timeout_millis))
        self._transport.close(timeout_ms / 1e3)


class _AutoNatsMetricExporter(NatsMetricExporter):
    """The ``eagle_eye_nats`` entry point: a :class:`NatsMetricExporter` configured from ``EAGLEEYE_*`` variables.

    The SDK builds entry-point exporters without arguments (``OTEL_METRICS_EXPORTER=eagle_eye_nats``). A bad
    setting logs one error that names the variable and turns only this exporter off, not the process's other
    telemetry, and never the application.
    """

    def __init__(self) -> None:
        try:
            settings = Settings.from_env()
        except ConfigError as error:
            _logger.error("the eagle_eye_nats metric exporter is off: %s", error)
            super().__init__(nats_settings=NatsSettings(), enabled=False)
            return
        super().__init__(nats_settings=settings.nats, subject=settings.metrics.subject)
