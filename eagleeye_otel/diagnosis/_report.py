"""The HTML report page: the active findings per node, per device, most severe first, then the recently resolved.

One self-contained page (inline CSS, no script), so it renders the same in a browser, a headless screenshot or a
mail client, and refreshes itself every few seconds. Every value from the telemetry is escaped.
"""

from __future__ import annotations

import html
import json
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any, Final

from eagleeye_otel.diagnosis._board import BoardView
from eagleeye_otel.diagnosis._finding import SEVERITY_ORDER, Finding, Severity

__all__ = ["render_report"]

_REFRESH_S: Final = 5
_NODE_WIDE: Final = "node-wide"

_STYLE: Final = """
:root { color-scheme: light; --critical: #b42318; --warning: #b54708; --info: #175cd3; --ok: #067647; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #101828;
  background: #f5f6f8; }
header { background: #101828; color: #fff; padding: 18px 32px; display: flex; align-items: baseline;
  gap: 24px; flex-wrap: wrap; }
header h1 { font-size: 20px; margin: 0; font-weight: 600; }
header .time { color: #b9c0cc; font-size: 13px; }
.summary { display: flex; gap: 10px; margin-left: auto; }
.count { padding: 3px 12px; border-radius: 999px; font-weight: 600; font-size: 13px; background: #344054; }
.count.critical { background: var(--critical); } .count.warning { background: var(--warning); }
.count.info { background: var(--info); } .count.ok { background: var(--ok); }
main { padding: 20px 32px 40px; max-width: 1280px; }
section.node { background: #fff; border: 1px solid #e4e7ec; border-radius: 10px; margin-bottom: 20px;
  overflow: hidden; }
section.node > h2 { margin: 0; padding: 12px 18px; font-size: 17px; border-bottom: 1px solid #e4e7ec;
  display: flex; gap: 12px; align-items: center; }
.device { padding: 10px 18px 4px; border-bottom: 1px solid #f0f1f3; }
.device:last-child { border-bottom: 0; }
.device h3 { margin: 4px 0 8px; font-size: 14px; font-family: ui-monospace, Menlo, monospace; color: #344054; }
article.finding { border-left: 4px solid var(--info); padding: 6px 12px 8px; margin: 0 0 10px;
  background: #fafbfc; border-radius: 0 6px 6px 0; }
article.finding.critical { border-color: var(--critical); background: #fef3f2; }
article.finding.warning { border-color: var(--warning); background: #fffaeb; }
.badge { display: inline-block; font-size: 11px; font-weight: 700; text-transform: uppercase; letter-spacing: .04em;
  color: #fff; padding: 1px 8px; border-radius: 4px; background: var(--info); vertical-align: 1px; }
.badge.critical { background: var(--critical); } .badge.warning { background: var(--warning); }
.fault { font-family: ui-monospace, Menlo, monospace; font-size: 13px; color: #475467; margin-left: 6px; }
.conclusion { font-weight: 600; margin: 4px 0 2px; }
.action { margin: 2px 0 4px; } .action b { color: #344054; }
.seen { font-size: 12px; color: #667085; }
table.evidence { border-collapse: collapse; font-size: 12.5px; margin: 4px 0; }
table.evidence td { padding: 1px 14px 1px 0; vertical-align: top; }
table.evidence td:first-child { color: #667085; font-family: ui-monospace, Menlo, monospace; }
.empty { background: #fff; border: 1px solid #e4e7ec; border-radius: 10px; padding: 28px; font-size: 16px; }
h2.resolved { font-size: 16px; margin: 28px 0 8px; }
table.resolved { border-collapse: collapse; width: 100%; background: #fff; font-size: 13px;
  border: 1px solid #e4e7ec; }
table.resolved th, table.resolved td { text-align: left; padding: 6px 10px; border-bottom: 1px solid #f0f1f3; }
table.resolved th { background: #f9fafb; color: #475467; font-weight: 600; }
"""


