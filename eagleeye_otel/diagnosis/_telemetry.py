"""What the engine knows of each node: per-device series with a short history, and the hardware events seen.

Fed by OTLP metric exports (:mod:`._otlp`: the hardware monitor's, or any producer's with the same names), by
kernel-log events and, through :mod:`._snapshot`, by ``hardware-monitor --once`` documents. A series is *current*
when the node's latest update carried it: a GPU that stops answering still reports ``hw.status`` but no temperature,
and a rule on its temperature then has nothing to judge rather than an old value. Counters of events (NVML Xids,
kernel-log events) become event records: the count grew, so that many events happened, at the time the monitor's
``last_event_time`` gauge beside the counter says (else the export's). That date is what lets a diagnosis restarted
while the monitor kept running re-derive event findings from live telemetry alone: a counter seen for the first time
holds events from before the restart, and its gauge tells a 10-second-old Xid 79 (still held, so its finding is
published again at once) from a week-old one (long expired, so no stale finding reappears). The monitor stamps an
event when it reads it, so both diagnoses, the one that saw the count grow and the restarted one, agree within one
collection period; no state survives the diagnosis, and none needs to. Memory is bounded: nodes,
devices per node, series per device and event keys per node are capped and what does not fit is counted in
``dropped``. Made-up node names cannot hold the node cap for good: while it is full, a new node makes room by
forgetting the nodes silent for ``Limits.node_idle_s`` (:meth:`Telemetry.node`).
"""

from __future__ import annotations

import collections
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from eagleeye_otel.receivers.hardware._model import KernelEvent, KernelEventKind
from eagleeye_otel.receivers.hardware._pci import normalize_pci_bus_id
from eagleeye_otel.semconv import _hardware as hw

__all__ = [
    "DEFAULT_LIMITS",
    "NVML_XID",
    "DeviceView",
    "EventRecord",
    "Limits",
    "NodeView",
    "Series",
    "SeriesKey",
    "Telemetry",
    "gpu_announcement",
]

SeriesKey = tuple[tuple[str, str], ...]
"""A series' attributes besides the device's identity and description, sorted: ``(("hw.sensor_location", "die"),)``."""

NVML_XID: Final = "nvml_xid"
"""Event kind of the Xids NVML reported (``eagleeye.hw.gpu.xid``); kernel-log kinds are :class:`KernelEventKind`."""

_LOG_TIME: Final = hw.EAGLEEYE_KERNEL_LOG_LAST_EVENT_TIME
_XID_TIME: Final = hw.EAGLEEYE_HW_GPU_XID_LAST_EVENT_TIME
_ANNOUNCE = re.compile(r"NVRM: GPU at PCI:(?P<pci>[0-9a-fA-F:.]{4,20}): (?P<uuid>GPU-[0-9a-fA-F-]{8,64})")


@dataclass(frozen=True)
class Limits:
    """Caps on what the engine keeps, so a flood of series or nodes cannot exhaust memory."""

    nodes: int = 4096
    devices_per_node: int = 64
    series_per_device: int = 1024
    events_per_node: int = 1024
    history: int = 64
    """Samples kept per series that a rule needs the history of (the others keep their last value); they are
    spaced so that they span the longest window a rule looks back over, with a margin."""
    node_idle_s: float = 600.0
    """Seconds without an update after which a node may be forgotten, only to make room for a new node while the
    node cap is full. A monitor exports every second, so ten minutes of silence means the node (or its monitor) is
    gone; a flood of made-up node names then keeps real nodes out for ten minutes at most, not for good."""


DEFAULT_LIMITS: Final = Limits()


