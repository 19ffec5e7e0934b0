"""Host and process metrics through ``opentelemetry-instrumentation-system-metrics``, with an undo that works.

Upstream's instrumentor is a process-wide singleton whose ``_uninstrument`` does nothing, and the SDK cannot remove
an instrument. So each call gets its own instrumentor, registered through a meter provider wrapper whose
callbacks report nothing once the handle is closed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Final

from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor
from opentelemetry.metrics import (
    CallbackOptions,
    CallbackT,
    Counter,
    Histogram,
    Meter,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    Observation,
    UpDownCounter,
    _Gauge,
    get_meter_provider,
)
from opentelemetry.util.types import Attributes

__all__ = ["SYSTEM_METRICS_CONFIG", "SystemMetricsHandle", "instrument_system_metrics"]

_logger = logging.getLogger(__name__)

SYSTEM_METRICS_CONFIG: Final[Mapping[str, Sequence[str] | None]] = MappingProxyType(
    {
        # CPU contention slows tokenization, scheduling and detokenization; iowait shows a model load on a slow disk.
        "system.cpu.utilization": ("user", "system", "iowait"),
        # Host memory: weights loaded to host, pinned KV-cache swap space, page cache of model files.
        "system.memory.usage": ("used", "free", "cached", "buffers"),
        "system.memory.utilization": ("used",),
        # Request and response traffic, and NCCL/Gloo traffic between nodes.
        "system.network.io": ("transmit", "receive"),
        "system.network.errors": ("transmit", "receive"),
        # The serving process itself.
        "process.cpu.time": ("user", "system"),
        "process.cpu.utilization": None,
        "process.memory.usage": None,
        "process.memory.virtual": None,
        "process.thread.count": None,
        "process.open_file_descriptor.count": None,
        "process.context_switches": ("involuntary", "voluntary"),
        # Collections pause the event loop that runs the engine step.
        "cpython.gc.collections": None,
    }
)
"""What Eagle Eye collects, in the instrumentor's ``config`` format (metric key to states, or None).

Left out: disk metrics (an inference server reads its model once), swap (unit ``pages``), per-connection counts
(``psutil.net_connections`` walks every socket on each collection), ``system.network.dropped.packets`` (exported
under the non-standard name ``system.network.dropped_packets``) and the deprecated ``process.runtime.*``.
"""

_Callback = Callable[[CallbackOptions], Iterable[Observation]]


def _from_generator(generator: Generator[Iterable[Observation], CallbackOptions, None]) -> _Callback:
    """The API also accepts a generator as a callback: prime it, then send it each collection's options."""
    next(generator)

    def send(options: CallbackOptions) -> Iterable[Observation]:
        try:
            return generator.send(options)
        except StopIteration:
            return ()

    return send


class _Gate:
    """One switch shared by every callback a handle registered."""

    def __init__(self) -> None:
        self.is_open = True

    def wrap(self, callbacks: Sequence[CallbackT] | None) -> list[_Callback]:
        return [self._gated(callback) for callback in callbacks or ()]

    def _gated(self, callback: CallbackT) -> _Callback:
        call = _from_generator(callback) if isinstance(callback, Generator) else callback

        def observe(options: CallbackOptions) -> Iterable[Observation]:
            return call(options) if self.is_open else ()

        return observe


class _GatedMeter(Meter):
    """Delegates to a real meter; observable instruments' callbacks go through the gate."""

    def __init__(self, meter: Meter, gate: _Gate) -> None:
        super().__init__(meter.name, meter.version, meter.schema_url)
        self._meter = meter
        self._gate = gate

    def create_counter(self, name: str, unit: str = "", description: str = "") -> Counter:
        return self._meter.create_counter(name, unit, description)

    def create_up_down_counter(self, name: str, unit: str = "", description: str = "") -> UpDownCounter:
        return self._meter.create_up_down_counter(name, unit, description)

    def create_histogram(
        self,
        name: str,
        unit: str = "",
        description: str = "",
        *,
        explicit_bucket_boundaries_advisory: Sequence[float] | None = None,
    ) -> Histogram:
        return self._meter.create_histogram(
            name, unit, description, explicit_bucket_boundaries_advisory=explicit_bucket_boundaries_advisory
        )

    def create_gauge(self, name: str, unit: str = "", description: str = "") -> _Gauge:
        return self._meter.create_gauge(name, unit, description)

    def create_observable_counter(
        self, name: str, callbacks: Sequence[CallbackT] | None = None, unit: str = "", description: str = ""
    ) -> ObservableCounter:
        return self._meter.create_observable_counter(name, self._gate.wrap(callbacks), unit, description)

    def create_observable_up_down_counter(
        self, name: str, callbacks: Sequence[CallbackT] | None = None, unit: str = "", description: str = ""
    ) -> ObservableUpDownCounter:
        return self._meter.create_observable_up_down_counter(name, self._gate.wrap(callbacks), unit, description)

    def create_observable_gauge(
        self, name: str, callbacks: Sequence[CallbackT] | None = None, unit: str = "", description: str = ""
    ) -> ObservableGauge:
        return self._meter.create_observable_gauge(name, self._gate.wrap(callbacks), unit, description)


class _GatedMeterProvider(MeterProvider):
    """Hands out gated meters from a real provider, so instrumentation scopes stay as upstream names them."""

    def __init__(self, provider: MeterProvider, gate: _Gate) -> None:
        self._provider = provider
        self._gate = gate

    def get_meter(
        self,
        name: str,
        version: str | None = None,
        schema_url: str | None = None,
        attributes: Attributes | None = None,
    ) -> Meter:
        return _GatedMeter(self._provider.get_meter(name, version, schema_url, attributes), self._gate)


class _PrivateSystemMetricsInstrumentor(SystemMetricsInstrumentor):
    """Not a singleton: constructing upstream's would reconfigure the instance auto-instrumentation runs."""

    def __new__(cls, *args: object, **kwargs: object) -> _PrivateSystemMetricsInstrumentor:
        return object.__new__(cls)


class SystemMetricsHandle:
    """Undoes one :func:`instrument_system_metrics` call."""

    def __init__(self, instrumentor: SystemMetricsInstrumentor, gate: _Gate) -> None:
        self._instrumentor = instrumentor
        self._gate = gate
        self._lock = threading.Lock()

    def uninstrument(self) -> None:
        """Stop reporting from the next collection on. Safe to call more than once.

        The SDK keeps the (now silent) instruments, so instrumenting the same provider again reports nothing new
        for names already registered; use a fresh provider.
        """
        with self._lock:
            if not self._gate.is_open:
                return
            self._gate.is_open = False
            self._instrumentor.uninstrument()


def instrument_system_metrics(
    meter_provider: MeterProvider | None = None,
    *,
    config: Mapping[str, Sequence[str] | None] = SYSTEM_METRICS_CONFIG,
) -> SystemMetricsHandle:
    """Register host and process metrics (CPU, memory, network, threads, file descriptors, GC).

    Args:
        meter_provider: where to register; the global provider when None.
        config: metric keys and states, in the instrumentor's format; the environment is not consulted.

    Returns:
        A handle whose ``uninstrument()`` stops the metrics.
    """
    gate = _Gate()
    instrumentor = _PrivateSystemMetricsInstrumentor(
        config={key: None if states is None else list(states) for key, states in config.items()}
    )
    provider = get_meter_provider() if meter_provider is None else meter_provider
    instrumentor.instrument(meter_provider=_GatedMeterProvider(provider, gate))
    _logger.debug("System metrics enabled: %s", ", ".join(config))
    return SystemMetricsHandle(instrumentor, gate)
