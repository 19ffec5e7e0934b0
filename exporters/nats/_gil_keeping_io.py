"""Wake a thread and write to a socket from vLLM's event loop without handing the GIL over.

A system call made through Python's ``os`` or ``socket`` functions releases the GIL; another thread (Eagle Eye's
publisher, the metrics drain, anything in vLLM's API server) often takes it right there and runs for up to the
switch interval (5 ms) while vLLM's ``record()`` waits (measured here: p99 of a wake 4 ms with 50 µs of work on
the other side, against 15 µs with the GIL kept). The calls below go through a ``ctypes.PyDLL`` function, which
keeps the GIL: both are non-blocking (an eventfd write, a ``send`` with ``MSG_DONTWAIT``), so holding it costs
nothing but the call itself. Where eventfd or libc's ``send`` cannot be had (not Linux), the wake-up falls back to
a pipe written with ``os.write`` and :data:`DIRECT_SEND` is false, so callers hand every message to their thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import weakref
from collections.abc import Callable
from typing import Final

__all__ = ["DIRECT_SEND", "ThreadWakeup", "send_keeping_gil"]

_EIGHT_BYTES_OF_ONE = ctypes.create_string_buffer((1).to_bytes(8, "little"), 8)
_SEND_FLAGS: Final = getattr(socket, "MSG_DONTWAIT", 0) | getattr(socket, "MSG_NOSIGNAL", 0)


def _libc_functions() -> tuple[Callable[..., int], Callable[..., int]] | None:
    if not hasattr(os, "eventfd") or not _SEND_FLAGS:
        return None
    try:
        libc = ctypes.PyDLL(None, use_errno=True)  # PyDLL: the call does not release the GIL
        write, send = libc.write, libc.send
    except (OSError, AttributeError):
        return None
    write.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
    write.restype = ctypes.c_ssize_t
    send.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int]
    send.restype = ctypes.c_ssize_t
    return write, send


_functions = _libc_functions()
DIRECT_SEND: Final = _functions is not None
"""Whether :func:`send_keeping_gil` can be used here."""


def send_keeping_gil(fd: int, data: bytes) -> int:
    """Send what the socket takes now, without blocking and with the GIL held.

    Returns:
        The number of bytes sent (possibly fewer than ``len(data)``), or ``-errno`` when nothing was sent
        (``-errno.EAGAIN`` when the socket's buffer is full).
    """
    assert _functions is not None, "check DIRECT_SEND first"
    sent = _functions[1](fd, data, len(data), _SEND_FLAGS)
    return sent if sent >= 0 else -ctypes.get_errno()


class ThreadWakeup:
    """A file descriptor that another thread polls: :meth:`wake` from any thread makes :attr:`fd` readable.

    Several wakes before the waiting thread calls :meth:`clear` merge into one.
    """

    def __init__(self) -> None:
        self.fd: int
        if _functions is not None:
            self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._write_fd = self.fd
            self._write: Callable[..., int] = _functions[0]
            fds = [self.fd]
        else:
            self.fd, self._write_fd = os.pipe()
            os.set_blocking(self.fd, False)
            os.set_blocking(self._write_fd, False)
            self._write = _write_with_os
            fds = [self.fd, self._write_fd]
        # Closed only once nothing can call wake() any more: a wake racing an explicit close could write into
        # whatever file reused the number.
        weakref.finalize(self, _close_all, fds)

    def wake(self) -> None:
        """Make :attr:`fd` readable; cheap, never blocks, keeps the GIL where it can."""
        self._write(self._write_fd, _EIGHT_BYTES_OF_ONE, 8)

    def clear(self) -> None:
        """Called by the waiting thread once woken: empty the descriptor, so the next wait blocks again."""
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 4096)


def _write_with_os(fd: int, data: ctypes.Array[ctypes.c_char], size: int) -> int:
    try:
        return os.write(fd, data.raw[:size])
    except BlockingIOError:  # the pipe is full: the thread has a wake-up waiting already
        return 0


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
