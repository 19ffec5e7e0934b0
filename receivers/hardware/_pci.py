"""PCI addresses in the one spelling that NVML, sysfs and the kernel log are joined on."""

from __future__ import annotations

import re

__all__ = ["normalize_pci_bus_id"]

_PCI_PARTS = re.compile(
    r"(?:(?P<domain>[0-9a-fA-F]{1,8}):)?(?P<bus>[0-9a-fA-F]{1,2}):(?P<device>[0-9a-fA-F]{1,2})"
    r"(?:\.(?P<function>[0-9a-fA-F]))?"
)


def normalize_pci_bus_id(text: str) -> str | None:
    """The one spelling both NVML and the kernel log are joined on: lower-case ``dddd:bb:dd.f``.

    Accepts NVML's ``00000000:3B:00.0``, the kernel's ``0000:3b:00`` (no function: 0), 2-digit domains and
    ``bus:device`` without a domain (domain 0), with or without a ``PCI:`` prefix.

    Returns:
        the normalised id, or None when the text is not a PCI address (bus > 0xff, device > 0x1f, function > 7).
    """
    text = text.strip()
    if text[:4].upper() == "PCI:":
        text = text[4:]
    match = _PCI_PARTS.fullmatch(text)
    if match is None:
        return None
    domain = int(match["domain"] or "0", 16)
    bus, device, function = int(match["bus"], 16), int(match["device"], 16), int(match["function"] or "0", 16)
    if device > 0x1F or function > 7:
        return None
    return f"{domain:04x}:{bus:02x}:{device:02x}.{function}"
