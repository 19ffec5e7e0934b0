"""The hardware monitor's NATS export: every interval, the sweep encoded straight to OTLP and published.

This replaces a periodic SDK reader for the NATS path only. The SDK's collection of ~450 points a second cost 14
times the sweep itself; :class:`~eagleeye_otel.receivers.hardware._otlp.SweepEncoder` writes the same message from
the same point mapping the instruments use. The sweep comes from the same :class:`SweepCache` the instruments read,
so a Prometheus scrape within half an interval of an export reuses it (and the other way round).
"""

from __future__ import annotations

import logging
import threading
import time

from opentelemetry.sdk.metrics.export import MetricExportResult

from eagleeye_otel.exporters.nats import NatsMetricExporter
from eagleeye_otel.fork_guard import ForkGuard
from eagleeye_otel.log_limiter import LogLimiter
from eagleeye_otel.receivers.hardware._otlp import SweepEncoder
from eagleeye_otel.receivers.hardware._sweep_cache import SweepCache
from eagleeye_otel.thread_names import name_os_thread

__all__ = ["EXPORT_READER", "SweepExport"]

_logger = logging.getLogger(__name__)

EXPORT_READER = "nats export"
"""What the export asks :class:`SweepCache` under: one more reader of each sweep, beside the instruments."""


class SweepExport:
    """Publishes the current sweep's OTLP batch every ``interval_s`` seconds on a thread of its own.

    Args:
        exporter: where batches go (its subject, connection and drop counts); shut down by :meth:`stop`.
        encoder: turns a sweep into the batch.
        sweeps: the sweep shared with the instruments.
        interval_s: seconds between two exports; each waits at most that long to hand its batch over.
    """

    def __init__(
        self, exporter: NatsMetricExporter, encoder: SweepEncoder, sweeps: SweepCache, *, interval_s: float
    ) -> None:
        self._exporter = exporter
        self._encoder = encoder
        self._sweeps = sweeps
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fork = ForkGuard()
        self._failures = LogLimiter(_logger)

    def start(self) -> None:
        """Start exporting; the first batch goes out one interval from now."""
        self._thread = threading.Thread(target=self._run, name="eagle-eye-hardware-export", daemon=True)
        self._thread.start()

    def export(self) -> bool:
        """Take (or share) a sweep, encode it and publish it now; never raises.

        Returns:
            Whether NATS took the batch (the exporter's ``stats`` say why not).
        """
        with self._lock:
            try:
                sweep = self._sweeps.get(EXPORT_READER)
                payload = None if sweep is None else self._encoder.encode(sweep, time.time_ns())
            except Exception:
                self._failures.warning("cannot encode the hardware batch; not exported", exc_info=True)
                return False
            if payload is None:
                return False
            return self._exporter.export_encoded(payload, self._interval_s * 1e3) is MetricExportResult.SUCCESS

    def stop(self, deadline_s: float = 5.0) -> None:
        """Stop the thread, export once more and close the connection, within ``deadline_s``; only the first call
        does anything, and in a fork nothing."""
        if self._fork.in_child or self._stop.is_set():
            return
        began = time.monotonic()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(deadline_s)
        self.export()
        self._exporter.shutdown(timeout_millis=max(0.0, deadline_s - (time.monotonic() - began)) * 1e3)

    def _run(self) -> None:
        name_os_thread(threading.current_thread().name)
        while not self._stop.wait(self._interval_s):
            if self._fork.in_child:
                return
            self.export()
