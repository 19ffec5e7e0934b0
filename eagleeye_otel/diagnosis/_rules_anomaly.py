"""Anomaly rules: a device that departs from its peers under the same load, or from its own recent baseline.

Absolute limits miss a GPU that runs 15 °C hotter than its seven siblings at the same utilisation, well below its
slowdown threshold: a failing fan, dried thermal paste, a blocked air path. Peers are the node's other devices of the
same type and model whose load is within ``load_within`` of this one's; the reference is their median, so one bad
peer does not move it. The baseline is an exponentially weighted mean and variance of the device's own readings,
which stops learning while the device is anomalous, so a slow drift into trouble is not absorbed.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from eagleeye_otel.diagnosis._conditions import Selector, device_placeholders
from eagleeye_otel.diagnosis._rules import Hit, Memory, Rule, Scope, selector
from eagleeye_otel.diagnosis._spec import AnomalySpec
from eagleeye_otel.diagnosis._telemetry import DeviceView, NodeView
from eagleeye_otel.errors import ConfigError
from eagleeye_otel.semconv import _hardware as hw

__all__ = ["AnomalyRule"]


class AnomalyRule(Rule):
    """A value far from a reference: the median of the device's peers, or its own baseline."""

    kind = "anomaly"
    placeholders = frozenset({"value", "reference", "delta", "peers", "load", "sigmas"})

    def __init__(self, spec: AnomalySpec, where: str) -> None:
        super().__init__(spec, where)
        for key, value, least in (("min_delta", spec.min_delta, 0.0), ("min_ratio", spec.min_ratio, 0.0)):
            if value < least:
                raise ConfigError(f"{where}.{key}", value, f"must be at least {least}")
        for key, count in (("min_peers", spec.min_peers), ("samples", spec.samples), ("min_samples", spec.min_samples)):
            if count < 1:
                raise ConfigError(f"{where}.{key}", count, "must be at least 1")
        if spec.compare == "baseline" and spec.load is not None:
            raise ConfigError(f"{where}.load", spec.load.metric, "only a peers comparison takes a load")
        self.severity = spec.severity
        self.signal = selector(spec.signal, f"{where}.signal")
        self.peers = spec.compare == "peers"
        self.direction = spec.direction
        self.min_delta, self.min_ratio = spec.min_delta, spec.min_ratio
        self.load: Selector | None = None if spec.load is None else selector(spec.load, f"{where}.load")
        self.load_within, self.min_peers = spec.load_within, spec.min_peers
        self.alpha = 2.0 / (spec.samples + 1)
        self.min_samples, self.sigmas = spec.min_samples, spec.sigmas
        self.conclusion = self.template(spec.conclusion, "conclusion")
        self.action = self.template(spec.action, "action")

    def evaluate(self, node: NodeView, now: float, hits: list[Hit], memory: Memory) -> Scope:
        readings: dict[str, tuple[DeviceView, float, float | None]] = {}
        for device in node.devices.values():
            if device.seq != node.seq or not self.when.matches(device):
                continue
            value = self.signal.total(node, device)
            load = None if self.load is None else self.load.total(node, device)
            if value is not None and (self.load is None or load is not None):
                readings[device.id] = (device, value, load)
        if self.peers:
            return self._against_peers(node, readings, hits)
        return self._against_baseline(node, readings, hits, memory)

    def _departs(self, delta: float, reference: float) -> bool:
        if (self.direction == "above" and delta <= 0) or (self.direction == "below" and delta >= 0):
            return False
        return abs(delta) >= self.min_delta and abs(delta) >= self.min_ratio * abs(reference)

    def _against_peers(
        self, node: NodeView, readings: dict[str, tuple[DeviceView, float, float | None]], hits: list[Hit]
    ) -> Scope:
        scope: set[str | None] = set()
        for device_id, (device, value, load) in readings.items():
            model = device.description.get(hw.HW_MODEL)
            peers = {
                other_id: other_value
                for other_id, (other, other_value, other_load) in readings.items()
                if other_id != device_id
                and other.type == device.type
                and other.description.get(hw.HW_MODEL) == model
                and (load is None or other_load is None or abs(other_load - load) <= self.load_within)
            }
            if len(peers) < self.min_peers:
                continue
            scope.add(device_id)
            reference = statistics.median(peers.values())
            delta = value - reference
            if self._departs(delta, reference):
                evidence: dict[str, Any] = {
                    "signal": str(self.signal),
                    "value": value,
                    "reference": reference,
                    "delta": delta,
                    "peers": len(peers),
                    "peer_values": peers,
                }
                if self.load is not None:
                    evidence.update(load=load, load_signal=str(self.load), load_within=self.load_within)
                hits.append(self._hit(node, device, evidence))
        return scope

    def _against_baseline(
        self,
        node: NodeView,
        readings: dict[str, tuple[DeviceView, float, float | None]],
        hits: list[Hit],
        memory: Memory,
    ) -> Scope:
        scope: set[str | None] = set()
        for device_id, (device, value, _) in readings.items():
            scope.add(device_id)
            updated_at = max(series.time for series in self.signal.series(node, device))
            known = memory.get(device_id)
            if known is None:
                memory[device_id] = (1, value, 0.0, updated_at)
                continue
            count, mean, variance, seen_at = known
            delta = value - mean
            deviation = math.sqrt(variance)
            sigmas = abs(delta) / deviation if deviation > 0 else math.inf
            if count >= self.min_samples and sigmas >= self.sigmas and self._departs(delta, mean):
                evidence = {
                    "signal": str(self.signal),
                    "value": value,
                    "reference": mean,
                    "delta": delta,
                    "sigmas": sigmas,
                    "baseline_samples": count,
                }
                hits.append(self._hit(node, device, evidence))
            elif updated_at != seen_at:  # learn each reading once, and nothing while it is anomalous
                step = self.alpha * delta
                memory[device_id] = (count + 1, mean + step, (1 - self.alpha) * (variance + delta * step), updated_at)
        return scope

    def _hit(self, node: NodeView, device: DeviceView, evidence: dict[str, Any]) -> Hit:
        values = {"load": None, "sigmas": None, **device_placeholders(node, device, device.id), **evidence}
        return Hit(
            device.id, self.id, self.severity, self.conclusion.render(values), self.action.render(values), evidence
        )
