"""``eagle-eye up``: the local stack on one machine.

Starts an embedded ``nats-server`` unless ``EAGLEEYE_NATS_URL`` names one, tells how to point vLLM at it, and
reports instances as they join and leave, until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

import click
from rich.console import Console

from eagleeye_otel.errors import EagleEyeError
from eagleeye_otel.nats_server import EmbeddedNatsServer
from eagleeye_otel.routing import RouterClient
from eagleeye_otel.settings import DEFAULT_NATS_URL, Settings

__all__ = ["up"]

_DEFAULT_PORT = int(DEFAULT_NATS_URL.rsplit(":", 1)[1])


@click.command()
@click.option("--nats-host", default="127.0.0.1", show_default=True, help="Address of the embedded NATS server.")
@click.option("--nats-port", default=_DEFAULT_PORT, show_default=True, help="Port of the embedded NATS server.")
def up(nats_host: str, nats_port: int) -> None:
    """Run Eagle Eye locally, with an embedded NATS server when EAGLEEYE_NATS_URL is unset."""
    console = Console()
    try:
        settings = Settings.from_env()
    except EagleEyeError as error:
        raise click.ClickException(str(error)) from error
    server: EmbeddedNatsServer | None = None
    if not settings.nats.servers:
        server = EmbeddedNatsServer(host=nats_host, port=nats_port)
        with console.status(f"starting nats-server on {nats_host}:{nats_port}"):
            try:
                server.start()
            except EagleEyeError as error:
                raise click.ClickException(str(error)) from error
        console.print(f"[green]✓[/] NATS    {server.url} (embedded, pid {server.pid})")
        settings = Settings.from_env({"EAGLEEYE_NATS_URL": server.url})
    else:
        console.print(f"[green]✓[/] NATS    {', '.join(settings.nats.servers)}")
    console.print(
        f"  routing subject {settings.routing.subject}; start vLLM with "
        f"[bold]EAGLEEYE_NATS_URL={settings.nats.urls[0]}[/] to join"
    )
    try:
        asyncio.run(_watch(settings, console))
    except EagleEyeError as error:
        raise click.ClickException(str(error)) from error
    finally:
        if server is not None:
            server.stop()
        console.print("stopped")


async def _watch(settings: Settings, console: Console) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    known: set[tuple[str, int]] = set()
    async with RouterClient(
        nats_settings=settings.nats,
        subject=settings.routing.subject,
        snapshot_subject=settings.routing.snapshot_subject,
    ) as client:
        console.print("[green]✓[/] ready   Ctrl-C stops everything")
        while not stop.is_set():
            current = {(s.message.instance, s.message.engine): s for s in client.instances()}
            for key in current.keys() - known:
                message = current[key].message
                console.print(f"  + {message.instance} engine {message.engine} serving {message.model}")
            for instance, engine in known - current.keys():
                console.print(f"  - {instance} engine {engine} went quiet")
            known = set(current)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
