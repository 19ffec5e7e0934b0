"""Kernel-log lines to :class:`KernelEvent`: NVIDIA Xid, NVSwitch SXid, "fallen off the bus" and Ascend driver faults.

Pure code, so every variant is tested on text alone. A line may arrive as a ``/dev/kmsg`` record
(``pri,seq,usec,flags;message`` with ``\\xNN`` escapes), as ``dmesg`` output (``[  123.456789] message``, ``-T``,
``-x``, ``-r``) or from syslog / journald (``Nov 28 10:00:00 host kernel: message``); the driver markers are searched
after that prefix, so every transport yields the same event. Formats follow ``krcReportXid`` in NVIDIA's
open-gpu-kernel-modules and the Ascend driver log patterns (docs: hardware reference, sections 3.1 and 4.5).
"""

from __future__ import annotations

import re
from typing import Final

from eagleeye_otel.errors import EagleEyeError
from eagleeye_otel.receivers.hardware._model import KernelEvent, KernelEventKind
from eagleeye_otel.receivers.hardware._pci import normalize_pci_bus_id

__all__ = ["FALLEN_OFF_BUS_XID", "MAX_LINE_CHARS", "MalformedLine", "parse_line"]

MAX_LINE_CHARS: Final = 8192
"""Longer lines are cut before matching (kernel records are at most ~1 KiB), so no input makes matching slow."""

FALLEN_OFF_BUS_XID: Final = "79"
"""The code given to "fallen off the bus" lines that carry no Xid: NVIDIA treats them as Xid 79."""


class MalformedLine(EagleEyeError, ValueError):
    """A line carries an Xid or SXid marker but not the fields that follow it (cut, garbled or unknown format).

    Attributes:
        line: the line as given (cut to :data:`MAX_LINE_CHARS`).
        reason: what was missing.
    """

    def __init__(self, line: str, reason: str) -> None:
        super().__init__(f"{reason}: {line[:200]!r}")
        self.line = line
        self.reason = reason


# --- transport prefixes -------------------------------------------------------------------------------------------

_KMSG_RECORD = re.compile(r"(?P<pri>\d{1,4}),(?P<seq>\d{1,20}),(?P<usec>\d{1,20}),[^;]{0,200};")
_KMSG_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")
_PREFIX = re.compile(
    r"""
    (?:<\d{1,3}>)?                                                          # priority (dmesg -r, syslog)
    (?:(?:[A-Z][a-z]{2}\ +\d{1,2}\ \d{2}:\d{2}:\d{2}(?:\.\d{1,9})?         # syslog / journalctl short(-precise)
        |\d{4}-\d{2}-\d{2}[T\ ]\d{2}:\d{2}:\d{2}(?:[.,]\d{1,9})?(?:Z|[+-]\d{2}:?\d{2})?)   # ISO (rsyslog, short-iso)
       \ +\S{1,255}\ +kernel(?:\[\d{1,10}\])?:\ *)?
    (?:[a-z]{2,8}\ *:[a-z]{2,7}\ *:\ )?                                     # dmesg -x: "kern  :err   : "
    (?:\[\ *(?P<ts>\d{1,12}\.\d{1,9})\]\ *                                  # dmesg: seconds since boot
      |\[[A-Z][a-z]{2}\ [^\]]{10,40}\]\ *)?                                 # dmesg -T: wall clock
    (?:\S{1,255}\ +kernel:\ *)?                                             # journalctl short-monotonic
    """,
    re.VERBOSE,
)

# --- NVIDIA -------------------------------------------------------------------------------------------------------

