"""A fleet of simulated vLLM instances, publishing through the plugin's own recorder and publisher.

Each instance gets one :class:`RoutingPublisher` (one NATS connection and thread, as a vLLM process has) and each
of its engines a :class:`RoutingRecorder` fed with vLLM-shaped step stats, so the messages, their ``seq`` and the
idle heartbeats are exactly what a router gets from vLLM. A thousand instances are a thousand connections and
threads; that is what a thousand vLLM processes are, and it fits on one core at the default step rate.

Load follows a slow wave per engine, each with its own period, phase and peak: a peak above the engine's capacity
builds a queue, which drains once the wave falls; below zero the engine is idle, takes no steps, and its publisher
sends heartbeats.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Final

from eagleeye_otel.exporters.nats import RoutingPublisher
from eagleeye_otel.instrumentation.vllm._routing_recorder import RoutingRecorder
from eagleeye_otel.settings import NatsSettings, RoutingSettings
from eagleeye_otel.simulation._faults import simulated_gpu_id

__all__ = ["EngineLoad", "FleetSpec", "SimulatedFleet", "placement"]

_CAPACITY: Final = 32
"""Requests an engine runs at once (vLLM's ``max_num_seqs`` of a small deployment)."""
_PROMPT_TOKENS: Final = 512
_PREFIX_HIT_RATE: Final = 0.4


@dataclass(frozen=True)
class FleetSpec:
    """What to simulate.

    Attributes:
        instances: vLLM instances.
        engines: data-parallel engines per instance, one GPU each.
        rate: engine steps per second per busy engine.
        model: the served model name.
        gpus_per_node: GPUs of a node; instances fill nodes ``sim-node-0``, ``sim-node-1``... in order.
        seed: seed of the load waves, for repeatable runs.
    """

    instances: int = 4
    engines: int = 1
    rate: float = 10.0
    model: str = "simulated/llama-3-8b"
    gpus_per_node: int = 8
    seed: int | None = None


def placement(spec: FleetSpec, instance: int, engine: int) -> tuple[str, int]:
    """The node and GPU index of one engine; an instance never straddles two nodes."""
    per_node = max(1, spec.gpus_per_node // spec.engines)
    return f"sim-node-{instance // per_node}", (instance % per_node) * spec.engines + engine


@dataclass(frozen=True)
class _PrefixStats:
    queries: int
    hits: int


@dataclass(frozen=True)
class _SchedulerStats:
    """The fields of vLLM's ``SchedulerStats`` that the recorder reads."""

    num_waiting_reqs: int
    num_running_reqs: int
    kv_cache_usage: float
    prefix_cache_stats: _PrefixStats


@dataclass(frozen=True)
class _IterationStats:
    """The fields of vLLM's ``IterationStats`` that the recorder reads."""

    num_generation_tokens: int
    num_prompt_tokens: int
    num_preempted_reqs: int


class EngineLoad:
    """One engine's demand over time and the queue it builds.

    Args:
        rng: draws the wave's period (20-90 s), phase and peak (0.3 to 1.6 times capacity).
    """

    def __init__(self, rng: random.Random) -> None:
        self._period = rng.uniform(20.0, 90.0)
        self._phase = rng.uniform(0.0, 2 * math.pi)
        self._peak = rng.uniform(0.3, 1.6) * _CAPACITY
        self.waiting = 0.0
        self.running = 0

    def demand(self, t: float) -> float:
        """Requests that want to run at ``t`` seconds; zero for the idle part of the wave."""
        return max(0.0, self._peak * math.sin(2 * math.pi * t / self._period + self._phase))

    def step(self, t: float, dt: float) -> tuple[_SchedulerStats, _IterationStats] | None:
        """Advance by ``dt`` seconds; None while the engine is idle (no step: vLLM records nothing then)."""
        demand = self.demand(t)
        # Overload adds to the queue at the rate it exceeds capacity; spare capacity drains it twice as fast.
        self.waiting = max(0.0, self.waiting + (demand - _CAPACITY) * dt * (1 if demand > _CAPACITY else 2))
        previous = self.running
        if demand < 0.5 and self.waiting == 0:
            if previous == 0:
                return None
            self.running = 0  # the step that finished the last requests; idle from the next one
        else:
            self.running = min(_CAPACITY, max(1, round(demand) + math.ceil(self.waiting)))
        prompt = max(0, self.running - previous) * _PROMPT_TOKENS
        usage = min(1.0, self.running / _CAPACITY * 0.95)
        scheduler = _SchedulerStats(
            num_waiting_reqs=math.ceil(self.waiting),
            num_running_reqs=self.running,
            kv_cache_usage=usage,
            prefix_cache_stats=_PrefixStats(queries=prompt, hits=int(prompt * _PREFIX_HIT_RATE)),
        )
        iteration = _IterationStats(
            num_generation_tokens=self.running,
            num_prompt_tokens=prompt,
            num_preempted_reqs=1 if self.waiting > _CAPACITY else 0,
        )
        return scheduler, iteration


class SimulatedFleet:
    """The instances of ``spec``; :meth:`start`, then :meth:`step` at ``spec.rate``, then :meth:`stop`.

    Args:
        spec: what to simulate.
        nats_settings: where to publish.
        routing: subjects and heartbeat interval, as vLLM's plugin reads them.
    """

    def __init__(self, spec: FleetSpec, *, nats_settings: NatsSettings, routing: RoutingSettings) -> None:
        self.spec = spec
        self._nats_settings = nats_settings
        self._routing = routing
        self.publishers: list[RoutingPublisher] = []
        self._engines: list[tuple[RoutingRecorder, EngineLoad]] = []
        self._started = 0.0

    def start(self) -> None:
        """Connect one publisher per instance and announce every engine, idle, as vLLM does at start."""
        rng = random.Random(self.spec.seed)
        self._started = time.time()
        for instance in range(self.spec.instances):
            name = f"sim-{instance:04d}"
            publisher = RoutingPublisher(nats_settings=self._nats_settings, routing=self._routing, client_name=name)
            publisher.start()
            self.publishers.append(publisher)
            for engine in range(self.spec.engines):
                node, gpu = placement(self.spec, instance, engine)
                recorder = RoutingRecorder(
                    publisher,
                    instance=name,
                    model=self.spec.model,
                    engine=engine,
                    started=self._started,
                    endpoint=f"http://{name}.sim:8000",
                    node=node,
                    devices=(simulated_gpu_id(node, gpu),),
                )
                recorder.announce()
                self._engines.append((recorder, EngineLoad(rng)))

    def step(self, t: float, dt: float) -> None:
        """One step of every busy engine, ``t`` seconds into the run."""
        for recorder, load in self._engines:
            stats = load.step(t, dt)
            if stats is not None:
                recorder.record(*stats)

    def stop(self) -> None:
        """Close every connection."""
        for publisher in self.publishers:
            publisher.stop()
