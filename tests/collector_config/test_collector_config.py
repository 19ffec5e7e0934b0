"""Structure of the shipped collector configurations (no collector binary runs here; see collector-config/README.md).

Checks what a typo would break at collector start: every component a pipeline names is defined, processors run in
the required order, and the ports are the ones the README documents and Eagle Eye's OTLP exporters expect. Also that
the Helm chart runs the same Kubernetes configuration as the one documented here.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).parents[2]
FOLDER = ROOT / "collector-config"
CONFIG = FOLDER / "otlp-to-prometheus.yaml"
SCRAPE = FOLDER / "prometheus-scrape-monitor.yaml"
K8S = FOLDER / "k8s-attributes.yaml"
CHART_COPY = ROOT / "deploy" / "helm" / "eagle-eye" / "files" / "collector" / "k8s-attributes.yaml"
README = FOLDER / "README.md"
FILES = sorted(FOLDER.glob("*.yaml"))


def _load(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return _load(CONFIG)


def test_the_three_paths_are_shipped() -> None:
    assert [path.name for path in FILES] == [
        "k8s-attributes.yaml",
        "otlp-to-prometheus.yaml",
        "prometheus-scrape-monitor.yaml",
    ]
    readme = README.read_text()
    for path in FILES:
        assert f"`{path.name}`" in readme, f"{path.name} is not documented in the README"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_pipeline_component_is_defined(path: Path) -> None:
    config = _load(path)
    for pipeline in config["service"]["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            for name in pipeline.get(kind, []):
                assert name in config[kind], f"{kind} {name!r} is used but not defined"
    for name in config["service"].get("extensions", []):
        assert name in config["extensions"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_memory_limiter_first_batch_last_health_check_on(path: Path) -> None:
    config = _load(path)
    for name, pipeline in config["service"]["pipelines"].items():
        processors = pipeline["processors"]
        assert processors[0] == "memory_limiter", name
        assert processors[-1] == "batch", name
    assert config["service"]["extensions"] == ["health_check"]
    assert config["extensions"]["health_check"]["endpoint"] == "0.0.0.0:13133"


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
    for port in ("4317", "4318", "8889", "13133", "9465"):
        assert port in readme
    assert config["exporters"]["prometheus"]["endpoint"].endswith(":8889")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_environment_references_use_the_env_provider_with_defaults(path: Path) -> None:
    text = path.read_text()
    references = re.findall(r"\$\{([^}]*)\}", text)
    assert references
    for reference in references:
        assert re.fullmatch(r"env:[A-Z_][A-Z0-9_]*:-\S+", reference), reference
    # Any other "$" would be taken for a reference by the collector (a relabelling "$1" must be written "$$1").
    assert re.findall(r"\$(?!\{env:|\$)", text) == []


def test_the_prometheus_receiver_scrapes_the_hardware_monitor() -> None:
    config = _load(SCRAPE)
    assert config["service"]["pipelines"] == {
        "metrics": {
            "receivers": ["prometheus"],
            "processors": ["memory_limiter", "batch"],
            "exporters": ["prometheusremotewrite", "debug"],
        }
    }
    (job,) = config["receivers"]["prometheus"]["config"]["scrape_configs"]
    assert job["honor_labels"] is True  # the monitor's hw_* and eagleeye_* labels are kept as they are
    (static,) = job["static_configs"]
    assert static["targets"] == ["${env:EAGLEEYE_MONITOR_TARGET:-127.0.0.1:9465}"]  # the monitor's default port


def test_the_kubernetes_configuration_adds_pod_attributes_and_scrapes_eagle_eye_pods() -> None:
    config = _load(K8S)
    pipelines = config["service"]["pipelines"]
    assert pipelines["metrics/otlp"] == {
        "receivers": ["otlp"],
        "processors": ["memory_limiter", "k8sattributes", "batch"],
        "exporters": ["prometheus", "debug"],
    }
    assert pipelines["metrics/scrape"]["receivers"] == ["prometheus"]
    # Remote write is defined for the chart (and users) to add; unused by default, so nothing retries at an
    # unreachable default address.
    assert "prometheusremotewrite" in config["exporters"]
    assert all("prometheusremotewrite" not in p["exporters"] for p in pipelines.values())

    attributes = config["processors"]["k8sattributes"]
    # Limited to one namespace: a namespaced Role is enough (the chart's Role: tests/deploy/test_helm_components.py).
    assert attributes["filter"] == {"namespace": "${env:K8S_NAMESPACE:-default}"}
    metadata = set(attributes["extract"]["metadata"])
    assert {"k8s.namespace.name", "k8s.pod.name", "k8s.node.name", "k8s.deployment.name"} <= metadata
    # The connection's address comes last: a sender's own k8s.pod.ip / uid wins.
    assert attributes["pod_association"][-1] == {"sources": [{"from": "connection"}]}

    (job,) = config["receivers"]["prometheus"]["config"]["scrape_configs"]
    (discovery,) = job["kubernetes_sd_configs"]
    assert discovery["role"] == "pod"
    assert discovery["namespaces"]["names"] == ["${env:K8S_NAMESPACE:-default}"]
    assert discovery["selectors"] == [{"role": "pod", "label": "eagle-eye.io/metrics=true"}]
    relabel = job["relabel_configs"]
    assert {
        "source_labels": ["__meta_kubernetes_pod_container_port_name"],
        "regex": "metrics",
        "action": "keep",
    } in relabel
    targets = {rule.get("target_label") for rule in relabel}
    assert {"namespace", "pod", "node", "component"} <= targets


def test_the_chart_runs_the_documented_kubernetes_configuration() -> None:
    """The chart can only read files inside itself, so it holds a copy; the copy must not drift."""
    assert CHART_COPY.read_bytes() == K8S.read_bytes(), (
        f"{CHART_COPY.relative_to(ROOT)} differs from {K8S.relative_to(ROOT)}: copy the collector-config file over it"
    )


def _resolved(text: str) -> str:
    """The text the receiver sees: ``${env:NAME:-default}`` replaced by its default, ``$$`` by ``$``."""
    return re.sub(r"\$\{env:[A-Z0-9_]+:-([^}]*)\}", r"\1", text).replace("$$", "$")


@pytest.mark.parametrize("path", [SCRAPE, K8S], ids=lambda p: p.name)
def test_the_scrape_configuration_is_valid_prometheus(path: Path, tmp_path: Path) -> None:
    """The Prometheus receiver parses its ``config`` as a Prometheus configuration: Debian's promtool checks it.

    Debian builds Prometheus without Kubernetes service discovery, so a ``kubernetes_sd_configs`` block is swapped for
    a static target here (its fields are checked above); the relabelling rules and the rest are checked as shipped.
    """
    config = yaml.safe_load(_resolved(path.read_text()))
    scrape = config["receivers"]["prometheus"]["config"]
    for job in scrape["scrape_configs"]:
        if job.pop("kubernetes_sd_configs", None) is not None:
            job["static_configs"] = [{"targets": ["10.0.0.7:9465"]}]
    prometheus_config = tmp_path / "prometheus.yml"
    prometheus_config.write_text(yaml.safe_dump(scrape))
    result = subprocess.run(
        ["/usr/bin/promtool", "check", "config", "--syntax-only", str(prometheus_config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
