"""ForkGuard: set in a forked child, never in the process that made it."""

from __future__ import annotations

import os

from eagleeye_otel.fork_guard import ForkGuard


def test_only_a_forked_child_sees_in_child() -> None:
    guard = ForkGuard()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reports what it sees and leaves without running pytest's teardown
        os.write(write, b"1" if guard.in_child else b"0")
        os._exit(0)
    os.close(write)
    seen = os.read(read, 1)
    os.close(read)
    os.waitpid(pid, 0)
    assert seen == b"1"
    assert guard.in_child is False
