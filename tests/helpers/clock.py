"""A clock the test sets by hand, for the components that take an injectable ``clock``."""

from __future__ import annotations


class ManualClock:
    """Returns ``now`` until the test moves it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
