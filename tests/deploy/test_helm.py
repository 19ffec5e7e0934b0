"""The Helm chart (deploy/helm/eagle-eye), linted and installed by the real Helm library, every object checked.

Each values set (``SCENARIOS``: the chart's defaults and the examples in deploy/helm/examples/) is installed for real
into a stand-in Kubernetes API server (``tests/deploy/helm_support.py``). Every object Helm posts is validated against
the Kubernetes 1.33 OpenAPI schema (``kubernetes-validate``, strict: an unknown field fails) and checked for what an
operator looks at first: resources, probes, a read-only root filesystem and pinned images on every container. Values
that cannot work are refused before anything is created, and the Kubernetes guide names only real values and files.

Elsewhere: each component's wiring (``test_helm_components.py``), NATS (``test_helm_nats.py``), privileges and host
access (``test_helm_privileges.py``), and the probes against the real processes (``test_helm_probes.py``).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy.fake_kubernetes import KUBERNETES_VERSION
from tests.deploy.helm_support import (
    CHART,
    DOCS,
    NAMESPACE,
    RELEASE,
    ROOT,
    SCENARIOS,
    Helm,
    Install,
    chart_values,
    containers,
    merged,
)

# -- lint ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_helm_lint_is_clean(helm: Helm, scenario: str, tmp_path: Path) -> None:
    """`helm lint` of the chart with each values set as its values.yaml: no message at all (not even INFO)."""
    chart = tmp_path / "eagle-eye"
    shutil.copytree(CHART, chart)
    (chart / "values.yaml").write_text(yaml.safe_dump(merged(chart_values(), SCENARIOS[scenario])))
    result = helm.lint(chart)
    assert result["TotalChartsLinted"] == 1
    # Helm's severities: 1 info, 2 warning, 3 error. The error text does not cross the library boundary, the path does.
    messages = [(m["Severity"], m["Path"]) for m in result.get("Messages") or []]
    assert messages == [], messages
    assert not result.get("Errors")


# -- every object valid for Kubernetes 1.33 -------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_object_is_valid_kubernetes_1_33(installs: dict[str, Install], scenario: str) -> None:
    install = installs[scenario]
    assert install.posted, "nothing was created"
    # What Helm posted is what it rendered, object for object (no hook, no CRD, nothing dropped).
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(map(key, install.posted)) == sorted(map(key, install.manifest))
    for obj in install.posted:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            _check_service_monitor(obj)
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {error.message} at {list(error.path)}")
        assert obj["metadata"]["namespace"] == NAMESPACE or obj["kind"] == "ConfigMap"
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/part-of"] == "eagle-eye"
        assert len(obj["metadata"]["name"]) <= 63


def _check_service_monitor(obj: dict[str, Any]) -> None:
    """The CRD's schema is not in Kubernetes' OpenAPI: check the fields the Prometheus Operator requires."""
    assert obj["apiVersion"] == "monitoring.coreos.com/v1" and obj["kind"] == "ServiceMonitor"
    spec = obj["spec"]
    assert set(spec) <= {"jobLabel", "namespaceSelector", "selector", "endpoints"}
    assert spec["selector"]["matchLabels"]
    for endpoint in spec["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "honorLabels", "relabelings"}
        assert re.fullmatch(r"\d+(ms|s|m|h)", endpoint["interval"])
        for relabeling in endpoint.get("relabelings", []):
            assert set(relabeling) <= {"sourceLabels", "targetLabel", "regex", "replacement", "action"}


# -- what an operator checks ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_container_is_bounded_probed_and_read_only(installs: dict[str, Install], scenario: str) -> None:
    install = installs[scenario]
    assert install.workloads()
    for workload in install.workloads():
        where = f"{scenario}: {workload['kind']}/{workload['metadata']['name']}"
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        assert "hostNetwork" not in pod and "hostPID" not in pod and "hostIPC" not in pod, where
        for container in containers(workload):
            what = f"{where} container {container['name']}"
            resources = container["resources"]
            assert set(resources["requests"]) >= {"cpu", "memory"}, what
            assert set(resources["limits"]) >= {"cpu", "memory"}, what
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, what
            image = container["image"]
            assert not image.endswith(":latest") and re.search(r"(:[\w][\w.-]*|@sha256:[0-9a-f]{64})$", image), what
        for container in pod["containers"]:  # long-running: probes
            what = f"{where} container {container['name']}"
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                assert probe in container, f"{what}: no {probe}"
                port = container[probe]["httpGet"]["port"]
                assert port in {p["name"] for p in container["ports"]}, f"{what}: {probe} on unknown port {port}"


# -- values.schema.json and the template's own checks refuse what cannot work ---------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"hardwareMonitor": {"kernelLog": {"mode": "kmsg"}}}, "kernelLog"),
        ({"hardwareMonitor": {"gpu": {"enable": True}}}, "enable"),
        ({"hardwareMonitor": {"resources": {"limits": None}}}, "limits"),
        ({"routing": {"subject": "eagle eye"}}, "subject"),
        ({"nats": {"url": "http://nats:4222"}}, "url"),
        ({"nats": {"bundled": {"enabled": False}}}, "nats.url is required"),
        ({"nats": {"url": "nats://elsewhere:4222"}}, "nats.bundled.enabled is true"),
        ({"nats": {"auth": {"tokenKey": "token"}}}, "existingSecret"),
        ({"nats": {"auth": {"existingSecret": "s", "tokenKey": "t", "userKey": "u", "passwordKey": "p"}}}, "only one"),
        ({"nats": {"auth": {"existingSecret": "s", "userKey": "u"}}}, "go together"),
        ({"nats": {"auth": {"existingSecret": "s", "credsKey": "c"}}}, "operator-mode"),
        ({"nats": {"tls": {"existingSecret": "tls"}}}, "existing NATS"),
        ({"nats": {"auth": {"perComponent": {"enabled": True}}}}, "perComponent.existingSecret is required"),
        (
            {"nats": {"auth": {"existingSecret": "s", "tokenKey": "t", "perComponent": {"enabled": True}}}},
            "one method at a time",
        ),
        ({"nats": {"auth": {"perComponent": {"keys": {"vllm": ""}}}}}, "vllm"),
        ({"hardwareMonitor": {"gpu": {"enabled": False}}}, "neither"),
        ({"vllmExample": {"eagleEye": {"install": "conda"}}}, "install"),
        ({"diagnosis": {"rules": {"../escape": "x"}}}, "../escape"),
    ],
)
def test_bad_values_are_refused_before_anything_is_created(helm: Helm, values: dict[str, Any], message: str) -> None:
    outcome = helm.try_install(values, namespace="refused")
    assert "error" in outcome, f"accepted: {values}"
    assert message in outcome["error"], outcome["error"]
    assert helm.cluster.take() == []


def test_the_examples_and_defaults_satisfy_the_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    for name, values in SCENARIOS.items():
        jsonschema.validate(merged(chart_values(), values), schema), name


def test_every_value_is_in_the_schema() -> None:
    """Every key of values.yaml is a schema property, so a misspelt key in a user's values file is refused."""
    schema = json.loads((CHART / "values.schema.json").read_text())

    def walk(values: dict[str, Any], node: dict[str, Any], path: str) -> None:
        for key, value in values.items():
            properties = node.get("properties", {})
            assert key in properties or node.get("additionalProperties") is not False, f"{path}{key} not in schema"
            child = properties.get(key, {})
            if isinstance(value, dict) and "properties" in child:
                walk(value, child, f"{path}{key}.")

    walk(chart_values(), schema, "")


# -- docs ------------------------------------------------------------------------------------------------------------


def test_the_kubernetes_guide_names_real_values_and_files() -> None:
    text = DOCS.read_text()
    values = chart_values()
    for dotted in sorted(
        set(
            re.findall(
                r"`((?:nats|hardwareMonitor|diagnosis|prometheus|collector|grafana|vllmExample|image|routing|subjects)(?:\.[A-Za-z]+)+)(?![\w/])",
                text,
            )
        )
    ):
        node: Any = values
        for part in dotted.split("."):
            assert isinstance(node, dict) and part in node, f"docs/kubernetes.md names {dotted}, not in values.yaml"
            node = node[part]
    for path in re.findall(r"`((?:deploy|collector-config|docs)/[\w./-]+)`", text):
        assert (ROOT / path).exists(), f"docs/kubernetes.md names {path}, which does not exist"
    assert "helm install eagle-eye -n" in text and "helm upgrade" in text
