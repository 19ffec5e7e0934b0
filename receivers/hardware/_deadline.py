"""Driver calls under a deadline: a vendor library call that hangs costs one thread, never the sweep.

A ctypes call into NVML or DCMI cannot be interrupted from Python, and both libraries are known to block for minutes
when a device is wedged (``nvidia-smi`` hanging on a GPU that fell off the bus, DCMI waiting on a chip that lost its
heartbeat). So each device is read on a worker thread and the sweep waits a deadline for it. A read that overruns
is left to finish on its own thread, and its key (a GPU, a chip, the card list) is *stuck*: asking again fails at
once, without a new thread, until that call returns. One hang therefore costs one parked thread and one deadline
of waiting, once; the other devices go on being read by a fresh worker, and the stuck device is reported ``hung``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Final, TypeVar, cast

from eagleeye_otel.errors import EagleEyeError

__all__ = ["DEFAULT_CALL_DEADLINE_S", "CallTimedOut", "DeadlineCaller"]

_logger = logging.getLogger(__name__)

DEFAULT_CALL_DEADLINE_S: Final = 0.5
"""How long one device's reads may take. A healthy GPU or chip answers a whole sweep in milliseconds; half the
default 1 s collection period leaves the export on time even in the sweep where a hang begins."""

_T = TypeVar("_T")
_current = threading.local()


class CallTimedOut(EagleEyeError, TimeoutError):
    """A driver call did not return within its deadline; its thread was left to finish on its own.

    Attributes:
        key: what was being read (a GPU index, a chip, the card list).
        call: the C function in flight, as the reader named it (:meth:`DeadlineCaller.note`), or ``""``.
        stuck_s: how long it has been running.
    """

    def __init__(self, key: Hashable, call: str, stuck_s: float, deadline_s: float) -> None:
        what = call or "a driver call"
        super().__init__(f"{what} has not returned for {stuck_s:.1f} s (deadline {deadline_s:g} s)")
        self.key = key
        self.call = call
        self.stuck_s = stuck_s


@dataclass
class _Job:
    key: Hashable
    run: Callable[[], object]
    started: float = 0.0
    call: str = ""
    done: bool = False
    abandoned: bool = False
    result: object = None
    error: BaseException | None = None
    finished: threading.Event = field(default_factory=threading.Event)


class DeadlineCaller:
    """Runs reads on a worker thread and waits at most ``deadline_s`` for each.

    Callers are expected to be serialised (a source's sweep lock); the worker runs one read at a time, so a library
    that dislikes concurrent queries (DCMI) sees no more concurrency than before, except from a stuck thread.

    Args:
        name: the library, for thread names and logs (``"NVML"``, ``"DCMI"``).
        deadline_s: how long one read may take before its key is declared stuck.
    """

    def __init__(self, name: str, *, deadline_s: float = DEFAULT_CALL_DEADLINE_S) -> None:
        if not deadline_s > 0:
            raise ValueError(f"deadline_s must be positive, not {deadline_s!r}")
        self.name = name
        self.deadline_s = deadline_s
        self._lock = threading.Lock()
        self._stuck: dict[Hashable, _Job] = {}
        self._queue: queue.SimpleQueue[_Job | None] | None = None
        self._workers = 0

    @staticmethod
    def note(call: str) -> None:
        """Record the C function the current read is about to call, so a hang can name it."""
        job = getattr(_current, "job", None)
        if job is not None:
            job.call = call

    def call(self, key: Hashable, run: Callable[[], _T]) -> _T:
        """``run()`` on the worker; its result, or what it raised.

        Raises:
            CallTimedOut: ``run`` did not finish within the deadline, or an earlier read of ``key`` still has not.
        """
        with self._lock:
            stuck = self._stuck.get(key)
            if stuck is not None:
                raise CallTimedOut(key, stuck.call, time.monotonic() - stuck.started, self.deadline_s)
            if self._queue is None:
                self._queue = self._start_worker()
            work = self._queue
        job = _Job(key, run, started=time.monotonic())
        work.put(job)
        job.finished.wait(self.deadline_s)
        with self._lock:
            if not job.done:
                job.abandoned = True
                self._stuck[key] = job
                if self._queue is work:
                    self._queue = None  # the next read gets a fresh worker; this one leaves once its read returns
                stuck_s = time.monotonic() - job.started
                _logger.warning("%s: reading %s: %s has not returned after %.1f s", self.name, key, job.call, stuck_s)
                raise CallTimedOut(key, job.call, stuck_s, self.deadline_s)
        if job.error is not None:
            raise job.error
        return cast(_T, job.result)

    def stuck(self) -> dict[Hashable, str]:
        """The keys whose read is still running past its deadline, and the call each is in."""
        with self._lock:
            return {key: job.call for key, job in self._stuck.items()}

    @property
    def threads(self) -> int:
        """Worker threads alive: the current one plus one per stuck read."""
        with self._lock:
            return self._workers

    def close(self) -> None:
        """Let the current worker exit; stuck ones exit when their call returns (they are daemon threads)."""
        with self._lock:
            work, self._queue = self._queue, None
        if work is not None:
            work.put(None)

    def _start_worker(self) -> queue.SimpleQueue[_Job | None]:
        work: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._workers += 1
        name = f"eagle-eye-{self.name.lower()}-reader"
        threading.Thread(target=self._work, args=(work,), name=name, daemon=True).start()
        return work

    def _work(self, work: queue.SimpleQueue[_Job | None]) -> None:
        try:
            while (job := work.get()) is not None:
                _current.job = job
                try:
                    job.result = job.run()
                except BaseException as error:  # handed to the caller, who decides
                    job.error = error
                finally:
                    _current.job = None
                with self._lock:
                    job.done = True
                    job.finished.set()
                    if job.abandoned:
                        del self._stuck[job.key]
                        _logger.warning(
                            "%s: reading %s returned after %.1f s", self.name, job.key, time.monotonic() - job.started
                        )
                        return
        finally:
            with self._lock:
                self._workers -= 1
