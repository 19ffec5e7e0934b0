"""The diagnosis engine: telemetry in (OTLP, kernel-log lines and events, ``--once`` snapshots), findings out.

:meth:`DiagnosisEngine.evaluate` runs the rules over the nodes that reported since the last evaluation (and, for rules
whose verdict runs out with time, over the nodes where they hold a finding) and passes each verdict through
hysteresis: a finding opens after its condition held for the rule's ``for`` evaluations (default 1 for critical, 2
otherwise) and resolves after it was clear for ``clear`` evaluations (default 3; 1 for events, whose ``hold`` already
smooths them) and at least ``clear_s`` seconds. A reading that flaps around a limit therefore keeps one finding open,
only its ``last_seen`` and evidence moving. Nothing here raises on bad input: it is counted in :attr:`stats`.

A node that goes silent is not evaluated again, except for the time-dependent rules that hold a finding on it (an
event's hold runs out): its other findings stay as they were, open or pending. Only when the node cap is full and a
new node arrives does the telemetry forget the nodes silent for ``Limits.node_idle_s``; their findings then resolve
at the next evaluation (``resolved_at`` the time they were forgotten, evidence ``silent_s``: how long the node had
been silent), because nothing would ever update or resolve them and keeping them would let made-up nodes grow the
engine without bound. Their pending counts and anomaly baselines go with them. A node that keeps reporting is never
forgotten, so none of its findings is lost.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from eagleeye_otel.diagnosis._finding import Finding, FindingChanges
from eagleeye_otel.diagnosis._knowledge import KnowledgeBase, load_knowledge_base
from eagleeye_otel.diagnosis._otlp import ingest_request
from eagleeye_otel.diagnosis._rules import Hit, Memory, Rule, Scope
from eagleeye_otel.diagnosis._snapshot import read_snapshot
from eagleeye_otel.diagnosis._telemetry import DEFAULT_LIMITS, Limits, NodeView, Telemetry, gpu_announcement
from eagleeye_otel.log_limiter import LogLimiter
from eagleeye_otel.receivers.hardware._kmsg_parser import MalformedLine, parse_line
from eagleeye_otel.receivers.hardware._model import KernelEvent

__all__ = ["DiagnosisEngine", "EngineStats", "KernelLogCounts"]

_logger = logging.getLogger(__name__)


@dataclass
class EngineStats:
    """Counters of what the engine took in and did (a copy; the engine's own keep counting)."""

    payloads: int = 0
    points: int = 0
    malformed: int = 0
    """Payloads that did not decode, snapshot entries that did not parse."""
    dropped: int = 0
    """Nodes, devices, series or events not kept because a cap was reached."""
    forgotten: int = 0
    """Nodes forgotten after ``Limits.node_idle_s`` of silence to make room for a new node at the cap."""
    kernel_events: int = 0
    snapshots: int = 0
    evaluations: int = 0
    rules_evaluated: int = 0
    rule_failures: int = 0
    opened: int = 0
    resolved: int = 0
    active: int = 0


@dataclass(frozen=True)
class KernelLogCounts:
    """What :meth:`DiagnosisEngine.ingest_kernel_log` read: lines, hardware events, and malformed lines skipped."""

    lines: int
    events: int
    malformed: int


@dataclass
class _Tracker:
    """One (device, fault) of one rule on one node: consecutive hits and clears, and the finding once open."""

    hits: int = 0
    clears: int = 0
    since: float = 0.0
    last_hit: float = 0.0
    finding: Finding | None = None


@dataclass
class _Changes:
    now: float
    opened: list[Finding] = dataclasses.field(default_factory=list)
    updated: list[Finding] = dataclasses.field(default_factory=list)
    resolved: list[Finding] = dataclasses.field(default_factory=list)


class DiagnosisEngine:
    """Keeps a short per-device history and evaluates the knowledge base's rules over it.

    Thread-safe: ingestion and evaluation take one lock, so a NATS callback may ingest while a timer evaluates.

    Args:
        knowledge: the rules; the shipped defaults when None.
        clock: Unix seconds, for tests.
        hysteresis: False opens a finding at its first sighting and resolves it at its first clear evaluation
            (one-shot diagnosis of a saved log or snapshot, which is a single observation).
        limits: caps on what is kept per node and device.
    """

    def __init__(
        self,
        knowledge: KnowledgeBase | None = None,
        *,
        clock: Callable[[], float] = time.time,
        hysteresis: bool = True,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.knowledge = load_knowledge_base() if knowledge is None else knowledge
        self._clock = clock
        self._hysteresis = hysteresis
        self._telemetry = Telemetry(
            limits, self.knowledge.history_metrics, self.knowledge.longest_window_s, on_forget=self._forget
        )
        self._timed = tuple(rule for rule in self.knowledge.rules if rule.time_dependent)
        self._trackers: dict[tuple[str, str], dict[tuple[str | None, str], _Tracker]] = {}
        self._memory: dict[tuple[str, str], Memory] = {}
        self._held: set[str] = set()
        self._forgotten: list[Finding] = []
        """Findings of forgotten nodes, resolved, for the next evaluation to report."""
        self._stats = EngineStats()
        self._lock = threading.Lock()
        self._failures = LogLimiter(_logger)

    @property
    def stats(self) -> EngineStats:
        """What was ingested and evaluated so far, and how many findings are active."""
        with self._lock:
            active = sum(1 for t in self._all_trackers() if t.finding is not None)
            telemetry = self._telemetry
            return dataclasses.replace(
                self._stats, dropped=telemetry.dropped, forgotten=telemetry.forgotten, active=active
            )

    @property
    def nodes(self) -> Mapping[str, NodeView]:
        """The telemetry view of each node (read-only use: for reports and tests)."""
        return self._telemetry.nodes

    def ingest_otlp(self, payload: bytes | ExportMetricsServiceRequest) -> int:
        """Take one OTLP metrics export (protobuf bytes or the decoded request).

        Returns:
            the points kept; 0 for a payload that does not decode, which is counted in ``stats.malformed`` and
            logged (rate-limited), never raised.
        """
        with self._lock:
            self._stats.payloads += 1
            try:
                if isinstance(payload, ExportMetricsServiceRequest):
                    request = payload
                else:
                    request = ExportMetricsServiceRequest.FromString(bytes(payload))
                points = ingest_request(self._telemetry, request, self._clock())
            except Exception as error:  # a payload is input: whatever it holds, it must not stop the service
                self._stats.malformed += 1
                self._failures.warning("diagnosis: skipped a malformed OTLP payload: %r", error)
                return 0
            self._stats.points += points
            return points

    def ingest_kernel_events(self, node: str, events: Iterable[KernelEvent]) -> None:
        """Take parsed kernel-log events of ``node``, each as seen now."""
        with self._lock:
            now = self._clock()
            view = self._telemetry.node(node, now)
            if view is not None:
                self._stats.kernel_events += self._telemetry.ingest_events(view, events, now)

    def ingest_kernel_log(self, node: str, lines: Iterable[str]) -> KernelLogCounts:
        """Parse kernel-log lines (dmesg, ``/dev/kmsg``, syslog or journal text) of ``node`` and take their events.

        Also learns each GPU's UUID from the driver's ``NVRM: GPU at PCI:...`` lines, so findings name the GPU as
        the rest of the telemetry does. A malformed Xid line is skipped and counted.
        """
        events: list[KernelEvent] = []
        count = malformed = 0
        uuids: dict[str, str] = {}
        for line in lines:
            count += 1
            try:
                event = parse_line(line)
            except MalformedLine:
                malformed += 1
                continue
            if event is not None:
                events.append(event)
            elif (announced := gpu_announcement(line)) is not None:
                uuids[announced[0]] = announced[1]
        with self._lock:
            now = self._clock()
            view = self._telemetry.node(node, now)
            if view is not None:
                view.gpu_uuids.update(uuids)
                self._stats.kernel_events += self._telemetry.ingest_events(view, events, now)
        return KernelLogCounts(count, len(events), malformed)

    def ingest_snapshot(self, snapshot: Mapping[str, Any]) -> None:
        """Take a ``hardware-monitor --once --format json`` document (readings, device statuses, kernel-log events).

        Device entries that do not parse are skipped and counted in ``stats.malformed``.

        Raises:
            ConfigError: the document is not such a snapshot (no node name, wrong types at the top level).
        """
        content = read_snapshot(snapshot)
        with self._lock:
            now = self._clock()
            self._stats.snapshots += 1
            self._stats.malformed += content.skipped
            self._stats.points += ingest_request(self._telemetry, content.request, now)
            view = self._telemetry.node(content.node, now)
            if view is None:
                return
            view.updated_at = now
            for device_id, status in content.statuses.items():
                device = view.devices.get(device_id)
                if device is not None and status != "ok":
                    device.status = status
            for event in content.events:
                self._telemetry.record_event(
                    view, event.kind, event.code, event.device, count=event.count, now=now, message=event.message
                )
                self._stats.kernel_events += event.count

    def evaluate(self) -> FindingChanges:
        """Evaluate the rules over what changed; returns the findings opened, updated and resolved."""
        with self._lock:
            now = self._clock()
            changes = _Changes(now)
            changes.resolved.extend(self._forgotten)
            self._forgotten.clear()
            held: set[str] = set()
            for node in self._telemetry.nodes.values():
                if node.dirty:
                    rules: Iterable[Rule] = self.knowledge.rules
                elif node.name in self._held:
                    rules = self._timed
                else:
                    continue
                node.dirty = False
                for rule in rules:
                    self._evaluate(node, rule, changes)
                    if rule.time_dependent and (node.name, rule.id) in self._trackers:
                        held.add(node.name)
            self._held = held
            self._stats.evaluations += 1
            self._stats.opened += len(changes.opened)
            self._stats.resolved += len(changes.resolved)
            return FindingChanges(tuple(changes.opened), tuple(changes.updated), tuple(changes.resolved))

    def active(self) -> list[Finding]:
        """The open findings, severity first, then node, device and fault."""
        with self._lock:
            findings = [t.finding for t in self._all_trackers() if t.finding is not None]
        return sorted(findings, key=Finding.sort_key)

    def _forget(self, node: NodeView, now: float) -> None:
        """The telemetry forgets ``node`` (silent for ``node_idle_s``): resolve its findings, drop the rest."""
        silent_s = now - node.updated_at
        self._held.discard(node.name)
        for rule in self.knowledge.rules:
            key = (node.name, rule.id)
            self._memory.pop(key, None)
            for tracker in self._trackers.pop(key, {}).values():
                if tracker.finding is not None:
                    evidence = {**tracker.finding.evidence, "silent_s": silent_s}
                    self._forgotten.append(msgspec.structs.replace(tracker.finding, evidence=evidence, resolved_at=now))

    def _all_trackers(self) -> Iterable[_Tracker]:
        for trackers in self._trackers.values():
            yield from trackers.values()

    def _evaluate(self, node: NodeView, rule: Rule, changes: _Changes) -> None:
        now = changes.now
        key = (node.name, rule.id)
        hits: list[Hit] = []
        memory = self._memory.get(key, {})
        try:
            scope = rule.evaluate(node, now, hits, memory)
        except Exception:  # a rule that fails on odd data must not stop the others
            self._stats.rule_failures += 1
            self._failures.warning("diagnosis: rule %s failed on node %s", rule.id, node.name, exc_info=True)
            return
        self._stats.rules_evaluated += 1
        if memory:
            self._memory[key] = memory
        trackers = self._trackers.get(key)
        if trackers is None:
            if not hits:
                return
            trackers = self._trackers[key] = {}
        seen = {(hit.device, hit.fault) for hit in hits}
        for hit in hits:
            self._hit(node.name, rule, trackers, hit, changes)
        self._clear(rule, trackers, seen, scope, changes)
        if not trackers:
            del self._trackers[key]

    def _hit(
        self,
        node: str,
        rule: Rule,
        trackers: dict[tuple[str | None, str], _Tracker],
        hit: Hit,
        changes: _Changes,
    ) -> None:
        now = changes.now
        tracker = trackers.get((hit.device, hit.fault))
        if tracker is None:
            tracker = trackers[(hit.device, hit.fault)] = _Tracker(since=now)
        tracker.hits += 1
        tracker.clears = 0
        tracker.last_hit = now
        previous = tracker.finding
        if previous is None:
            if tracker.hits >= (rule.opens_after(hit.severity) if self._hysteresis else 1):
                tracker.finding = Finding(
                    node=node,
                    device=hit.device,
                    fault=hit.fault,
                    severity=hit.severity,
                    conclusion=hit.conclusion,
                    action=hit.action,
                    evidence=hit.evidence,
                    first_seen=tracker.since,
                    last_seen=now,
                )
                changes.opened.append(tracker.finding)
            return
        changed = (previous.severity, previous.conclusion, previous.action, previous.evidence) != (
            hit.severity,
            hit.conclusion,
            hit.action,
            hit.evidence,
        )
        if changed:
            tracker.finding = msgspec.structs.replace(
                previous,
                severity=hit.severity,
                conclusion=hit.conclusion,
                action=hit.action,
                evidence=hit.evidence,
                last_seen=now,
            )
            changes.updated.append(tracker.finding)
        else:
            tracker.finding = msgspec.structs.replace(previous, last_seen=now)

    def _clear(
        self,
        rule: Rule,
        trackers: dict[tuple[str | None, str], _Tracker],
        seen: set[tuple[str | None, str]],
        scope: Scope,
        changes: _Changes,
    ) -> None:
        now = changes.now
        for key, tracker in list(trackers.items()):
            if key in seen or (scope is not None and key[0] not in scope):
                continue
            tracker.hits = 0
            tracker.clears += 1
            if tracker.finding is None:
                del trackers[key]
            elif tracker.clears >= (rule.clear_after if self._hysteresis else 1) and now - tracker.last_hit >= (
                rule.clear_s if self._hysteresis else 0.0
            ):
                changes.resolved.append(msgspec.structs.replace(tracker.finding, resolved_at=now))
                del trackers[key]
