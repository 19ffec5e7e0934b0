"""``eagle-eye diagnose``: findings (fault, severity, conclusion, action) from hardware telemetry.

With ``--dmesg`` and/or ``--snapshot`` it diagnoses saved files once and exits (see
:mod:`eagleeye_otel.diagnosis._oneshot`); without them it is the diagnosis service that follows the hardware monitors
over NATS. Bad input never ends in a traceback: an unreadable or invalid file or rule file exits 1 with one line
naming it. ``--fail-on`` makes the one-shot form a gate (a node's pre-flight check); the service has no verdict to
give, so it refuses ``--fail-on`` other than ``never`` as a usage error.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click
from rich.console import Console

from eagleeye_otel.diagnosis import (
    DiagnosisEngine,
    DiagnosisSettings,
    Severity,
    load_knowledge_base,
    run_diagnosis_service,
)
from eagleeye_otel.diagnosis._oneshot import diagnose_files, fails, print_report, report_document
from eagleeye_otel.errors import EagleEyeError
from eagleeye_otel.settings import Settings

__all__ = ["diagnose"]

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
_NEVER = "never"
_FAIL_ON = [*(severity.value for severity in Severity), _NEVER]


@click.command("diagnose")
@click.option("--dmesg", type=_FILE, default=None, help="Diagnose this saved kernel log (dmesg, journal or syslog).")
@click.option(
    "--snapshot",
    type=_FILE,
    default=None,
    help="Diagnose this `eagle-eye hardware-monitor --once --format json` output.",
)
@click.option(
    "--rules",
    "rule_files",
    type=_FILE,
    multiple=True,
    help="A rule file merged over the shipped knowledge base (repeatable; later files win).",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="How the one-shot report is printed.",
)
@click.option("--node", default=None, help="Node name for the findings (default: the snapshot's, else this host's).")
@click.option(
    "--fail-on",
    type=click.Choice(_FAIL_ON),
    default=_NEVER,
    show_default=True,
    help="One-shot: exit 1 when a finding of this severity or a more urgent one is active.",
)
def diagnose(  # click passes options by name
    *,
    dmesg: Path | None,
    snapshot: Path | None,
    rule_files: tuple[Path, ...],
    output_format: str,
    node: str | None,
    fail_on: str,
) -> None:
    """Name the hardware fault, its severity and the action to take.

    With --dmesg and/or --snapshot: diagnose the files once, print the report and exit. Without them: run the
    diagnosis service over NATS (settings from EAGLEEYE_* variables) until SIGINT or SIGTERM.

    \b
    Exit status:
      0  no active finding at or above --fail-on (always with the default,
         never); the service: stopped by SIGINT or SIGTERM
      1  a finding at or above --fail-on is active (after the report); or a
         file or setting is bad (one line on stderr, no report)
      2  usage error: a bad option or value, a missing file, --fail-on
         without --dmesg or --snapshot
    """
    if dmesg is None and snapshot is None:
        if fail_on != _NEVER:
            raise click.UsageError("--fail-on needs --dmesg or --snapshot: the service publishes findings instead")
        _serve(rule_files)
        return
    try:
        report = diagnose_files(dmesg=dmesg, snapshot=snapshot, rules=rule_files, node=node)
    except EagleEyeError as error:
        raise click.ClickException(str(error)) from error
    if output_format == "json":
        click.echo(json.dumps(report_document(report), indent=2, ensure_ascii=False))
    else:
        print_report(Console(soft_wrap=True), report)
    if fails(report, None if fail_on == _NEVER else Severity(fail_on)):
        raise click.exceptions.Exit(1)


def _serve(rule_files: tuple[Path, ...]) -> None:
    """The service: settings from the environment (docs/diagnosis-service.md), until SIGINT or SIGTERM.

    An unreachable NATS does not stop it: it logs one warning, serves its report and reconnects in the background.
    """
    try:
        engine = DiagnosisEngine(load_knowledge_base(rule_files))
        settings, nats = DiagnosisSettings.from_env(), Settings.from_env().nats
        asyncio.run(run_diagnosis_service(engine, settings=settings, nats_settings=nats))
    except EagleEyeError as error:
        raise click.ClickException(str(error)) from error
