"""Instance health for routers: the diagnosis service's active findings, matched to the devices engines run on.

The diagnosis service publishes every finding change on ``eagle_eye.diagnosis.<node>`` and restates the active ones
every few seconds. :class:`InstanceHealth` keeps those it heard within ``ttl`` seconds, so a finding whose resolution
was lost, or whose service went away, stops counting after a while: routing falls back to load alone rather than
shunning devices nobody watches any more. An engine is unhealthy while a critical finding is active on its node as
a whole or on one of the devices its routing message lists.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final

import msgspec

from eagleeye_otel.errors import ConfigError
from eagleeye_otel.log_limiter import LogLimiter

if TYPE_CHECKING:
    from eagleeye_otel.diagnosis._finding import Finding

__all__ = ["DEFAULT_HEALTH_TTL", "InstanceHealth"]

_logger = logging.getLogger(__name__)

DEFAULT_HEALTH_TTL: Final = 15.0
"""Seconds a finding counts after it was last heard: three of the diagnosis service's default restatements."""

_MAX_BYTES: Final = 64 * 1024
_MAX_FINDINGS: Final = 100_000
_MAX_HELD_BYTES: Final = 32 * 1024 * 1024
"""Payload bytes of the findings held at once: a real finding is under 2 KiB, and this bounds what a flood of
large ones costs (decoded, about ten times as much) where the count alone would allow gigabytes."""

_Key = tuple[str | None, str]
"""(device, fault) within a node."""
_Held = tuple["Finding", float, int]
"""A finding, the clock when it was last heard, and the size of its payload."""


class InstanceHealth:
    """The active findings by node, fed by :meth:`handle` with the payloads of ``eagle_eye.diagnosis.>``.

    Memory is bounded whatever arrives: when ``max_findings`` or ``max_held_bytes`` is reached, findings not
    restated within ``ttl`` are swept out (at most once per ``ttl``, so a flood costs O(1) a message) and what
    still does not fit is dropped and counted in :attr:`overflow`.

    Args:
        ttl: seconds a finding counts after it was last published.
        clock: monotonic seconds; injectable for tests.
        max_findings: bound on the findings held.
        max_held_bytes: bound on the payload bytes of the findings held.

    Attributes:
        invalid: payloads that were not a finding (bad JSON, wrong types, over 64 KiB); logged once a minute.
        overflow: findings dropped because the view was full.

    Raises:
        ConfigError: an argument is out of range; the error names it.
    """

    def __init__(
        self,
        *,
        ttl: float = DEFAULT_HEALTH_TTL,
        clock: Callable[[], float] = time.monotonic,
        max_findings: int = _MAX_FINDINGS,
        max_held_bytes: int = _MAX_HELD_BYTES,
    ) -> None:
        if not (isinstance(ttl, int | float) and math.isfinite(ttl) and ttl > 0):
            raise ConfigError("health_ttl", ttl, "must be a positive number of seconds")
        for name, value in (("max_findings", max_findings), ("max_held_bytes", max_held_bytes)):
            if not (isinstance(value, int) and value > 0):
                raise ConfigError(name, value, "must be a positive integer")
        # Imported here: the diagnosis package imports the hardware receivers, whose exporters import this package.
        from eagleeye_otel.diagnosis._finding import Finding  # noqa: PLC0415

        self._decode = msgspec.json.Decoder(Finding).decode
        self._ttl = float(ttl)
        self._clock = clock
        self._max_findings = max_findings
        self._max_held_bytes = max_held_bytes
        self._nodes: dict[str, dict[_Key, _Held]] = {}
        self._count = 0
        self._bytes = 0
        self._next_sweep = -math.inf
        self._bad_input_log = LogLimiter(_logger)
        self._overflow_log = LogLimiter(_logger)
        self.invalid = 0
        self.overflow = 0

    def handle(self, data: bytes) -> bool:
        """Apply one finding message: an active one is kept (or refreshed), a resolved one forgotten.

        Never raises on bad input; it is counted in :attr:`invalid` and logged at most once a minute.

        Returns:
            ``True`` when the payload was a finding and the view has room for it.
        """
        try:
            if len(data) > _MAX_BYTES:
                raise msgspec.DecodeError(f"{len(data)} bytes, over the {_MAX_BYTES} limit")
            finding = self._decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as error:  # msgspec's error for bad UTF-8
            self.invalid += 1
            self._bad_input_log.warning("invalid diagnosis finding dropped: %s", error)
            return False
        node, key = finding.node, (finding.device, finding.fault)
        if finding.resolved_at is not None:
            findings = self._nodes.get(node)
            if findings is not None and key in findings:
                self._drop(node, findings, key)
            return True
        now = self._clock()
        size = len(data)
        if not self._room_for(node, key, size, now):
            self.overflow += 1
            self._overflow_log.warning(
                "instance health full (%d findings, %d bytes); %r dropped", self._count, self._bytes, key
            )
            return False
        findings = self._nodes.setdefault(node, {})
        held = findings.get(key)
        if held is None:
            self._count += 1
        else:
            self._bytes -= held[2]
        self._bytes += size
        findings[key] = (finding, now, size)
        return True

    def findings(self, node: str | None, devices: Sequence[str] = ()) -> tuple[Finding, ...]:
        """The active findings on ``node`` as a whole and on ``devices``, severity first."""
        if node is None or node not in self._nodes:
            return ()
        findings = self._expire(node, self._clock())
        if findings is None:
            return ()
        matching = [f for (device, _), (f, _, _) in findings.items() if device is None or device in devices]
        return tuple(sorted(matching, key=lambda f: f.sort_key()))

    def _room_for(self, node: str, key: _Key, size: int, now: float) -> bool:
        if self._fits(node, key, size):
            return True
        if now < self._next_sweep:
            return False
        self._next_sweep = now + self._ttl
        for name in list(self._nodes):
            self._expire(name, now)
        return self._fits(node, key, size)

    def _fits(self, node: str, key: _Key, size: int) -> bool:
        findings = self._nodes.get(node)
        held = None if findings is None else findings.get(key)
        if held is None:
            return self._count < self._max_findings and self._bytes + size <= self._max_held_bytes
        return self._bytes - held[2] + size <= self._max_held_bytes

    def _expire(self, node: str, now: float) -> dict[_Key, _Held] | None:
        """Forget the findings of ``node`` not heard within ``ttl``; returns those left, None when none are."""
        findings = self._nodes[node]
        cutoff = now - self._ttl
        for key in [key for key, (_, heard_at, _) in findings.items() if heard_at < cutoff]:
            self._drop(node, findings, key)
        return self._nodes.get(node)

    def _drop(self, node: str, findings: dict[_Key, _Held], key: _Key) -> None:
        self._bytes -= findings.pop(key)[2]
        self._count -= 1
        if not findings:
            del self._nodes[node]

    def healthy(self, node: str | None, devices: Sequence[str] = ()) -> bool:
        """Whether no critical finding is active on ``node`` as a whole or on one of ``devices``."""
        return not any(f.severity == "critical" for f in self.findings(node, devices))
