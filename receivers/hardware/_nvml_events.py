"""Xid and GPU-unavailable events from NVML, waited for on a thread of their own.

``nvmlEventSetWait`` blocks, so it runs in a dedicated thread with a short timeout that lets :meth:`stop` end it.
Xids are counted per GPU UUID into the source's :class:`~eagleeye_otel.receivers.hardware._nvml.XidCounts`, which
every later sweep copies into ``GpuReading.xid_counts``: dcgm-exporter only keeps the last Xid, a count loses
nothing. Devices that refuse registration (some SKUs, some containers) are skipped; kernel-log parsing stays the
fallback and the only source of Xid text.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eagleeye_otel.errors import HardwareUnavailable
from eagleeye_otel.log_limiter import LogLimiter
from eagleeye_otel.receivers.hardware._nvml import NvmlSource
from eagleeye_otel.receivers.hardware._nvml_readers import CAPABILITY_CODES

__all__ = ["NvmlEvent", "NvmlEventWatcher"]

_logger = logging.getLogger(__name__)

_TIMEOUT = 10  # NVML_ERROR_TIMEOUT: nothing happened within the wait, the normal case

_EVENT_KINDS = {0x8: "xid", 0x4000: "gpu_unavailable", 0x8000: "recovery_action"}
"""Event types asked for (``nvmlEventTypeXidCriticalError``, ``GpuUnavailableError``, ``GpuRecoveryAction``)."""
_XID = 0x8
_WANTED = sum(_EVENT_KINDS)


@dataclass(frozen=True)
class NvmlEvent:
    """One NVML event.

    Attributes:
        device_id: the GPU's UUID, or None when NVML named a device this watcher did not register.
        kind: ``"xid"``, ``"gpu_unavailable"`` or ``"recovery_action"``.
        event_type: the raw ``nvmlEventType`` bit.
        data: the Xid number (999: unknown Xid) or the recovery action, as NVML gave it.
    """

    device_id: str | None
    kind: str
    event_type: int
    data: int


class NvmlEventWatcher:
    """Waits for NVML events of an open :class:`NvmlSource`'s GPUs, counts Xids and hands each event on.

    The watcher holds its own ``nvmlInit`` reference from :meth:`start` to :meth:`stop`, so it may outlive or
    predate the source's :meth:`~NvmlSource.close` without NVML shutting down under it.

    Args:
        source: whose GPUs to watch and whose ``xid_counts`` to feed.
        on_event: called on the watcher thread for every event; an exception it raises is logged, not raised.
        wait_ms: longest single wait; :meth:`stop` returns within about this long.
    """

    def __init__(
        self, source: NvmlSource, *, on_event: Callable[[NvmlEvent], None] | None = None, wait_ms: int = 500
    ) -> None:
        if on_event is not None and not callable(on_event):
            raise TypeError(f"on_event must be callable, got {type(on_event).__name__}")
        self._source = source
        self._nvml: Any = source.nvml
        self._on_event = on_event
        self._wait_ms = wait_ms
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._event_set: Any = None
        self._initialised = False
        self._by_address: dict[int | None, str] = {}
        self._limiter = LogLimiter(_logger)

    @property
    def registered(self) -> frozenset[str]:
        """UUIDs of the GPUs whose events are being watched."""
        return frozenset(self._by_address.values())

    def start(self) -> None:
        """Register every GPU that supports the wanted events and start the thread.

        Raises:
            HardwareUnavailable: no GPU accepted the registration (rely on the kernel log instead).
            RuntimeError: already started.
        """
        if self._thread is not None:
            raise RuntimeError("NvmlEventWatcher already started")
        nvml = self._nvml
        nvml.nvmlInit()
        self._initialised = True
        try:
            self._event_set = nvml.nvmlEventSetCreate()
            for device_id, handle in self._source.handles.items():
                if self._register(device_id, handle):
                    self._by_address[ctypes.cast(handle, ctypes.c_void_p).value] = device_id
            if not self._by_address:
                raise HardwareUnavailable("no GPU accepts NVML Xid event registration")
        except BaseException:
            self._release()
            raise
        self._thread = threading.Thread(target=self._run, name="eagleeye-nvml-events", daemon=True)
        self._thread.start()

    def _register(self, device_id: str, handle: Any) -> bool:
        nvml = self._nvml
        try:
            mask = _WANTED & nvml.nvmlDeviceGetSupportedEventTypes(handle)
            if mask:
                nvml.nvmlDeviceRegisterEvents(handle, mask, self._event_set)
                return True
            _logger.info("NVML GPU %s: no Xid/unavailable/recovery events supported", device_id)
        except nvml.NVMLError as error:
            log = _logger.info if error.value in CAPABILITY_CODES else _logger.warning
            log("NVML GPU %s: event registration refused: %s", device_id, error)
        return False

    def _run(self) -> None:
        nvml = self._nvml
        while not self._stopping.is_set():
            try:
                data = nvml.nvmlEventSetWait(self._event_set, self._wait_ms)
            except nvml.NVMLError as error:
                if error.value != _TIMEOUT:
                    self._limiter.warning("nvmlEventSetWait failed: %s", error)
                    self._stopping.wait(self._wait_ms / 1000)  # a persistent error must not spin
                continue
            except Exception:
                self._limiter.warning("nvmlEventSetWait failed", exc_info=True)
                self._stopping.wait(self._wait_ms / 1000)
                continue
            self._dispatch(data)

    def _dispatch(self, data: Any) -> None:
        device_id = self._by_address.get(ctypes.cast(data.device, ctypes.c_void_p).value)
        event_type, payload = int(data.eventType), int(data.eventData)
        if event_type == _XID and device_id is not None:
            self._source.xid_counts.add(device_id, payload)
        event = NvmlEvent(device_id, _EVENT_KINDS.get(event_type, f"{event_type:#x}"), event_type, payload)
        _logger.warning("NVML event on GPU %s: %s %d", device_id, event.kind, payload)
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                _logger.exception("NVML event callback failed for %s", event)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the thread and release the event set and NVML reference; later calls do nothing."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                _logger.warning("NVML event thread still waiting after %.1f s; leaving it to end", timeout_s)
                return
        self._release()

    def _release(self) -> None:
        nvml = self._nvml
        if not self._initialised:
            return
        self._initialised = False
        if self._event_set is not None:
            try:
                nvml.nvmlEventSetFree(self._event_set)
            except nvml.NVMLError as error:
                _logger.warning("nvmlEventSetFree failed: %s", error)
            self._event_set = None
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError as error:
            _logger.warning("nvmlShutdown failed: %s", error)
