"""``eagle-eye up``: the whole local stack on one machine, in one process tree.

An embedded ``nats-server`` (unless ``EAGLEEYE_NATS_URL`` names one, which must answer at start; the only child
process), the hardware monitor (on a machine with no GPU it reports the node alone), the diagnosis service with its
report, and their Prometheus endpoints all run here. It prints where each listens, reports instances as they join
and leave, and on Ctrl-C or SIGTERM stops them in reverse order, so the last hardware batch and findings still reach
NATS before it goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal

import click
from rich.console import Console
from rich.markup import escape
from rich.status import Status

from eagleeye_otel.cli._nats_reach import connect_now
from eagleeye_otel.diagnosis import DiagnosisEngine, DiagnosisService, DiagnosisSettings, load_knowledge_base
from eagleeye_otel.errors import EagleEyeError
from eagleeye_otel.nats_server import EmbeddedNatsServer
from eagleeye_otel.receivers.hardware._monitor import HardwareMonitor
from eagleeye_otel.receivers.hardware._service import DEFAULT_HARDWARE_PROMETHEUS_PORT, start_hardware_service
from eagleeye_otel.routing import RouterClient
from eagleeye_otel.settings import DEFAULT_NATS_URL, HardwareSettings, Settings

__all__ = ["up"]

_DEFAULT_PORT = int(DEFAULT_NATS_URL.rsplit(":", 1)[1])
_PORT = click.IntRange(0, 65535)
_HINT = "is a NATS server running there? Without EAGLEEYE_NATS_URL, `eagle-eye up` starts its own"


@dataclasses.dataclass(frozen=True)
class _Ports:
    nats: int
    hardware: int
    diagnosis: int
    report: int


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address every endpoint listens on.")
@click.option("--nats-port", type=_PORT, default=_DEFAULT_PORT, show_default=True, help="Embedded NATS (0: free).")
@click.option(
    "--hardware-port",
    type=_PORT,
    default=DEFAULT_HARDWARE_PROMETHEUS_PORT,
    show_default=True,
    help="Hardware monitor's Prometheus endpoint (0: free).",
)
@click.option(
    "--diagnosis-port",
    type=_PORT,
    default=DiagnosisSettings().pipeline.prometheus_port,
    show_default=True,
    help="Diagnosis service's Prometheus endpoint (0: free).",
)
@click.option(
    "--report-port",
    type=_PORT,
    default=DiagnosisSettings().http_port,
    show_default=True,
    help="Diagnosis report and JSON API (0: free).",
)
def up(*, host: str, nats_port: int, hardware_port: int, diagnosis_port: int, report_port: int) -> None:
    """Run Eagle Eye locally, with an embedded NATS server when EAGLEEYE_NATS_URL is unset."""
    console = Console(soft_wrap=True)
    try:
        settings = Settings.from_env()
        hardware = HardwareSettings.from_env()
        diagnosis = DiagnosisSettings.from_env()
        ports = _Ports(nats_port, hardware_port, diagnosis_port, report_port)
        asyncio.run(_run(console, settings=settings, hardware=hardware, diagnosis=diagnosis, host=host, ports=ports))
    except EagleEyeError as error:
        raise click.ClickException(str(error)) from error
    console.print("stopped")


async def _run(
    console: Console,
    *,
    settings: Settings,
    hardware: HardwareSettings,
    diagnosis: DiagnosisSettings,
    host: str,
    ports: _Ports,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        with console.status("starting") as status:
            settings = await _start_nats(
                console, status=status, stack=stack, settings=settings, host=host, port=ports.nats
            )
            status.update("starting the hardware monitor")
            monitor = await asyncio.to_thread(HardwareMonitor.open, hardware)
            try:
                service = start_hardware_service(
                    monitor,
                    settings=hardware,
                    nats_settings=settings.nats,
                    prometheus_host=host,
                    prometheus_port=ports.hardware,
                )
            except BaseException:
                monitor.close()
                raise
            stack.callback(service.stop)
            for note in monitor.notes:
                console.print(f"  [yellow]![/] {escape(note)}")
            port = service.prometheus.port if service.prometheus is not None else ports.hardware
            console.print(
                f"[green]✓[/] hardware node {hardware.node_name} on {hardware.subject}, metrics http://{host}:{port}/metrics"
            )
            status.update("starting the diagnosis service")
            diagnosis = dataclasses.replace(
                diagnosis,
                http_host=host,
                http_port=ports.report,
                pipeline=dataclasses.replace(diagnosis.pipeline, prometheus_host=host, prometheus_port=ports.diagnosis),
            )
            engine = DiagnosisEngine(load_knowledge_base(()))
            findings = await DiagnosisService.start(engine, settings=diagnosis, nats_settings=settings.nats)
            stack.push_async_callback(findings.stop)
            if findings.prometheus is not None:
                console.print(f"[green]✓[/] diagnosis metrics http://{host}:{findings.prometheus.port}/metrics")
            if findings.http is not None:
                console.print(f"[green]✓[/] report  http://{host}:{findings.http.port}/ (JSON: /api/findings)")
            status.update("connecting the instance view")
            client = await stack.enter_async_context(
                RouterClient(
                    nats_settings=settings.nats,
                    subject=settings.routing.subject,
                    snapshot_subject=settings.routing.snapshot_subject,
                )
            )
        console.print(
            f"  routing subject {settings.routing.subject}; start vLLM with "
            f"[bold]EAGLEEYE_NATS_URL={settings.nats.urls[0]}[/] to join"
        )
        console.print("[green]✓[/] ready   Ctrl-C stops everything")
        await _watch(client, stop, console)
        console.print("stopping")


async def _start_nats(
    console: Console,
    *,
    status: Status,
    stack: contextlib.AsyncExitStack,
    settings: Settings,
    host: str,
    port: int,
) -> Settings:
    """The embedded server when no NATS is configured; the settings that point at the one in use."""
    if settings.nats.servers:
        status.update(f"connecting to NATS at {', '.join(settings.nats.urls)}")
        await (await connect_now(settings.nats, name="eagle-eye-up", hint=_HINT)).close()
        console.print(f"[green]✓[/] NATS    {', '.join(settings.nats.servers)}")
        return settings
    server = EmbeddedNatsServer(host=host, port=port)
    status.update(f"starting nats-server on {host}:{server.port}")
    stack.callback(server.stop)
    await asyncio.to_thread(server.start)
    console.print(f"[green]✓[/] NATS    {server.url} (embedded, pid {server.pid})")
    return Settings.from_env({**os.environ, "EAGLEEYE_NATS_URL": server.url})


async def _watch(client: RouterClient, stop: asyncio.Event, console: Console) -> None:
    """Print each (instance, engine) as it joins and as it goes quiet, until ``stop``."""
    known: set[tuple[str, int]] = set()
    while not stop.is_set():
        current = {(s.message.instance, s.message.engine): s for s in client.instances()}
        for key in current.keys() - known:
            message = current[key].message
            console.print(escape(f"  + {message.instance} engine {message.engine} serving {message.model}"))
        for instance, engine in known - current.keys():
            console.print(escape(f"  - {instance} engine {engine} went quiet"))
        known = set(current)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
