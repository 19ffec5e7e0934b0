"""A simulated fleet for ``eagle-eye simulate``: vLLM-like load and hardware faults, published the real way."""

from eagleeye_otel.simulation._faults import FAULTS, SimulatedNode, healthy_gpu, simulated_gpu_id
from eagleeye_otel.simulation._fleet import EngineLoad, FleetSpec, SimulatedFleet, placement

__all__ = [
    "FAULTS",
    "EngineLoad",
    "FleetSpec",
    "SimulatedFleet",
    "SimulatedNode",
    "healthy_gpu",
    "placement",
    "simulated_gpu_id",
]
