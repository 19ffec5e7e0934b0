"""Huawei Ascend NPU readings from DCMI (libdcmi.so), one typed snapshot per sweep.

Chips are addressed as (card id, device id) and identified as ``npu-<card>-<device>``. DCMI's units become SI here:
0.1 W to watts, MB to bytes, MHz to hertz, percent to fractions. A call that fails for one chip leaves that field
``None`` and the other chips are still read; a call the chip does not support is not asked again. DCMI rate-limits
heavy concurrent querying, so sweeps run one at a time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from eagleeye_otel.errors import HardwareUnavailable
from eagleeye_otel.log_limiter import LogLimiter
from eagleeye_otel.receivers.hardware._dcmi_binding import (
    DCMI_ERR_CODE_DEVICE_NOT_EXIST,
    FREQ_AICORE_CURRENT,
    HEALTH_ABSENT,
    UTIL_AICORE,
    UTIL_HBM,
    UTIL_NPU,
    DcmiCallError,
    DcmiLibrary,
)
from eagleeye_otel.receivers.hardware._model import DeviceIdentity, DeviceStatus, NpuReading

__all__ = ["DcmiSource"]

_logger = logging.getLogger(__name__)

_VERSION_INFO = Path("usr/local/Ascend/driver/version.info")
"""The driver's version file, relative to the root path; read when ``dcmi_get_driver_version`` cannot answer."""

_MIB = 1024 * 1024
_T = TypeVar("_T")


@dataclass
class _Chip:
    """What the source remembers about a chip between sweeps."""

    card_id: int
    device_id: int
    logic_id: int | None = None
    model: str | None = None
    unsupported: set[str] = field(default_factory=set)  # calls, e.g. "dcmi_get_device_hbm_info", not asked again

    def identity(self, driver_version: str | None) -> DeviceIdentity:
        return DeviceIdentity(
            id=f"npu-{self.card_id}-{self.device_id}",
            type="npu",
            vendor="huawei",
            index=-1 if self.logic_id is None else self.logic_id,  # -1 until DCMI gives the logic id
            model=self.model,
            driver_version=driver_version,
        )


def _read_version_info(root_path: str) -> str | None:
    """``Version=...`` from the driver's version.info, or None when the file is missing or has no such line."""
    try:
        text = (Path(root_path) / _VERSION_INFO).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip().lower() == "version" and value.strip():
            return value.strip()
    return None


