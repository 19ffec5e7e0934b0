"""A hardware series' attributes, built once and handed out again every sweep (the same mapping object).

Building them per point was most of what a collection cost: a device's identity (``hw.id``, ``hw.name``,
``hw.type``) merged with a point's own attributes, and on ``hw.status`` the device's description (see
:mod:`eagleeye_otel.semconv._hardware`). The OTLP encoder also keys each series' encoding on the mapping it gets.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Final

from opentelemetry.util.types import AttributeValue

from eagleeye_otel.receivers.hardware._model import DeviceIdentity
from eagleeye_otel.semconv import _hardware as hw

__all__ = ["NODE_SERIES", "Attributes", "Own", "Point", "Series", "as_own", "described_series", "device_series"]

Attributes = Mapping[str, AttributeValue]
"""A series' attributes; the same object every sweep for the same series. Read-only."""
Point = tuple[int | float, Attributes]

Own = tuple[tuple[str, AttributeValue], ...]
"""A point's own attributes (besides its device's), hashable: the key of its series within the device."""

_MAX_SERIES_PER_DEVICE: Final = 4096
"""Attribute sets kept per device (or for the node); past it they are built again. Xid codes, kernel-log keys and
unknown clock-event reasons are the only open-ended ones, each bounded by its source."""


class Series:
    """The attribute sets of one device (or of the node): its own attributes merged with each point's, built once."""

    def __init__(self, base: Attributes) -> None:
        self._base = base
        self._sets: dict[Own, Attributes] = {}
        self._groups: dict[tuple[Own, ...], tuple[Attributes, ...]] = {}

    def __call__(self, own: Own) -> Attributes:
        found = self._sets.get(own)
        if found is None:
            if len(self._sets) >= _MAX_SERIES_PER_DEVICE:
                self._sets.clear()
                self._groups.clear()
            found = self._sets[own] = {**self._base, **dict(own)}
        return found

    def group(self, owns: tuple[Own, ...]) -> tuple[Attributes, ...]:
        """The attribute sets of a fixed group of points (a metric's fields), in one look-up."""
        found = self._groups.get(owns)
        if found is None:
            found = self._groups[owns] = tuple(map(self, owns))
        return found


@functools.lru_cache(maxsize=1024)
def device_series(identity: DeviceIdentity) -> Series:
    """The series of a device, each carrying ``hw.id``, ``hw.name`` and ``hw.type``."""
    return Series(
        {
            hw.HW_ID: identity.id,
            hw.HW_NAME: f"{identity.type.upper()} {identity.index}" if identity.index >= 0 else identity.id,
            hw.HW_TYPE: identity.type,
        }
    )


@functools.lru_cache(maxsize=1024)
def described_series(identity: DeviceIdentity) -> Series:
    """The identity plus what the device is (vendor, model, versions, bus id), for its ``hw.status`` points."""
    described = {
        hw.HW_VENDOR: identity.vendor,
        hw.HW_MODEL: identity.model,
        hw.HW_SERIAL_NUMBER: identity.serial,
        hw.HW_DRIVER_VERSION: identity.driver_version,
        hw.HW_FIRMWARE_VERSION: identity.firmware_version,
        hw.EAGLEEYE_HW_PCI_BUS_ID: identity.pci_bus_id,
    }
    known = {key: value for key, value in described.items() if value is not None}
    return Series({**device_series(identity)(()), **known})


NODE_SERIES = Series({})
"""The series of node-level points, which carry their own attributes only."""


def as_own(attributes: Mapping[str, AttributeValue]) -> Own:
    """A point's own attributes in their hashable form."""
    return tuple(attributes.items())
