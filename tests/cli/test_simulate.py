"""``eagle-eye simulate``: the load model, the fault sweeps, and the fleet as a router sees it."""

from __future__ import annotations

import asyncio
import random

from eagleeye_otel.nats_server import EmbeddedNatsServer
from eagleeye_otel.routing import RouterClient
from eagleeye_otel.settings import NatsSettings, RoutingSettings
from eagleeye_otel.simulation import EngineLoad, FleetSpec, SimulatedFleet, SimulatedNode, placement, simulated_gpu_id


def test_an_engine_idles_in_the_low_part_of_its_wave() -> None:
    load = EngineLoad(random.Random(1))
    steps = [load.step(tick / 10, 0.1) for tick in range(3000)]  # 300 s: more than one wave of any drawn period
    assert None in steps
    assert any(stats is not None for stats in steps)


def test_a_peak_over_capacity_queues_then_drains() -> None:
    seeds = (seed for seed in range(100) if EngineLoad(random.Random(seed))._peak > 40)
    load = EngineLoad(random.Random(next(seeds)))
    waiting = [stats[0].num_waiting_reqs for t in range(3000) if (stats := load.step(t / 10, 0.1)) is not None]
    assert max(waiting) > 0
    assert waiting[-1] < max(waiting) or 0 in waiting


def test_placement_keeps_an_instance_on_one_node() -> None:
    spec = FleetSpec(instances=5, engines=4, gpus_per_node=8)
    assert [placement(spec, 2, e) for e in range(4)] == [("sim-node-1", g) for g in range(4)]
    assert placement(spec, 1, 3) == ("sim-node-0", 7)


def test_the_fault_shows_on_one_gpu_after_the_healthy_start() -> None:
    now = [0.0]
    node = SimulatedNode("n1", gpus=2, fault="thermal", faulty_gpu=1, fault_after=2.0, clock=lambda: now[0])
    assert all(not gpu.clock_event_reasons for gpu in node.sweep().gpus)
    now[0] = 2.0
    healthy, hot = node.sweep().gpus
    assert not healthy.clock_event_reasons
    assert hot.clock_event_reasons == frozenset({"hw_thermal_slowdown"})
    assert hot.identity.id == simulated_gpu_id("n1", 1)


async def test_a_router_sees_every_simulated_engine_with_its_node_and_gpu(nats_server: EmbeddedNatsServer) -> None:
    nats = NatsSettings(servers=(nats_server.url,))
    spec = FleetSpec(instances=3, engines=2, seed=7)
    fleet = SimulatedFleet(spec, nats_settings=nats, routing=RoutingSettings())
    async with RouterClient(nats_settings=nats) as client:
        fleet.start()
        try:
            for tick in range(50):
                fleet.step(tick / 10, 0.1)
                await asyncio.sleep(0.02)
                if len(client.instances()) == 6:
                    break
        finally:
            fleet.stop()
        states = {(s.message.instance, s.message.engine): s.message for s in client.instances()}
    assert len(states) == 6
    message = states[("sim-0002", 1)]
    assert (message.node, message.devices) == ("sim-node-0", (simulated_gpu_id("sim-node-0", 5),))
    assert message.model == spec.model
