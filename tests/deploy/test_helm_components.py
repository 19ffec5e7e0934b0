"""What the chart makes of each component: the hardware monitor, the diagnosis service, the vLLM example and the
collector (images, args, env, ports, Services, ConfigMaps), and how Prometheus and Grafana find them (the
ServiceMonitor only when asked for, scrape annotations on a served port, dashboards as ConfigMaps).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from eagleeye_otel.diagnosis import load_knowledge_base
from tests.deploy.helm_support import (
    CHART,
    NAMESPACE,
    RELEASE,
    ROOT,
    SCENARIOS,
    Helm,
    Install,
    chart_values,
    component_name,
    container_env,
    containers,
    merged,
)


def test_the_hardware_monitor_is_wired(installs: dict[str, Install]) -> None:
    monitor = installs["default"].named("DaemonSet", component_name("hardware-monitor-gpu"))
    container = monitor["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "eagle-eye:0.1.0"
    assert container["args"] == ["hardware-monitor", "--prometheus-port=9465", "--interval=1"]
    env = container_env(container)
    assert env["EAGLEEYE_NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["EAGLEEYE_HARDWARE_SUBJECT_PREFIX"] == "eagle_eye.hardware"
    assert env["EAGLEEYE_KERNEL_LOG"] == "auto"
    assert container["ports"] == [{"name": "metrics", "containerPort": 9465, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    annotations = monitor["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9465",
        "prometheus.io/path": "/metrics",
    }
    # The GPU image from the examples' registry.
    gpu = installs["gpu"].named("DaemonSet", component_name("hardware-monitor-gpu"))
    assert (
        gpu["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example.com/ai-platform/eagle-eye:0.1.0"
    )
    assert gpu["spec"]["template"]["spec"]["priorityClassName"] == "system-node-critical"


def test_the_diagnosis_service_is_wired(installs: dict[str, Install]) -> None:
    install = installs["default"]
    deployment = install.named("Deployment", component_name("diagnosis"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["diagnose"]
    env = container_env(container)
    assert env["EAGLEEYE_DIAGNOSIS_HTTP"] == "0.0.0.0:9467"
    assert env["OTEL_EXPORTER_PROMETHEUS_HOST"] == "0.0.0.0"
    assert env["OTEL_EXPORTER_PROMETHEUS_PORT"] == "9466"
    assert env["EAGLEEYE_DIAGNOSIS_SUBJECT_PREFIX"] == "eagle_eye.diagnosis"
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    service = install.named("Service", component_name("diagnosis"))
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"http": 9467, "metrics": 9466}
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]

    # User rules: a ConfigMap, mounted, passed with --rules; and they load into the real knowledge base.
    npu = installs["npu"]
    container = npu.named("Deployment", component_name("diagnosis"))["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["diagnose", "--rules=/etc/eagle-eye/rules/site.yaml"]
    rules = npu.named("ConfigMap", component_name("diagnosis-rules"))
    assert set(rules["data"]) == {"site.yaml"}


def test_the_example_rule_files_load_into_the_knowledge_base(installs: dict[str, Install], tmp_path: Path) -> None:
    rules = installs["npu"].named("ConfigMap", component_name("diagnosis-rules"))
    paths = []
    for name, text in rules["data"].items():
        path = tmp_path / name
        path.write_text(text)
        paths.append(path)
    knowledge = load_knowledge_base(paths)  # a bad key or rule id raises ConfigError naming it
    assert any(name.endswith("site.yaml") for name in knowledge.files), knowledge.files
    assert knowledge.rule("npu_temperature_above_peers") is not None


def test_the_vllm_example_publishes_to_nats_with_the_plugin_installed(installs: dict[str, Install]) -> None:
    install = installs["gpu"]
    deployment = install.named("Deployment", component_name("vllm-example"))
    pod = deployment["spec"]["template"]["spec"]
    vllm = pod["containers"][0]
    env = container_env(vllm)
    assert env["EAGLEEYE_INSTANCE_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["EAGLEEYE_NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert env["EAGLEEYE_INSTANCE_ENDPOINT"] == "http://$(POD_IP):8000"
    assert env["OTEL_EXPORTER_PROMETHEUS_HOST"] == "0.0.0.0"
    assert env["OTEL_EXPORTER_PROMETHEUS_PORT"] == "9464"
    assert env["EAGLEEYE_ROUTING_SUBJECT"] == "eagle_eye.routing_metrics"
    assert env["EAGLEEYE_ROUTING_SNAPSHOT_SUBJECT"] == "eagle_eye.routing_snapshot"
    # $(POD_IP) expands only from a variable defined before it.
    names = [e["name"] for e in vllm["env"]]
    assert names.index("POD_IP") < names.index("EAGLEEYE_INSTANCE_ENDPOINT")
    # The collector is on in this example: OTLP goes to it as well.
    assert env["OTEL_METRICS_EXPORTER"] == "prometheus,otlp"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://{component_name('collector')}:4317"
    assert vllm["command"] == ["vllm", "serve"]
    assert vllm["args"][0] == "Qwen/Qwen3-0.6B" and "--served-model-name=qwen" in vllm["args"]
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert vllm["image"] == "docker.io/vllm/vllm-openai:v0.32.0"
    # pip mode: an init container installs the pinned release into the emptyDir on PYTHONPATH.
    (init,) = pod["initContainers"]
    assert init["command"][:4] == ["python3", "-m", "pip", "install"]
    assert init["command"][-1] == "eagle-eye==0.1.0" and "--target=/opt/eagle-eye" in init["command"]
    assert env["PYTHONPATH"] == "/opt/eagle-eye"
    assert {"name": "eagle-eye", "mountPath": "/opt/eagle-eye", "readOnly": True} in vllm["volumeMounts"]
    assert "configMap" not in json.dumps(pod["volumes"])  # no source code shipped in a ConfigMap
    # image mode: nothing installed at start, nothing on PYTHONPATH.
    image_example = installs["external-nats"].named("Deployment", component_name("vllm-example"))
    image_mode = image_example["spec"]["template"]["spec"]
    assert "initContainers" not in image_mode
    assert "PYTHONPATH" not in container_env(image_mode["containers"][0])
    assert (
        image_mode["containers"][0]["image"] == "registry.example.com/ai-platform/vllm-eagle-eye:v0.32.0-eagle-eye0.1.0"
    )
    assert container_env(image_mode["containers"][0])["EAGLEEYE_ROUTING_SUBJECT"] == "eagle_eye.routing_metrics.prod"
    assert not installs["default"].of_kind("Deployment") or all(
        d["metadata"]["name"] != component_name("vllm-example") for d in installs["default"].of_kind("Deployment")
    )


def test_service_monitor_only_when_enabled(installs: dict[str, Install]) -> None:
    assert installs["default"].of_kind("ServiceMonitor") == []
    assert installs["npu"].of_kind("ServiceMonitor") == []
    (monitor,) = installs["gpu"].of_kind("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector == {"app.kubernetes.io/instance": RELEASE, "eagle-eye.io/metrics": "true"}
    selected = [s for s in installs["gpu"].of_kind("Service") if selector.items() <= s["metadata"]["labels"].items()]
    assert {s["metadata"]["name"] for s in selected} == {
        component_name("hardware-monitor-gpu"),
        component_name("diagnosis"),
        component_name("vllm-example"),
    }
    for service in selected:
        assert "metrics" in {p["name"] for p in service["spec"]["ports"]}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_scrape_annotations_point_at_a_served_metrics_port(installs: dict[str, Install], scenario: str) -> None:
    enabled = merged(chart_values(), SCENARIOS[scenario])["prometheus"]["annotations"]
    for workload in installs[scenario].workloads():
        annotations = workload["spec"]["template"]["metadata"].get("annotations") or {}
        if not enabled or workload["metadata"]["labels"]["app.kubernetes.io/component"] in ("nats", "collector"):
            assert "prometheus.io/scrape" not in annotations
            continue
        ports = {
            p["containerPort"] for c in containers(workload, init=False) for p in c["ports"] if p["name"] == "metrics"
        }
        assert annotations["prometheus.io/scrape"] == "true"
        assert int(annotations["prometheus.io/port"]) in ports


def test_grafana_dashboards_ship_as_config_maps(installs: dict[str, Install], helm: Helm, tmp_path: Path) -> None:
    files = sorted((CHART / "dashboards").glob("*.json"))
    for scenario, install in installs.items():
        maps = [m for m in install.of_kind("ConfigMap") if "grafana_dashboard" in m["metadata"]["labels"]]
        assert sorted(key for m in maps for key in m["data"]) == [f.name for f in files], scenario
        for config_map in maps:
            ((key, text),) = config_map["data"].items()
            assert json.loads(text) == json.loads((CHART / "dashboards" / key).read_text())
            assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
            annotations = config_map["metadata"]["annotations"]
            assert {k: v for k, v in annotations.items() if not k.startswith("meta.helm.sh/")} == {
                "grafana_folder": "Eagle Eye"
            }
    gpu_maps = [m for m in installs["gpu"].of_kind("ConfigMap") if "grafana_dashboard" in m["metadata"]["labels"]]
    assert {m["metadata"]["namespace"] for m in gpu_maps} <= {"monitoring"}

    # Whatever lands in dashboards/ ships, names made DNS-safe; none ship when turned off.
    chart = tmp_path / "eagle-eye"
    shutil.copytree(CHART, chart)
    shutil.rmtree(chart / "dashboards", ignore_errors=True)
    (chart / "dashboards").mkdir()
    (chart / "dashboards" / "My_Test.Dashboard.json").write_text(json.dumps({"title": "t", "panels": []}))
    install = helm.install({}, chart=chart)
    (config_map,) = [m for m in install.of_kind("ConfigMap") if "grafana_dashboard" in m["metadata"]["labels"]]
    assert config_map["metadata"]["name"] == f"{RELEASE}-dashboard-my-test-dashboard"
    off = helm.install({"grafana": {"dashboards": {"enabled": False}}}, chart=chart)
    assert not [m for m in off.of_kind("ConfigMap") if "grafana_dashboard" in m["metadata"]["labels"]]


def test_the_collector_runs_the_shipped_configuration(installs: dict[str, Install]) -> None:
    assert not [w for w in installs["default"].workloads() if w["metadata"]["name"] == component_name("collector")]
    install = installs["gpu"]
    config = yaml.safe_load(install.named("ConfigMap", component_name("collector"))["data"]["config.yaml"])
    shipped = yaml.safe_load((ROOT / "collector-config" / "k8s-attributes.yaml").read_text())
    # The shipped file, with remote write added to every pipeline since the example sets a URL.
    for pipeline in shipped["service"]["pipelines"].values():
        pipeline["exporters"] = ["prometheus", "debug", "prometheusremotewrite"]
    assert config == shipped
    deployment = install.named("Deployment", component_name("collector"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = container_env(container)
    assert env["K8S_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["PROMETHEUS_REMOTE_WRITE_URL"].endswith("/api/v1/write")
    assert container["image"] == "docker.io/otel/opentelemetry-collector-contrib:0.139.0"
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == component_name("collector")
    role = install.named("Role", component_name("collector"))
    assert {(g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]} == {
        ("", "pods"),
        ("apps", "replicasets"),
    }
    assert all(set(rule["verbs"]) == {"get", "list", "watch"} for rule in role["rules"])
    assert not install.of_kind("ClusterRole") and not install.of_kind("ClusterRoleBinding")


def test_collector_config_overrides_merge_over_the_file(helm: Helm) -> None:
    install = helm.install(
        {"collector": {"enabled": True, "configOverrides": {"processors": {"batch": {"timeout": "5s"}}}}}
    )
    config = yaml.safe_load(install.named("ConfigMap", component_name("collector"))["data"]["config.yaml"])
    assert config["processors"]["batch"] == {"timeout": "5s", "send_batch_size": 8192, "send_batch_max_size": 16384}
    assert config["service"]["pipelines"]["metrics/otlp"]["exporters"] == ["prometheus", "debug"]
