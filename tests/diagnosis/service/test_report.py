"""The HTML report: per node, per device, most severe first; escaped; readable when all is well."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import msgspec

from eagleeye_otel.diagnosis import Finding, FindingChanges, Severity
from eagleeye_otel.diagnosis._board import FindingBoard
from eagleeye_otel.diagnosis._report import render_report

NOW = 1_800_000_000.0


class _Outline(HTMLParser):
    """The page's headings and finding faults, in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.outline: list[str] = []
        self._capture: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        classes = dict(attrs).get("class") or ""
        if tag in ("h2", "h3") or "fault" in classes.split():
            self._capture = tag if tag in ("h2", "h3") else "fault"

    def handle_data(self, data: str) -> None:
        if self._capture is not None and data.strip():
            self.outline.append(f"{self._capture}:{data.strip()}")
            self._capture = None


def outline(page: str) -> list[str]:
    parser = _Outline()
    parser.feed(page)
    return parser.outline


def view(findings: list[Finding], resolved: tuple[Finding, ...] = ()) -> FindingBoard:
    board = FindingBoard(clock=lambda: NOW)
    board.update(findings, FindingChanges(resolved=resolved))
    return board


def test_nodes_devices_and_findings_are_ordered_most_severe_first(findings: list[Finding]) -> None:
    page = render_report(view(findings).view, now=NOW)
    assert outline(page) == [
        "h2:node-b",
        "h3:GPU-b0",
        "fault:xid_79",
        "h3:npu-0-1",
        "fault:npu_health",
        "h2:node-a",
        "h3:node-wide",
        "fault:kernel_log_lost",
        "h3:GPU-a1",
        "fault:gpu_temperature_near_slowdown",
        "h3:GPU-a0",
        "fault:gpu_power_at_limit",
    ]
    assert "2 critical" in page and "2 warning" in page and "1 info" in page
    assert "xid_79 on GPU-b0." in page and "Handle xid_79." in page
    assert "since 2027-01-15 07:57:55 UTC (for 2 min 5 s), last seen 2027-01-15 07:59:59 UTC" in page
    assert "<td>91.5</td>" in page and "<td>xid</td><td>79</td>" in page


def test_a_device_with_several_findings_lists_them_by_severity(findings: list[Finding]) -> None:
    same_gpu = [msgspec.structs.replace(f, node="n", device="GPU-0") for f in findings]
    faults = [line for line in outline(render_report(view(same_gpu).view, now=NOW)) if line.startswith("fault:")]
    assert faults[:2] == ["fault:npu_health", "fault:xid_79"]
    assert faults[-1] == "fault:gpu_power_at_limit"


def test_telemetry_text_is_escaped(findings: list[Finding]) -> None:
    hostile = msgspec.structs.replace(
        findings[0],
        node="<script>alert(1)</script>",
        conclusion='"><img src=x onerror=alert(2)>',
        evidence={"<b>": "</td><td>"},
    )
    page = render_report(view([hostile]).view, now=NOW)
    assert "<script>alert" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<tr><td>&lt;b&gt;</td><td>&lt;/td&gt;&lt;td&gt;</td></tr>" in page


def test_all_clear_and_recently_resolved(findings: list[Finding]) -> None:
    empty = render_report(FindingBoard().view, now=NOW)
    assert "No active findings" in empty and "all clear" in empty and "waiting for telemetry" in empty
    resolved = msgspec.structs.replace(findings[1], resolved_at=NOW - 30)
    page = render_report(view([], resolved=(resolved,)).view, now=NOW)
    assert "No active findings" in page
    assert re.search(r"Recently resolved.*node-b.*GPU-b0.*xid_79", page)


def test_the_page_refreshes_itself_and_states_its_severity_colours() -> None:
    page = render_report(FindingBoard().view, now=NOW)
    assert '<meta http-equiv="refresh"' in page
    for severity in Severity:
        assert f"--{severity.value}:" in page
