"""What the diagnosis says about a device: a finding (the ARCHITECTURE.md contract) and the changes one evaluation made.

A finding is a frozen value: an evaluation that sees the fault again replaces it with a copy whose ``last_seen`` and
``evidence`` are newer, so a publisher can keep the previous one to compare.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import msgspec

__all__ = ["SEVERITY_ORDER", "Finding", "FindingChanges", "Severity"]


class Severity(str, enum.Enum):
    """How urgent a finding is; ``critical`` means take the device out of service now."""

    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


SEVERITY_ORDER: dict[Severity, int] = {Severity.CRITICAL: 0, Severity.WARNING: 1, Severity.INFO: 2}
"""Sort key, most urgent first."""


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    """One fault on one device (or on the node, ``device`` None), with the action to take.

    Attributes:
        node: the node the telemetry came from.
        device: the device id (GPU UUID, ``npu-<card>-<device>``, or a PCI bus id when only the kernel log named it).
        fault: stable identifier (``xid_79``, ``gpu_temperature_slowdown``): the rule's id, or its id and a code.
        severity: how urgent.
        conclusion: what is wrong, in a sentence, with the numbers.
        action: what to do about it.
        evidence: the observations that triggered it (values, limits, counts, peers).
        first_seen: Unix seconds when the finding opened.
        last_seen: Unix seconds of the last evaluation that saw the condition.
        resolved_at: Unix seconds when it resolved; None while active.
    """

    node: str
    device: str | None
    fault: str
    severity: Severity
    conclusion: str
    action: str
    evidence: dict[str, Any]
    first_seen: float
    last_seen: float
    resolved_at: float | None = None

    def sort_key(self) -> tuple[int, str, str, str]:
        """Severity first, then node, device and fault: the order reports list findings in."""
        return (SEVERITY_ORDER[self.severity], self.node, self.device or "", self.fault)


@dataclass(frozen=True)
class FindingChanges:
    """What one evaluation changed.

    Attributes:
        opened: findings whose condition held long enough to open.
        updated: open findings whose severity, conclusion or evidence changed (not those that only got a newer
            ``last_seen``, so a steady fault publishes nothing new).
        resolved: findings whose condition stayed clear long enough; ``resolved_at`` is set.
    """

    opened: tuple[Finding, ...] = ()
    updated: tuple[Finding, ...] = ()
    resolved: tuple[Finding, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.opened or self.updated or self.resolved)
