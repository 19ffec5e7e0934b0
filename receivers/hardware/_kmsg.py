"""Kernel-log source: Xid, SXid, "fallen off the bus" and Ascend faults counted from the kernel log.

NVML's Xid events carry no text and are not delivered everywhere, so the log stays the source of record
(hardware reference, section 2.5). The monitor calls :meth:`KernelLogReader.poll` once per sweep: every source reads
without blocking, so no thread is needed. :func:`open_kernel_log` tries a file the user names (``--dmesg-file``), else
``<root_path>/dev/kmsg``, then the ``dmesg`` command.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from eagleeye_otel.errors import ConfigError, HardwareUnavailable
from eagleeye_otel.log_limiter import LogLimiter
from eagleeye_otel.receivers.hardware._kmsg_parser import MalformedLine, parse_line
from eagleeye_otel.receivers.hardware._kmsg_sources import DmesgSource, FileSource, KernelLogSource, KmsgSource
from eagleeye_otel.receivers.hardware._model import KernelEventKind, KernelLogSummary

__all__ = ["DEFAULT_MAX_KEYS", "DEFAULT_MAX_MESSAGE_CHARS", "KernelLogReader", "open_kernel_log"]

_logger = logging.getLogger(__name__)

DEFAULT_MAX_KEYS: Final = 512
"""Distinct (kind, code, device) keys kept; a node has a few GPUs and a few dozen codes."""
DEFAULT_MAX_MESSAGE_CHARS: Final = 512
"""Kept length of each key's last message."""

_Key = tuple[KernelEventKind, str, str | None]


class KernelLogReader:
    """Counts the events of a kernel-log source per (kind, code, device); polled once per sweep.

    Memory stays bounded whatever the log holds: the first ``max_keys`` keys are kept (their counts must stay
    monotonic for OTel counters), events of later keys are only counted in ``overflow``, and messages are cut to
    ``max_message_chars``.

    Args:
        source: where lines come from; the reader closes it.
        max_keys: distinct keys kept.
        max_message_chars: kept length of each key's last message.

    Raises:
        ConfigError: a limit is not positive.
    """

    def __init__(
        self,
        source: KernelLogSource,
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        max_message_chars: int = DEFAULT_MAX_MESSAGE_CHARS,
    ) -> None:
        _check_limits(max_keys, max_message_chars)
        self.source = source
        self._max_keys = max_keys
        self._max_message_chars = max_message_chars
        self._lock = threading.Lock()
        self._counts: dict[_Key, int] = {}
        self._last_messages: dict[_Key, str] = {}
        self._last_seen: dict[_Key, float] = {}
        self._malformed = self._lines = self._overflow = 0
        self._errors = LogLimiter(_logger)
        self._malformed_log = LogLimiter(_logger)

    def poll(self) -> int:
        """Read what arrived since the last poll and count it; a source that fails is logged, never raised.

        Returns:
            how many events this poll counted.
        """
        events = 0
        with self._lock:
            try:
                for line in self.source.lines():
                    events += self._count(line)
            except OSError as error:
                self._errors.warning("kernel log: cannot read %s: %s", self.source.name, error)
        return events

    def _count(self, line: str) -> int:
        self._lines += 1
        try:
            event = parse_line(line)
        except MalformedLine as error:
            self._malformed += 1
            self._malformed_log.warning("kernel log: %s", error)
            return 0
        if event is None:
            return 0
        key = (event.kind, event.code, event.device)
        if key not in self._counts and len(self._counts) >= self._max_keys:
            self._overflow += 1
            return 1
        self._counts[key] = self._counts.get(key, 0) + 1
        message = event.message
        if len(message) > self._max_message_chars:
            message = message[: self._max_message_chars - 1] + "\u2026"
        self._last_messages[key] = message
        self._last_seen[key] = time.time()  # when read: a since-boot stamp may come from another boot (a file)
        return 1

    def summary(self) -> KernelLogSummary:
        """Everything counted since the reader was made (copies, safe to keep)."""
        with self._lock:
            return KernelLogSummary(
                counts=dict(self._counts),
                last_messages=dict(self._last_messages),
                malformed=self._malformed,
                lines=self._lines,
                overflow=self._overflow,
                lost=self.source.lost,
                last_seen=dict(self._last_seen),
            )

    def close(self) -> None:
        """Close the source."""
        with self._lock:
            self.source.close()


def open_kernel_log(
    *,
    file: str | os.PathLike[str] | None = None,
    follow: bool = False,
    from_start: bool = False,
    root_path: str | os.PathLike[str] = "/",
    dmesg_command: Sequence[str] = ("dmesg",),
    max_keys: int = DEFAULT_MAX_KEYS,
    max_message_chars: int = DEFAULT_MAX_MESSAGE_CHARS,
) -> KernelLogReader:
    """The monitor's kernel-log reader, on the first source that opens.

    Args:
        file: a log file to read instead of the kernel's (``--dmesg-file``); nothing else is tried then.
        follow: for ``file``: keep reading what is appended.
        from_start: also count what the log already holds (kmsg's ring buffer, dmesg's output, a followed file).
        root_path: where the host's filesystem is mounted; kmsg is ``<root_path>/dev/kmsg``.
        dmesg_command: run when kmsg cannot be opened.
        max_keys: see :class:`KernelLogReader`.
        max_message_chars: see :class:`KernelLogReader`.

    Raises:
        HardwareUnavailable: no source opened; ``reason`` names each one tried and what it answered.
        ConfigError: a limit is not positive.
    """
    _check_limits(max_keys, max_message_chars)
    source: KernelLogSource
    if file is not None:
        source = FileSource(file, follow=follow, from_start=from_start)
    else:
        try:
            source = KmsgSource(Path(root_path, "dev", "kmsg"), from_start=from_start)
        except HardwareUnavailable as kmsg_error:
            try:
                source = DmesgSource(dmesg_command, from_start=from_start)
            except HardwareUnavailable as dmesg_error:
                raise HardwareUnavailable(f"{kmsg_error.reason}; {dmesg_error.reason}") from dmesg_error
            _logger.info("kernel log: %s; reading `%s` instead", kmsg_error.reason, source.name)
    return KernelLogReader(source, max_keys=max_keys, max_message_chars=max_message_chars)


def _check_limits(max_keys: int, max_message_chars: int) -> None:
    if max_keys < 1:
        raise ConfigError("max_keys", max_keys, "must be at least 1")
    if max_message_chars < 2:
        raise ConfigError("max_message_chars", max_message_chars, "must be at least 2")
