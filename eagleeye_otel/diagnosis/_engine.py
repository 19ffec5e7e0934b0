"""The diagnosis engine: telemetry in (OTLP, kernel-log events, ``--once`` snapshots), findings out.

First version: the public signatures other components code against; the bodies land in the next commits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from eagleeye_otel.diagnosis._finding import Finding, FindingChanges
from eagleeye_otel.diagnosis._knowledge import KnowledgeBase
from eagleeye_otel.receivers.hardware._model import KernelEvent

__all__ = ["DiagnosisEngine", "EngineStats"]


@dataclass
class EngineStats:
    """Counters of what the engine took in and did."""

    payloads: int = 0
    points: int = 0
    malformed: int = 0
    kernel_events: int = 0
    snapshots: int = 0
    evaluations: int = 0
    rules_evaluated: int = 0


class DiagnosisEngine:
    """Keeps a short per-device history and evaluates the knowledge base's rules over it.

    Args:
        knowledge: the rules; the shipped defaults when None.
        clock: Unix seconds, for tests.
    """

    def __init__(self, knowledge: KnowledgeBase | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self._knowledge = knowledge
        self._clock = clock
        self.stats = EngineStats()

    def ingest_otlp(self, payload: bytes | ExportMetricsServiceRequest) -> int:
        """Take one OTLP export; returns the points ingested. A malformed payload is counted, never raised."""
        raise NotImplementedError

    def ingest_kernel_events(self, node: str, events: Iterable[KernelEvent]) -> None:
        """Take parsed kernel-log events of ``node``."""
        raise NotImplementedError

    def ingest_snapshot(self, snapshot: Mapping[str, Any]) -> None:
        """Take a ``hardware-monitor --once --format json`` document."""
        raise NotImplementedError

    def evaluate(self) -> FindingChanges:
        """Evaluate the rules over what changed; returns the findings opened, updated and resolved."""
        raise NotImplementedError

    def active(self) -> list[Finding]:
        """The open findings, severity first."""
        raise NotImplementedError
