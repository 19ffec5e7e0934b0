"""ThreadWakeup and send_keeping_gil: the two calls the routing publisher makes from vLLM's event loop."""

from __future__ import annotations

import errno
import select
import socket
import threading

import pytest

from eagleeye_otel.exporters.nats._gil_keeping_io import DIRECT_SEND, ThreadWakeup, send_keeping_gil


def test_a_wake_makes_the_descriptor_readable_for_a_polling_thread() -> None:
    wakeup = ThreadWakeup()
    woken = threading.Event()

    def waiter() -> None:
        poller = select.poll()
        poller.register(wakeup.fd, select.POLLIN)
        if poller.poll(5000):
            woken.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    wakeup.wake()
    thread.join()
    assert woken.is_set()


def test_wakes_merge_until_cleared_and_clearing_rearms() -> None:
    wakeup = ThreadWakeup()
    poller = select.poll()
    poller.register(wakeup.fd, select.POLLIN)
    for _ in range(3):
        wakeup.wake()
    assert poller.poll(0)
    wakeup.clear()
    assert poller.poll(0) == []
    wakeup.wake()
    assert poller.poll(0)


@pytest.mark.skipif(not DIRECT_SEND, reason="no libc send with MSG_DONTWAIT")
def test_send_keeping_gil_sends_what_fits_and_reports_a_full_buffer_as_eagain() -> None:
    left, right = socket.socketpair()
    with left, right:
        assert send_keeping_gil(left.fileno(), b"hello") == 5
        assert right.recv(16) == b"hello"
        left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        total = 0
        while (sent := send_keeping_gil(left.fileno(), b"x" * 65536)) > 0:
            total += sent
        assert sent == -errno.EAGAIN  # never blocks: a full buffer is an answer, not a wait
        assert total > 0
