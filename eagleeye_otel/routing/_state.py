"""What a :class:`~eagleeye_otel.routing.RouterClient` hands out: an engine's state and the ingest counters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from eagleeye_otel.routing._message import RoutingMessage

if TYPE_CHECKING:
    from eagleeye_otel.diagnosis import Finding

__all__ = ["InstanceState", "RouterStats"]


@dataclass(frozen=True, slots=True)
class InstanceState:
    """The newest accepted load of one engine of one instance.

    Attributes:
        message: the newest message accepted for this (instance, engine).
        received_at: the client's clock (``time.monotonic`` by default) when it was accepted.
        findings: the active diagnosis findings on its node or devices, severity first (with ``follow_health``).
    """

    message: RoutingMessage
    received_at: float
    findings: tuple[Finding, ...] = ()

    @property
    def healthy(self) -> bool:
        """False while a critical finding is active on the engine's node as a whole or on one of its devices."""
        return not any(finding.severity == "critical" for finding in self.findings)

    def age(self, now: float) -> float:
        """Seconds since the message was accepted; ``now`` is a reading of the client's clock."""
        return now - self.received_at

    @property
    def last_step_at(self) -> float | None:
        """Unix time of the engine's newest real step (heartbeats keep it); ``None`` from an older publisher."""
        return self.message.last_step_at

    def step_age(self, now: float) -> float | None:
        """Seconds since the engine's newest real step, as of ``now`` on the client's clock.

        The publisher's part (``timestamp - last_step_at``) comes from one clock, the publisher's, and the rest
        is :meth:`age`, so clock skew between machines does not enter. An engine with requests running whose
        step age grows while heartbeats keep it fresh is hung; an idle one has nothing running.

        Returns:
            ``None`` when the publisher does not send ``last_step_at``.
        """
        last_step_at = self.message.last_step_at
        if last_step_at is None:
            return None
        return max(0.0, self.message.timestamp - last_step_at) + now - self.received_at


@dataclass(frozen=True)
class RouterStats:
    """Counts since the client was created; ``received`` is the sum of the other counts but ``expired``.

    Attributes:
        received: payloads handed to :meth:`RouterClient.handle`.
        accepted: messages that updated the view.
        invalid: payloads that are not a valid routing message v1 (bad JSON, wrong types, out of range).
        oversized: payloads over :data:`~eagleeye_otel.routing.MAX_MESSAGE_BYTES`, dropped undecoded.
        out_of_order: messages older than the one held (lower ``seq`` with the same ``started``).
        duplicates: messages with the ``seq`` already held, such as a snapshot reply; harmless.
        superseded: messages from an older process (lower ``started``) than the newest heard for the engine: a
            late message of a publisher that restarted, or a second process publishing under the same instance id.
        overflow: messages of a new (instance, engine) dropped because the view was full.
        expired: (instance, engine) entries removed after ``stale_after`` seconds without a message.
        findings_invalid: with ``follow_health``, diagnosis payloads that were not a finding (bad JSON, wrong
            types, over 64 KiB); not part of ``received``.
        findings_overflow: with ``follow_health``, findings dropped because the health view was full.
    """

    received: int
    accepted: int
    invalid: int
    oversized: int
    out_of_order: int
    duplicates: int
    overflow: int
    expired: int
    findings_invalid: int = 0
    findings_overflow: int = 0
    superseded: int = 0
