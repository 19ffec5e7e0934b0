"""The main-process gate: only the process that serves sets up metrics; its children stay quiet.

vLLM runs its engine core and workers in child processes (``fork`` by default, ``spawn`` once CUDA is up), and
since opentelemetry-instrumentation 0.63b0 every spawned Python child runs the distro and configurator again,
multiprocessing's resource tracker included. A child that built its own pipeline would bind the Prometheus port
a second time (``Address already in use``) or, after a fork, export a frozen copy of the parent's series. So the
first process that configures records its pid in :envvar:`EAGLEEYE_OWNER_PID`, which children inherit; a process
whose ancestor is that live owner sets nothing up. Readers and exporters also remember the pid that created them
(:class:`CreatorPid`) and do nothing in a forked copy.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import MutableMapping
from pathlib import Path
from typing import Final

__all__ = ["EAGLEEYE_OWNER_PID", "CreatorPid", "claim_ownership"]

_logger = logging.getLogger(__name__)

EAGLEEYE_OWNER_PID: Final = "EAGLEEYE_OWNER_PID"
"""
.. envvar:: EAGLEEYE_OWNER_PID

Set by Eagle Eye, not by users: the pid of the process that owns the metrics pipeline. Children inherit it and
therefore configure nothing. A process started from an owner that must be an owner itself (a second server
launched by a test harness, say) needs this variable removed from its environment.
"""

_lock = threading.Lock()


def _reset_lock_in_child() -> None:
    """A fork taken while another thread held the lock would leave it held forever in the child."""
    global _lock  # noqa: PLW0603 - replaced only in a freshly forked child, before any other thread exists
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_lock_in_child)


def claim_ownership(environ: MutableMapping[str, str] | None = None) -> bool:
    """Decide whether this process may set up exporters, and record it as the owner if so.

    Args:
        environ: the environment holding :envvar:`EAGLEEYE_OWNER_PID`; ``os.environ`` by default, so that
            children started afterwards inherit the mark.

    Returns:
        True when this process is (now) the owner; False when a live ancestor already owns the pipeline.
    """
    env = os.environ if environ is None else environ
    me = os.getpid()
    with _lock:
        owner = _parse_pid(env.get(EAGLEEYE_OWNER_PID))
        if owner == me:
            return True
        if owner is not None and owner in _ancestor_pids():
            _logger.debug("Eagle Eye: process %d is a child of owner %d; setting up nothing", me, owner)
            return False
        env[EAGLEEYE_OWNER_PID] = str(me)
        return True


class CreatorPid:
    """The pid of the process that built an object: a forked copy of the object can tell it is not there."""

    __slots__ = ("pid",)

    def __init__(self) -> None:
        self.pid = os.getpid()

    @property
    def is_current(self) -> bool:
        """False in a child forked after construction."""
        return os.getpid() == self.pid


def _parse_pid(value: str | None) -> int | None:
    if value is None or not value.strip():
        return None
    try:
        pid = int(value)
    except ValueError:
        _logger.warning("Ignoring %s=%r: not a process id", EAGLEEYE_OWNER_PID, value)
        return None
    return pid if pid > 0 else None


def _ancestor_pids(proc: Path = Path("/proc")) -> frozenset[int]:
    """Pids of this process's live ancestors: a stale or copied mark from an unrelated process does not count.

    Walks the parent links in ``/proc`` (vLLM runs on Linux); elsewhere only the direct parent is known.
    """
    ancestors: set[int] = set()
    pid = os.getppid()
    while pid > 1 and pid not in ancestors:
        ancestors.add(pid)
        try:
            stat = (proc / str(pid) / "stat").read_text()
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")".
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return frozenset(ancestors)
