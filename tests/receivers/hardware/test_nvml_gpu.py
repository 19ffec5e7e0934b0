"""NvmlSource on the node's real NVIDIA driver, where there is one (skipped elsewhere).

Runs in a fresh process: the test process has the C double loaded under the real library's soname.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

_SWEEP = """
import dataclasses, json, sys, time
from eagleeye_otel.errors import HardwareUnavailable
from eagleeye_otel.receivers.hardware import NvmlEventWatcher, NvmlSource
try:
    source = NvmlSource.open()
except HardwareUnavailable as error:
    print(error.reason, file=sys.stderr)
    raise SystemExit(3)
with source:
    try:
        watcher = NvmlEventWatcher(source, wait_ms=100)
        watcher.start()
        watcher.stop()
    except HardwareUnavailable as error:
        print(error.reason, file=sys.stderr)
    sweeps = [source.sweep() for _ in range(2) if not time.sleep(0.2)]
print(json.dumps([dataclasses.asdict(r) for r in sweeps[-1]], default=sorted))
"""


@pytest.mark.gpu
def test_a_real_gpu_reads_in_plausible_si_units():
    result = subprocess.run([sys.executable, "-c", _SWEEP], capture_output=True, text=True, timeout=120, check=False)
    if result.returncode == 3:
        pytest.skip(f"no NVIDIA GPU here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    readings = json.loads(result.stdout)
    assert readings
    for reading in readings:
        identity = reading["identity"]
        assert reading["status"] == "ok", reading["detail"]
        assert identity["id"].startswith(("GPU-", "MIG-"))
        assert identity["pci_bus_id"] == identity["pci_bus_id"].lower()
        assert identity["model"] and identity["driver_version"]
        assert 0 <= reading["utilization"] <= 1
        assert 0 < reading["memory_used_bytes"] <= reading["memory_total_bytes"]
        assert 0 < reading["temperature_c"] < 120
        assert reading["power_w"] is None or 1 < reading["power_w"] < 2000
        assert reading["sm_clock_hz"] is None or reading["sm_clock_hz"] > 1e7
