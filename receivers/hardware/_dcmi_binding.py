"""A small typed ctypes binding of the libdcmi.so functions the DCMI source calls.

Prototypes and structs follow Huawei's ``dcmi_interface_api.h``; every function returns an ``int`` (0 success, else a
negative DCMI error code), which the wrappers turn into :class:`DcmiCallError`. Values keep DCMI's units (0.1 W, MB,
MHz, %): converting them is the source's job. Only ``dcmi_init``, ``dcmi_get_card_list`` and
``dcmi_get_device_num_in_card`` are required; a function this library version lacks answers as "not supported".
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from dataclasses import dataclass

from eagleeye_otel.errors import EagleEyeError
from eagleeye_otel.receivers.hardware._status import SourceUnavailable

__all__ = [
    "DCMI_ERR_CODE_DEVICE_NOT_EXIST",
    "DCMI_ERR_CODE_NOT_SUPPORT",
    "DCMI_ERR_CODE_NOT_SUPPORT_IN_CONTAINER",
    "FREQ_AICORE_CURRENT",
    "HEALTH_ABSENT",
    "LIBRARY_DIRS",
    "LIBRARY_NAME",
    "UTIL_AICORE",
    "UTIL_HBM",
    "UTIL_NPU",
    "ChipInfo",
    "DcmiCallError",
    "DcmiLibrary",
    "HbmInfo",
]

LIBRARY_NAME = "libdcmi.so"
LIBRARY_DIRS = (
    "/usr/local/Ascend/driver/lib64/driver",
    "/usr/local/Ascend/driver/lib64/common",
    "/usr/local/Ascend/add-ons",
    "/usr/local/Ascend/driver/lib64",
    "/usr/local/dcmi",
)
"""Where Ascend installs put libdcmi.so (npu-exporter's LD_LIBRARY_PATH), tried after the loader's own search."""

DCMI_ERR_CODE_DEVICE_NOT_EXIST = -8008
DCMI_ERR_CODE_NOT_SUPPORT_IN_CONTAINER = -8013
DCMI_ERR_CODE_NOT_SUPPORT = -8255
_UNSUPPORTED = frozenset({DCMI_ERR_CODE_NOT_SUPPORT, DCMI_ERR_CODE_NOT_SUPPORT_IN_CONTAINER})

HEALTH_ABSENT = 0xFFFFFFFF
"""``dcmi_get_device_health``: the chip is not there."""

UTIL_AICORE = 2
UTIL_HBM = 6
UTIL_NPU = 13
"""``dcmi_get_device_utilization_rate`` input types."""

FREQ_AICORE_CURRENT = 7
"""``enum dcmi_freq_type``: DCMI_FREQ_AICORE_CURRENT_."""

_MAX_CARDS = 64
_MAX_ERROR_CODES = 128
_DRIVER_VERSION_LEN = 64
_MAX_CHIP_NAME_LEN = 32

_int_p = ctypes.POINTER(ctypes.c_int)
_uint_p = ctypes.POINTER(ctypes.c_uint)


class _ChipInfoStruct(ctypes.Structure):
    _fields_ = (
        ("chip_type", ctypes.c_ubyte * _MAX_CHIP_NAME_LEN),
        ("chip_name", ctypes.c_ubyte * _MAX_CHIP_NAME_LEN),
        ("chip_ver", ctypes.c_ubyte * _MAX_CHIP_NAME_LEN),
        ("aicore_cnt", ctypes.c_uint),
    )


class _HbmInfoStruct(ctypes.Structure):
    _fields_ = (
        ("memory_size", ctypes.c_ulonglong),
        ("freq", ctypes.c_uint),
        ("memory_usage", ctypes.c_ulonglong),
        ("temp", ctypes.c_int),
        ("bandwith_util_rate", ctypes.c_uint),
    )


_PROTOTYPES: dict[str, tuple[object, ...]] = {
    "dcmi_init": (),
    "dcmi_get_card_list": (_int_p, _int_p, ctypes.c_int),
    "dcmi_get_device_num_in_card": (ctypes.c_int, _int_p),
    "dcmi_get_device_logic_id": (_int_p, ctypes.c_int, ctypes.c_int),
    "dcmi_get_device_health": (ctypes.c_int, ctypes.c_int, _uint_p),
    "dcmi_get_device_errorcode_v2": (ctypes.c_int, ctypes.c_int, _int_p, _uint_p, ctypes.c_uint),
    "dcmi_get_device_temperature": (ctypes.c_int, ctypes.c_int, _int_p),
    "dcmi_get_device_power_info": (ctypes.c_int, ctypes.c_int, _int_p),
    "dcmi_get_device_utilization_rate": (ctypes.c_int, ctypes.c_int, ctypes.c_int, _uint_p),
    "dcmi_get_device_hbm_info": (ctypes.c_int, ctypes.c_int, ctypes.POINTER(_HbmInfoStruct)),
    "dcmi_get_device_frequency": (ctypes.c_int, ctypes.c_int, ctypes.c_int, _uint_p),  # enum: int-sized
    "dcmi_get_device_chip_info": (ctypes.c_int, ctypes.c_int, ctypes.POINTER(_ChipInfoStruct)),
    "dcmi_get_driver_version": (ctypes.c_char_p, ctypes.c_uint),
}
_REQUIRED = ("dcmi_init", "dcmi_get_card_list", "dcmi_get_device_num_in_card")


class DcmiCallError(EagleEyeError, RuntimeError):
    """A DCMI function returned an error code.

    Attributes:
        function: the C function's name.
        code: its return code; None when this library lacks the function.
    """

    def __init__(self, function: str, code: int | None) -> None:
        super().__init__(f"{function} " + ("is missing from libdcmi.so" if code is None else f"returned {code}"))
        self.function = function
        self.code = code

    @property
    def unsupported(self) -> bool:
        """True when asking again is pointless: the chip, the library or the container lacks the function."""
        return self.code is None or self.code in _UNSUPPORTED


@dataclass(frozen=True)
class ChipInfo:
    """``struct dcmi_chip_info``, decoded: e.g. type "Ascend", name "910B3", version "V1"."""

    chip_type: str
    chip_name: str
    chip_ver: str
    aicore_cnt: int


@dataclass(frozen=True)
class HbmInfo:
    """The part of ``struct dcmi_hbm_info`` the source reads, in MB."""

    memory_size_mb: int
    memory_usage_mb: int


def _decode(raw: ctypes.Array[ctypes.c_ubyte]) -> str:
    """A fixed-size C string field, which may lack its terminating NUL when full."""
    return bytes(raw).split(b"\0", 1)[0].decode("utf-8", "replace").strip()


def _load(library_path: str | None) -> ctypes.CDLL:
    """Open the configured path, else the bare name (LD_LIBRARY_PATH, ldconfig cache), then the Ascend dirs."""
    candidates = (
        (library_path,)
        if library_path is not None
        else (LIBRARY_NAME, *(os.path.join(d, LIBRARY_NAME) for d in LIBRARY_DIRS))
    )
    failures: list[str] = []
    found = False  # a candidate existed but would not load (a missing dependency, a wrong architecture)
    for candidate in candidates:
        try:
            return ctypes.CDLL(candidate)
        except OSError as exc:
            # Name the reason only when the file was there: a missing dependency, a wrong architecture.
            if "/" in candidate:
                found = found or os.path.exists(candidate)
                failures.append(f"{candidate} ({exc})" if os.path.exists(candidate) else candidate)
            elif str(exc).startswith(f"{candidate}: cannot open shared object file"):
                failures.append(f"{candidate} (LD_LIBRARY_PATH and the ldconfig cache)")
            else:
                found = True
                failures.append(f"{candidate} ({exc})")
    raise SourceUnavailable(
        f"DCMI: cannot load {LIBRARY_NAME}; tried {', '.join(failures)}",
        cause="library_not_loadable" if found else "library_not_found",
    )


class DcmiLibrary:
    """libdcmi.so with its prototypes declared; one instance per process.

    Args:
        cdll: the loaded library.

    Raises:
        HardwareUnavailable: the library lacks a function every DCMI version has.
    """

    def __init__(self, cdll: ctypes.CDLL) -> None:
        self._functions: dict[str, Callable[..., int]] = {}
        for name, argtypes in _PROTOTYPES.items():
            try:
                function = getattr(cdll, name)
            except AttributeError:
                if name in _REQUIRED:
                    raise SourceUnavailable(
                        f"DCMI: {cdll._name} has no {name}; is it libdcmi.so?", cause="library_not_loadable"
                    ) from None
                continue
            function.argtypes = argtypes
            function.restype = ctypes.c_int
            self._functions[name] = function

    @classmethod
    def load(cls, library_path: str | None = None) -> DcmiLibrary:
        """Load libdcmi.so from ``library_path``, or search the usual places.

        Raises:
            HardwareUnavailable: no candidate could be loaded; the message names every path tried.
        """
        return cls(_load(library_path))

    def _call(self, name: str, *args: object) -> None:
        function = self._functions.get(name)
        if function is None:
            raise DcmiCallError(name, None)
        code = function(*args)
        if code != 0:
            raise DcmiCallError(name, code)

    def init(self) -> None:
        """``dcmi_init``: once per process, before any other call."""
        self._call("dcmi_init")

    def driver_version(self) -> str:
        """``dcmi_get_driver_version``: the NPU driver's version string."""
        buffer = ctypes.create_string_buffer(_DRIVER_VERSION_LEN)
        self._call("dcmi_get_driver_version", buffer, _DRIVER_VERSION_LEN)
        return buffer.value.decode("utf-8", "replace").strip()

    def card_list(self) -> tuple[int, ...]:
        """``dcmi_get_card_list``: the ids of the NPU management units (cards)."""
        count = ctypes.c_int(0)
        cards = (ctypes.c_int * _MAX_CARDS)()
        self._call("dcmi_get_card_list", ctypes.byref(count), cards, _MAX_CARDS)
        return tuple(cards[: max(0, min(count.value, _MAX_CARDS))])

    def device_num_in_card(self, card_id: int) -> int:
        """``dcmi_get_device_num_in_card``: chips on a card, addressed as device ids 0..n-1."""
        count = ctypes.c_int(0)
        self._call("dcmi_get_device_num_in_card", card_id, ctypes.byref(count))
        return count.value

    def logic_id(self, card_id: int, device_id: int) -> int:
        """``dcmi_get_device_logic_id``: the id CANN and torch-npu use (ASCEND_RT_VISIBLE_DEVICES)."""
        logic_id = ctypes.c_int(0)
        self._call("dcmi_get_device_logic_id", ctypes.byref(logic_id), card_id, device_id)
        return logic_id.value

    def health(self, card_id: int, device_id: int) -> int:
        """``dcmi_get_device_health``: 0 normal, 1 minor, 2 major, 3 critical, :data:`HEALTH_ABSENT`."""
        health = ctypes.c_uint(0)
        self._call("dcmi_get_device_health", card_id, device_id, ctypes.byref(health))
        return health.value

    def error_codes(self, card_id: int, device_id: int) -> tuple[int, ...]:
        """``dcmi_get_device_errorcode_v2``: the chip's current fault event ids (at most 128)."""
        count = ctypes.c_int(0)
        codes = (ctypes.c_uint * _MAX_ERROR_CODES)()
        self._call("dcmi_get_device_errorcode_v2", card_id, device_id, ctypes.byref(count), codes, _MAX_ERROR_CODES)
        return tuple(codes[: max(0, min(count.value, _MAX_ERROR_CODES))])

    def temperature(self, card_id: int, device_id: int) -> int:
        """``dcmi_get_device_temperature``: °C."""
        value = ctypes.c_int(0)
        self._call("dcmi_get_device_temperature", card_id, device_id, ctypes.byref(value))
        return value.value

    def power(self, card_id: int, device_id: int) -> int:
        """``dcmi_get_device_power_info``: tenths of a watt."""
        value = ctypes.c_int(0)
        self._call("dcmi_get_device_power_info", card_id, device_id, ctypes.byref(value))
        return value.value

    def utilization_rate(self, card_id: int, device_id: int, input_type: int) -> int:
        """``dcmi_get_device_utilization_rate``: percent, for :data:`UTIL_AICORE`, :data:`UTIL_HBM`, ...."""
        value = ctypes.c_uint(0)
        self._call("dcmi_get_device_utilization_rate", card_id, device_id, input_type, ctypes.byref(value))
        return value.value

    def hbm_info(self, card_id: int, device_id: int) -> HbmInfo:
        """``dcmi_get_device_hbm_info``: HBM size and usage in MB (training and A2/A3 parts only)."""
        info = _HbmInfoStruct()
        self._call("dcmi_get_device_hbm_info", card_id, device_id, ctypes.byref(info))
        return HbmInfo(memory_size_mb=info.memory_size, memory_usage_mb=info.memory_usage)

    def frequency(self, card_id: int, device_id: int, freq_type: int) -> int:
        """``dcmi_get_device_frequency``: MHz, for a ``dcmi_freq_type`` such as :data:`FREQ_AICORE_CURRENT`."""
        value = ctypes.c_uint(0)
        self._call("dcmi_get_device_frequency", card_id, device_id, freq_type, ctypes.byref(value))
        return value.value

    def chip_info(self, card_id: int, device_id: int) -> ChipInfo:
        """``dcmi_get_device_chip_info``: chip type, name and version."""
        info = _ChipInfoStruct()
        self._call("dcmi_get_device_chip_info", card_id, device_id, ctypes.byref(info))
        return ChipInfo(
            chip_type=_decode(info.chip_type),
            chip_name=_decode(info.chip_name),
            chip_ver=_decode(info.chip_ver),
            aicore_cnt=info.aicore_cnt,
        )