class DcmiSource:
    """Reads every Ascend chip on the node through DCMI.

    Args:
        library: an initialised DCMI binding (``dcmi_init`` already called).
        driver_version: the NPU driver version to put in every chip's identity.
    """

    def __init__(self, library: DcmiLibrary, *, driver_version: str | None = None) -> None:
        self._library = library
        self._driver_version = driver_version
        self._chips: dict[tuple[int, int], _Chip] = {}
        self._lock = threading.Lock()
        self._warnings = LogLimiter(_logger)

    @classmethod
    def open(cls, library_path: str | None = None, *, root_path: str = "/") -> DcmiSource:
        """Load libdcmi.so, call ``dcmi_init``, check that a card is listed and read the driver version.

        This is the probe before registering: a node without a usable NPU gets an exception, not a silent source.

        Args:
            library_path: a configured libdcmi.so; None searches the loader's path, then the Ascend install dirs.
            root_path: where the host's filesystem is mounted, for the driver's ``version.info`` fallback.

        Raises:
            HardwareUnavailable: the library cannot be loaded (the message names every path tried), will not
                initialise, or lists no NPU card.
        """
        library = DcmiLibrary.load(library_path)
        try:
            library.init()
            cards = library.card_list()
        except DcmiCallError as exc:
            raise HardwareUnavailable(f"DCMI: {exc}") from exc
        if not cards:
            raise HardwareUnavailable("DCMI reports no NPU card on this node")
        try:
            driver_version: str | None = library.driver_version()
        except DcmiCallError:
            driver_version = _read_version_info(root_path)
        return cls(library, driver_version=driver_version)

    def sweep(self) -> tuple[NpuReading, ...]:
        """Read every chip once; never raises.

        Returns:
            One reading per chip, sorted by (card, device). A chip seen before that DCMI no longer lists is
            reported ``LOST``; the chips of a card DCMI cannot enumerate this time are reported ``ERROR``.
        """
        with self._lock:
            try:
                return self._sweep()
            except Exception:  # a bug here must not take the collection down; the chips are simply not read
                self._warnings.warning("DCMI sweep failed", exc_info=True)
                return ()

    def _sweep(self) -> tuple[NpuReading, ...]:
        listed: set[tuple[int, int]] = set()
        unreadable: dict[tuple[int, int], str] = {}
        try:
            cards = self._library.card_list()
        except DcmiCallError as exc:
            self._warnings.warning("DCMI: cannot list the NPU cards: %s", exc)
            cards = ()
            unreadable = dict.fromkeys(self._chips, str(exc))
        for card_id in cards:
            try:
                count = self._library.device_num_in_card(card_id)
            except DcmiCallError as exc:
                self._warnings.warning("DCMI: cannot list the chips of card %d: %s", card_id, exc)
                unreadable.update((key, str(exc)) for key in self._chips if key[0] == card_id)
                continue
            listed.update((card_id, device_id) for device_id in range(count))
        readings = [self._read_chip(self._chips.setdefault(key, _Chip(*key))) for key in sorted(listed)]
        for key, chip in self._chips.items():
            if key in unreadable:
                readings.append(self._reading(chip, DeviceStatus.ERROR, unreadable[key]))
            elif key not in listed:
                readings.append(self._reading(chip, DeviceStatus.LOST, "no longer listed by DCMI"))
        return tuple(sorted(readings, key=lambda r: (r.card_id, r.device_id)))

    def _reading(self, chip: _Chip, status: DeviceStatus, detail: str) -> NpuReading:
        return NpuReading(
            identity=chip.identity(self._driver_version),
            card_id=chip.card_id,
            device_id=chip.device_id,
            status=status,
            detail=detail,
        )

    def _read_chip(self, chip: _Chip) -> NpuReading:
        """One chip: health first (absent or unreadable ends the chip's sweep), then each value on its own."""
        lib, card, device = self._library, chip.card_id, chip.device_id
        failures: list[tuple[str, DcmiCallError]] = []  # (call, e.g. "dcmi_get_device_frequency(7)", error)

        def read(name: str, call: Callable[[], _T]) -> _T | None:
            if name in chip.unsupported:
                return None
            try:
                return call()
            except DcmiCallError as exc:
                if exc.unsupported:
                    chip.unsupported.add(name)
                    _logger.info("DCMI: npu-%d-%d: %s; not asked again", card, device, exc)
                else:
                    failures.append((name, exc))
                    self._warnings.warning("DCMI: npu-%d-%d: %s returned %s", card, device, name, exc.code)
                return None

        def utilization(input_type: int) -> float | None:
            name = f"dcmi_get_device_utilization_rate({input_type})"
            percent = read(name, lambda: lib.utilization_rate(card, device, input_type))
            return None if percent is None else percent / 100

        health = read("dcmi_get_device_health", lambda: lib.health(card, device))
        if health == HEALTH_ABSENT:
            return self._reading(chip, DeviceStatus.LOST, "dcmi_get_device_health: device absent (0xFFFFFFFF)")
        if failures:  # the chip did not answer its health: the other calls would fail (or time out) the same way
            lost = failures[0][1].code == DCMI_ERR_CODE_DEVICE_NOT_EXIST
            return self._reading(chip, DeviceStatus.LOST if lost else DeviceStatus.ERROR, str(failures[0][1]))

        if chip.logic_id is None:
            chip.logic_id = read("dcmi_get_device_logic_id", lambda: lib.logic_id(card, device))
        if chip.model is None:
            info = read("dcmi_get_device_chip_info", lambda: lib.chip_info(card, device))
            if info is not None:
                chip.model = f"{info.chip_type}{info.chip_name}" or None  # e.g. "Ascend910B3"
        error_codes = read("dcmi_get_device_errorcode_v2", lambda: lib.error_codes(card, device))
        temperature = read("dcmi_get_device_temperature", lambda: lib.temperature(card, device))
        power = read("dcmi_get_device_power_info", lambda: lib.power(card, device))
        aicore, hbm_util, npu = utilization(UTIL_AICORE), utilization(UTIL_HBM), utilization(UTIL_NPU)
        hbm = read("dcmi_get_device_hbm_info", lambda: lib.hbm_info(card, device))
        frequency = read(
            f"dcmi_get_device_frequency({FREQ_AICORE_CURRENT})",
            lambda: lib.frequency(card, device, FREQ_AICORE_CURRENT),
        )
        return NpuReading(
            identity=chip.identity(self._driver_version),
            card_id=card,
            device_id=device,
            status=DeviceStatus.OK,
            detail="; ".join(f"{name} returned {exc.code}" for name, exc in failures) or None,
            health=health,
            error_codes=error_codes or (),
            temperature_c=None if temperature is None else float(temperature),
            power_w=None if power is None else power / 10,
            aicore_utilization=aicore,
            hbm_utilization=hbm_util,
            npu_utilization=npu,
            hbm_used_bytes=None if hbm is None else hbm.memory_usage_mb * _MIB,
            hbm_total_bytes=None if hbm is None else hbm.memory_size_mb * _MIB,
            aicore_frequency_hz=None if frequency is None else frequency * 1e6,
        )
