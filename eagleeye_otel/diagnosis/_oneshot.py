"""One-shot diagnosis: a saved kernel log and/or a ``hardware-monitor --once`` snapshot in, a report out.

No NATS and no history: the inputs are one observation, so the engine runs without hysteresis and every fault the
rules see is reported. The kernel log is read with the monitor's own file reader and line parser, so a saved
``dmesg``, ``journalctl -k`` or syslog file gives the events the monitor would have counted; lines that look like
Xids but do not parse are skipped and counted, as are snapshot entries that do not parse.
"""

from __future__ import annotations

import json
import socket
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.text import Text

from eagleeye_otel.diagnosis._engine import DiagnosisEngine
from eagleeye_otel.diagnosis._finding import SEVERITY_ORDER, Finding, Severity
from eagleeye_otel.diagnosis._knowledge import load_knowledge_base
from eagleeye_otel.errors import ConfigError, HardwareUnavailable
from eagleeye_otel.receivers.hardware._kmsg_sources import FileSource

__all__ = ["OneShotReport", "diagnose_files", "fails", "print_report", "report_document"]

_COLOURS = {Severity.CRITICAL: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}
_EVIDENCE_CHARS = 160
_RUN_TIMES = frozenset({"first_event", "last_event"})


@dataclass(frozen=True)
class OneShotReport:
    """The findings of one diagnosis and what was read to reach them.

    Attributes:
        node: the node the inputs are about.
        generated_at: Unix seconds.
        findings: severity first.
        inputs: per input (``dmesg``, ``snapshot``): its path and what was read, skipped and counted.
        rules: how many rules were evaluated.
    """

    node: str
    generated_at: float
    findings: list[Finding]
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    rules: int = 0


def diagnose_files(
    *,
    dmesg: Path | None = None,
    snapshot: Path | None = None,
    rules: Sequence[Path] = (),
    node: str | None = None,
) -> OneShotReport:
    """Diagnose a saved kernel log and/or snapshot with the shipped rules and ``rules``.

    Args:
        dmesg: a saved kernel log (dmesg, ``/dev/kmsg`` records, journal or syslog text).
        snapshot: the JSON that ``eagle-eye hardware-monitor --once --format json`` printed.
        rules: the user's rule files, merged over the shipped ones.
        node: the node name; default the snapshot's, else this host's.

    Raises:
        ConfigError: a rule file is invalid, or an input cannot be read or is not what it should be.
    """
    engine = DiagnosisEngine(load_knowledge_base(rules), hysteresis=False)
    inputs: dict[str, dict[str, Any]] = {}
    document = None if snapshot is None else _read_snapshot(snapshot)
    name = node or (document or {}).get("node") or socket.gethostname()
    if document is not None and snapshot is not None:
        engine.ingest_snapshot({**document, "node": name})
        stats = engine.stats
        inputs["snapshot"] = {
            "path": str(snapshot),
            "gpus": len(document.get("gpus") or []),
            "npus": len(document.get("npus") or []),
            "kernel_log_events": stats.kernel_events,
            "skipped": stats.malformed,
        }
    if dmesg is not None:
        counts = engine.ingest_kernel_log(name, _lines(dmesg))
        inputs["dmesg"] = {
            "path": str(dmesg),
            "lines": counts.lines,
            "events": counts.events,
            "malformed": counts.malformed,
        }
    engine.evaluate()
    return OneShotReport(name, time.time(), engine.active(), inputs, len(engine.knowledge.rules))


def fails(report: OneShotReport, level: Severity | None) -> bool:
    """Whether a finding at or above ``level`` is active: a pre-flight check's verdict (``None``: never fails).

    Args:
        report: the diagnosis.
        level: the least severity that fails, or ``None`` for never.
    """
    if level is None:
        return False
    return any(SEVERITY_ORDER[finding.severity] <= SEVERITY_ORDER[level] for finding in report.findings)


def _read_snapshot(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_bytes())
    except OSError as error:
        raise ConfigError("--snapshot", str(path), f"cannot read it: {error.strerror or error}") from error
    except (ValueError, RecursionError) as error:  # RecursionError: nested too deep
        raise ConfigError("--snapshot", str(path), f"not JSON ({error})") from error
    if not isinstance(document, dict) or not isinstance(document.get("node"), str):
        raise ConfigError("--snapshot", str(path), "not a hardware-monitor --once --format json document")
    return document


def _lines(path: Path) -> Iterator[str]:
    """The file's lines, read in bounded chunks by the monitor's own file source (a line is cut at 8 KiB)."""
    try:
        source = FileSource(path)
    except HardwareUnavailable as error:
        raise ConfigError("--dmesg", str(path), error.reason) from error
    try:
        yield from source.lines()
    except OSError as error:
        raise ConfigError("--dmesg", str(path), f"cannot read it: {error.strerror or error}") from error
    finally:
        source.close()


def report_document(report: OneShotReport) -> dict[str, Any]:
    """The report as JSON-ready builtins: node, time, inputs, counts by severity, and the findings."""
    severities = Counter(finding.severity.value for finding in report.findings)
    return {
        "node": report.node,
        "generated_at": report.generated_at,
        "rules": report.rules,
        "inputs": report.inputs,
        "summary": {severity.value: severities.get(severity.value, 0) for severity in Severity},
        "findings": [msgspec.to_builtins(finding) for finding in report.findings],
    }


def print_report(console: Console, report: OneShotReport) -> None:
    """The findings for people: a summary line, then each finding, severity first, with its action."""
    summary = report_document(report)["summary"]
    header = Text(f"{report.node}: ", style="bold")
    header.append(", ".join(f"{count} {severity}" for severity, count in summary.items()))
    console.print(header)
    for name, read in report.inputs.items():
        details = ", ".join(f"{value} {key}" for key, value in read.items() if key != "path")
        console.print(Text(f"  {name} {read['path']}: {details}", style="dim"))
    if not report.findings:
        console.print(Text("No fault found.", style="green"))
    for finding in report.findings:
        console.print()
        line = Text(f"{finding.severity.value.upper():<8} ", style=_COLOURS[finding.severity])
        line.append(finding.fault, style="bold")
        line.append(f"  {finding.device or 'node'}")
        console.print(line)
        console.print(Text(f"  {finding.conclusion}"))
        console.print(Text(f"  → {finding.action}", style="bold"))
        console.print(Text(f"  evidence: {_evidence(finding.evidence)}", style="dim"))


def _evidence(evidence: dict[str, Any]) -> str:
    """A one-line summary of the evidence; the event times are left out (in a one-shot run they are the run's)."""
    parts = []
    for key, value in evidence.items():
        if key in _RUN_TIMES:
            continue
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        parts.append(f"{key}={shown}")
    text = ", ".join(parts)
    return text if len(text) <= _EVIDENCE_CHARS else text[: _EVIDENCE_CHARS - 1] + "…"
