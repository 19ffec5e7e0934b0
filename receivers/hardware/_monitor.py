"""The node's hardware sources, opened once and read together into one :class:`Sweep`.

Each source opens on its own: one that cannot (no library, no driver, no device, no permission) leaves a one-line
note saying what was tried, and the monitor goes on with the others. A node with no GPU and no NPU still sweeps: the
sweep names the node and says why it holds no device, so a DaemonSet on a CPU node reports instead of crash-looping.
Every sweep also carries each source's status (:mod:`._status`): ``absent`` where the node has none of its devices,
``unavailable`` where it should have opened and did not, ``failed`` or ``hung`` when its read did not come back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

from eagleeye_otel import environment_variables as ev
from eagleeye_otel.errors import HardwareUnavailable
from eagleeye_otel.log_limiter import LogLimiter
from eagleeye_otel.receivers.hardware._dcmi import DcmiSource
from eagleeye_otel.receivers.hardware._kmsg import KernelLogReader, open_kernel_log
from eagleeye_otel.receivers.hardware._model import (
    GpuReading,
    KernelLogSummary,
    NpuReading,
    SourceState,
    SourceStatus,
    Sweep,
)
from eagleeye_otel.receivers.hardware._nvml import NvmlSource
from eagleeye_otel.receivers.hardware._nvml_events import NvmlEventWatcher
from eagleeye_otel.receivers.hardware._status import status_at_open
from eagleeye_otel.settings import HardwareSettings

__all__ = ["NO_ACCELERATOR", "HardwareMonitor"]

_logger = logging.getLogger(__name__)

NO_ACCELERATOR = "no GPU or NPU found: reporting the node only"
"""The note of a sweep on a node where neither NVML nor DCMI opened."""

_T = TypeVar("_T")
_OK = SourceStatus(SourceState.OK)
_ABSENT = SourceStatus(SourceState.ABSENT)
_NAMES = {"nvml": "NVML", "dcmi": "DCMI", "kernel_log": "kernel log"}


class HardwareMonitor:
    """Reads NVML, DCMI and the kernel log of one node; create with :meth:`open`, read with :meth:`sweep`.

    Thread-safe: sweeps are serialised (two readers' collections may ask at once).

    Args:
        node: the node's name, carried by every sweep.
        nvml: an open NVML source, or None.
        dcmi: an open DCMI source, or None.
        kernel_log: an open kernel-log reader, or None.
        events: a started NVML event watcher (Xid counts), or None; stopped by :meth:`close`.
        notes: what could not be opened, one line each; carried by every sweep.
        unopened: the status of each source that did not open (``nvml``, ``dcmi``, ``kernel_log``); one missing
            from here and not given is ``absent``.
    """

    def __init__(
        self,
        *,
        node: str,
        nvml: NvmlSource | None = None,
        dcmi: DcmiSource | None = None,
        kernel_log: KernelLogReader | None = None,
        events: NvmlEventWatcher | None = None,
        notes: tuple[str, ...] = (),
        unopened: Mapping[str, SourceStatus] | None = None,
    ) -> None:
        self.node = node
        self.nvml = nvml
        self.dcmi = dcmi
        self.kernel_log = kernel_log
        self._events = events
        self.notes = notes
        self._unopened = dict(unopened or {})
        self._lock = threading.Lock()
        self._failures = LogLimiter(_logger)

    @classmethod
    def open(cls, settings: HardwareSettings, *, watch_events: bool = True, follow: bool = True) -> HardwareMonitor:
        """Open every source the node has; never raises for a missing one.

        Args:
            settings: node name, library paths, kernel-log source, host root.
            watch_events: start the NVML Xid event thread (a service does; one sweep does not need it).
            follow: for a kernel-log file: keep reading what is appended (a service) or read it once.

        Returns:
            The monitor; :attr:`notes` says which sources did not open and why.
        """
        notes: list[str] = []
        unopened: dict[str, SourceStatus] = {}
        root = settings.host_root

        def open_source(source: str, name: str, open_it: Callable[[], _T], cause: str = "init_failed") -> _T | None:
            try:
                return open_it()
            except HardwareUnavailable as error:
                notes.append(error.reason if error.reason.startswith(name) else f"{name}: {error.reason}")
                unopened[source] = status_at_open(source, error, root, default_cause=cause)
            except Exception as error:
                _logger.warning("hardware monitor: opening %s failed", name, exc_info=True)
                notes.append(f"{name}: failed to open ({type(error).__name__}: {error})")
                unopened[source] = SourceStatus(SourceState.UNAVAILABLE, cause, notes[-1])
            return None

        nvml_library = None if settings.nvml_library is None else str(settings.nvml_library)
        nvml = open_source("nvml", "NVML", lambda: NvmlSource.open(nvml_library))
        events = None
        if nvml is not None and watch_events:
            events = NvmlEventWatcher(nvml)
            try:
                events.start()
            except HardwareUnavailable as error:
                events = None
                notes.append(f"NVML events: {error.reason}; Xids come from the kernel log only")
        dcmi_library = None if settings.dcmi_library is None else str(settings.dcmi_library)
        dcmi = open_source("dcmi", "DCMI", lambda: DcmiSource.open(dcmi_library, root_path=str(root)))
        kernel_log = None
        if settings.kernel_log == "off":
            notes.append(f"kernel log: off ({ev.EAGLEEYE_KERNEL_LOG}=off)")
            unopened["kernel_log"] = SourceStatus(SourceState.ABSENT, "off", notes[-1])
        else:
            file = None if settings.kernel_log == "auto" else settings.kernel_log
            kernel_log = open_source(
                "kernel_log",
                "kernel log",
                lambda: open_kernel_log(file=file, follow=follow, from_start=True, root_path=root),
                cause="not_readable",
            )
        if nvml is None and dcmi is None:
            notes.append(NO_ACCELERATOR)
        for note in notes:
            _logger.debug("hardware monitor: %s", note)  # also in every sweep, which callers print
        return cls(
            node=settings.node_name,
            nvml=nvml,
            dcmi=dcmi,
            kernel_log=kernel_log,
            events=events,
            notes=tuple(notes),
            unopened=unopened,
        )

    def sweep(self) -> Sweep:
        """Read every open source once; a source that fails is logged and left out of this sweep, never raised."""
        with self._lock:
            gpus: tuple[GpuReading, ...] = ()
            npus: tuple[NpuReading, ...] = ()
            summary: KernelLogSummary | None = None
            failed: set[str] = set()
            if self.nvml is not None:
                gpus = self._read("nvml", self.nvml.sweep, failed) or ()
            if self.dcmi is not None:
                npus = self._read("dcmi", self.dcmi.sweep, failed) or ()
            if self.kernel_log is not None:
                self._read("kernel_log", self.kernel_log.poll, failed)
                summary = self._read("kernel_log", self.kernel_log.summary, failed)
            return Sweep(
                node=self.node,
                taken_at=time.time(),
                gpus=gpus,
                npus=npus,
                kernel_log=summary,
                notes=self.notes,
                sources=self._statuses(failed),
            )

    def _statuses(self, failed: set[str]) -> dict[str, SourceStatus]:
        opened = {"nvml": self.nvml, "dcmi": self.dcmi, "kernel_log": self.kernel_log}
        statuses = {}
        for source, reader in opened.items():
            if reader is None:
                statuses[source] = self._unopened.get(source, _ABSENT)
            elif source in failed:
                statuses[source] = SourceStatus(SourceState.FAILED)
            elif source == "dcmi" and self.dcmi is not None and self.dcmi.listing_hung is not None:
                statuses[source] = SourceStatus(SourceState.HUNG, None, self.dcmi.listing_hung)
            else:
                statuses[source] = _OK
        return statuses

    def _read(self, source: str, read: Callable[[], _T], failed: set[str]) -> _T | None:
        try:
            return read()
        except Exception:
            failed.add(source)
            name = _NAMES[source]
            self._failures.warning("hardware monitor: %s read failed; left out of this sweep", name, exc_info=True)
            return None

    def close(self) -> None:
        """Stop the event thread and release every source; each failure is logged, the others still close."""
        closers: list[tuple[str, Callable[[], None]]] = []
        if self.dcmi is not None:
            closers.append(("DCMI", self.dcmi.close))
        if self._events is not None:
            closers.append(("NVML events", self._events.stop))
        if self.nvml is not None:
            closers.append(("NVML", self.nvml.close))
        if self.kernel_log is not None:
            closers.append(("kernel log", self.kernel_log.close))
        with self._lock:
            for name, close in closers:
                try:
                    close()
                except Exception:
                    _logger.warning("hardware monitor: closing %s failed", name, exc_info=True)

    def __enter__(self) -> HardwareMonitor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
