"""Catalog rules: NVIDIA Xid / SXid events, and Ascend error codes by fault handling level.

An event is a moment, not a state: its finding stays active ``hold`` seconds after the last event, then clears. An
Ascend error code is both: DCMI reports the codes a chip holds now (a state, cleared when the code goes away), and
the kernel log reports some as lines (events, held).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from eagleeye_otel.diagnosis._conditions import Template, device_placeholders
from eagleeye_otel.diagnosis._finding import Severity
from eagleeye_otel.diagnosis._rules import Hit, Memory, Outcome, Rule, Scope, StateRule
from eagleeye_otel.diagnosis._spec import ErrorCodeSpec, EventEntry, EventSpec, NamedCode
from eagleeye_otel.diagnosis._telemetry import NVML_XID, DeviceView, EventRecord, NodeView
from eagleeye_otel.errors import ConfigError
from eagleeye_otel.receivers.hardware._model import KernelEventKind
from eagleeye_otel.semconv import _hardware as hw

__all__ = ["ErrorCodeRule", "EventRule", "normalize_code"]

_SOURCES: Final = {
    "xid": frozenset({NVML_XID, KernelEventKind.XID.value, KernelEventKind.FALLEN_OFF_BUS.value}),
    "sxid": frozenset({KernelEventKind.SXID.value}),
}
_RECOVERY_IN_MESSAGE = re.compile(r"\bto (0x[0-9a-fA-F]{1,8}|\d{1,3})\b")
"""The new recovery action in Xid 154's text: ``... changed from 0x0 (None) to 0x2 (Node Reboot Required)``."""
_HEX = re.compile(r"(?:0x)?([0-9a-fA-F]{1,16})")


@dataclass(frozen=True)
class _Entry:
    severity: Severity
    name: str
    conclusion: Template
    action: Template
    hold: float
    secondary: bool
    follow: str | None
    critical_if: re.Pattern[str] | None


class EventRule(Rule):
    """Xid (NVML and kernel log, "fallen off the bus" as 79) or SXid events, looked up in a catalog.

    A ``secondary`` code (Xid 45, the driver's cleanup after another error) opens a finding only when no other code
    of the catalog is active on the device; otherwise it is named in their evidence. A code that ``follow``s a
    state rule (Xid 154: the recovery action changed) takes its outcome from that rule's value for the device,
    read from telemetry or, failing that, from the event's text.
    """

    kind = "event"
    placeholders = frozenset({"code", "name", "count", "message", "also"})
    time_dependent = True
    default_clear = 1
    opens_at_once = True

    def __init__(self, spec: EventSpec, where: str) -> None:
        super().__init__(spec, where)
        self.kinds = _SOURCES[spec.source]
        self.label = "GPU" if spec.source == "xid" else "NVSwitch"
        self.codes = {str(code): self._entry(entry, spec, f"codes.{code}") for code, entry in spec.codes.items()}
        self.default = None if spec.default is None else self._entry(spec.default, spec, "default")
        self.follows: dict[str, StateRule] = {}

    def _entry(self, entry: EventEntry, spec: EventSpec, key: str) -> _Entry:
        hold = spec.hold if entry.hold is None else entry.hold
        if not hold > 0:
            raise ConfigError(f"{self.where}.{key}.hold", hold, "must be a positive number of seconds")
        try:
            critical_if = None if entry.critical_if is None else re.compile(entry.critical_if)
        except re.error as error:
            raise ConfigError(f"{self.where}.{key}.critical_if", entry.critical_if, str(error)) from error
        return _Entry(
            entry.severity,
            entry.name,
            self.template(entry.conclusion or spec.conclusion, f"{key}.conclusion"),
            self.template(entry.action or spec.action, f"{key}.action"),
            hold,
            entry.secondary,
            entry.follow,
            critical_if,
        )

    def link(self, rules: dict[str, Rule]) -> None:
        """Resolve ``follow`` to the state rules it names; ConfigError when one is not a state rule."""
        for code, entry in self.codes.items():
            if entry.follow is not None:
                target = rules.get(entry.follow)
                if not isinstance(target, StateRule):
                    raise ConfigError(f"{self.where}.codes.{code}.follow", entry.follow, "names no state rule")
                self.follows[code] = target

    def evaluate(self, node: NodeView, now: float, hits: list[Hit], memory: Memory) -> Scope:
        groups: dict[tuple[str | None, str], list[EventRecord]] = defaultdict(list)
        for record in node.events.values():
            if record.kind not in self.kinds:
                continue
            entry = self.codes.get(record.code, self.default)
            if entry is not None and now - record.last_seen <= entry.hold:
                groups[(node.device_of(record), record.code)].append(record)
        primary: dict[str | None, list[str]] = defaultdict(list)
        secondary: dict[str | None, list[str]] = defaultdict(list)
        for device_id, code in groups:
            entry = self.codes.get(code, self.default)
            (secondary if entry is not None and entry.secondary else primary)[device_id].append(code)
        for (device_id, code), records in groups.items():
            entry = self.codes.get(code, self.default)
            if entry is None or (entry.secondary and primary.get(device_id)):
                continue
            device = node.devices.get(device_id) if device_id is not None else None
            if not self.when.applies(device):
                continue
            also = sorted(secondary.get(device_id, ()), key=_number) if not entry.secondary else []
            hits.append(self._hit(node, device_id, code, entry, records, also=also))
        return None

    def _hit(
        self,
        node: NodeView,
        device_id: str | None,
        code: str,
        entry: _Entry,
        records: list[EventRecord],
        *,
        also: list[str],
    ) -> Hit:
        last = max(records, key=lambda record: record.last_seen)
        message = next((r.message for r in sorted(records, key=lambda r: -r.last_seen) if r.message), None)
        evidence: dict[str, Any] = {
            "code": code,
            "count": sum(record.count for record in records),
            "first_event": min(record.first_seen for record in records),
            "last_event": last.last_seen,
            "sources": sorted({record.kind for record in records}),
        }
        if entry.name:
            evidence["name"] = entry.name
        if last.uptime_s is not None:
            evidence["kernel_time_s"] = last.uptime_s
        if message is not None:
            evidence["message"] = message
        if also:
            evidence["also"] = also
        device = None if device_id is None else node.devices.get(device_id)
        follow = self.follows.get(code)
        if follow is not None:
            followed = self._followed(node, device, follow, message)
            if followed is not None:
                value, outcome = followed
                hit = follow.hit(node, device, device_id, outcome, value, evidence=evidence)
                return Hit(device_id, f"{self.id}_{code}", hit.severity, hit.conclusion, hit.action, hit.evidence)
        values = {
            **device_placeholders(node, device, device_id, self.label),
            **evidence,
            "name": entry.name,
            "message": message or "",
            "also": ", ".join(also) or "none",
        }
        escalated = entry.critical_if is not None and message is not None and entry.critical_if.search(message)
        return Hit(
            device_id,
            f"{self.id}_{code}",
            Severity.CRITICAL if escalated else entry.severity,
            entry.conclusion.render(values),
            entry.action.render(values),
            evidence,
        )

    @staticmethod
    def _followed(
        node: NodeView, device: DeviceView | None, follow: StateRule, message: str | None
    ) -> tuple[str, Outcome] | None:
        value = None if device is None or device.seq != node.seq else follow.value(node, device)
        if value is None and message is not None and (found := _RECOVERY_IN_MESSAGE.search(message)) is not None:
            value = str(int(found[1], 0))
        outcome = None if value is None else follow.outcomes.get(value)
        return None if outcome is None or value is None else (value, outcome)


