"""Compiled rules and the three per-device kinds: threshold, counter rate and device state.

A rule evaluates over one node and appends a :class:`Hit` per fault it sees; it returns the *scope* it judged (the
devices it had data for), so the engine counts a clear evaluation only where the rule could have seen the fault: a
GPU that stopped reporting its temperature neither keeps nor clears a temperature finding. Event, error-code and
anomaly rules are in sibling modules.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from eagleeye_otel.diagnosis._conditions import (
    COMMON_PLACEHOLDERS,
    OPERATORS,
    Selector,
    Template,
    When,
    device_placeholders,
)
from eagleeye_otel.diagnosis._finding import Severity
from eagleeye_otel.diagnosis._rules_limits import Limit
from eagleeye_otel.diagnosis._spec import RateSpec, SignalSpec, StateSpec, ThresholdSpec
from eagleeye_otel.diagnosis._telemetry import DeviceView, NodeView
from eagleeye_otel.errors import ConfigError
from eagleeye_otel.semconv import _hardware as hw

__all__ = [
    "UNKNOWN",
    "DeviceRule",
    "Hit",
    "Memory",
    "Outcome",
    "RateRule",
    "Rule",
    "Scope",
    "StateRule",
    "ThresholdRule",
    "selector",
]

Scope = set[str | None] | None
"""The devices a rule judged (None in the set: the node itself); None for every device."""
Memory = dict[Any, Any]
"""What a rule keeps between evaluations of one node (a baseline); owned by the engine."""

UNKNOWN: Final = object()
"""A device check's answer when the data it needs is missing: neither a hit nor a clear."""

_ID = re.compile(r"[a-z][a-z0-9_]{0,63}")
_DEFAULT_CLEAR: Final = 3
_NODE_METRICS: Final = frozenset(m.name for m in hw.HARDWARE_METRICS if m.sources == (hw.NODE,))
"""Metrics of the node itself (kernel-log counts, the monitor's sources): a rule on one judges the node."""


@dataclass(frozen=True, slots=True)
class Hit:
    """A rule sees a fault on a device this evaluation."""

    device: str | None
    fault: str
    severity: Severity
    conclusion: str
    action: str
    evidence: dict[str, Any]


def selector(spec: SignalSpec, where: str) -> Selector:
    """A :class:`Selector` from its spec."""
    return Selector(spec.metric, spec.attributes, where)


class Rule:
    """What every rule has: its id, the devices it applies to and its hysteresis.

    Args:
        spec: the rule as loaded.
        where: file and key of the rule, for errors.

    Raises:
        ConfigError: a field has a value the rule cannot use.
    """

    kind: ClassVar[str]
    placeholders: ClassVar[frozenset[str]] = frozenset()
    time_dependent: ClassVar[bool] = False
    """Whether its verdict can change with time alone (an event's hold runs out), so it is evaluated without news."""
    default_clear: ClassVar[int] = _DEFAULT_CLEAR
    opens_at_once: ClassVar[bool] = False
    """Whether a finding opens at the first sighting whatever its severity (an event has happened already)."""

    def __init__(self, spec: Any, where: str) -> None:
        if _ID.fullmatch(spec.id) is None:
            raise ConfigError(f"{where}.id", spec.id, "expected lower-case letters, digits and _, starting a letter")
        for key, value, least in (("for", spec.open_after, 1), ("clear", spec.clear, 1), ("clear_s", spec.clear_s, 0)):
            if value is not None and value < least:
                raise ConfigError(f"{where}.{key}", value, f"must be at least {least}")
        self.id: str = spec.id
        self.where = where
        self.when = When(spec.when, f"{where}.when")
        self.open_after: int | None = spec.open_after
        self.clear_after: int = spec.clear or self.default_clear
        self.clear_s: float = spec.clear_s
        self.history_metrics: frozenset[str] = frozenset()
        self.label = {"gpu": "GPU", "npu": "NPU"}.get(spec.when.type or "", "Device")
        """What to call a device the telemetry does not describe."""

    def opens_after(self, severity: Severity) -> int:
        """Evaluations a condition must hold to open: the rule's ``for``, else 1 for critical (and for events) and
        2 otherwise."""
        if self.open_after is not None:
            return self.open_after
        return 1 if severity is Severity.CRITICAL or self.opens_at_once else 2

    def template(self, text: str | None, key: str, extra: frozenset[str] = frozenset()) -> Template:
        """The rule's conclusion or action; ConfigError when it is missing or names what the rule cannot fill."""
        if not text:
            raise ConfigError(f"{self.where}.{key}", text, "missing: every finding needs a conclusion and an action")
        return Template(text, COMMON_PLACEHOLDERS | self.placeholders | extra, f"{self.where}.{key}")

    def evaluate(self, node: NodeView, now: float, hits: list[Hit], memory: Memory) -> Scope:
        """Append the faults seen on ``node`` to ``hits``; return what was judged."""
        raise NotImplementedError


