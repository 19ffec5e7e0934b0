"""Know, at the cost of an attribute read, whether this process is a fork of the one that built an object.

vLLM may fork its engine core and workers after Eagle Eye is set up. Objects that own a connection or a queue must
then go quiet in the child; asking ``os.getpid()`` on every engine step for that costs a system call (about 130 ns
here) twice per step, so the flag is set once, by ``os.register_at_fork``, in the child.
"""

from __future__ import annotations

import os
import weakref

__all__ = ["ForkGuard"]


class ForkGuard:
    """``in_child`` turns true in every process forked after the guard was made (and stays false here)."""

    def __init__(self) -> None:
        self.in_child = False
        own = weakref.ref(self)  # the fork hook cannot be removed: it must not keep the guard alive

        def mark_child() -> None:
            guard = own()
            if guard is not None:
                guard.in_child = True

        os.register_at_fork(after_in_child=mark_child)
