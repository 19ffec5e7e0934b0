"""What ``eagle-eye top`` shows, apart from how: table rows from a router's view, token rates, findings, sorting.

Kept free of the terminal so that tests check the numbers directly, and so that the ingest path stays the
:class:`~eagleeye_otel.routing.RouterClient`'s own: this module only reads the view once per refresh, never per
message, so ``top`` ingests as fast as a router does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import msgspec

from eagleeye_otel.diagnosis._finding import SEVERITY_ORDER, Finding
from eagleeye_otel.log_limiter import LogLimiter
from eagleeye_otel.routing import DEFAULT_HEALTH_TTL, InstanceState

__all__ = ["SORT_KEYS", "FindingBoard", "FindingMessage", "Row", "Sort", "TokenRates", "rows_of"]

_logger = logging.getLogger(__name__)

RATE_WINDOW_S: Final = 1.0
"""Shortest span of the publisher's clock a tokens/s figure covers: one engine step would be too noisy."""

_MAX_FINDING_BYTES: Final = 64 * 1024
_MAX_FINDINGS: Final = 10_000


class FindingMessage(Finding, frozen=True, kw_only=True):
    """A finding as the diagnosis service publishes it: the finding and what happened to it.

    Declared here rather than imported from the service, which would pull the OpenTelemetry SDK into ``top``.
    """

    change: str = "active"


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the instance table."""

    instance: str
    engine: int
    model: str
    waiting: int
    running: int
    kv_cache_usage: float
    tokens_per_s: float | None
    age_s: float
    health: str
    health_rank: int
    stale: bool


class TokenRates:
    """Tokens/s per engine from the differences of ``generation_tokens_total`` over at least a second.

    Uses the messages' own timestamps, so the rate is the engine's and not skewed by NATS or refresh delays; a
    heartbeat repeats the total with a newer timestamp, so an idle engine's rate falls to zero. A restart (new
    ``started``) or a total that went down starts over.
    """

    def __init__(self) -> None:
        self._samples: dict[tuple[str, int], tuple[float | None, float, int, float | None]] = {}

    def update(self, states: Iterable[InstanceState]) -> dict[tuple[str, int], float | None]:
        """Take the newest messages in; returns each engine's rate (``None`` until a second has passed)."""
        rates: dict[tuple[str, int], float | None] = {}
        samples: dict[tuple[str, int], tuple[float | None, float, int, float | None]] = {}
        for state in states:
            message = state.message
            key = (message.instance, message.engine)
            total = message.generation_tokens_total
            sample = self._samples.get(key)
            if sample is None or sample[0] != message.started or total < sample[2]:
                sample = (message.started, message.timestamp, total, None)
            elif message.timestamp - sample[1] >= RATE_WINDOW_S:
                rate = (total - sample[2]) / (message.timestamp - sample[1])
                sample = (message.started, message.timestamp, total, rate)
            samples[key] = sample
            rates[key] = sample[3]
        self._samples = samples  # engines that left the view are forgotten
        return rates