class DeviceRule(Rule):
    """A rule judged device by device, on the devices of the node's latest update it applies to; a threshold on a
    node-level metric judges the node itself (its findings have no device, and it takes no ``when``)."""

    node_level = False

    def evaluate(self, node: NodeView, now: float, hits: list[Hit], memory: Memory) -> Scope:
        if self.node_level:
            found = self.check_node(node)
            if isinstance(found, Hit):
                hits.append(found)
            return set() if found is UNKNOWN else {None}
        scope: set[str | None] = set()
        seq = node.seq
        for device in node.devices.values():
            if device.seq != seq or not self.when.matches(device):
                continue
            found = self.check(node, device)
            if found is UNKNOWN:
                continue
            scope.add(device.id)
            if isinstance(found, Hit):
                hits.append(found)
        return scope

    def check(self, node: NodeView, device: DeviceView) -> object:
        """A :class:`Hit`, None (clear) or :data:`UNKNOWN`."""
        raise NotImplementedError

    def check_node(self, node: NodeView) -> object:
        """As :meth:`check`, for the node itself."""
        raise NotImplementedError


class ThresholdRule(DeviceRule):
    """A current value against a constant or the device's own limit, with optional further comparisons."""

    kind = "threshold"
    placeholders = frozenset({"value", "limit", "base", "margin", "ratio"})

    def __init__(self, spec: ThresholdSpec, where: str) -> None:
        super().__init__(spec, where)
        self.severity = spec.severity
        self.signal = selector(spec.signal, f"{where}.signal")
        self.op = spec.op
        self.compare = OPERATORS[spec.op]
        self.limit = Limit(spec.limit, f"{where}.limit")
        self.also = tuple(
            (selector(c.signal, f"{where}.and[{i}].signal"), c.op, Limit(c.limit, f"{where}.and[{i}].limit"))
            for i, c in enumerate(spec.also)
        )
        self.conclusion = self.template(spec.conclusion, "conclusion")
        self.action = self.template(spec.action, "action")
        self.node_level = self.signal.metric in _NODE_METRICS
        if self.node_level and self.when.constrained:
            raise ConfigError(f"{where}.when", spec.signal.metric, "a rule on a node-level metric takes no when")

    def check(self, node: NodeView, device: DeviceView) -> object:
        return self._check(node, device)

    def check_node(self, node: NodeView) -> object:
        return self._check(node, None)

    def _check(self, node: NodeView, device: DeviceView | None) -> object:
        value = self.signal.total(node, device)
        limit = None if value is None else self.limit.value(node, device)
        if value is None or limit is None:
            return UNKNOWN
        if not self.compare(value, limit):
            return None
        evidence: dict[str, Any] = {"signal": str(self.signal), "value": value, "op": self.op, "limit": limit}
        base = self.limit.base(node, device)
        if self.limit.source is not None:
            evidence["limit_from"] = self.limit.source
            if base != limit:
                evidence["limit_base"] = base
        for signal, op, also_limit in self.also:
            also_value = signal.total(node, device)
            bound = None if also_value is None else also_limit.value(node, device)
            if also_value is None or bound is None:
                return UNKNOWN
            if not OPERATORS[op](also_value, bound):
                return None
            evidence[str(signal)] = also_value
        device_id = None if device is None else device.id
        if device is None:  # what the node-level series says beside the value (error.type: why a source is down)
            evidence["attributes"] = {k: v for s in self.signal.series(node, None) for k, v in s.attributes.items()}
        values = {
            **device_placeholders(node, device, device_id),
            "value": value,
            "limit": limit,
            "base": base,
            "margin": limit - value,
            "ratio": value / limit if limit else math.inf,
        }
        return Hit(
            device_id, self.id, self.severity, self.conclusion.render(values), self.action.render(values), evidence
        )