class Series:
    """One time series of one device: its last value and, when a rule needs it, a short history."""

    __slots__ = ("attributes", "samples", "seq", "spacing", "time", "value")

    def __init__(self, attributes: SeriesKey, history: int, spacing: float) -> None:
        self.attributes = dict(attributes)
        self.value = 0.0
        self.time = 0.0
        self.seq = -1
        self.spacing = spacing
        self.samples: collections.deque[tuple[float, float]] | None = (
            collections.deque(maxlen=history) if history > 1 else None
        )

    def add(self, time: float, value: float, seq: int) -> None:
        """Record a reading; it enters the history only ``spacing`` seconds after the previous kept one."""
        self.value, self.time, self.seq = value, time, seq
        samples = self.samples
        if samples is not None and (not samples or time - samples[-1][0] >= self.spacing):
            samples.append((time, value))

    def increase(self, window_s: float) -> tuple[float, float] | None:
        """How much the counter grew over the last ``window_s`` seconds (or the history it has), and over how long.

        A counter that went down restarted (driver reload): what it reads after is all new.

        Returns:
            (increase, seconds covered), or None with fewer than two readings.
        """
        samples = self.samples
        if samples is None:
            return None
        points = [*samples]
        if points[-1][0] != self.time:
            points.append((self.time, self.value))
        if len(points) < 2:
            return None
        start = self.time - window_s
        grown = 0.0
        newer_time, newer = points[-1]
        oldest = newer_time
        for older_time, older in reversed(points[:-1]):
            if newer_time <= start:
                break
            grown += newer - older if newer >= older else newer
            newer_time, newer, oldest = older_time, older, older_time
        return grown, self.time - oldest


@dataclass
class EventRecord:
    """Events of one kind and code about one device, as counted so far."""

    kind: str
    code: str
    ref: str | None
    """How the source named the device: a ``hw.id`` (NVML), a PCI bus id (NVIDIA lines), an Ascend id, or None."""
    count: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0
    message: str | None = None
    uptime_s: float | None = None
    """The kernel's timestamp (seconds since boot) of the last event, when its line had one."""


@dataclass
class DeviceView:
    """One accelerator as the latest updates describe it."""

    id: str
    type: str
    name: str
    description: dict[str, str] = field(default_factory=dict)
    series: dict[str, dict[SeriesKey, Series]] = field(default_factory=dict)
    state: str | None = None
    """The ``hw.state`` whose ``hw.status`` series reads 1."""
    status: str = "ok"
    """``ok``, ``lost``, ``reset_required`` or ``error`` (from a snapshot), or ``unreachable`` / ``error`` (from
    OTLP: ``hw.status`` said failed / degraded and the device reported no reading)."""
    series_count: int = 0
    seq: int = -1
    readings_seq: int = -1