_PCI_ID = r"[0-9a-fA-F]{1,8}(?::[0-9a-fA-F]{1,2}){1,2}(?:\.[0-9a-fA-F])?"
_XID_MARKER = re.compile(r"NVRM: Xid")
_XID = re.compile(
    rf"NVRM: Xid \((?:PCI:)?(?P<pci>{_PCI_ID})(?: [^()\s]{{1,64}}){{0,4}}\): (?P<code>\d{{1,9}})(?:,|\s*$)"
)
_SXID_MARKER = re.compile(r"nvidia-nvswitch\d{0,4}: SXid\b|SXid \(")
_SXID = re.compile(rf"SXid \((?:PCI:)?(?P<pci>{_PCI_ID})\): (?P<code>\d{{1,9}})(?:, ?(?P<detail>.*)|\s*$)", re.DOTALL)
_SXID_DETAIL = re.compile(r"Severity \d+ Engine instance|Data \{")
"""Lines the NVSwitch driver prints after an SXid's first line, repeating its code: part of that event."""
_NVRM = re.compile(r"NVRM: ")
_FALLEN = re.compile(r"fallen off the bus", re.IGNORECASE)
_GPU_PCI = re.compile(r"\b(?P<pci>[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}(?:\.[0-7])?)")

# --- Huawei Ascend ------------------------------------------------------------------------------------------------

_ASCEND_MARKER = re.compile(r"\[ascend\]|\[fault_manager\]|\b(?:pcivnic|devdrv|hdcdrv)_\w", re.IGNORECASE)
_ASCEND_TAG = re.compile(r"\[ascend\]|\[fault_manager\]", re.IGNORECASE)
_ASCEND_EVENT_ID = re.compile(r"event_id:\s*\[?0x(?P<hex>[0-9a-fA-F]{1,8})\b")
_ASCEND_RULES: Final = (
    # (pattern, code): host-side signatures from Huawei's fault-diagnosis rules; the first match wins.
    (re.compile(r"Heartbeat lost", re.IGNORECASE), "0x40F84E00"),  # card drop, as the DCMI event id
    (re.compile(r"\bis dead\b", re.IGNORECASE), "device_dead"),
    (re.compile(r"Device is abnormal", re.IGNORECASE), "device_abnormal"),
    (re.compile(r"Device irq not resp", re.IGNORECASE), "irq_not_responding"),
    (re.compile(r"pcie not ready", re.IGNORECASE), "pcie_not_ready"),
    (re.compile(r"dma copy fail", re.IGNORECASE), "dma_copy_failed"),
    (re.compile(r"dma timeout", re.IGNORECASE), "dma_timeout"),
    (re.compile(r"pcie bridge bus reset fail", re.IGNORECASE), "pcie_bridge_reset_failed"),
)
_ASCEND_DEVICE = re.compile(r"\b(?:device|dev_id|devid)(?:\s*[=:]\s*|\s+)(?P<id>\d{1,5})\b", re.IGNORECASE)


def parse_line(line: str) -> KernelEvent | None:
    """One kernel-log line (or ``/dev/kmsg`` record) as an event, or None when it is about something else.

    Args:
        line: the text, with or without its transport prefix and trailing newline.

    Returns:
        the event; None for unrelated lines, for the detail lines that follow an SXid, and for Ascend driver lines
        that match no known fault.

    Raises:
        MalformedLine: the line has an Xid or SXid marker but not the address and code that must follow it.
    """
    line = line[:MAX_LINE_CHARS]
    timestamp, text = _strip_transport(line)
    if (marker := _XID_MARKER.search(text)) is not None:
        return _parse_xid(line, text[marker.start() :], timestamp)
    if (marker := _SXID_MARKER.search(text)) is not None:
        return _parse_sxid(line, text[marker.start() :], timestamp)
    if (nvrm := _NVRM.search(text)) is not None and _FALLEN.search(text, nvrm.end()) is not None:
        return _fallen_off_bus(text[nvrm.start() :].rstrip(), timestamp)
    if _ASCEND_MARKER.search(text) is not None:
        return _parse_ascend(text, timestamp)
    return None


