"""Structure of the shipped collector configuration (no collector binary runs here; see collector-config/README.md).

Checks what a typo would break at collector start: every component a pipeline names is defined, processors run in
the required order, and the ports are the ones the README documents and Eagle Eye's OTLP exporters expect.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

CONFIG = Path(__file__).parents[2] / "collector-config" / "otlp-to-prometheus.yaml"
README = CONFIG.with_name("README.md")


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    loaded = yaml.safe_load(CONFIG.read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_every_pipeline_component_is_defined(config: dict[str, Any]) -> None:
    for pipeline in config["service"]["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            for name in pipeline.get(kind, []):
                assert name in config[kind], f"{kind} {name!r} is used but not defined"
    for name in config["service"].get("extensions", []):
        assert name in config["extensions"]


def test_metrics_pipeline_is_otlp_in_prometheus_remote_write_and_debug_out(config: dict[str, Any]) -> None:
    metrics = config["service"]["pipelines"]["metrics"]
    assert metrics["receivers"] == ["otlp"]
    # memory_limiter must come first to protect the rest; batch last, just before the exporters.
    assert metrics["processors"] == ["memory_limiter", "batch"]
    assert set(metrics["exporters"]) == {"prometheus", "prometheusremotewrite", "debug"}


def test_ports_match_the_otlp_defaults_and_the_readme(config: dict[str, Any]) -> None:
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"
    readme = README.read_text()
    for port in ("4317", "4318", "8889", "13133"):
        assert port in readme
    assert config["exporters"]["prometheus"]["endpoint"].endswith(":8889")


def test_environment_references_use_the_env_provider_with_defaults() -> None:
    references = re.findall(r"\$\{([^}]*)\}", CONFIG.read_text())
    assert references
    for reference in references:
        assert re.fullmatch(r"env:[A-Z_][A-Z0-9_]*:-\S+", reference), reference
