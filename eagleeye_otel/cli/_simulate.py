"""``eagle-eye simulate``: a made-up fleet and hardware faults on NATS, for routers, diagnosis and dashboards.

Routing messages go out through the vLLM plugin's recorder and publisher, hardware sweeps through the hardware
monitor's service (see :mod:`eagleeye_otel.simulation`), so whatever consumes them is exercised as in production,
without GPUs or vLLM. It first checks that NATS answers: the publishers would otherwise retry in the background
forever and publish nothing, silently.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time

import click
from rich.console import Console

from eagleeye_otel.cli._nats_reach import connect_now
from eagleeye_otel.errors import EagleEyeError
from eagleeye_otel.receivers.hardware._service import HardwareService, start_hardware_service
from eagleeye_otel.settings import HardwareSettings, NatsSettings, Settings
from eagleeye_otel.simulation import FAULTS, FleetSpec, SimulatedFleet, SimulatedNode

__all__ = ["simulate"]


@click.command()
@click.option("--instances", type=click.IntRange(0, 100_000), default=4, show_default=True, help="vLLM instances.")
@click.option("--engines", type=click.IntRange(1, 64), default=1, show_default=True, help="Engines per instance.")
@click.option(
    "--rate", type=click.FloatRange(min=0.1), default=10.0, show_default=True, help="Steps/s of each busy engine."
)
@click.option("--duration", type=click.FloatRange(min=0), default=0, help="Seconds to run; 0: until Ctrl-C.")
@click.option("--model", default=FleetSpec.model, show_default=True, help="Served model name.")
@click.option("--gpus-per-node", type=click.IntRange(1, 64), default=8, show_default=True, help="GPUs of a node.")
@click.option("--seed", type=int, default=None, help="Seed of the load waves, for repeatable runs.")
@click.option("--fault", type=click.Choice(sorted(FAULTS)), default=None, help="Hardware fault to inject.")
@click.option("--node", default="sim-node-0", show_default=True, help="Node of the faulty GPU.")
@click.option("--gpu", type=click.IntRange(0, 63), default=0, show_default=True, help="Index of the faulty GPU.")
@click.option(
    "--fault-after", type=click.FloatRange(min=0), default=2.0, show_default=True, help="Seconds of health first."
)
def simulate(  # click passes options by name
    *,
    instances: int,
    engines: int,
    rate: float,
    duration: float,
    model: str,
    gpus_per_node: int,
    seed: int | None,
    fault: str | None,
    node: str,
    gpu: int,
    fault_after: float,
) -> None:
    """Publish a simulated fleet (and optionally a hardware fault) to EAGLEEYE_NATS_URL.

    Exits 1 with one line, publishing nothing, when no NATS server answers at start.
    """
    console = Console(stderr=True, soft_wrap=True)
    if fault is not None and gpu >= gpus_per_node:
        raise click.BadParameter(f"node has {gpus_per_node} GPUs", param_hint="--gpu")
    try:
        settings = Settings.from_env()
        hardware = HardwareSettings.from_env()
    except EagleEyeError as error:
        raise click.ClickException(str(error)) from error
    asyncio.run(_check_reachable(settings.nats))
    spec = FleetSpec(
        instances=instances, engines=engines, rate=rate, model=model, gpus_per_node=gpus_per_node, seed=seed
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    fleet = SimulatedFleet(spec, nats_settings=settings.nats, routing=settings.routing)
    faulty: HardwareService | None = None
    try:
        with console.status(f"connecting {instances} publishers to {', '.join(settings.nats.urls)}"):
            fleet.start()
        console.print(
            f"[green]✓[/] {instances} instance(s) x {engines} engine(s) of {model} on {settings.routing.subject}"
        )
        if fault is not None:
            monitor = SimulatedNode(node, gpus=gpus_per_node, fault=fault, faulty_gpu=gpu, fault_after=fault_after)
            node_settings = HardwareSettings(node_name=node, subject_prefix=hardware.subject_prefix)
            faulty = start_hardware_service(
                monitor, settings=node_settings, nats_settings=settings.nats, prometheus_port=None
            )
            console.print(f"[green]✓[/] {fault} on {node} GPU {gpu} in {fault_after:g} s, on {node_settings.subject}")
        _drive(fleet, rate, duration, stop)
    finally:
        if faulty is not None:
            faulty.stop()
        fleet.stop()
    sent = sum(p.stats.published for p in fleet.publishers)
    heartbeats = sum(p.stats.heartbeats for p in fleet.publishers)
    console.print(f"stopped: {sent} step message(s) and {heartbeats} heartbeat(s) published")


async def _check_reachable(settings: NatsSettings) -> None:
    """Raise the one-line error of :func:`connect_now` unless a NATS server answers now."""
    nc = await connect_now(settings, name="eagle-eye-simulate")
    await nc.close()


def _drive(fleet: SimulatedFleet, rate: float, duration: float, stop: threading.Event) -> None:
    """Step the fleet ``rate`` times a second; a late tick skips ahead instead of bursting to catch up."""
    period = 1.0 / rate
    start = next_tick = time.monotonic()
    while not stop.is_set():
        now = time.monotonic()
        if duration and now - start >= duration:
            return
        fleet.step(now - start, period)
        next_tick = max(next_tick + period, now)
        stop.wait(max(0.0, next_tick - time.monotonic()))
