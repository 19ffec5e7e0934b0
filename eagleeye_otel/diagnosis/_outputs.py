"""Where findings go besides the report: NATS messages, metrics and OTel log events.

Every output says the same thing in its medium: a :class:`FindingMessage` is the finding (the ARCHITECTURE.md
contract) plus what happened to it; the log event carries that message as its body; the metrics state the active
findings and each device's resulting ``hw.status``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from typing import Final

import msgspec
from opentelemetry._logs import SeverityNumber
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource

from eagleeye_otel.diagnosis._board import FindingBoard
from eagleeye_otel.diagnosis._engine import EngineStats
from eagleeye_otel.diagnosis._finding import Finding, FindingChanges, Severity
from eagleeye_otel.semconv import _diagnosis as dx
from eagleeye_otel.semconv import _hardware as hw
from eagleeye_otel.version import __version__

__all__ = [
    "FindingChange",
    "FindingEvents",
    "FindingMessage",
    "build_logger_provider",
    "changes_in_order",
    "encode_message",
    "register_diagnosis_metrics",
    "register_intake_metrics",
]

_LOG_SEVERITY: Final = {
    Severity.CRITICAL: SeverityNumber.ERROR,
    Severity.WARNING: SeverityNumber.WARN,
    Severity.INFO: SeverityNumber.INFO,
}


class FindingChange(str, enum.Enum):
    """What happened to a finding, as a message on ``eagle_eye.diagnosis.<node>`` says."""

    OPENED = "opened"
    UPDATED = "updated"
    """Its severity, conclusion or evidence changed."""
    RESOLVED = "resolved"
    """Its condition cleared; ``resolved_at`` is set."""
    ACTIVE = "active"
    """Still open: restated periodically, so a consumer that joined late or missed a message catches up."""


class FindingMessage(Finding, frozen=True, kw_only=True):
    """A finding as published: every field of :class:`Finding`, plus ``change``."""

    change: FindingChange

    @classmethod
    def of(cls, finding: Finding, change: FindingChange) -> FindingMessage:
        """The message announcing ``change`` of ``finding``."""
        return cls(**msgspec.structs.asdict(finding), change=change)


_encoder = msgspec.json.Encoder()


def encode_message(finding: Finding, change: FindingChange) -> bytes:
    """The JSON payload of a finding message."""
    return _encoder.encode(FindingMessage.of(finding, change))


def changes_in_order(changes: FindingChanges) -> Iterator[tuple[FindingChange, Finding]]:
    """Each change of an evaluation: resolutions first, so a fault that changed identity never shows twice."""
    yield from ((FindingChange.RESOLVED, f) for f in changes.resolved)
    yield from ((FindingChange.OPENED, f) for f in changes.opened)
    yield from ((FindingChange.UPDATED, f) for f in changes.updated)


# -- metrics -------------------------------------------------------------------------------------------------


def register_diagnosis_metrics(provider: MeterProvider, board: FindingBoard) -> None:
    """Register the active-finding gauge and the per-device ``hw.status``, both read from ``board`` at collection.

    Every device the board lists gets a status; one with no active finding is ``ok``.
    """
    meter = provider.get_meter(dx.DIAGNOSIS_METER_NAME, __version__)

    def findings(_: CallbackOptions) -> Iterator[Observation]:
        for finding in board.view.active:
            attributes = {
                hw.EAGLEEYE_NODE_NAME: finding.node,
                dx.EAGLEEYE_DIAGNOSIS_FAULT: finding.fault,
                dx.EAGLEEYE_DIAGNOSIS_SEVERITY: finding.severity.value,
            }
            if finding.device is not None:
                attributes[hw.HW_ID] = finding.device
            yield Observation(1, attributes)

    def status(_: CallbackOptions) -> Iterator[Observation]:
        view = board.view
        worst: dict[tuple[str, str], Severity] = {}
        for finding in reversed(view.active):  # severity first, so the most severe is stored last
            if finding.device is not None:
                worst[finding.node, finding.device] = finding.severity
        for node, device, device_type in view.devices:
            severity = worst.get((node, device))
            state = "ok" if severity is None else dx.SEVERITY_STATES[severity.value]
            base = {hw.EAGLEEYE_NODE_NAME: node, hw.HW_ID: device, hw.HW_TYPE: device_type}
            for candidate in hw.HW_STATES:
                yield Observation(int(candidate == state), {**base, hw.HW_STATE: candidate})

    meter.create_observable_gauge(
        dx.EAGLEEYE_DIAGNOSIS_FINDINGS,
        [findings],
        unit="{finding}",
        description="1 per active finding, by node, device, fault and severity.",
    )
    meter.create_observable_up_down_counter(
        dx.HW_STATUS,
        [status],
        unit="1",
        description="1 for the device's state as the diagnosis judges it (its worst active finding), else 0.",
    )


def register_intake_metrics(provider: MeterProvider, stats: Callable[[], EngineStats]) -> None:
    """Register ``eagleeye.diagnosis.rejected``, read from the engine's counters at collection.

    Args:
        provider: where the counter goes.
        stats: the engine's counters (``DiagnosisEngine.stats``); thread-safe.
    """
    meter = provider.get_meter(dx.DIAGNOSIS_METER_NAME, __version__)

    def rejected(_: CallbackOptions) -> Iterator[Observation]:
        counts = stats()
        yield Observation(counts.malformed, {dx.EAGLEEYE_DIAGNOSIS_REASON: dx.REJECTED_MALFORMED})
        yield Observation(counts.dropped, {dx.EAGLEEYE_DIAGNOSIS_REASON: dx.REJECTED_DROPPED})

    meter.create_observable_counter(
        dx.EAGLEEYE_DIAGNOSIS_REJECTED,
        [rejected],
        unit="{item}",
        description="Telemetry not taken in: malformed payloads, and points or other items dropped.",
    )


# -- OTel log events -----------------------------------------------------------------------------------------


class FindingEvents:
    """Emits one OTel log event per finding change, the finding message as its body.

    Args:
        provider: the logger provider the events go through (its processors export them).
    """

    def __init__(self, provider: LoggerProvider) -> None:
        self._logger = provider.get_logger(dx.DIAGNOSIS_METER_NAME, __version__)

    def emit(self, change: FindingChange, finding: Finding) -> None:
        """Emit the event of ``change``; a resolution is logged at INFO whatever the finding's severity."""
        attributes = {
            hw.EAGLEEYE_NODE_NAME: finding.node,
            dx.EAGLEEYE_DIAGNOSIS_FAULT: finding.fault,
            dx.EAGLEEYE_DIAGNOSIS_SEVERITY: finding.severity.value,
            dx.EAGLEEYE_DIAGNOSIS_CHANGE: change.value,
        }
        if finding.device is not None:
            attributes[hw.HW_ID] = finding.device
        severity = SeverityNumber.INFO if change is FindingChange.RESOLVED else _LOG_SEVERITY[finding.severity]
        at = finding.resolved_at if finding.resolved_at is not None else finding.last_seen
        self._logger.emit(
            event_name=dx.EAGLEEYE_DIAGNOSIS_FINDING_EVENT,
            timestamp=int(at * 1e9),
            severity_number=severity,
            severity_text=severity.name,
            body=msgspec.to_builtins(FindingMessage.of(finding, change)),
            attributes=attributes,
        )


def build_logger_provider(exporter: LogRecordExporter, resource: Resource) -> LoggerProvider:
    """A logger provider that batches records to ``exporter``; shut it down to flush."""
    provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    return provider