class RateRule(DeviceRule):
    """How much a counter grew over a window (summed over its matching series), against a constant or a budget."""

    kind = "rate"
    placeholders = frozenset({"increase", "rate", "window_s", "limit", "total"})

    def __init__(self, spec: RateSpec, where: str) -> None:
        super().__init__(spec, where)
        if not spec.window > 0:
            raise ConfigError(f"{where}.window", spec.window, "must be a positive number of seconds")
        self.severity = spec.severity
        self.signal = selector(spec.signal, f"{where}.signal")
        self.window = spec.window
        self.per = {"window": 0.0, "second": 1.0, "minute": 60.0}[spec.per]
        self.op = spec.op
        self.compare = OPERATORS[spec.op]
        self.limit = Limit(spec.limit, f"{where}.limit")
        self.conclusion = self.template(spec.conclusion, "conclusion")
        self.action = self.template(spec.action, "action")
        self.history_metrics = frozenset({self.signal.metric})

    def check(self, node: NodeView, device: DeviceView) -> object:
        series = self.signal.series(node, device)
        if not series:
            return UNKNOWN
        increase, covered, total = 0.0, math.inf, 0.0
        for one in series:
            grown = one.increase(self.window)
            if grown is None:
                return UNKNOWN
            increase += grown[0]
            covered = min(covered, grown[1])
            total += one.value
        limit = self.limit.value(node, device)
        if limit is None or not covered > 0:
            return UNKNOWN
        rate = increase if not self.per else increase / covered * self.per
        if not self.compare(rate, limit):
            return None
        evidence = {
            "signal": str(self.signal),
            "increase": increase,
            "window_s": covered,
            "rate": rate,
            "op": self.op,
            "limit": limit,
            "total": total,
        }
        if self.limit.source is not None:
            evidence["limit_from"] = self.limit.source
        values = {**device_placeholders(node, device, device.id), **evidence}
        return Hit(
            device.id, self.id, self.severity, self.conclusion.render(values), self.action.render(values), evidence
        )


@dataclass(frozen=True)
class Outcome:
    """What a state value means: the fault it names and how to word it."""

    fault: str
    severity: Severity
    conclusion: Template
    action: Template


class StateRule(DeviceRule):
    """A device state (``status``, ``hw.state``, or a metric's value) mapped value by value to a fault."""

    kind = "state"
    placeholders = frozenset({"value", "status", "state"})

    def __init__(self, spec: StateSpec, where: str) -> None:
        super().__init__(spec, where)
        if (spec.property is None) == (spec.signal is None):
            raise ConfigError(f"{where}.property", spec.property, "give either property or signal, not both")
        self.property = spec.property
        self.signal = None if spec.signal is None else selector(spec.signal, f"{where}.signal")
        self.outcomes: dict[str, Outcome] = {}
        for value, outcome in spec.values.items():
            at = f"values.{value}"
            self.outcomes[str(value)] = Outcome(
                outcome.fault or self.id,
                outcome.severity,
                self.template(outcome.conclusion or spec.conclusion, f"{at}.conclusion"),
                self.template(outcome.action or spec.action, f"{at}.action"),
            )

    def value(self, node: NodeView, device: DeviceView) -> str | None:
        """The device's current value of the state, as the ``values`` keys spell it; None when unknown."""
        if self.property == "status":
            return device.status
        if self.property == "state" or self.signal is None:
            return device.state
        read = self.signal.total(node, device)
        return None if read is None else _spell(read)

    def check(self, node: NodeView, device: DeviceView) -> object:
        value = self.value(node, device)
        if value is None:
            return UNKNOWN
        outcome = self.outcomes.get(value)
        return None if outcome is None else self.hit(node, device, device.id, outcome, value, evidence={})

    def hit(
        self,
        node: NodeView,
        device: DeviceView | None,
        device_id: str | None,
        outcome: Outcome,
        value: str,
        *,
        evidence: dict[str, Any],
    ) -> Hit:
        """The hit for ``outcome``, also when an event rule follows this rule (Xid 154 and the recovery action)."""
        evidence = {**evidence, "value": value}
        if self.signal is not None:
            evidence["signal"] = str(self.signal)
        elif self.property is not None:
            evidence["property"] = self.property
        values = {
            **device_placeholders(node, device, device_id, self.label),
            "value": value,
            "status": None if device is None else device.status,
            "state": None if device is None else device.state,
        }
        return Hit(
            device_id,
            outcome.fault,
            outcome.severity,
            outcome.conclusion.render(values),
            outcome.action.render(values),
            evidence,
        )


def _spell(value: float) -> str:
    """A metric value as a ``values`` key: ``2`` for 2.0."""
    return str(int(value)) if value.is_integer() else repr(value)
