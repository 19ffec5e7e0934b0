"""The report page of a node with faults, rendered by a real headless Chromium (Debian's ``chromium``).

The findings come the whole way: C doubles, the monitor, nats-server, the service. Chromium's rendered DOM must list
them per node and device, most severe first, and its screenshot is saved under the test's tmp dir (and copied to
``$EAGLEEYE_REPORT_SCREENSHOT`` when set, which is how ``docs/img/diagnosis-report.png`` is made).
"""

from __future__ import annotations

import asyncio
import html
import os
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHROMIUM, *_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


async def test_chromium_renders_the_findings_per_node_and_device_most_severe_first(
    pipeline: Any, nvml: Any, eventually: Callable[..., Awaitable[None]], tmp_path: Path
) -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing; scripts/bootstrap.sh installs it")
    pipeline.nvml_write(nvml.node(2, extra="gpu 1 temp 86\ngpu 1 clock_reasons 0x20\ngpu 0 field 4 1\n"))
    pipeline.dcmi_write(pipeline.dcmi_text(health=2, errorcodes=(0x80E01801,)))
    wanted = {"gpu_ecc_uncorrected", "gpu_sw_thermal_slowdown", "gpu_temperature_near_slowdown", "npu_health"}
    try:
        await eventually(lambda: wanted <= {f.fault for f in pipeline.service.board.view.active}, timeout=30)
    except AssertionError:
        seen = [(f.change.value, f.device, f.fault) for _, f in pipeline.findings()]
        raise AssertionError(f"wanted {sorted(wanted)}; published {seen}") from None
    url = f"http://127.0.0.1:{pipeline.service.http.port}/"

    dom = (await asyncio.to_thread(chromium, tmp_path / "profile", "--dump-dom", url)).stdout
    assert f"<h2>{pipeline.node}" in dom
    positions = {fault: dom.index(f'<span class="fault">{fault}</span>') for fault in wanted}
    assert positions["gpu_ecc_uncorrected"] < positions["gpu_sw_thermal_slowdown"]  # GPU 0's critical first
    assert dom.index(f"<h3>{pipeline.uuid(0)}</h3>") < dom.index(f"<h3>{pipeline.uuid(1)}</h3>")
    for finding in pipeline.service.board.view.active:  # a DOM serialises text with &, < and > escaped only
        assert html.escape(finding.conclusion, quote=False) in dom
    assert "critical</span>" in dom and "warning</span>" in dom

    screenshot = tmp_path / "diagnosis-report.png"
    await asyncio.to_thread(chromium, tmp_path / "profile", f"--screenshot={screenshot}", "--window-size=1280,900", url)
    image = screenshot.read_bytes()
    assert image[:8] == b"\x89PNG\r\n\x1a\n" and len(image) > 20_000  # a page, not a blank
    copy_to = os.environ.get("EAGLEEYE_REPORT_SCREENSHOT")
    if copy_to:
        shutil.copyfile(screenshot, copy_to)
