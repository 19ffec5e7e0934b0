"""Give Eagle Eye's threads their name in the kernel too, so that ``top -H``, ``ps -L`` and ``/proc`` show them.

Before Python 3.14, ``threading`` keeps a thread's name to itself: inside vLLM's API server Eagle Eye's threads
would show as one more ``python`` beside vLLM's own, and their CPU use could not be told apart.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["name_os_thread"]

_PR_SET_NAME = 15
_MAX_BYTES = 15
"""The kernel keeps 16 bytes, the last one a NUL."""


def name_os_thread(name: str) -> None:
    """Name the calling thread in the kernel (its first 15 bytes); nothing happens off Linux or when refused."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None).prctl(_PR_SET_NAME, name.encode()[:_MAX_BYTES], 0, 0, 0)
    except (OSError, AttributeError):
        return
