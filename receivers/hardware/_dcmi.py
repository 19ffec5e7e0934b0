"""Huawei Ascend NPU readings from DCMI (libdcmi.so), one typed snapshot per sweep.

Chips are addressed as (card id, device id) and identified as ``npu-<card>-<device>``. DCMI's units become SI here:
0.1 W to watts, MB to bytes, MHz to hertz, percent to fractions. A call that fails for one chip leaves that field
``None`` and the other chips are still read; a call the chip does not support is not asked again. DCMI rate-limits
heavy concurrent querying, so sweeps run one at a time, and chips are read one after the other on one worker thread.
Each chip (and the card list) is read under a deadline (:mod:`._deadline`): a chip whose call hangs is reported
``hung`` and skipped until that call returns; a card list that hangs reports every known chip ``hung``.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

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
from eagleeye_otel.receivers.hardware._deadline import DEFAULT_CALL_DEADLINE_S, CallTimedOut, DeadlineCaller
from eagleeye_otel.receivers.hardware._model import DeviceIdentity, DeviceStatus, NpuReading
from eagleeye_otel.receivers.hardware._status import SourceUnavailable

__all__ = ["DcmiSource"]

_logger = logging.getLogger(__name__)

_VERSION_INFO = Path("usr/local/Ascend/driver/version.info")
"""The driver's version file, relative to the root path; read when ``dcmi_get_driver_version`` cannot answer."""

_MIB = 1024 * 1024
_T = TypeVar("_T")
_OPEN_DEADLINE_S = 10.0
"""How long opening may take (``dcmi_init`` on a full node is slow); past it the monitor starts without DCMI."""
_CARDS = "card list"
"""The deadline key of listing the cards and their chips."""
_Listing = tuple[set[tuple[int, int]], dict[tuple[int, int], str]]


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
        call_deadline_s: how long one chip's reads (or the card list) may take before it is reported ``hung``.
    """

    def __init__(
        self,
        library: DcmiLibrary,
        *,
        driver_version: str | None = None,
        call_deadline_s: float = DEFAULT_CALL_DEADLINE_S,
    ) -> None:
        self._library = library
        self._driver_version = driver_version
        self._chips: dict[tuple[int, int], _Chip] = {}
        self._lock = threading.Lock()
        self._warnings = LogLimiter(_logger)
        self._caller = DeadlineCaller("DCMI", deadline_s=call_deadline_s)
        self.listing_hung: str | None = None
        """Why the card list is stuck, while it is; None otherwise."""

    @classmethod
    def open(
        cls, library_path: str | None = None, *, root_path: str = "/", call_deadline_s: float = DEFAULT_CALL_DEADLINE_S
    ) -> DcmiSource:
        """Load libdcmi.so, call ``dcmi_init``, check that a card is listed and read the driver version.

        This is the probe before registering: a node without a usable NPU gets an exception, not a silent source.

        Args:
            library_path: a configured libdcmi.so; None searches the loader's path, then the Ascend install dirs.
            root_path: where the host's filesystem is mounted, for the driver's ``version.info`` fallback.
            call_deadline_s: see the class.

        Raises:
            HardwareUnavailable: the library cannot be loaded (the message names every path tried), will not
                initialise (or not within 10 s), or lists no NPU card.
        """
        library = DcmiLibrary.load(library_path)
        opener = DeadlineCaller("DCMI", deadline_s=_OPEN_DEADLINE_S)
        try:
            driver_version = opener.call("open", functools.partial(_probe, library, root_path))
        except CallTimedOut as hung:
            raise SourceUnavailable(f"DCMI: {hung}", cause="init_failed") from hung
        finally:
            opener.close()
        return cls(library, driver_version=driver_version, call_deadline_s=call_deadline_s)

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
        try:
            listed, unreadable = self._caller.call(_CARDS, self._list)
        except CallTimedOut as hung:
            self.listing_hung = f"listing the chips: {hung}"
            return tuple(
                self._reading(self._chips[key], DeviceStatus.HUNG, self.listing_hung) for key in sorted(self._chips)
            )
        self.listing_hung = None
        chips = [self._chips.setdefault(key, _Chip(*key)) for key in sorted(listed)]
        reads = [((chip.card_id, chip.device_id), functools.partial(self._read_chip, chip)) for chip in chips]
        outcomes = self._caller.call_all(reads)
        readings = list(map(self._outcome_reading, chips, outcomes))
        for key, chip in self._chips.items():
            if key in unreadable:
                readings.append(self._reading(chip, DeviceStatus.ERROR, unreadable[key]))
            elif key not in listed:
                readings.append(self._reading(chip, DeviceStatus.LOST, "no longer listed by DCMI"))
        return tuple(sorted(readings, key=lambda r: (r.card_id, r.device_id)))

    def _list(self) -> _Listing:
        """The chips DCMI lists now, and the known chips of cards it cannot enumerate (with why); on the worker."""
        listed: set[tuple[int, int]] = set()
        unreadable: dict[tuple[int, int], str] = {}
        self._caller.note("dcmi_get_card_list")
        try:
            cards = self._library.card_list()
        except DcmiCallError as exc:
            self._warnings.warning("DCMI: cannot list the NPU cards: %s", exc)
            cards = ()
            unreadable = dict.fromkeys(self._chips, str(exc))
        for card_id in cards:
            self._caller.note(f"dcmi_get_device_num_in_card({card_id})")
            try:
                count = self._library.device_num_in_card(card_id)
            except DcmiCallError as exc:
                self._warnings.warning("DCMI: cannot list the chips of card %d: %s", card_id, exc)
                unreadable.update((key, str(exc)) for key in self._chips if key[0] == card_id)
                continue
            listed.update((card_id, device_id) for device_id in range(count))
        return listed, unreadable

    def _outcome_reading(self, chip: _Chip, outcome: NpuReading | BaseException) -> NpuReading:
        """What :meth:`_read_chip` returned on the worker; a chip whose call hung is reported ``hung``."""
        if isinstance(outcome, NpuReading):
            return outcome
        if not isinstance(outcome, CallTimedOut):
            raise outcome  # _read_chip reports every DCMI error itself: this is a bug, for the sweep to log
        return self._reading(chip, DeviceStatus.HUNG, str(outcome))

    @property
    def stuck(self) -> dict[str, str]:
        """What is still being read past its deadline (``npu-<card>-<device>`` or the card list), and the call."""
        return {
            f"npu-{key[0]}-{key[1]}" if isinstance(key, tuple) else str(key): call
            for key, call in self._caller.stuck().items()
        }

    def close(self) -> None:
        """Let the reader thread go; DCMI itself has nothing to release."""
        self._caller.close()

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
            self._caller.note(name)
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


def _probe(library: DcmiLibrary, root_path: str) -> str | None:
    """``dcmi_init``, a card to read, and the driver version (from ``version.info`` if DCMI cannot say)."""
    try:
        library.init()
        cards = library.card_list()
    except DcmiCallError as exc:
        raise SourceUnavailable(f"DCMI: {exc}", cause="init_failed") from exc
    if not cards:
        raise SourceUnavailable("DCMI reports no NPU card on this node", cause="no_device")
    try:
        return library.driver_version()
    except DcmiCallError:
        return _read_version_info(root_path)