def _strip_transport(line: str) -> tuple[float | None, str]:
    """Split the kmsg / dmesg / syslog prefix off: (seconds since boot if given, the kernel's own text)."""
    record = _KMSG_RECORD.match(line)
    if record is not None:
        return int(record["usec"]) / 1e6, _unescape_kmsg(line[record.end() :]).rstrip("\r\n")
    prefix = _PREFIX.match(line)  # every group is optional, so it matches, if only the empty string
    if prefix is None:
        return None, line.rstrip("\r\n")
    timestamp = float(prefix["ts"]) if prefix["ts"] else None
    return timestamp, line[prefix.end() :].rstrip("\r\n")


def _unescape_kmsg(text: str) -> str:
    """Undo kmsg's ``\\xNN`` escaping (control bytes, ``\\``, and each byte of non-ASCII UTF-8)."""
    if "\\x" not in text:
        return text
    raw = bytearray()
    position = 0
    for escape in _KMSG_ESCAPE.finditer(text):
        raw += text[position : escape.start()].encode("utf-8", "replace")
        raw.append(int(escape[1], 16))
        position = escape.end()
    raw += text[position:].encode("utf-8", "replace")
    return raw.decode("utf-8", "replace")


def _parse_xid(line: str, message: str, timestamp: float | None) -> KernelEvent:
    match = _XID.match(message)
    if match is None:
        raise MalformedLine(line, "Xid without a (PCI address): code")
    device = normalize_pci_bus_id(match["pci"])
    if device is None:
        raise MalformedLine(line, f"Xid with an invalid PCI address {match['pci']!r}")
    return KernelEvent(KernelEventKind.XID, str(int(match["code"])), device, _encodable(message.rstrip()), timestamp)


def _parse_sxid(line: str, message: str, timestamp: float | None) -> KernelEvent | None:
    match = _SXID.search(message)
    if match is None:
        raise MalformedLine(line, "SXid without a (PCI address): code")
    device = normalize_pci_bus_id(match["pci"])
    if device is None:
        raise MalformedLine(line, f"SXid with an invalid PCI address {match['pci']!r}")
    if match["detail"] is not None and _SXID_DETAIL.match(match["detail"]) is not None:
        return None
    return KernelEvent(KernelEventKind.SXID, str(int(match["code"])), device, _encodable(message.rstrip()), timestamp)


def _fallen_off_bus(message: str, timestamp: float | None) -> KernelEvent:
    """``NVRM: GPU 0000:18:00.0: GPU has fallen off the bus.`` and the "The NVIDIA GPU ..." record.

    That record spans three lines; kmsg keeps them in one record, but dmesg and syslog split them, and then the
    last line names no GPU: the event is still counted, with no device.
    """
    address = _GPU_PCI.search(message)
    device = None if address is None else normalize_pci_bus_id(address["pci"])
    return KernelEvent(KernelEventKind.FALLEN_OFF_BUS, FALLEN_OFF_BUS_XID, device, _encodable(message), timestamp)


def _parse_ascend(text: str, timestamp: float | None) -> KernelEvent | None:
    tag = _ASCEND_TAG.search(text)
    message = (text if tag is None else text[tag.start() :]).rstrip()
    event_id = _ASCEND_EVENT_ID.search(message)
    if event_id is not None:
        code = f"0x{int(event_id['hex'], 16):08X}"
    else:
        code = next((code for pattern, code in _ASCEND_RULES if pattern.search(message)), "")
        if not code:
            return None
    device = _ASCEND_DEVICE.search(message)
    return KernelEvent(
        KernelEventKind.ASCEND, code, None if device is None else device["id"], _encodable(message), timestamp
    )


def _encodable(message: str) -> str:
    """``message`` with lone surrogates (text decoded with ``surrogateescape``) replaced by ``?``.

    The message travels on as JSON and OTLP, whose encoders refuse a lone surrogate; so would every later finding
    quoting it. Checked only on event lines, which are rare, and cheaply for ASCII ones.
    """
    return message if message.isascii() else message.encode("utf-8", "replace").decode("utf-8")
