"""Findings for the service's output tests: one of each severity on two nodes, and one node-wide."""

from __future__ import annotations

import pytest

from eagleeye_otel.diagnosis import Finding, Severity

NOW = 1_800_000_000.0


def _finding(node: str, device: str | None, fault: str, severity: Severity, **extra: object) -> Finding:
    fields: dict[str, object] = {
        "node": node,
        "device": device,
        "fault": fault,
        "severity": severity,
        "conclusion": f"{fault} on {device or node}.",
        "action": f"Handle {fault}.",
        "evidence": {"value": 91.5, "limit": 87.0, "signal": "hw.temperature{hw.sensor_location=die}"},
        "first_seen": NOW - 125,
        "last_seen": NOW - 1,
        **extra,
    }
    return Finding(**fields)  # type: ignore[arg-type]


@pytest.fixture
def findings() -> list[Finding]:
    """Unsorted on purpose: a warning on node-a, a critical on node-b, an info and a node-wide one on node-a."""
    return [
        _finding("node-a", "GPU-a1", "gpu_temperature_near_slowdown", Severity.WARNING),
        _finding("node-b", "GPU-b0", "xid_79", Severity.CRITICAL, evidence={"xid": 79, "count": 1}),
        _finding("node-a", "GPU-a0", "gpu_power_at_limit", Severity.INFO),
        _finding("node-a", None, "kernel_log_lost", Severity.WARNING),
        _finding("node-b", "npu-0-1", "npu_health", Severity.CRITICAL),
    ]