@dataclass
class NodeView:
    """One node: its devices, its node-level series and the hardware events seen on it."""

    name: str
    seq: int = 0
    """Counts the node's updates; a series or device is current when it carries the latest."""
    updated_at: float = 0.0
    """Unix seconds (the engine's clock) of the latest update: how fresh the node's view is."""
    devices: dict[str, DeviceView] = field(default_factory=dict)
    series: dict[str, dict[SeriesKey, Series]] = field(default_factory=dict)
    events: dict[tuple[str, str, str | None], EventRecord] = field(default_factory=dict)
    gpu_uuids: dict[str, str] = field(default_factory=dict)
    """PCI bus id to GPU UUID, from the driver's ``NVRM: GPU at PCI:... GPU-...`` lines."""
    dirty: bool = True
    undated: list[tuple[tuple[str, str, str | None], str | None, SeriesKey, bool]] = field(default_factory=list)
    """Event records counted in the update being ingested, to date once the whole update is in (:meth:`date_events`):
    record key, device id (NVML Xids) or None (kernel log), counter series key, whether the record is new."""
    series_count: int = 0
    """Node-level series (those of no device), capped like a device's."""

    def current(self, device: DeviceView | None, metric: str) -> Iterable[Series]:
        """The series of ``metric`` (of ``device``, or of the node itself) that the latest update carried."""
        by_key = (self.series if device is None else device.series).get(metric)
        if not by_key:
            return ()
        seq = self.seq
        return [series for series in by_key.values() if series.seq == seq]

    def date_events(self) -> None:
        """Date the records counted in this update by the monitor's ``last_event_time`` gauges, where it sent them.

        A record seen for the first time takes the gauge as its first and last sighting; one that grew, as its last.
        """
        undated, self.undated = self.undated, []
        for key, device_id, series_key, new in undated:
            record = self.events.get(key)
            device = None if device_id is None else self.devices.get(device_id)
            owner = self.series if device_id is None else None if device is None else device.series
            metric = _LOG_TIME if device_id is None else _XID_TIME
            gauge = None if owner is None else owner.get(metric, {}).get(series_key)
            if record is None or gauge is None or gauge.seq != self.seq or not 0 < gauge.value <= record.last_seen:
                continue  # no stamp (an older monitor, another producer), or one from the future: keep the export's
            record.last_seen = gauge.value
            if new:
                record.first_seen = gauge.value

    def device_of(self, event: EventRecord) -> str | None:
        """The id of the device an event is about: the ``hw.id`` of the GPU at its PCI address, or of the NPU
        with its index, when the node's telemetry describes one; else the address or ``NPU <id>``."""
        ref = event.ref
        if ref is None or event.kind == NVML_XID:
            return ref
        if event.kind == KernelEventKind.ASCEND.value:
            name = f"NPU {ref}"
            return next((device.id for device in self.devices.values() if device.name == name), name)
        for device in self.devices.values():
            if device.description.get(hw.EAGLEEYE_HW_PCI_BUS_ID) == ref:
                return device.id
        return self.gpu_uuids.get(ref, ref)


def gpu_announcement(line: str) -> tuple[str, str] | None:
    """(PCI bus id, GPU UUID) from the driver's ``NVRM: GPU at PCI:0000:3b:00: GPU-<uuid>`` line, else None."""
    match = _ANNOUNCE.search(line)
    if match is None:
        return None
    pci = normalize_pci_bus_id(match["pci"].rstrip(":"))
    return None if pci is None else (pci, match["uuid"])


