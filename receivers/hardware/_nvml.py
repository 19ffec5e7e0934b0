"""NVIDIA GPU readings through NVML, using the real ``pynvml`` binding (package ``nvidia-ml-py``).

``pynvml`` is imported only when a source opens, so nodes without the ``nvidia`` extra import this module freely.
The calls of a sweep and their unit conversions are in ``_nvml_readers``; readings leave in SI units. A function a
device answers with ``NOT_SUPPORTED`` or ``NO_PERMISSION`` is remembered and never called on that device again;
``GPU_IS_LOST``, ``RESET_REQUIRED`` and repeated ``UNKNOWN`` become the device's status, never an exception, and
the other GPUs keep being read. Each GPU is read under a deadline (:mod:`._deadline`): one whose driver call hangs is
reported ``hung`` and skipped until the call returns, while the others are read on time.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from eagleeye_otel.errors import HardwareUnavailable
from eagleeye_otel.log_limiter import LogLimiter
from eagleeye_otel.receivers.hardware._deadline import DEFAULT_CALL_DEADLINE_S, CallTimedOut, DeadlineCaller
from eagleeye_otel.receivers.hardware._model import DeviceIdentity, DeviceStatus, GpuReading
from eagleeye_otel.receivers.hardware._nvml_readers import (
    CAPABILITY_CODES,
    GPU_IS_LOST,
    READERS,
    RESET_REQUIRED,
    UNKNOWN,
    DeviceState,
)
from eagleeye_otel.receivers.hardware._pci import normalize_pci_bus_id
from eagleeye_otel.receivers.hardware._status import SourceUnavailable

__all__ = ["NvmlSource", "XidCounts"]

_logger = logging.getLogger(__name__)

_LIBRARY = "libnvidia-ml.so.1"
_UNKNOWN_SWEEPS_LOST = 3
"""Sweeps in a row answered ``NVML_ERROR_UNKNOWN`` after which a GPU counts as lost (hardware.md 2.6)."""

_DRIVER_NOT_LOADED, _LIBRARY_NOT_FOUND = 9, 12


class XidCounts:
    """Xid events seen per GPU UUID since start; the event watcher adds, each sweep reads (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, dict[int, int]] = {}
        self._last_seen: dict[str, dict[int, float]] = {}

    def add(self, device_id: str, xid: int) -> None:
        """Count one Xid event of ``device_id``, received now."""
        with self._lock:
            per_device = self._counts.setdefault(device_id, {})
            per_device[xid] = per_device.get(xid, 0) + 1
            self._last_seen.setdefault(device_id, {})[xid] = time.time()

    def snapshot(self, device_id: str) -> dict[int, int]:
        """A copy of the counts of ``device_id`` by Xid number."""
        with self._lock:
            return dict(self._counts.get(device_id, {}))

    def last_seen(self, device_id: str) -> dict[int, float]:
        """A copy of when the last event of each Xid of ``device_id`` came (Unix seconds)."""
        with self._lock:
            return dict(self._last_seen.get(device_id, {}))


class _DeviceDown(Exception):
    """A call said the whole device is unusable this sweep; carries the status and the call that said so."""

    def __init__(self, status: DeviceStatus, detail: str, *, unknown: bool = False) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.unknown = unknown


def _import_pynvml() -> Any:
    try:
        import pynvml  # type: ignore[import-untyped]  # noqa: PLC0415 (optional extra, imported on open)
    except ImportError as error:
        raise SourceUnavailable(
            f"pynvml is not installed (pip install 'eagle-eye[nvidia]'): {error}", cause="binding_missing"
        ) from error
    return pynvml


def _down(status: DeviceStatus, call: str, error: Exception, *, unknown: bool = False) -> _DeviceDown:
    return _DeviceDown(status, f"{call}: {error}", unknown=unknown)


def _classify(call: str, error: Any) -> _DeviceDown | None:
    """The device-wide meaning of an ``NVMLError`` from ``call``, or None when only that value is lost."""
    code = error.value
    if code == GPU_IS_LOST:
        return _down(DeviceStatus.LOST, call, error)
    if code == RESET_REQUIRED:
        return _down(DeviceStatus.RESET_REQUIRED, call, error)
    if code == UNKNOWN:
        return _down(DeviceStatus.ERROR, call, error, unknown=True)
    return None