def render_report(view: BoardView, *, now: float | None = None, title: str = "Eagle Eye hardware diagnosis") -> str:
    """The report page of ``view``.

    Args:
        view: the findings to show (already filtered, if the reader asked for a subset).
        now: Unix seconds the page is made at (durations are counted to it); the clock by default.
        title: the page's title and heading.
    """
    now = time.time() if now is None else now
    counts = {severity: 0 for severity in Severity}
    for finding in view.active:
        counts[finding.severity] += 1
    chips = (
        "".join(f'<span class="count {s.value}">{counts[s]} {s.value}</span>' for s in Severity if counts[s])
        or '<span class="count ok">all clear</span>'
    )
    body = [_node_section(node, findings, now) for node, findings in _by_node(view.active)]
    if not body:
        body = ['<p class="empty">No active findings: every device that reports telemetry looks healthy.</p>']
    if view.resolved:
        body.append(_resolved_table(view.resolved))
    updated = f"updated {_when(view.updated_at)}" if view.updated_at else "waiting for telemetry"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{_REFRESH_S}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>"
        f'<header><h1>{_e(title)}</h1><span class="time">{_e(updated)}</span>'
        f'<div class="summary">{chips}</div></header>'
        f"<main>{''.join(body)}</main></body></html>\n"
    )


def _by_node(findings: Iterable[Finding]) -> list[tuple[str, list[Finding]]]:
    """Findings grouped by node, the nodes with the most severe finding first, then by name."""
    groups: dict[str, list[Finding]] = defaultdict(list)
    for finding in findings:
        groups[finding.node].append(finding)
    return sorted(groups.items(), key=lambda item: (SEVERITY_ORDER[_worst(item[1])], item[0]))


def _worst(findings: Iterable[Finding]) -> Severity:
    return min((f.severity for f in findings), key=SEVERITY_ORDER.__getitem__)


def _node_section(node: str, findings: list[Finding], now: float) -> str:
    devices: dict[str, list[Finding]] = defaultdict(list)
    for finding in findings:
        devices[finding.device or _NODE_WIDE].append(finding)
    ordered = sorted(
        devices.items(), key=lambda item: (SEVERITY_ORDER[_worst(item[1])], item[0] != _NODE_WIDE, item[0])
    )
    worst = _worst(findings)
    parts = [
        f'<section class="node" id="node-{_e(node)}"><h2>{_e(node)}'
        f'<span class="badge {worst.value}">{worst.value}</span></h2>'
    ]
    for device, device_findings in ordered:
        parts.append(f'<div class="device"><h3>{_e(device)}</h3>')
        parts.extend(_finding(f, now) for f in sorted(device_findings, key=Finding.sort_key))
        parts.append("</div>")
    parts.append("</section>")
    return "".join(parts)


def _finding(finding: Finding, now: float) -> str:
    severity = finding.severity.value
    evidence = "".join(
        f"<tr><td>{_e(key)}</td><td>{_e(_value(value))}</td></tr>" for key, value in finding.evidence.items()
    )
    return (
        f'<article class="finding {severity}"><span class="badge {severity}">{severity}</span>'
        f'<span class="fault">{_e(finding.fault)}</span>'
        f'<p class="conclusion">{_e(finding.conclusion)}</p>'
        f'<p class="action"><b>Action:</b> {_e(finding.action)}</p>'
        + (f'<table class="evidence">{evidence}</table>' if evidence else "")
        + f'<div class="seen">since {_e(_when(finding.first_seen))} ({_e(_duration(now - finding.first_seen))}),'
        f" last seen {_e(_when(finding.last_seen))}</div></article>"
    )


def _resolved_table(resolved: Sequence[Finding]) -> str:
    rows = "".join(
        f"<tr><td>{_e(_when(f.resolved_at or f.last_seen))}</td><td>{_e(f.node)}</td>"
        f"<td>{_e(f.device or _NODE_WIDE)}</td><td>{_e(f.fault)}</td><td>{_e(f.severity.value)}</td>"
        f"<td>{_e(f.conclusion)}</td></tr>"
        for f in resolved
    )
    return (
        '<h2 class="resolved">Recently resolved</h2><table class="resolved"><thead><tr><th>Resolved</th>'
        "<th>Node</th><th>Device</th><th>Fault</th><th>Severity</th><th>Conclusion</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def _value(value: Any) -> str:
    """An evidence value as an operator reads it: floats rounded, lists joined, mappings as JSON."""
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(_value(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, default=str, sort_keys=True)
    return str(value)


def _when(unix_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(unix_s))


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"for {seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"for {minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"for {hours} h {minutes} min" if hours < 48 else f"for {hours // 24} days"


def _e(text: str) -> str:
    return html.escape(text, quote=True)
