"""``eagle-eye hardware-monitor``: the node's accelerator health for Prometheus and, every second, for NATS.

``--once`` reads one sweep, prints it (``--format json`` for scripts) and exits 0, also on a node with no GPU or NPU,
where the output names the node and says why nothing was read. Without ``--once`` it runs until SIGINT or SIGTERM,
then exports a last batch and closes everything. A bad setting stops it at start with an error naming the setting;
an unreachable NATS does not (a DaemonSet may start first): it says so in one line and reconnects in the background.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import signal
import threading

import click
from rich.console import Console
from rich.markup import escape

from eagleeye_otel.cli._hardware_output import print_sweep, sweep_document
from eagleeye_otel.cli._nats_reach import reachable_or_say
from eagleeye_otel.errors import EagleEyeError
from eagleeye_otel.receivers.hardware._monitor import HardwareMonitor
from eagleeye_otel.receivers.hardware._service import DEFAULT_HARDWARE_PROMETHEUS_PORT, start_hardware_service
from eagleeye_otel.settings import HardwareSettings, Settings

__all__ = ["hardware_monitor"]


@click.command("hardware-monitor")
@click.option("--once", is_flag=True, help="Print one sweep and exit.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="How --once prints the sweep.",
)
@click.option("--prometheus-host", default="0.0.0.0", show_default=True, help="Address of the Prometheus endpoint.")
@click.option(
    "--prometheus-port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_HARDWARE_PROMETHEUS_PORT,
    show_default=True,
    help="Port of the Prometheus endpoint (0: any free port).",
)
@click.option("--no-prometheus", is_flag=True, help="Serve no Prometheus endpoint; publish on NATS only.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Seconds between two NATS exports (one sweep each).",
)
@click.option(
    "--dmesg-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Read kernel-log events from this file instead of /dev/kmsg (overrides EAGLEEYE_KERNEL_LOG).",
)
def hardware_monitor(  # click passes options by name
    *,
    once: bool,
    output_format: str,
    prometheus_host: str,
    prometheus_port: int,
    no_prometheus: bool,
    interval: float,
    dmesg_file: str | None,
) -> None:
    """Monitor the node's GPUs (NVML), Ascend NPUs (DCMI) and kernel log."""
    try:
        hardware = HardwareSettings.from_env()
        nats = Settings.from_env().nats
    except EagleEyeError as error:
        raise click.ClickException(str(error)) from error
    if dmesg_file is not None:
        hardware = dataclasses.replace(hardware, kernel_log=dmesg_file)
    if once:
        with HardwareMonitor.open(hardware, watch_events=False, follow=False) as monitor:
            sweep = monitor.sweep()
        if output_format == "json":
            click.echo(json.dumps(sweep_document(sweep), indent=2))
        else:
            print_sweep(Console(), sweep)
        return
    console = Console(stderr=True, soft_wrap=True)  # a pod's log: one line per message
    monitor = HardwareMonitor.open(hardware)
    try:
        service = start_hardware_service(
            monitor,
            settings=hardware,
            nats_settings=nats,
            prometheus_host=prometheus_host,
            prometheus_port=None if no_prometheus else prometheus_port,
            interval_s=interval,
        )
    except EagleEyeError as error:
        monitor.close()
        raise click.ClickException(str(error)) from error
    for note in monitor.notes:
        console.print(f"[yellow]![/] {escape(note)}")
    first = monitor.sweep()
    console.print(f"[green]✓[/] node {hardware.node_name}: {len(first.gpus)} GPU(s), {len(first.npus)} NPU(s)")
    if service.prometheus is not None:
        console.print(f"[green]✓[/] Prometheus http://{prometheus_host}:{service.prometheus.port}/metrics")
    meanwhile = "each batch is dropped and counted, Prometheus serves"
    if asyncio.run(reachable_or_say(nats, console, meanwhile=meanwhile)):
        console.print(f"[green]✓[/] NATS {', '.join(nats.urls)} subject {hardware.subject} every {interval:g} s")
    _wait_for_signal()
    console.print("stopping")
    service.stop()


def _wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM (a DaemonSet's pod is stopped with SIGTERM)."""
    stop = threading.Event()
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(0.5):  # a timed wait lets the handlers run promptly on every platform
            pass
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
