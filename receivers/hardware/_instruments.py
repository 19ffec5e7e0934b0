"""Hardware readings as OTel observable instruments: one sweep per collection, however many instruments read it.

Each instrument in :data:`~eagleeye_otel.semconv._hardware.HARDWARE_METRICS` gets a callback that turns its points
of the current :class:`~eagleeye_otel.receivers.hardware._model.Sweep` into observations; the sweep is mapped to
every metric's points once (:class:`~eagleeye_otel.receivers.hardware._points.HardwarePoints`). The sweep itself
(every driver call) is taken by :class:`SweepCache` when a collection starts and shared by the other callbacks of
that collection, and by another reader's collection that comes within ``max_age_s`` (the NATS export every second
and a Prometheus scrape would otherwise sweep twice).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation, get_meter

from eagleeye_otel.receivers.hardware._model import Sweep
from eagleeye_otel.receivers.hardware._points import HardwarePoints, gpu_state, npu_state
from eagleeye_otel.receivers.hardware._sweep_cache import SweepCache
from eagleeye_otel.semconv import _hardware as hw
from eagleeye_otel.version import __version__

__all__ = ["HARDWARE_METER_NAME", "SweepCache", "gpu_state", "npu_state", "register_hardware_metrics"]

HARDWARE_METER_NAME = "eagleeye_otel.receivers.hardware"
"""Instrumentation scope of the accelerator and kernel-log metrics."""


class _Callback:
    """One instrument's callback: the metric's points from the sweep of the current collection."""

    def __init__(self, index: int, sweeps: SweepCache, points: HardwarePoints) -> None:
        self._index = index
        self._name = points.metrics[index].name
        self._sweeps = sweeps
        self._points = points

    def __call__(self, _options: CallbackOptions) -> Iterable[Observation]:
        sweep = self._sweeps.get(self._name)
        if sweep is None:
            return ()
        return [Observation(value, attributes) for value, attributes in self._points(sweep)[self._index]]


def register_hardware_metrics(
    meter_provider: MeterProvider | None, take_sweep: Callable[[], Sweep], *, max_age_s: float = 0.5
) -> SweepCache:
    """Register every hardware metric as an observable instrument backed by one sweep per collection.

    Args:
        meter_provider: where to register; the global provider when None.
        take_sweep: reads every source once; called by the first callback of a collection (see :class:`SweepCache`).
        max_age_s: how old a sweep may be and still serve another reader's collection.

    Returns:
        The cache, whose ``sweeps`` counts the sweeps taken.
    """
    sweeps = SweepCache(take_sweep, max_age_s=max_age_s)
    meter = get_meter(HARDWARE_METER_NAME, __version__, meter_provider)
    create_by_kind = {
        hw.HwInstrument.GAUGE: meter.create_observable_gauge,
        hw.HwInstrument.COUNTER: meter.create_observable_counter,
        hw.HwInstrument.UP_DOWN_COUNTER: meter.create_observable_up_down_counter,
    }
    points = HardwarePoints(hw.HARDWARE_METRICS)
    for index, metric in enumerate(points.metrics):
        create = create_by_kind[metric.instrument]
        create(metric.name, [_Callback(index, sweeps, points)], unit=metric.unit, description=metric.description)
    return sweeps
