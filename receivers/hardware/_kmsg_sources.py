"""Where kernel-log lines come from: ``/dev/kmsg``, the ``dmesg`` command, or a file the user names.

Each source reads without blocking and returns only what arrived since its last call, so the kernel-log reader can be
polled once per sweep with no thread. Memory stays bounded: a line longer than the parser's limit is cut.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Iterator, Sequence
from typing import BinaryIO, Protocol

from eagleeye_otel.errors import HardwareUnavailable
from eagleeye_otel.receivers.hardware._kmsg_parser import MAX_LINE_CHARS

__all__ = ["DmesgSource", "FileSource", "KernelLogSource", "KmsgSource"]

_READ_BYTES = 65536  # above kmsg's largest record (8 KiB with its dictionary): a shorter read fails with EINVAL
_MAX_KMSG_RECORDS = 100_000  # per poll, so a kernel flooding its log cannot hold a sweep forever
_MAX_EPIPE = 3  # kmsg moves past overwritten records after one EPIPE; more in a row means something else is wrong


class KernelLogSource(Protocol):
    """Where kernel-log lines come from."""

    name: str
    """What is read, for notes and logs: a path, or the command line."""
    lost: int
    """Records known to be lost (overwritten in the kernel's ring buffer before they were read), so far."""

    def lines(self) -> Iterator[str]:
        """The lines that arrived since the last call, without their newline.

        Raises:
            OSError: the source could not be read this time.
        """
        ...

    def close(self) -> None:
        """Release the file or descriptor."""
        ...


class _LineSplitter:
    """Bytes to complete lines; a partial line waits for its end, up to :data:`MAX_LINE_CHARS` bytes."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[str]:
        *complete, self._pending = (self._pending + chunk).split(b"\n")
        if len(self._pending) > MAX_LINE_CHARS:  # no newline in sight: take its start as a line, never grow
            complete.append(self._pending[:MAX_LINE_CHARS])
            self._pending = b""
        return [line.decode("utf-8", "replace").rstrip("\r") for line in complete]

    def flush(self) -> list[str]:
        rest, self._pending = self._pending, b""
        return [rest.decode("utf-8", "replace")] if rest else []


class KmsgSource:
    """``/dev/kmsg``: one record per non-blocking read; a record's dictionary lines (indented) are skipped.

    Records overwritten before they were read make the next read fail with EPIPE, after which kmsg resumes at the
    oldest record kept; the gap in sequence numbers says how many were lost.

    Args:
        path: the device (tests use a file of records).
        from_start: replay the records still in the ring buffer; otherwise only those that arrive after opening.

    Raises:
        HardwareUnavailable: the device cannot be opened (absent in the container, or ``dmesg_restrict``).
    """

    def __init__(self, path: str | os.PathLike[str] = "/dev/kmsg", *, from_start: bool = False) -> None:
        self.name = os.fspath(path)
        self.lost = 0
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as error:
            raise HardwareUnavailable(f"{self.name}: {error.strerror or error}") from error
        if not from_start:
            os.lseek(self._fd, 0, os.SEEK_END)
        self._splitter = _LineSplitter()
        self._last_seq: int | None = None

    def lines(self) -> Iterator[str]:
        """The records that arrived since the last call (see :class:`KernelLogSource`)."""
        records = epipes = 0
        while self._fd >= 0 and records < _MAX_KMSG_RECORDS:
            try:
                chunk = os.read(self._fd, _READ_BYTES)
            except BlockingIOError:
                return
            except BrokenPipeError:
                epipes += 1
                if epipes >= _MAX_EPIPE:
                    raise
                continue
            if not chunk:
                return
            epipes = 0
            for line in self._splitter.feed(chunk):
                if line and not line[0].isspace():
                    records += 1
                    self._count_gap(line)
                    yield line

    def _count_gap(self, record: str) -> None:
        header = record.split(";", 1)[0].split(",")
        if len(header) < 2 or not header[1].isdigit():
            return
        seq = int(header[1])
        if self._last_seq is not None and seq > self._last_seq + 1:
            self.lost += seq - self._last_seq - 1
        self._last_seq = seq

    def close(self) -> None:
        """Close the descriptor; later reads find nothing."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class FileSource:
    """A log file the user names: read once, or followed like ``tail -F`` across truncation and rotation.

    Args:
        path: a saved ``dmesg``, ``journalctl -k`` or syslog file.
        follow: keep reading what is appended; otherwise read the whole file at the first call and stop.
        from_start: when following, begin with what the file already holds; otherwise with what is appended.

    Raises:
        HardwareUnavailable: the file cannot be opened.
    """

    def __init__(self, path: str | os.PathLike[str], *, follow: bool = False, from_start: bool = True) -> None:
        self.name = os.fspath(path)
        self.lost = 0
        self._follow = follow
        self._closed = False
        self._splitter = _LineSplitter()
        try:
            self._file: BinaryIO | None = open(path, "rb")  # noqa: SIM115 - stays open between calls
        except OSError as error:
            raise HardwareUnavailable(f"{self.name}: {error.strerror or error}") from error
        if follow and not from_start:
            self._file.seek(0, os.SEEK_END)

    def lines(self) -> Iterator[str]:
        """What was appended since the last call (see :class:`KernelLogSource`)."""
        if self._closed:
            return
        if self._file is not None:
            yield from self._drain(self._file)
        if not self._follow:
            yield from self._splitter.flush()
            self.close()
            return
        try:
            at_path = os.stat(self.name)
        except FileNotFoundError:
            return  # rotated away; the next file is not there yet
        if self._file is not None:
            read = os.fstat(self._file.fileno())
            if (at_path.st_dev, at_path.st_ino) == (read.st_dev, read.st_ino):
                if at_path.st_size < self._file.tell():  # truncated: read it again from its start
                    self._splitter = _LineSplitter()
                    self._file.seek(0)
                    yield from self._drain(self._file)
                return
            yield from self._splitter.flush()  # rotated: the old file is read to its end, now the new one
            self._file.close()
            self._file = None
        self._file = open(self.name, "rb")  # noqa: SIM115 - stays open between calls
        yield from self._drain(self._file)

    def _drain(self, file: BinaryIO) -> Iterator[str]:
        while chunk := file.read(_READ_BYTES):
            yield from self._splitter.feed(chunk)

    def close(self) -> None:
        """Close the file; later reads find nothing."""
        self._closed = True
        if self._file is not None:
            self._file.close()
            self._file = None


class DmesgSource:
    """The ``dmesg`` command, where kmsg cannot be opened: run at each call; the lines after the last one seen are new.

    The ring buffer only ever drops its oldest lines, so when the last line seen is gone every line is new.

    Args:
        command: the command line; plain ``dmesg`` prints seconds since boot, which events keep.
        from_start: count the lines already in the buffer at the first call.
        timeout_s: how long one run may take.

    Raises:
        HardwareUnavailable: the command is missing or fails (e.g. ``dmesg_restrict`` without CAP_SYSLOG).
    """

    def __init__(
        self, command: Sequence[str] = ("dmesg",), *, from_start: bool = False, timeout_s: float = 10.0
    ) -> None:
        self.name = shlex.join(command)
        self.lost = 0
        self._command = tuple(command)
        self._timeout_s = timeout_s
        try:
            output = self._run()
        except OSError as error:
            raise HardwareUnavailable(f"{self.name}: {error}") from error
        self._backlog = output if from_start else []
        self._last = output[-1] if output else None

    def lines(self) -> Iterator[str]:
        """The lines printed since the last call (see :class:`KernelLogSource`)."""
        if self._backlog:
            new, self._backlog = self._backlog, []
        else:
            new = self._after_last(self._run())
        if new:
            self._last = new[-1]
        yield from new

    def _run(self) -> list[str]:
        try:
            done = subprocess.run(self._command, capture_output=True, timeout=self._timeout_s, check=False)
        except subprocess.TimeoutExpired as error:
            raise TimeoutError(f"no answer within {self._timeout_s} s") from error
        if done.returncode != 0:
            said = done.stderr.decode("utf-8", "replace").strip().splitlines()
            raise OSError(f"exit status {done.returncode}" + (f": {said[-1]}" if said else ""))
        text = done.stdout.decode("utf-8", "replace")
        return [line[:MAX_LINE_CHARS] for line in text.split("\n") if line]

    def _after_last(self, output: list[str]) -> list[str]:
        if self._last is not None:
            for index in range(len(output) - 1, -1, -1):
                if output[index] == self._last:
                    return output[index + 1 :]
        return output

    def close(self) -> None:
        """Nothing stays open between runs."""
