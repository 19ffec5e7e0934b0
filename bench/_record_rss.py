"""The resident memory a stat logger adds to a vLLM API-server process; each logger in a fresh child process.

The child loads vLLM and builds the config first (vLLM's own cost, not the logger's), then imports the logger's
code, builds the logger (Eagle Eye: its publisher thread, NATS connection, meter provider, readers and drain
thread), and records 3000 paced steps. Run by bench_record.py as ``python bench/_record_rss.py CASE MODEL [--sdk]``.
"""

# ruff: noqa: PLC0415 - imports are deferred on purpose (RSS is measured before and after them)

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from _common import rss_bytes
from _record_setup import (
    OURS,
    build_loggers,
    eagle_eye_class,
    install_sdk_meter_provider,
    make_pool,
    runtime_info,
    vllm_config,
    wait_connected,
)

__all__ = ["measure_rss"]

_MB = 1 / 2**20
_STEPS = 3000


def child(case: str, model: Path, sdk: bool) -> dict[str, Any]:
    """Build and exercise one logger; the RSS after each stage, in MB."""
    cfg = vllm_config(model)
    import vllm.v1.metrics.loggers  # noqa: F401 - vLLM's own, loaded before any stat logger in vllm serve

    pool = make_pool(1000, faithful=True)
    gc.collect()
    threads0, rss0 = threading.active_count(), rss_bytes()
    if sdk:
        install_sdk_meter_provider()
    if case == OURS:
        eagle_eye_class()  # the plugin's import, as loading vLLM's entry point triggers it
    rss_import = rss_bytes()
    logger = build_loggers(cfg, [case])[case]
    publisher, info = runtime_info() if case == OURS else (None, {})
    connected = wait_connected(publisher) if case == OURS else None
    rss_built = rss_bytes()
    for i in range(_STEPS):  # paced, so that the publisher sends most steps and the drain records them
        logger.record(*pool[i % len(pool)], mm_cache_stats=None, engine_idx=0)
        time.sleep(0.001)
    time.sleep(0.5)
    gc.collect()
    rss1 = rss_bytes()
    return {
        "case": case,
        "rss_before_mb": rss0 * _MB,
        "import_mb": (rss_import - rss0) * _MB,
        "construct_mb": (rss_built - rss_import) * _MB,
        "exercise_mb": (rss1 - rss_built) * _MB,
        "added_mb": (rss1 - rss0) * _MB,
        "threads_added": threading.active_count() - threads0,
        "threads": sorted(t.name for t in threading.enumerate()),
        "connected": connected,
        "plugin": info,
    }


def measure_rss(cases: list[str], model: Path, sdk: bool) -> list[dict[str, Any]]:
    """Run :func:`child` for each case in a fresh process (inheriting this environment); failures are reported."""
    results = []
    for case in cases:
        cmd = [sys.executable, __file__, case, str(model), *(["--sdk"] if sdk else [])]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600, env=dict(os.environ))
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RSS ")]
        if proc.returncode != 0 or not lines:
            print(f"RSS child {case} failed ({proc.returncode}):\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        results.append(json.loads(lines[-1][4:]))
    return results


if __name__ == "__main__":
    print("RSS " + json.dumps(child(sys.argv[1], Path(sys.argv[2]), "--sdk" in sys.argv[3:])), flush=True)