def _number(code: str) -> tuple[int, str]:
    return (int(code), code) if code.isdigit() else (1 << 62, code)


def normalize_code(code: str) -> str:
    """An Ascend code as the monitor writes it (``0x`` and at least 8 upper-case hex digits); named codes
    (``device_dead``) as they are."""
    match = _HEX.fullmatch(code.strip())
    return code.strip() if match is None else f"0x{int(match[1], 16):08X}"


@dataclass(frozen=True)
class _Level:
    name: str
    rank: int
    fault: str
    severity: Severity
    conclusion: Template
    action: Template


class ErrorCodeRule(Rule):
    """Ascend error codes by fault handling level: one finding per chip and level, or per named code.

    A code the table does not list takes ``unknown_level``, or ``unknown_level_major`` while the chip's DCMI health
    is major or critical, as MindCluster does.
    """

    kind = "error_code"
    placeholders = frozenset({"codes", "level", "count", "health", "message"})
    time_dependent = True
    opens_at_once = True

    def __init__(self, spec: ErrorCodeSpec, where: str) -> None:
        super().__init__(spec, where)
        self.label = "NPU"
        if not spec.hold > 0:
            raise ConfigError(f"{where}.hold", spec.hold, "must be a positive number of seconds")
        self.hold = spec.hold
        self.levels = {
            name: _Level(
                name,
                rank,
                f"{self.id}_{_snake(name)}",
                level.severity,
                self.template(level.conclusion, f"levels.{name}.conclusion"),
                self.template(level.action, f"levels.{name}.action"),
            )
            for rank, (name, level) in enumerate(spec.levels.items())
        }
        self.table: dict[str, str] = {}
        self.named: dict[str, _Level] = {}
        for raw, entry in spec.codes.items():
            self._add(normalize_code(str(raw)), entry, f"codes.{raw}")
        if spec.fault_code_file is not None:
            self._add_file(Path(spec.fault_code_file), f"{where}.fault_code_file")
        self.unknown = self._level(spec.unknown_level, "unknown_level")
        self.unknown_major = self._level(spec.unknown_level_major, "unknown_level_major")

    def _level(self, name: str, key: str) -> _Level:
        level = self.levels.get(name)
        if level is None:
            raise ConfigError(f"{self.where}.{key}", name, f"not one of the levels: {', '.join(self.levels)}")
        return level

    def _add(self, code: str, entry: str | NamedCode, key: str) -> None:
        if isinstance(entry, str):
            self.table[code] = self._level(entry, key).name
            return
        level = self._level(entry.level, f"{key}.level")
        self.table[code] = level.name
        self.named[code] = _Level(
            level.name,
            level.rank,
            entry.fault,
            entry.severity or level.severity,
            self.template(entry.conclusion, f"{key}.conclusion") if entry.conclusion else level.conclusion,
            self.template(entry.action, f"{key}.action") if entry.action else level.action,
        )

    def _add_file(self, path: Path, where: str) -> None:
        """Levels from a MindCluster ``faultCode.json``; a code it lists under two levels takes the worse one."""
        from_file: dict[str, str] = {}
        for code, level in _fault_code_file(path, where):
            rank = self._level(level, f"fault_code_file {path}: {level}Codes").rank
            if code not in from_file or self.levels[from_file[code]].rank < rank:
                from_file[code] = level
        self.table.update(from_file)

    def classify(self, code: str, health: float | None) -> _Level:
        """The finding a code belongs to: its named entry, its level, or the unknown-code level."""
        named = self.named.get(code)
        if named is not None:
            return named
        level = self.table.get(code)
        if level is not None:
            return self.levels[level]
        return self.unknown_major if health is not None and health >= 2 else self.unknown

    def evaluate(self, node: NodeView, now: float, hits: list[Hit], memory: Memory) -> Scope:
        scope: set[str | None] = set()
        found: dict[tuple[str | None, str], tuple[_Level, dict[str, Any]]] = {}
        healths: dict[str | None, float | None] = {}
        for device in node.devices.values():
            if device.type != hw.HW_TYPE_NPU or device.readings_seq != node.seq or not self.when.matches(device):
                continue
            scope.add(device.id)
            healths[device.id] = next((s.value for s in node.current(device, hw.EAGLEEYE_HW_NPU_HEALTH)), None)
            for series in node.current(device, hw.EAGLEEYE_HW_NPU_ERROR_CODE_ACTIVE):
                code = series.attributes.get(hw.EAGLEEYE_HW_NPU_ERROR_CODE)
                if series.value and code:
                    self._note(
                        found, device.id, normalize_code(code), healths[device.id], count=1, source="dcmi", message=None
                    )
        for record in node.events.values():
            if record.kind != KernelEventKind.ASCEND.value:
                continue
            device_id = node.device_of(record)
            scope.add(device_id)
            if now - record.last_seen <= self.hold:
                self._note(
                    found,
                    device_id,
                    normalize_code(record.code),
                    healths.get(device_id),
                    count=record.count,
                    source="kernel_log",
                    message=record.message,
                )
        for (device_id, _), (level, evidence) in found.items():
            described = None if device_id is None else node.devices.get(device_id)
            if not self.when.applies(described):
                continue
            values = {
                **device_placeholders(node, described, device_id, self.label),
                **evidence,
                "codes": ", ".join(evidence["codes"]),
                "message": evidence.get("message", ""),
            }
            hits.append(
                Hit(
                    device_id,
                    level.fault,
                    level.severity,
                    level.conclusion.render(values),
                    level.action.render(values),
                    evidence,
                )
            )
        return scope

    def _note(
        self,
        found: dict[tuple[str | None, str], tuple[_Level, dict[str, Any]]],
        device_id: str | None,
        code: str,
        health: float | None,
        *,
        count: int,
        source: str,
        message: str | None,
    ) -> None:
        level = self.classify(code, health)
        key = (device_id, level.fault)
        if key not in found:
            found[key] = (level, {"level": level.name, "codes": [], "count": 0, "sources": [], "health": health})
        evidence = found[key][1]
        if code not in evidence["codes"]:
            evidence["codes"].append(code)
        evidence["count"] += count
        if source not in evidence["sources"]:
            evidence["sources"].append(source)
        if message is not None:
            evidence["message"] = message


def _snake(name: str) -> str:
    """``RestartNPU`` -> ``restart_npu``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _fault_code_file(path: Path, where: str) -> list[tuple[str, str]]:
    """(code, level) pairs from a MindCluster ``faultCode.json`` (``{"RestartNPUCodes": ["80E18005"], ...}``)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as error:  # RecursionError: JSON nested too deep
        raise ConfigError(where, str(path), f"cannot read it: {error}") from error
    if not isinstance(document, dict):
        raise ConfigError(where, str(path), "expected an object of <Level>Codes lists")
    pairs = []
    for key, codes in document.items():
        if not key.endswith("Codes") or not isinstance(codes, list):
            raise ConfigError(f"{where} {path}", key, "expected <Level>Codes: a list of hex codes")
        pairs += [(normalize_code(str(code)), key.removesuffix("Codes")) for code in codes]
    return pairs
