"""Rate-limited logging for code that may fail on every call (a per-step hook, a per-collection callback)."""

from __future__ import annotations

import logging
import time

__all__ = ["LogLimiter"]


class LogLimiter:
    """Logs the first event, then at most one per ``every_s`` seconds with the count of those skipped.

    Args:
        logger: where to log.
        every_s: minimum seconds between two records.
    """

    def __init__(self, logger: logging.Logger, *, every_s: float = 60.0) -> None:
        self._logger = logger
        self._every_s = every_s
        self._last = -every_s
        self._suppressed = 0
        self.count = 0
        """Events reported so far, logged or not."""

    def warning(self, msg: str, *args: object, exc_info: bool = False) -> None:
        """Count the event and log it unless one was logged less than ``every_s`` seconds ago."""
        self.count += 1
        now = time.monotonic()
        if now - self._last < self._every_s:
            self._suppressed += 1
            return
        suppressed, self._suppressed, self._last = self._suppressed, 0, now
        suffix = f" ({suppressed} more since the last report)" if suppressed else ""
        self._logger.warning(msg + suffix, *args, exc_info=exc_info)
