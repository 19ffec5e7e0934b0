"""A rule's limit: a constant, another series of the same device, or a budget looked up by one series' value."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from eagleeye_otel.diagnosis._conditions import Selector
from eagleeye_otel.diagnosis._spec import BudgetSpec, LimitSpec, SignalSpec
from eagleeye_otel.diagnosis._telemetry import DeviceView, NodeView
from eagleeye_otel.errors import ConfigError

__all__ = ["Limit"]


def _selector(spec: SignalSpec, where: str) -> Selector:
    return Selector(spec.metric, spec.attributes, where)


class Limit:
    """A constant, another series of the device (``value * factor + offset``), or a budget table."""

    def __init__(self, spec: float | LimitSpec | BudgetSpec, where: str) -> None:
        self._constant = 0.0
        self._series: Selector | None = None
        self._times: Selector | None = None
        self._factor, self._offset = 1.0, 0.0
        self._table: Mapping[int, float] | None = None
        self._round: Callable[[float], float] = float
        if isinstance(spec, LimitSpec):
            self._series = Selector(spec.metric, spec.attributes, where)
            self._factor, self._offset = spec.factor, spec.offset
        elif isinstance(spec, BudgetSpec):
            if not spec.table:
                raise ConfigError(f"{where}.table", spec.table, "the budget table is empty")
            self._series = _selector(spec.lookup, f"{where}.lookup")
            self._times = None if spec.times is None else _selector(spec.times, f"{where}.times")
            self._table = spec.table
            self._round = {"ceil": math.ceil, "floor": math.floor}.get(spec.round, float)
        else:
            self._constant = float(spec)
        self.source = None if self._series is None else str(self._series)

    def value(self, node: NodeView, device: DeviceView | None) -> float | None:
        if self._series is None:
            return self._constant
        read = self._series.total(node, device)
        if read is None:
            return None
        if self._table is None:
            return read * self._factor + self._offset
        entry = self._table.get(int(read))
        if entry is None:
            return None
        times = 1.0 if self._times is None else self._times.total(node, device)
        return None if times is None else float(self._round(entry * times))

    def base(self, node: NodeView, device: DeviceView | None) -> float | None:
        """The limit series' own value, before ``factor`` and ``offset`` (the slowdown threshold itself)."""
        return self._constant if self._series is None else self._series.total(node, device)
