"""The service's published view of the findings: what the HTTP API, the report page and the metrics read.

The engine lives on the service's event loop; the HTTP server's threads and the metric collection read this board
instead. Each update replaces one immutable :class:`BoardView`, so a reader takes a consistent view in one attribute
read and needs no lock.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from eagleeye_otel.diagnosis._finding import Finding, FindingChanges, Severity

__all__ = ["BoardView", "DeviceRef", "FindingBoard", "FindingFilter"]

_DEFAULT_RESOLVED_KEPT = 200

DeviceRef = tuple[str, str, str]
"""(node, device id, ``hw.type``): a device whose telemetry the diagnosis reads."""


@dataclass(frozen=True)
class FindingFilter:
    """Which findings a reader wants; an empty field matches everything.

    Attributes:
        nodes: node names.
        severities: severities.
        devices: device ids.
    """

    nodes: frozenset[str] = frozenset()
    severities: frozenset[Severity] = frozenset()
    devices: frozenset[str] = frozenset()

    def matches(self, finding: Finding) -> bool:
        """Whether ``finding`` passes every non-empty field."""
        return (
            (not self.nodes or finding.node in self.nodes)
            and (not self.severities or finding.severity in self.severities)
            and (not self.devices or (finding.device or "") in self.devices)
        )


@dataclass(frozen=True)
class BoardView:
    """The findings at one moment.

    Attributes:
        updated_at: Unix seconds of the evaluation that made this view (0 before the first).
        active: the open findings, severity first (:meth:`Finding.sort_key`).
        resolved: the most recently resolved findings, newest first.
        devices: every device the telemetry describes, for per-device states.
    """

    updated_at: float = 0.0
    active: tuple[Finding, ...] = ()
    resolved: tuple[Finding, ...] = ()
    devices: tuple[DeviceRef, ...] = ()

    def select(self, wanted: FindingFilter) -> BoardView:
        """This view with only the findings ``wanted`` matches."""
        return BoardView(
            updated_at=self.updated_at,
            active=tuple(f for f in self.active if wanted.matches(f)),
            resolved=tuple(f for f in self.resolved if wanted.matches(f)),
            devices=self.devices,
        )


class FindingBoard:
    """Keeps the latest :class:`BoardView`; written by one thread, read by any.

    Args:
        resolved_kept: how many resolved findings the view remembers, for the report's "recently resolved".
        clock: Unix seconds.
    """

    def __init__(self, *, resolved_kept: int = _DEFAULT_RESOLVED_KEPT, clock: Callable[[], float] = time.time) -> None:
        self._resolved: collections.deque[Finding] = collections.deque(maxlen=resolved_kept)
        self._clock = clock
        self.view = BoardView()
        """The latest view; read it once and use that object."""

    def update(
        self, active: Iterable[Finding], changes: FindingChanges, devices: tuple[DeviceRef, ...] | None = None
    ) -> None:
        """Publish the engine's open findings after an evaluation that made ``changes``.

        Args:
            active: the open findings.
            changes: what the evaluation changed (its resolutions are remembered).
            devices: the devices now described; None keeps the previous ones.
        """
        self._resolved.extendleft(changes.resolved)
        self.view = BoardView(
            updated_at=self._clock(),
            active=tuple(sorted(active, key=Finding.sort_key)),
            resolved=tuple(self._resolved),
            devices=self.view.devices if devices is None else devices,
        )
