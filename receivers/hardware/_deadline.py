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
from collections.abc import Callable, Hashable, Sequence
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
class _Batch:
    """Reads handed to the worker together: the caller sleeps once for all of them, not once per device."""

    remaining: int
    finished: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Job:
    key: Hashable
    run: Callable[[], object]
    batch: _Batch
    started: float = 0.0
    call: str = ""
    done: bool = False
    cancelled: bool = False
    abandoned: bool = False
    result: object = None
    error: BaseException | None = None


class DeadlineCaller:
    """Runs reads on a worker thread and waits at most ``deadline_s`` for each.

    Callers are expected to be serialised (a source's sweep lock); the worker runs one read at a time, so a library
    that dislikes concurrent queries (DCMI) sees no more concurrency than before, except from a stuck thread. A
    sweep hands all its reads over at once (:meth:`call_all`): a thread hand-off costs tens of microseconds of CPU,
    more than reading a GPU, so one per sweep instead of one per device keeps the deadline nearly free.

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
        outcome = self.call_all([(key, run)])[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def call_all(self, reads: Sequence[tuple[Hashable, Callable[[], _T]]]) -> list[_T | BaseException]:
        """Each ``run()`` in turn on the worker, each under the deadline; per read, its result or what it raised.

        A read that overruns is left to its thread and its outcome is :class:`CallTimedOut`; the reads queued
        behind it go to a fresh worker, so one hung device delays the others by one deadline, once.
        """
        outcomes: list[_T | BaseException | None] = [None] * len(reads)
        jobs: list[tuple[int, _Job]] = []
        batch = _Batch(remaining=0)
        with self._lock:
            for index, (key, run) in enumerate(reads):
                stuck = self._stuck.get(key)
                if stuck is not None:
                    outcomes[index] = self._timed_out(stuck)
                else:
                    jobs.append((index, _Job(key, run, batch)))
            if not jobs:
                return cast(list[_T | BaseException], outcomes)
            batch.remaining = len(jobs)
            if self._queue is None:
                self._queue = self._start_worker()
            work = self._queue
        for _, job in jobs:
            work.put(job)
        hung, queued = self._wait(batch, [job for _, job in jobs], work)
        # What the hung read held up goes to a fresh worker.
        again = self.call_all([(job.key, cast(Callable[[], _T], job.run)) for job in queued])
        retried: dict[int, _T | BaseException] = dict(zip(map(id, queued), again, strict=True))
        for index, job in jobs:
            if job is hung:
                outcomes[index] = self._timed_out(job)
            elif id(job) in retried:
                outcomes[index] = retried[id(job)]
            else:
                outcomes[index] = job.error if job.error is not None else cast(_T, job.result)
        return cast(list[_T | BaseException], outcomes)

    def _wait(
        self, batch: _Batch, jobs: list[_Job], work: queue.SimpleQueue[_Job | None]
    ) -> tuple[_Job | None, list[_Job]]:
        """Sleep until the batch is done or its running read overruns; that read and the ones not yet begun."""
        timeout = self.deadline_s
        while not batch.finished.wait(timeout):
            with self._lock:
                running = next((job for job in jobs if job.started and not job.done), None)
                now = time.monotonic()
                if running is None or now - running.started < self.deadline_s:
                    timeout = self.deadline_s if running is None else running.started + self.deadline_s - now
                    continue
                running.abandoned = True
                self._stuck[running.key] = running
                if self._queue is work:
                    self._queue = None  # later reads get a fresh worker; this one leaves once its read returns
                queued = [job for job in jobs if not job.started]
                for job in queued:
                    job.cancelled = True
                _logger.warning(
                    "%s: reading %s: %s has not returned after %.1f s",
                    self.name,
                    running.key,
                    running.call,
                    now - running.started,
                )
                return running, queued
        return None, []

    def _timed_out(self, job: _Job) -> CallTimedOut:
        return CallTimedOut(job.key, job.call, time.monotonic() - job.started, self.deadline_s)

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
                with self._lock:
                    if job.cancelled:  # handed to a fresh worker while a read before it hung
                        continue
                    job.started = time.monotonic()
                _current.job = job
                try:
                    job.result = job.run()
                except BaseException as error:  # handed to the caller, who decides
                    job.error = error
                finally:
                    _current.job = None
                with self._lock:
                    job.done = True
                    batch = job.batch
                    batch.remaining -= 1
                    if batch.remaining == 0:
                        batch.finished.set()
                    if job.abandoned:
                        del self._stuck[job.key]
                        _logger.warning(
                            "%s: reading %s returned after %.1f s", self.name, job.key, time.monotonic() - job.started
                        )
                        return
        finally:
            with self._lock:
                self._workers -= 1