class NvmlSource:
    """The GPUs of this node as NVML sees them; create with :meth:`open`, read with :meth:`sweep`.

    Thread-safe: sweeps are serialised, and the event watcher only touches :attr:`xid_counts`.
    """

    def __init__(
        self,
        nvml: Any,
        devices: list[DeviceState],
        driver_version: str | None,
        nvml_version: str | None,
        *,
        call_deadline_s: float = DEFAULT_CALL_DEADLINE_S,
    ) -> None:
        self._nvml = nvml
        self._caller = DeadlineCaller("NVML", deadline_s=call_deadline_s)
        self._devices = devices
        self._lock = threading.Lock()
        self._closed = False
        self._limiter = LogLimiter(_logger)
        self.driver_version = driver_version
        self.nvml_version = nvml_version
        self.xid_counts = XidCounts()
        """Fed by an :class:`~eagleeye_otel.receivers.hardware.NvmlEventWatcher`; read into each sweep."""

    @classmethod
    def open(cls, library_path: str | None = None, *, call_deadline_s: float = DEFAULT_CALL_DEADLINE_S) -> NvmlSource:
        """Load NVML, initialise it and read each GPU's identity once.

        Args:
            library_path: a ``libnvidia-ml.so.1`` to use instead of the loader's search (a host driver mounted
                into a container at an unusual place). It is loaded before ``nvmlInit`` so that pynvml's own
                ``dlopen("libnvidia-ml.so.1")`` finds it by its soname; pynvml loads NVML once per process, so a
                path given after an earlier open has no effect.
            call_deadline_s: how long one GPU's reads may take before it is reported ``hung``.

        Returns:
            an open source; :meth:`close` it to release NVML (``nvmlInit`` is reference-counted).

        Raises:
            HardwareUnavailable: pynvml or the library is missing, the driver is not loaded, or there is no GPU.
        """
        nvml = _import_pynvml()
        tried = library_path or f"{_LIBRARY} on the dynamic loader's search path"
        if library_path is not None:
            try:
                ctypes.CDLL(library_path, mode=ctypes.RTLD_GLOBAL)
            except OSError as error:
                raise SourceUnavailable(
                    f"NVML library {library_path} could not be loaded: {error}", cause="library_not_loadable"
                ) from error
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as error:
            if error.value == _LIBRARY_NOT_FOUND:
                raise SourceUnavailable(f"NVML library not found (tried {tried})", cause="library_not_found") from error
            if error.value == _DRIVER_NOT_LOADED:
                raise SourceUnavailable(
                    f"NVIDIA driver not loaded (nvmlInit: {error})", cause="driver_not_loaded"
                ) from error
            raise SourceUnavailable(
                f"nvmlInit failed with NVML error {error.value}: {error}", cause="init_failed"
            ) from error
        try:
            count = nvml.nvmlDeviceGetCount()
            if count == 0:
                raise SourceUnavailable("NVML reports no GPU on this node", cause="no_device")
            source = cls(
                nvml,
                [
                    DeviceState(
                        index, DeviceIdentity(id=f"nvml-index-{index}", type="gpu", vendor="nvidia", index=index)
                    )
                    for index in range(count)
                ],
                cls._system_string(nvml, "nvmlSystemGetDriverVersion"),
                cls._system_string(nvml, "nvmlSystemGetNVMLVersion"),
                call_deadline_s=call_deadline_s,
            )
        except HardwareUnavailable:
            nvml.nvmlShutdown()
            raise
        except nvml.NVMLError as error:
            nvml.nvmlShutdown()
            raise SourceUnavailable(
                f"nvmlDeviceGetCount failed with NVML error {error.value}: {error}", cause="init_failed"
            ) from error
        for device in source._devices:
            try:
                source._caller.call(device.index, functools.partial(source._attach, device))
            except _DeviceDown as down:
                source._set_status(device, down.status, down.detail)
            except CallTimedOut as hung:
                source._set_status(device, DeviceStatus.HUNG, str(hung))
        return source

    @staticmethod
    def _system_string(nvml: Any, function: str) -> str | None:
        try:
            return str(getattr(nvml, function)())
        except nvml.NVMLError as error:
            _logger.info("%s unavailable: %s", function, error)
            return None

    def _attach(self, device: DeviceState) -> None:
        """Take the device's handle and read its identity.

        Raises:
            _DeviceDown: the GPU cannot be reached; it keeps a placeholder identity and is tried again next sweep.
        """
        nvml = self._nvml
        self._caller.note("nvmlDeviceGetHandleByIndex")
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(device.index)
            uuid = str(nvml.nvmlDeviceGetUUID(handle))
        except nvml.NVMLError as error:
            call = "nvmlDeviceGetHandleByIndex/nvmlDeviceGetUUID"
            raise _classify(call, error) or _down(DeviceStatus.ERROR, call, error) from error

        def text(function: str) -> str | None:
            try:
                return str(getattr(nvml, function)(handle)) or None
            except nvml.NVMLError as error:
                _logger.debug("NVML GPU %s: %s unavailable: %s", uuid, function, error)
                return None

        pci_bus_id = None
        try:
            bus_id = nvml.nvmlDeviceGetPciInfo(handle).busId  # bytes in older pynvml releases, str in newer
            pci_bus_id = normalize_pci_bus_id(bus_id.decode() if isinstance(bus_id, bytes) else str(bus_id))
        except (nvml.NVMLError, ValueError) as error:
            _logger.debug("NVML GPU %s: PCI bus id unavailable: %s", uuid, error)
        device.handle = handle
        device.identity = DeviceIdentity(
            id=uuid,
            type="gpu",
            vendor="nvidia",
            index=device.index,
            model=text("nvmlDeviceGetName"),
            serial=text("nvmlDeviceGetSerial"),
            pci_bus_id=pci_bus_id,
            driver_version=self.driver_version,
            firmware_version=text("nvmlDeviceGetVbiosVersion"),
        )

    @property
    def devices(self) -> tuple[DeviceIdentity, ...]:
        """Every GPU NVML enumerated at open, in NVML index (PCI) order."""
        return tuple(device.identity for device in self._devices)

    @property
    def handles(self) -> Mapping[str, Any]:
        """pynvml device handles by GPU UUID, for the event watcher."""
        return {d.identity.id: d.handle for d in self._devices if d.handle is not None}

    @property
    def nvml(self) -> Any:
        """The pynvml module this source opened."""
        return self._nvml

    def sweep(self) -> tuple[GpuReading, ...]:
        """Read every GPU once; a GPU that fails is reported with its status, never raised."""
        with self._lock:
            if self._closed:
                raise RuntimeError("NvmlSource is closed")
            reads = [(device.index, functools.partial(self._read, device)) for device in self._devices]
            outcomes = self._caller.call_all(reads)
            return tuple(map(self._reading, self._devices, outcomes))

    def _reading(self, device: DeviceState, outcome: GpuReading | BaseException) -> GpuReading:
        """What :meth:`_read` returned on the worker; a GPU whose call hung is reported ``hung``."""
        if isinstance(outcome, GpuReading):
            return outcome
        if not isinstance(outcome, CallTimedOut):
            raise outcome  # _read reports every driver error itself: this is a bug, for the collection to log
        self._set_status(device, DeviceStatus.HUNG, str(outcome))
        return GpuReading(identity=device.identity, status=DeviceStatus.HUNG, detail=str(outcome), **self._xids(device))

    def _xids(self, device: DeviceState) -> dict[str, Any]:
        device_id = device.identity.id
        return {
            "xid_counts": self.xid_counts.snapshot(device_id),
            "xid_last_seen": self.xid_counts.last_seen(device_id),
        }

    def _read(self, device: DeviceState) -> GpuReading:
        nvml, note = self._nvml, self._caller.note
        values: dict[str, Any] = {}
        try:
            if device.handle is None:
                self._attach(device)
            for call, reader in READERS:
                if call in device.unsupported:
                    continue
                note(call)
                try:
                    reader(nvml, device, values)
                except nvml.NVMLError as error:
                    self._failed(device, call, error)
                except Exception:
                    self._limiter.warning("NVML GPU %s: %s failed", device.identity.id, call, exc_info=True)
        except _DeviceDown as down:
            device.unknown_sweeps = device.unknown_sweeps + 1 if down.unknown else 0
            status, detail = down.status, down.detail
            if device.unknown_sweeps >= _UNKNOWN_SWEEPS_LOST:
                status, detail = DeviceStatus.LOST, f"{detail} ({device.unknown_sweeps} sweeps in a row)"
            self._set_status(device, status, detail)
            return GpuReading(identity=device.identity, status=status, detail=detail, **self._xids(device))
        device.unknown_sweeps = 0
        self._set_status(device, DeviceStatus.OK, None)
        return GpuReading(identity=device.identity, **self._xids(device), **values)

    def _failed(self, device: DeviceState, call: str, error: Any) -> None:
        """What an ``NVMLError`` from one reader means: never ask again, the whole device is down, or this value only.

        Raises:
            _DeviceDown: the error is about the whole GPU.
        """
        if error.value in CAPABILITY_CODES:
            device.unsupported.add(call)
            _logger.debug("NVML GPU %s: %s unsupported (%s); not asked again", device.identity.id, call, error)
            return
        down = _classify(call, error)
        if down is not None:
            raise down from error
        self._limiter.warning("NVML GPU %s: %s failed: %s", device.identity.id, call, error)

    def _set_status(self, device: DeviceState, status: DeviceStatus, detail: str | None) -> None:
        if status is not device.status:
            log = _logger.info if status is DeviceStatus.OK else _logger.warning
            log("NVML GPU %s: %s -> %s (%s)", device.identity.id, device.status.value, status.value, detail)
            device.status = status

    @property
    def stuck(self) -> dict[int, str]:
        """GPUs (by index) whose read is still running past its deadline, and the call each is in."""
        return {key: call for key, call in self._caller.stuck().items() if isinstance(key, int)}

    def close(self) -> None:
        """Release this source's NVML reference; later calls do nothing.

        While a call is stuck ``nvmlShutdown`` is skipped: it could wait on the same driver lock, and a process that
        closes its sources is about to exit anyway.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._caller.close()
            stuck = self._caller.stuck()
            if stuck:
                _logger.warning("NVML: not shutting down: reads of GPU %s still have not returned", list(stuck))
                return
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError as error:
                _logger.warning("nvmlShutdown failed: %s", error)

    def __enter__(self) -> NvmlSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