class FindingBoard:
    """The active findings heard on ``eagle_eye.diagnosis.>``, as the service last stated them.

    A resolved finding leaves at once; one not restated within ``ttl`` seconds leaves too, so a lost resolution
    or a stopped service does not leave a stale alarm on screen.
    """

    def __init__(self, *, ttl: float = DEFAULT_HEALTH_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self._decode = msgspec.json.Decoder(FindingMessage).decode
        self._ttl = ttl
        self._clock = clock
        self._findings: dict[tuple[str, str | None, str], tuple[FindingMessage, float]] = {}
        self._bad_input_log = LogLimiter(_logger)

    def handle(self, data: bytes) -> bool:
        """Apply one finding message; never raises on bad input. Returns whether it was a finding."""
        try:
            if len(data) > _MAX_FINDING_BYTES:
                raise msgspec.DecodeError(f"{len(data)} bytes, over the {_MAX_FINDING_BYTES} limit")
            finding = self._decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as error:  # msgspec's error for bad UTF-8
            self._bad_input_log.warning("invalid diagnosis finding dropped: %s", error)
            return False
        key = (finding.node, finding.device, finding.fault)
        if finding.resolved_at is not None or finding.change == "resolved":
            self._findings.pop(key, None)
        elif key in self._findings or len(self._findings) < _MAX_FINDINGS:
            self._findings[key] = (finding, self._clock())
        return True

    def active(self) -> list[FindingMessage]:
        """The findings heard within ``ttl``, most severe first."""
        cutoff = self._clock() - self._ttl
        for key in [k for k, (_, heard_at) in self._findings.items() if heard_at < cutoff]:
            del self._findings[key]
        return sorted((f for f, _ in self._findings.values()), key=lambda f: f.sort_key())


def _health(findings: Sequence[Finding]) -> tuple[str, int]:
    """The worst finding on the engine's node or devices, as a cell and a sort rank (0 is worst)."""
    if not findings:
        return "ok", len(SEVERITY_ORDER)
    worst = findings[0]  # InstanceState.findings come severity first
    more = f" +{len(findings) - 1}" if len(findings) > 1 else ""
    return f"{worst.severity.value} {worst.fault}{more}", SEVERITY_ORDER[worst.severity]


def rows_of(
    states: Iterable[InstanceState], rates: dict[tuple[str, int], float | None], now: float, stale_after: float
) -> list[Row]:
    """The table rows; ``now`` is a reading of the router client's clock."""
    rows = []
    for state in states:
        message = state.message
        age = state.age(now)
        health, rank = _health(state.findings)
        rows.append(
            Row(
                instance=message.instance,
                engine=message.engine,
                model=message.model,
                waiting=message.num_requests_waiting,
                running=message.num_requests_running,
                kv_cache_usage=message.kv_cache_usage,
                tokens_per_s=rates.get((message.instance, message.engine)),
                age_s=age,
                health=health,
                health_rank=rank,
                stale=age > stale_after,
            )
        )
    return rows


@dataclass(frozen=True)
class _Column:
    name: str
    key: Callable[[Row], tuple[float | str, ...]]
    descending: bool
    """The natural first direction: the busiest engines first, names in alphabetical order."""


SORT_KEYS: Final[dict[str, _Column]] = {
    "i": _Column("instance", lambda r: (r.instance, r.engine), descending=False),
    "w": _Column("waiting", lambda r: (r.waiting,), descending=True),
    "r": _Column("running", lambda r: (r.running,), descending=True),
    "k": _Column("kv cache", lambda r: (r.kv_cache_usage,), descending=True),
    "t": _Column("tokens/s", lambda r: (-1.0 if r.tokens_per_s is None else r.tokens_per_s,), descending=True),
    "a": _Column("age", lambda r: (r.age_s,), descending=True),
    "h": _Column("health", lambda r: (r.health_rank,), descending=False),
}
"""Keys that sort the table; pressing the current one again reverses the order."""


class Sort:
    """The current sort column and direction, changed by key presses."""

    def __init__(self, key: str = "i") -> None:
        self.key = key
        self.descending = SORT_KEYS[key].descending

    def press(self, key: str) -> bool:
        """Apply a key; returns whether it was a sort key."""
        if key not in SORT_KEYS:
            return False
        if key == self.key:
            self.descending = not self.descending
        else:
            self.key, self.descending = key, SORT_KEYS[key].descending
        return True

    @property
    def column(self) -> str:
        """The name of the sort column, as the table heads it."""
        return SORT_KEYS[self.key].name

    def apply(self, rows: list[Row]) -> list[Row]:
        """The rows in order; ties keep instance order, so the table does not flicker."""
        rows = sorted(rows, key=SORT_KEYS["i"].key)
        return sorted(rows, key=SORT_KEYS[self.key].key, reverse=self.descending)