class Telemetry:
    """Every node's view, fed by :meth:`ingest_request` and :meth:`ingest_events`.

    Args:
        limits: the caps on what is kept.
        history_metrics: metrics some rule needs the recent history of (counter rates); the others keep only
            their latest value.
        history_span_s: how far back the rules look (their longest window).
        on_forget: called with each node view forgotten to make room, and the time, before the view is gone.
    """

    def __init__(
        self,
        limits: Limits = DEFAULT_LIMITS,
        history_metrics: frozenset[str] = frozenset(),
        history_span_s: float = 0.0,
        on_forget: Callable[[NodeView, float], None] | None = None,
    ) -> None:
        self.limits = limits
        self.nodes: dict[str, NodeView] = {}
        self.dropped = 0
        """Points, devices, events or nodes not kept because a cap was reached."""
        self.forgotten = 0
        """Nodes forgotten after ``limits.node_idle_s`` of silence to make room for a new one."""
        self._history_metrics = history_metrics
        self._spacing = history_span_s * 1.25 / max(limits.history - 1, 1)
        self._on_forget = on_forget
        self._next_sweep = -math.inf

    def node(self, name: str, now: float) -> NodeView | None:
        """The view of ``name``, made on first sight at ``now``; None (and counted) when the node cap is reached.

        At the cap, a new node first makes room by forgetting the nodes whose last update is ``node_idle_s`` old;
        it is dropped only when none is.
        """
        view = self.nodes.get(name)
        if view is None:
            if len(self.nodes) >= self.limits.nodes and not self._make_room(now):
                self.dropped += 1
                return None
            view = self.nodes[name] = NodeView(name, updated_at=now)
        return view

    def _make_room(self, now: float) -> bool:
        """Forget idle nodes, at most once per tenth of ``node_idle_s`` while full: a flood costs O(1) a message."""
        if now >= self._next_sweep:
            self._next_sweep = now + self.limits.node_idle_s / 10
            cutoff = now - self.limits.node_idle_s
            for view in [view for view in self.nodes.values() if view.updated_at < cutoff]:
                if self._on_forget is not None:
                    self._on_forget(view, now)
                del self.nodes[view.name]
                self.forgotten += 1
        return len(self.nodes) < self.limits.nodes

    def ingest_events(self, node: NodeView, events: Iterable[KernelEvent], now: float) -> int:
        """Record parsed kernel-log events, each seen at ``now``; returns how many were recorded."""
        recorded = 0
        for event in events:
            recorded += self.record_event(
                node,
                event.kind.value,
                event.code,
                event.device,
                count=1,
                now=now,
                message=event.message,
                uptime_s=event.timestamp,
            )
        node.updated_at, node.dirty = now, True
        return recorded

    def record_event(
        self,
        node: NodeView,
        kind: str,
        code: str,
        ref: str | None,
        *,
        count: int,
        now: float,
        message: str | None,
        uptime_s: float | None = None,
    ) -> int:
        """Add ``count`` events to their record; 0 (and counted as dropped) when the node holds its maximum."""
        key = (kind, code, ref)
        record = node.events.get(key)
        if record is None:
            if len(node.events) >= self.limits.events_per_node:
                self.dropped += 1
                return 0
            record = node.events[key] = EventRecord(kind, code, ref, first_seen=now)
        record.count += count
        record.last_seen = now
        if message is not None:
            record.message = message
        if uptime_s is not None:
            record.uptime_s = uptime_s
        return 1

    def device(self, node: NodeView, device_id: str, name: str | None, device_type: str) -> DeviceView | None:
        """The view of a device of ``node``, made on first sight; None (and counted) at the device cap."""
        device = node.devices.get(device_id)
        if device is None:
            if len(node.devices) >= self.limits.devices_per_node:
                self.dropped += 1
                return None
            device = node.devices[device_id] = DeviceView(device_id, device_type, name or device_id)
        return device

    def series(self, node: NodeView, device: DeviceView | None, metric: str, key: SeriesKey) -> Series | None:
        """A series of ``device`` (of the node when None), made on first sight; None (and counted) at the cap.

        The node's own series are capped too: points without a ``hw.id`` must not grow the view without bound.
        """
        owner: DeviceView | NodeView = node if device is None else device
        by_key = owner.series.get(metric)
        series = None if by_key is None else by_key.get(key)
        if series is None:
            if owner.series_count >= self.limits.series_per_device:
                self.dropped += 1
                return None
            owner.series_count += 1
            history = self.limits.history if metric in self._history_metrics else 1
            series = Series(key, history, self._spacing)
            owner.series.setdefault(metric, {})[key] = series
        return series

    def count_events(
        self, node: NodeView, device_id: str | None, series: Series, previous: float | None, time: float
    ) -> None:
        """An event counter grew: record that many events (all of them at its first sight: it counts since the
        monitor started, so they are recent)."""
        grown = series.value - previous if previous is not None and series.value >= previous else series.value
        if grown <= 0:
            return
        attributes = series.attributes
        if device_id is not None:
            key: tuple[str, str, str | None] = (NVML_XID, attributes.get(hw.EAGLEEYE_HW_GPU_XID_CODE, ""), device_id)
        else:
            kind = attributes.get(hw.EAGLEEYE_KERNEL_LOG_KIND, "")
            key = (kind, attributes.get(hw.EAGLEEYE_KERNEL_LOG_CODE, ""), attributes.get(hw.EAGLEEYE_KERNEL_LOG_DEVICE))
        new = key not in node.events
        if self.record_event(node, *key, count=int(grown), now=time, message=None):
            node.undated.append((key, device_id, tuple(sorted(attributes.items())), new))
