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

_MAX_FINDINGS: Final = 100_000
_MAX_BYTES: Final = 64 * 1024

_Key = tuple[str | None, str]
"""(device, fault) within a node."""


class InstanceHealth:
    """The active findings by node, fed by :meth:`handle` with the payloads of ``eagle_eye.diagnosis.>``.

    Args:
        ttl: seconds a finding counts after it was last published.
        clock: monotonic seconds; injectable for tests.

    Raises:
        ConfigError: ``ttl`` is not a positive number of seconds.
    """

    def __init__(self, *, ttl: float = DEFAULT_HEALTH_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        if not (isinstance(ttl, int | float) and math.isfinite(ttl) and ttl > 0):
            raise ConfigError("health_ttl", ttl, "must be a positive number of seconds")
        # Imported here: the diagnosis package imports the hardware receivers, whose exporters import this package.
        from eagleeye_otel.diagnosis._finding import Finding  # noqa: PLC0415

        self._decode = msgspec.json.Decoder(Finding).decode
        self._ttl = float(ttl)
        self._clock = clock
        self._nodes: dict[str, dict[_Key, tuple[Finding, float]]] = {}
        self._count = 0
        self._bad_input_log = LogLimiter(_logger)

    def handle(self, data: bytes) -> bool:
        """Apply one finding message: an active one is kept (or refreshed), a resolved one forgotten.

        Never raises on bad input; it is logged at most once a minute.

        Returns:
            ``True`` when the payload was a finding.
        """
        try:
            if len(data) > _MAX_BYTES:
                raise msgspec.DecodeError(f"{len(data)} bytes, over the {_MAX_BYTES} limit")
            finding = self._decode(data)
        except (msgspec.DecodeError, RecursionError) as error:
            self._bad_input_log.warning("invalid diagnosis finding dropped: %s", error)
            return False
        findings = self._nodes.get(finding.node)
        key = (finding.device, finding.fault)
        if finding.resolved_at is not None:
            if findings is not None and findings.pop(key, None) is not None:
                self._count -= 1
                if not findings:
                    del self._nodes[finding.node]
            return True
        if findings is None:
            findings = self._nodes[finding.node] = {}
        if key not in findings:
            if self._count >= _MAX_FINDINGS:
                self._bad_input_log.warning("more than %d active findings; %r dropped", _MAX_FINDINGS, key)
                return False
            self._count += 1
        findings[key] = (finding, self._clock())
        return True

    def findings(self, node: str | None, devices: Sequence[str] = ()) -> tuple[Finding, ...]:
        """The active findings on ``node`` as a whole and on ``devices``, severity first."""
        if node is None:
            return ()
        findings = self._nodes.get(node)
        if not findings:
            return ()
        cutoff = self._clock() - self._ttl
        expired = [key for key, (_, heard_at) in findings.items() if heard_at < cutoff]
        for key in expired:
            del findings[key]
        self._count -= len(expired)
        if not findings:
            del self._nodes[node]
            return ()
        matching = [f for (device, _), (f, _) in findings.items() if device is None or device in devices]
        return tuple(sorted(matching, key=lambda f: f.sort_key()))

    def healthy(self, node: str | None, devices: Sequence[str] = ()) -> bool:
        """Whether no critical finding is active on ``node`` as a whole or on one of ``devices``."""
        return not any(f.severity == "critical" for f in self.findings(node, devices))
