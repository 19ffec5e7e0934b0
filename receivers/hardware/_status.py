"""Whether each source is there, missing as expected, or missing when it should not be.

A node without GPUs has no NVML library, and that is no fault; a GPU node whose NVML library will not load is blind,
and the diagnosis must say so. The difference is on the PCI bus: a source that did not open is ``unavailable``
(a fault) when its library is there but fails, or when the bus shows the devices it would read (NVIDIA display or
3D controllers, Huawei processing accelerators), and ``absent`` (no fault) otherwise.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

from eagleeye_otel.errors import HardwareUnavailable
from eagleeye_otel.receivers.hardware._model import SourceState, SourceStatus

__all__ = ["SourceUnavailable", "pci_devices_of", "status_at_open"]

_logger = logging.getLogger(__name__)

_PCI_DEVICES: Final = Path("sys/bus/pci/devices")
_PCI_IDS: Final = {
    "nvml": ("0x10de", ("0x0300", "0x0302")),  # NVIDIA; VGA or 3D controller (not the NVSwitch bridges)
    "dcmi": ("0x19e5", ("0x1200",)),  # Huawei; processing accelerator (Ascend)
}
"""Per source: the PCI vendor id and the class prefixes of the devices it reads."""

_EXPECTED_WHEN_MISSING: Final = frozenset({"binding_missing", "library_not_found", "no_device", "off"})
"""Causes that mean "this node has none" unless the PCI bus says otherwise."""


class SourceUnavailable(HardwareUnavailable):
    """A source cannot be opened, with why in one word.

    Attributes:
        cause: one of :data:`~eagleeye_otel.semconv._hardware.SOURCE_CAUSES` (``library_not_loadable``, ...).
    """

    def __init__(self, reason: str, *, cause: str) -> None:
        super().__init__(reason)
        self.cause = cause


def pci_devices_of(source: str, root_path: str | Path = "/") -> list[str]:
    """The PCI addresses of the devices ``source`` (``nvml`` or ``dcmi``) would read, from sysfs; [] if unreadable."""
    ids = _PCI_IDS.get(source)
    if ids is None:
        return []
    vendor, classes = ids
    found = []
    try:
        for device in sorted(Path(root_path, _PCI_DEVICES).iterdir()):
            try:
                if (device / "vendor").read_text().strip().lower() != vendor:
                    continue
                if (device / "class").read_text().strip().lower().startswith(classes):
                    found.append(device.name)
            except OSError:
                continue
    except OSError as error:
        _logger.debug("hardware monitor: cannot list PCI devices: %s", error)
    return found


def status_at_open(
    source: str, error: HardwareUnavailable, root_path: str | Path = "/", *, default_cause: str = "init_failed"
) -> SourceStatus:
    """The status of a source that did not open: ``absent`` when the node has none of its devices, else
    ``unavailable``, with the cause word (``default_cause`` when the error names none) and the note."""
    cause = error.cause if isinstance(error, SourceUnavailable) else default_cause
    if cause in _EXPECTED_WHEN_MISSING:
        on_bus = pci_devices_of(source, root_path)
        if on_bus:
            detail = f"{error.reason}; but the PCI bus has {len(on_bus)} such device(s), first {on_bus[0]}"
            return SourceStatus(SourceState.UNAVAILABLE, cause, detail)
        return SourceStatus(SourceState.ABSENT, cause, error.reason)
    return SourceStatus(SourceState.UNAVAILABLE, cause, error.reason)
