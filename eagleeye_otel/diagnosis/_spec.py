"""The rule file format as typed structures: what a YAML rule may say, checked field by field on load.

Unknown fields are errors (a misspelt ``treshold`` must not silently do nothing), and the ``kind`` field picks the
structure. ``docs/diagnosis.md`` describes each field; the compiled rules are in :mod:`._rules` and its siblings.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from eagleeye_otel.diagnosis._finding import Severity

__all__ = [
    "AnomalySpec",
    "BudgetSpec",
    "ConditionSpec",
    "ErrorCodeSpec",
    "EventEntry",
    "EventSpec",
    "LevelSpec",
    "LimitSpec",
    "NamedCode",
    "RateSpec",
    "RuleSpec",
    "SignalSpec",
    "StateOutcome",
    "StateSpec",
    "ThresholdSpec",
    "WhenSpec",
]

Attributes = dict[str, str | list[str]]
Op = Literal[">", ">=", "<", "<=", "==", "!="]


class SignalSpec(msgspec.Struct, forbid_unknown_fields=True):
    """A hardware metric of the device, narrowed by attribute values; the matching series add up."""

    metric: str
    attributes: Attributes = {}


class LimitSpec(msgspec.Struct, forbid_unknown_fields=True):
    """A limit read from another series of the same device: ``value * factor + offset``."""

    metric: str
    attributes: Attributes = {}
    factor: float = 1.0
    offset: float = 0.0


class BudgetSpec(msgspec.Struct, forbid_unknown_fields=True):
    """A limit looked up in ``table`` by one series' value, times another's (replays per lane per PCIe gen)."""

    lookup: SignalSpec
    table: dict[int, float]
    times: SignalSpec | None = None
    round: Literal["ceil", "floor", "none"] = "none"


class ConditionSpec(msgspec.Struct, forbid_unknown_fields=True):
    """One more comparison that must hold too (``and:`` of a threshold rule)."""

    signal: SignalSpec
    op: Op
    limit: float | LimitSpec


class WhenSpec(msgspec.Struct, forbid_unknown_fields=True):
    """Which devices a rule applies to (see :class:`~._conditions.When`)."""

    type: Literal["gpu", "npu"] | None = None
    vendor: str | None = None
    model: str | list[str] | None = None
    driver: str | None = None
    firmware: str | None = None


class _Rule(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, tag_field="kind"):
    id: str
    enabled: bool = True
    when: WhenSpec = msgspec.field(default_factory=WhenSpec)
    open_after: int | None = msgspec.field(name="for", default=None)
    clear: int | None = None
    clear_s: float = 0.0
    conclusion: str | None = None
    action: str | None = None


class ThresholdSpec(_Rule, tag="threshold"):
    """A current value compared with a constant or with the device's own limit."""

    severity: Severity
    signal: SignalSpec
    op: Op
    limit: float | LimitSpec
    also: list[ConditionSpec] = msgspec.field(name="and", default_factory=list)


class RateSpec(_Rule, tag="rate"):
    """How much a counter grew over a window, compared with a constant or a budget."""

    severity: Severity
    signal: SignalSpec
    window: float = 60.0
    per: Literal["window", "second", "minute"] = "window"
    op: Op = ">"
    limit: float | BudgetSpec = 0.0


class StateOutcome(msgspec.Struct, forbid_unknown_fields=True):
    """What one value of a state means."""

    severity: Severity
    fault: str | None = None
    conclusion: str | None = None
    action: str | None = None


class StateSpec(_Rule, tag="state"):
    """A device state (``status``, ``hw.state``, or a metric's value) mapped value by value to an outcome."""

    values: dict[str, StateOutcome]
    property: Literal["status", "state"] | None = None
    signal: SignalSpec | None = None


class EventEntry(msgspec.Struct, forbid_unknown_fields=True):
    """What one event code means (one Xid)."""

    severity: Severity
    name: str = ""
    conclusion: str | None = None
    action: str | None = None
    hold: float | None = None
    secondary: bool = False
    follow: str | None = None
    critical_if: str | None = None


class EventSpec(_Rule, tag="event"):
    """Events (Xid, SXid) looked up in a catalog; a finding stays ``hold`` seconds after the last event."""

    source: Literal["xid", "sxid"]
    codes: dict[str, EventEntry]
    default: EventEntry | None = None
    hold: float = 3600.0


class LevelSpec(msgspec.Struct, forbid_unknown_fields=True):
    """One fault handling level of the Ascend tables, and what it asks for."""

    severity: Severity
    conclusion: str
    action: str


class NamedCode(msgspec.Struct, forbid_unknown_fields=True):
    """An error code with its own finding (HBM isolated rows, heartbeat lost), not only its level's."""

    level: str
    fault: str
    severity: Severity | None = None
    conclusion: str | None = None
    action: str | None = None


class ErrorCodeSpec(_Rule, tag="error_code"):
    """Ascend error codes (active on a chip, or in the kernel log) by fault handling level."""

    levels: dict[str, LevelSpec]
    codes: dict[str, str | NamedCode]
    unknown_level: str
    unknown_level_major: str
    hold: float = 3600.0
    fault_code_file: str | None = None


class AnomalySpec(_Rule, tag="anomaly"):
    """A value far from the device's peers under the same load, or from its own recent baseline."""

    severity: Severity
    signal: SignalSpec
    compare: Literal["peers", "baseline"]
    min_delta: float
    direction: Literal["above", "below", "both"] = "above"
    min_ratio: float = 0.0
    load: SignalSpec | None = None
    load_within: float = 0.1
    min_peers: int = 2
    samples: int = 120
    min_samples: int = 30
    sigmas: float = 4.0


RuleSpec = ThresholdSpec | RateSpec | StateSpec | EventSpec | ErrorCodeSpec | AnomalySpec
