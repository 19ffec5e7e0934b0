"""``eagle-eye``: the command group and its small commands."""

from __future__ import annotations

import json
import logging

import click

from eagleeye_otel.cli._diagnose import diagnose
from eagleeye_otel.cli._hardware_monitor import hardware_monitor
from eagleeye_otel.cli._simulate import simulate
from eagleeye_otel.cli._top import top
from eagleeye_otel.cli._up import up
from eagleeye_otel.routing import routing_json_schema
from eagleeye_otel.version import __version__

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="eagle-eye")
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def main(verbose: bool) -> None:
    """Eagle Eye: observability for AI inference."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@main.group()
def schema() -> None:
    """Print the JSON Schema of a message Eagle Eye publishes."""


@schema.command("routing")
def schema_routing() -> None:
    """The routing message v1 (subject eagle_eye.routing_metrics)."""
    click.echo(json.dumps(routing_json_schema(), indent=2))


main.add_command(up)
main.add_command(hardware_monitor)
main.add_command(diagnose)
main.add_command(simulate)
main.add_command(top)
