"""Names the diagnosis service reports under: its metrics, their attributes, and its OTel log event.

The device's verdict reuses the upstream ``hw.status`` (``hw.id``, ``hw.type``, ``hw.state``), so a dashboard built
for the hardware monitor's ``hw.status`` shows the diagnosis by switching the job; everything else is
``eagleeye.diagnosis.*``.
"""

from __future__ import annotations

from typing import Final

from eagleeye_otel.semconv._hardware import HW_STATUS

__all__ = [
    "DIAGNOSIS_METER_NAME",
    "EAGLEEYE_DIAGNOSIS_CHANGE",
    "EAGLEEYE_DIAGNOSIS_FAULT",
    "EAGLEEYE_DIAGNOSIS_FINDINGS",
    "EAGLEEYE_DIAGNOSIS_FINDING_EVENT",
    "EAGLEEYE_DIAGNOSIS_REASON",
    "EAGLEEYE_DIAGNOSIS_REJECTED",
    "EAGLEEYE_DIAGNOSIS_SEVERITY",
    "HW_STATUS",
    "REJECTED_DROPPED",
    "REJECTED_MALFORMED",
    "SEVERITY_STATES",
]

DIAGNOSIS_METER_NAME: Final = "eagleeye_otel.diagnosis"

# -- attributes ----------------------------------------------------------------------------------------------
EAGLEEYE_DIAGNOSIS_FAULT: Final = "eagleeye.diagnosis.fault"
"""The finding's stable fault identifier (``xid_79``)."""
EAGLEEYE_DIAGNOSIS_SEVERITY: Final = "eagleeye.diagnosis.severity"
"""``critical``, ``warning`` or ``info``."""
EAGLEEYE_DIAGNOSIS_CHANGE: Final = "eagleeye.diagnosis.change"
"""What happened to a finding: ``opened``, ``updated``, ``resolved``, or ``active`` (a periodic restatement)."""
EAGLEEYE_DIAGNOSIS_REASON: Final = "eagleeye.diagnosis.reason"
"""Why telemetry was rejected: :data:`REJECTED_MALFORMED` or :data:`REJECTED_DROPPED`."""
REJECTED_MALFORMED: Final = "malformed"
"""Payloads that are not an OTLP metrics export (not protobuf, truncated, nested too deep) and snapshot entries
that do not parse."""
REJECTED_DROPPED: Final = "dropped"
"""Points, devices, series, nodes or events not kept: a cap was reached, a value was not a finite number, or a
name or attribute was too long."""

# -- metrics -------------------------------------------------------------------------------------------------
EAGLEEYE_DIAGNOSIS_FINDINGS: Final = "eagleeye.diagnosis.findings"
"""Gauge, ``{finding}``: 1 per active finding, with ``eagleeye.node.name``, ``hw.id`` (absent for a node-wide
finding), the fault and the severity; a resolved finding's series disappears. Sum by severity to count."""

EAGLEEYE_DIAGNOSIS_REJECTED: Final = "eagleeye.diagnosis.rejected"
"""Counter, ``{item}``: telemetry the service did not take in, by ``eagleeye.diagnosis.reason``; payloads for
``malformed``, points and the like for ``dropped``. Never raised, never retained: this is where hostile or broken
input shows."""

SEVERITY_STATES: Final = {"critical": "failed", "warning": "degraded", "info": "ok"}
"""The ``hw.state`` of a device by its worst active finding; a device with none is ``ok``."""

# -- events --------------------------------------------------------------------------------------------------
EAGLEEYE_DIAGNOSIS_FINDING_EVENT: Final = "eagleeye.diagnosis.finding"
"""OTel log event name of a finding that opened, changed or resolved; its body is the finding."""
