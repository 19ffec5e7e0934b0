"""The diagnosis service (``eagle-eye diagnose``): hardware telemetry from NATS in, findings out everywhere.

It subscribes to the hardware monitors' OTLP exports, feeds each to the engine and evaluates at once, so a finding
reaches NATS within one monitor period of the telemetry that shows it. A one-second tick also evaluates, for rules
whose verdict runs out with time, and restates every active finding now and then so routers that joined late or
missed a message converge. Findings go to ``<prefix>.<node>`` as JSON, to OTLP as log events (when configured), to
the Prometheus reader as metrics and to the HTTP report; none of those outputs can stop the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import LogRecordExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource

from eagleeye_otel.diagnosis._board import DeviceRef, FindingBoard
from eagleeye_otel.diagnosis._engine import DiagnosisEngine
from eagleeye_otel.diagnosis._finding import Finding
from eagleeye_otel.diagnosis._http import DiagnosisHttpServer
from eagleeye_otel.diagnosis._outputs import (
    FindingChange,
    FindingEvents,
    build_logger_provider,
    changes_in_order,
    encode_message,
    register_diagnosis_metrics,
    register_intake_metrics,
)
from eagleeye_otel.diagnosis._settings import DiagnosisSettings
from eagleeye_otel.environment_variables import EAGLEEYE_DIAGNOSIS_HTTP
from eagleeye_otel.errors import ConfigError
from eagleeye_otel.log_limiter import LogLimiter
from eagleeye_otel.nats_flush import flush
from eagleeye_otel.nats_options import connect_in_background
from eagleeye_otel.sdk import PrometheusServingReader, build_metric_readers, shutdown_meter_provider
from eagleeye_otel.settings import NatsSettings
from eagleeye_otel.version import __version__

__all__ = ["DIAGNOSIS_SERVICE_NAME", "DiagnosisService", "run_diagnosis_service"]

_logger = logging.getLogger(__name__)

DIAGNOSIS_SERVICE_NAME: Final = "eagle-eye-diagnosis"
_TICK_S: Final = 1.0
_HEADERS: Final = {"Content-Type": "application/json"}


class DiagnosisService:
    """A running diagnosis; create with :meth:`start`, end with :meth:`stop`.

    Attributes:
        engine: the rules and their state.
        settings: subjects, HTTP address, refresh interval.
        board: what the HTTP API, the report and the metrics read.
        http: the report endpoint, or None when off.
        prometheus: the Prometheus reader, or None when not configured.
        published: finding messages handed to NATS.
        publish_failures: finding messages NATS refused (disconnected too long, say).
    """

    def __init__(
        self,
        engine: DiagnosisEngine,
        *,
        settings: DiagnosisSettings,
        nats_settings: NatsSettings,
        meter_provider: MeterProvider,
        logger_provider: LoggerProvider | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.board = FindingBoard(clock=clock)
        self.http: DiagnosisHttpServer | None = None
        self.prometheus: PrometheusServingReader | None = None
        self.published = 0
        self.publish_failures = 0
        self._nats_settings = nats_settings
        self._meter_provider = meter_provider
        self._logger_provider = logger_provider
        self._events = None if logger_provider is None else FindingEvents(logger_provider)
        self._nc: Client | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._in_order = asyncio.Lock()
        """Held from an evaluation to its last message, so two evaluations' messages never interleave."""
        self._publish_log = LogLimiter(_logger)
        self._tick_log = LogLimiter(_logger)

    @classmethod
    async def start(
        cls,
        engine: DiagnosisEngine,
        *,
        settings: DiagnosisSettings,
        nats_settings: NatsSettings,
        log_exporter: LogRecordExporter | None = None,
    ) -> DiagnosisService:
        """Open the outputs and start consuming; NATS connects in the background and is retried forever.

        Args:
            engine: the engine to feed.
            settings: the service's settings.
            nats_settings: how to reach NATS.
            log_exporter: where log events go; by default the OTLP exporter of ``settings.logs_protocol``.

        Raises:
            ConfigError: an output cannot start (a port taken, an unknown exporter); names the setting.
        """
        resource = Resource.create({SERVICE_NAME: DIAGNOSIS_SERVICE_NAME, SERVICE_VERSION: __version__})
        readers = build_metric_readers(settings.pipeline)
        provider = MeterProvider(resource=resource, metric_readers=readers, shutdown_on_exit=False)
        if log_exporter is None and settings.logs_protocol is not None:
            log_exporter = _otlp_log_exporter(settings.logs_protocol)
        logs = None if log_exporter is None else build_logger_provider(log_exporter, resource)
        service = cls(
            engine, settings=settings, nats_settings=nats_settings, meter_provider=provider, logger_provider=logs
        )
        service.prometheus = next((r for r in readers if isinstance(r, PrometheusServingReader)), None)
        register_diagnosis_metrics(provider, service.board)
        register_intake_metrics(provider, lambda: engine.stats)
        if settings.http_port is not None:
            try:
                service.http = DiagnosisHttpServer(
                    service.board, host=settings.http_host, port=settings.http_port, health=service.health
                )
            except OSError as error:
                await service.stop()
                address = f"{settings.http_host}:{settings.http_port}"
                raise ConfigError(
                    EAGLEEYE_DIAGNOSIS_HTTP, address, f"cannot listen on {address}: {error.strerror or error}"
                ) from error
        service._tasks = [asyncio.create_task(service._consume()), asyncio.create_task(service._tick())]
        _logger.info(
            "diagnosis: %d rules; telemetry from NATS %s on %s; findings on %s.<node>%s",
            len(engine.knowledge.rules),
            ", ".join(nats_settings.urls),
            settings.input_subject,
            settings.subject_prefix,
            "" if logs is None else f"; log events over OTLP ({settings.logs_protocol})",
        )
        if service.http is not None:
            _logger.info("diagnosis report on http://%s:%d/", settings.http_host, service.http.port)
        return service

    def health(self) -> dict[str, Any]:
        """The ``/healthz`` document: NATS state and what the engine took in."""
        nc = self._nc
        stats = self.engine.stats
        return {
            "status": "ok",
            "nats": "connected" if nc is not None and nc.is_connected else "disconnected",
            "nodes": len(self.engine.nodes),
            "active": stats.active,
            "payloads": stats.payloads,
            "malformed": stats.malformed,
            "evaluations": stats.evaluations,
            "published": self.published,
            "publish_failures": self.publish_failures,
        }

    async def stop(self, deadline_s: float = 5.0) -> None:
        """Stop consuming, flush what is queued for NATS and OTLP, close the endpoints; never raises."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        nc, self._nc = self._nc, None
        if nc is not None:
            with contextlib.suppress(nats.errors.Error, OSError, asyncio.TimeoutError):
                await flush(nc, deadline_s / 2)
            await nc.close()
        if self.http is not None:
            self.http.close()
        if self._logger_provider is not None:
            self._logger_provider.shutdown()
        shutdown_meter_provider(self._meter_provider, deadline_s / 2)

    # -- the loop --------------------------------------------------------------------------------------------

    async def _consume(self) -> None:
        nc = await connect_in_background(
            self._nats_settings,
            name=DIAGNOSIS_SERVICE_NAME,
            logger=_logger,
            on_reconnected=self._restate,
            is_closing=lambda: self._closing,
        )
        if nc is None:
            return
        self._nc = nc
        await nc.subscribe(self.settings.input_subject, cb=self._on_telemetry)
        await self._restate()

    async def _on_telemetry(self, msg: Msg) -> None:
        self.engine.ingest_otlp(msg.data)
        await self._evaluate()

    async def _tick(self) -> None:
        next_restatement = time.monotonic() + self.settings.refresh_interval
        while True:
            await asyncio.sleep(_TICK_S)
            try:
                await self._evaluate(devices=tuple(_devices(self.engine)))
                if time.monotonic() >= next_restatement:
                    next_restatement = time.monotonic() + self.settings.refresh_interval
                    await self._restate()
            except Exception:  # the next tick must come whatever this one met
                self._tick_log.warning("diagnosis: a periodic evaluation failed", exc_info=True)

    async def _evaluate(self, *, devices: tuple[DeviceRef, ...] | None = None) -> None:
        async with self._in_order:
            changes = self.engine.evaluate()
            if changes or devices is not None:
                self.board.update(self.engine.active(), changes, devices)
            if changes:
                await self._announce(changes_in_order(changes))

    async def _restate(self) -> None:
        """Publish every active finding again, so a consumer converges without asking."""
        async with self._in_order:
            await self._announce((FindingChange.ACTIVE, finding) for finding in self.board.view.active)

    async def _announce(self, changes: Iterable[tuple[FindingChange, Finding]]) -> None:
        nc = self._nc
        for change, finding in changes:
            if change is not FindingChange.ACTIVE:
                _logger.info("finding %s: %s %s %s", change.value, finding.node, finding.device or "-", finding.fault)
                if self._events is not None:
                    self._events.emit(change, finding)
            if nc is None:
                continue
            try:
                await nc.publish(self.settings.subject(finding.node), encode_message(finding, change), headers=_HEADERS)
                self.published += 1
            except nats.errors.Error as error:
                self.publish_failures += 1
                self._publish_log.warning("diagnosis: a finding could not be published on NATS: %s", error)


def _devices(engine: DiagnosisEngine) -> Iterable[DeviceRef]:
    for node in list(engine.nodes.values()):
        for device in list(node.devices.values()):
            yield (node.name, device.id, device.type)


def _otlp_log_exporter(protocol: str) -> LogRecordExporter:
    """The OTLP log exporter of ``protocol``; it reads its endpoint, headers and TLS from ``OTEL_EXPORTER_OTLP_*``.

    Imported here: gRPC costs a tenth of a second to import, and log events are off by default.
    """
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter  # noqa: PLC0415

        return OTLPLogExporter()
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpExporter  # noqa: PLC0415

    return HttpExporter()


async def run_diagnosis_service(
    engine: DiagnosisEngine,
    *,
    settings: DiagnosisSettings,
    nats_settings: NatsSettings,
    started: Callable[[DiagnosisService], None] | None = None,
) -> None:
    """Run the service until SIGINT or SIGTERM (a Deployment's pod is stopped with SIGTERM), then stop it cleanly.

    Args:
        engine: the engine to feed.
        settings: the service's settings.
        nats_settings: how to reach NATS.
        started: called once the service runs (the CLI prints where it serves).

    Raises:
        ConfigError: as :meth:`DiagnosisService.start`.
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        service = await DiagnosisService.start(engine, settings=settings, nats_settings=nats_settings)
        if started is not None:
            started(service)
        await stop.wait()
        _logger.info("diagnosis: stopping")
        await service.stop()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
