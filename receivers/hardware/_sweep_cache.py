"""One hardware sweep per collection, however many instruments (and readers) ask for it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from eagleeye_otel.log_limiter import LogLimiter
from eagleeye_otel.receivers.hardware._model import Sweep

__all__ = ["SweepCache"]

_logger = logging.getLogger(__name__)


class SweepCache:
    """Takes a sweep when a collection starts and hands it to every callback of that collection.

    A callback asking a second time means a new collection (of this reader or another). It gets a new sweep unless
    the current one is younger than ``max_age_s``: that one is shared, so two readers collecting within that time
    cost one sweep. Within one collection every callback sees the same sweep, whatever its age.

    Args:
        take: reads the hardware; should not raise (a raise is logged and that collection reports nothing).
        max_age_s: how old a sweep may be and still serve another collection.
        clock: monotonic seconds, for tests.
    """

    def __init__(
        self, take: Callable[[], Sweep], *, max_age_s: float = 0.5, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._take = take
        self._max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._sweep: Sweep | None = None
        self._taken_at = 0.0
        self._served: set[str] = set()
        self._failures = LogLimiter(_logger)
        self.sweeps = 0
        """Sweeps taken so far."""

    def get(self, instrument: str) -> Sweep | None:
        """The sweep for ``instrument``'s callback in the current collection; None when taking it failed."""
        with self._lock:
            now = self._clock()
            if self.sweeps == 0 or (instrument in self._served and now - self._taken_at >= self._max_age_s):
                self._served.clear()
                self._taken_at = now
                self.sweeps += 1
                try:
                    self._sweep = self._take()
                except Exception:
                    self._sweep = None
                    self._failures.warning("hardware sweep failed; this collection reports nothing", exc_info=True)
            self._served.add(instrument)
            return self._sweep
