"""The Helm chart (deploy/helm/eagle-eye), linted and installed by the real Helm library, every object checked.

``helm-sdkpy`` bundles Helm itself (a Go shared library). It has no ``helm template``, so each values set is
installed for real, ``wait=False``, into a stand-in Kubernetes API server on a loopback port: it answers discovery
as a Kubernetes 1.33 cluster with the Prometheus Operator's CRDs, accepts every create, and records what Helm sent.
Helm keeps the release in memory (``HELM_DRIVER=memory``), so the objects it posts are exactly the chart's. Each is
parsed and validated against the Kubernetes 1.33 OpenAPI schema (``kubernetes-validate``, strict: an unknown field
fails), and checked for what an operator looks at first: non-root, read-only root filesystem, resources and probes
on every container, images, environment and NATS wiring, and the ServiceMonitor only when asked for.

Values sets: the chart's defaults and the examples in deploy/helm/examples/ (GPU, NPU, external NATS).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import nats
import pytest
import yaml

from eagleeye_otel.diagnosis import load_knowledge_base
from eagleeye_otel.errors import RouterConnectError
from eagleeye_otel.nats_options import connect_options
from eagleeye_otel.nats_server import find_nats_server, free_port
from eagleeye_otel.routing import RouterClient
from eagleeye_otel.settings import NatsSettings, Settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "eagle-eye"
EXAMPLES = ROOT / "deploy" / "helm" / "examples"
DOCS = ROOT / "docs" / "kubernetes.md"
AUTH_CONF = ROOT / "deploy" / "nats" / "eagle-eye-auth.conf"
KUBERNETES_VERSION = "1.33.0"
NAMESPACE = "eagle-eye"
RELEASE = "eagle-eye"

# -- a stand-in Kubernetes API server --------------------------------------------------------------------------

# (group/version, resource, kind, namespaced): every kind the chart creates, and a few it could.
_RESOURCES = [
    ("v1", "configmaps", "ConfigMap", True),
    ("v1", "secrets", "Secret", True),
    ("v1", "services", "Service", True),
    ("v1", "serviceaccounts", "ServiceAccount", True),
    ("v1", "pods", "Pod", True),
    ("v1", "namespaces", "Namespace", False),
    ("apps/v1", "deployments", "Deployment", True),
    ("apps/v1", "daemonsets", "DaemonSet", True),
    ("apps/v1", "statefulsets", "StatefulSet", True),
    ("apps/v1", "replicasets", "ReplicaSet", True),
    ("rbac.authorization.k8s.io/v1", "roles", "Role", True),
    ("rbac.authorization.k8s.io/v1", "rolebindings", "RoleBinding", True),
    ("rbac.authorization.k8s.io/v1", "clusterroles", "ClusterRole", False),
    ("rbac.authorization.k8s.io/v1", "clusterrolebindings", "ClusterRoleBinding", False),
    ("policy/v1", "poddisruptionbudgets", "PodDisruptionBudget", True),
    ("node.k8s.io/v1", "runtimeclasses", "RuntimeClass", False),
    ("networking.k8s.io/v1", "networkpolicies", "NetworkPolicy", True),
    ("monitoring.coreos.com/v1", "servicemonitors", "ServiceMonitor", True),
    ("monitoring.coreos.com/v1", "podmonitors", "PodMonitor", True),
    ("monitoring.coreos.com/v1", "prometheusrules", "PrometheusRule", True),
]
_VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


class FakeKubernetes:
    """Discovery of a Kubernetes 1.33 cluster, 404 for every object, 201 for every create (recorded by namespace)."""

    def __init__(self) -> None:
        self.created: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, code: int, document: dict[str, Any]) -> None:
                body = json.dumps(document).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                document = fake.discovery(path)
                if document is None:
                    self._send(404, _status(404, "NotFound", f"{path} not found"))
                else:
                    self._send(200, document)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Type", "").split(";")[0] != "application/json":
                    self._send(415, _status(415, "UnsupportedMediaType", "JSON only"))
                    return
                document = json.loads(body)
                namespace = re.search(r"/namespaces/([^/]+)/", self.path)
                with fake._lock:
                    fake.created.setdefault(namespace.group(1) if namespace else "", []).append(document)
                self._send(201, document)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def kubeconfig(self, namespace: str) -> str:
        return yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                "users": [{"name": "fake", "user": {"token": "fake"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
                "current-context": "fake",
            }
        )

    def take(self) -> list[dict[str, Any]]:
        """Everything created since the last call, in every namespace."""
        with self._lock:
            created = [obj for objs in self.created.values() for obj in objs]
            self.created.clear()
            return created

    @staticmethod
    def discovery(path: str) -> dict[str, Any] | None:
        major, minor, _ = KUBERNETES_VERSION.split(".")
        if path == "/version":
            return {"major": major, "minor": minor, "gitVersion": f"v{KUBERNETES_VERSION}", "platform": "linux/amd64"}
        if path == "/api":
            return {"kind": "APIVersions", "apiVersion": "v1", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        group_versions = sorted({gv for gv, *_ in _RESOURCES if "/" in gv})
        if path == "/apis":
            groups = []
            for gv in group_versions:
                group, version = gv.split("/")
                entry = {"groupVersion": gv, "version": version}
                groups.append({"name": group, "versions": [entry], "preferredVersion": entry})
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
        for gv in ["v1", *group_versions]:
            if path == ("/api/v1" if gv == "v1" else f"/apis/{gv}"):
                resources = [
                    {
                        "name": name,
                        "singularName": kind.lower(),
                        "namespaced": namespaced,
                        "kind": kind,
                        "verbs": _VERBS,
                    }
                    for rgv, name, kind, namespaced in _RESOURCES
                    if rgv == gv
                ]
                return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}
        return None

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "reason": reason,
        "code": code,
        "message": message,
    }


# -- Helm, through helm-sdkpy in a child process -----------------------------------------------------------------

# The Go runtime inside helm-sdkpy reads its environment once, when the library loads, so HELM_DRIVER and the Helm
# home directories are set for a child process; it also keeps Go's signal handlers out of the test process.
_HELM_CHILD = r"""
import asyncio, json, sys
import helm_sdkpy

job = json.loads(sys.stdin.read())

async def run():
    config = helm_sdkpy.Configuration(namespace=job["namespace"], kubeconfig=job["kubeconfig"])
    if job["action"] == "lint":
        return await helm_sdkpy.Lint(config).run(job["chart"])
    return await helm_sdkpy.Install(config).run(
        job["release"], job["chart"], values=job["values"], wait=False, timeout=60
    )

try:
    outcome = {"result": asyncio.run(run())}
except helm_sdkpy.HelmError as error:
    outcome = {"error": str(error)}
with open(job["out"], "w") as out:
    json.dump(outcome, out)
"""


@dataclass
class Install:
    """What one `helm install` sent: the release's manifest (as Helm stored it) and the objects it posted."""

    manifest: list[dict[str, Any]]
    posted: list[dict[str, Any]]
    notes: str
    values: dict[str, Any] = field(default_factory=dict)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.posted if o["kind"] == kind]

    def named(self, kind: str, name: str) -> dict[str, Any]:
        matches = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert len(matches) == 1, f"{kind}/{name}: {len(matches)} objects"
        return matches[0]

    def workloads(self) -> list[dict[str, Any]]:
        return [o for o in self.posted if o["kind"] in ("Deployment", "DaemonSet", "StatefulSet")]


class Helm:
    def __init__(self, cluster: FakeKubernetes, home: Path) -> None:
        self.cluster = cluster
        self.home = home
        self._count = 0
        self._lock = threading.Lock()

    def _run(self, job: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._count += 1
            out = self.home / f"result-{self._count}.json"
        job = {**job, "out": str(out), "kubeconfig": self.cluster.kubeconfig(job["namespace"])}
        env = {
            **os.environ,
            "HELM_DRIVER": "memory",
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        completed = subprocess.run(
            [sys.executable, "-c", _HELM_CHILD],
            input=json.dumps(job),
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        if not out.exists():
            raise AssertionError(f"helm child failed ({completed.returncode}): {completed.stderr[-4000:]}")
        return json.loads(out.read_text())

    def lint(self, chart: Path) -> dict[str, Any]:
        outcome = self._run({"action": "lint", "chart": str(chart), "namespace": NAMESPACE})
        assert "error" not in outcome, outcome["error"]
        return outcome["result"]

    def install(self, values: dict[str, Any], *, namespace: str = NAMESPACE, chart: Path = CHART) -> Install:
        outcome = self.try_install(values, namespace=namespace, chart=chart)
        assert "error" not in outcome, outcome["error"]
        release = outcome["result"]
        assert release["info"]["status"] == "deployed", release["info"]
        manifest = [doc for doc in yaml.safe_load_all(release["manifest"]) if doc]
        return Install(manifest, self.cluster.take(), release["info"].get("notes", ""), values)

    def try_install(self, values: dict[str, Any], *, namespace: str = NAMESPACE, chart: Path = CHART) -> dict[str, Any]:
        return self._run(
            {"action": "install", "chart": str(chart), "release": RELEASE, "namespace": namespace, "values": values}
        )


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Helm]:
    cluster = FakeKubernetes()
    try:
        yield Helm(cluster, tmp_path_factory.mktemp("helm"))
    finally:
        cluster.close()


def _example(name: str) -> dict[str, Any]:
    loaded = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


SCENARIOS = {
    "default": {},
    "gpu": _example("gpu"),
    "npu": _example("npu"),
    "external-nats": _example("external-nats"),
    "nats-per-component": _example("nats-per-component"),
}


@pytest.fixture(scope="module")
def installs(helm: Helm) -> dict[str, Install]:
    return {name: helm.install(values) for name, values in SCENARIOS.items()}


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of a values file over the chart's: maps merge key by key, anything else replaces."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _chart_values() -> dict[str, Any]:
    loaded = yaml.safe_load((CHART / "values.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _containers(workload: dict[str, Any], *, init: bool = True) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    return [*(spec.get("initContainers", []) if init else []), *spec["containers"]]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    """name -> value, or the valueFrom mapping."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def _name(component: str) -> str:
    return f"{RELEASE}-{component}"


# -- lint ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_helm_lint_is_clean(helm: Helm, scenario: str, tmp_path: Path) -> None:
    """`helm lint` of the chart with each values set as its values.yaml: no message at all (not even INFO)."""
    chart = tmp_path / "eagle-eye"
    shutil.copytree(CHART, chart)
    (chart / "values.yaml").write_text(yaml.safe_dump(_merged(_chart_values(), SCENARIOS[scenario])))
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
        for container in _containers(workload):
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


def _runs_as(workload: dict[str, Any], container: dict[str, Any]) -> tuple[int | None, bool | None]:
    pod = workload["spec"]["template"]["spec"]["securityContext"]
    security = container.get("securityContext", {})
    return security.get("runAsUser", pod.get("runAsUser")), security.get("runAsNonRoot", pod.get("runAsNonRoot"))


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_only_the_hardware_monitor_may_run_as_root_and_only_as_documented(
    installs: dict[str, Install], scenario: str
) -> None:
    """Root only where values.yaml says why: CAP_SYSLOG for syslog(2), or the privileged NPU monitor."""
    values = _merged(_chart_values(), SCENARIOS[scenario])
    for workload in installs[scenario].workloads():
        component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
        for container in _containers(workload):
            user, non_root = _runs_as(workload, container)
            security = container["securityContext"]
            if not component.startswith("hardware-monitor-"):
                assert user != 0 and non_root is True, f"{component} runs as root"
                assert security["allowPrivilegeEscalation"] is False, component
                assert security["capabilities"] == {"drop": ["ALL"]}, component
                continue
            if component == "hardware-monitor-npu" and values["hardwareMonitor"]["npu"]["privileged"]:
                assert security == {"readOnlyRootFilesystem": True, "privileged": True}
                assert user == 0
            elif values["hardwareMonitor"]["kernelLog"]["mode"] == "syslog":
                assert user == 0 and non_root is False
                assert security["capabilities"] == {"drop": ["ALL"], "add": ["SYSLOG"]}
                assert security["allowPrivilegeEscalation"] is False
            else:
                assert user != 0 and non_root is True
                assert security["capabilities"] == {"drop": ["ALL"]}
                assert security["allowPrivilegeEscalation"] is False


def test_no_pod_but_the_collector_gets_a_kubernetes_api_token(installs: dict[str, Install]) -> None:
    for install in installs.values():
        for workload in install.workloads():
            pod = workload["spec"]["template"]["spec"]
            wants_api = workload["metadata"]["labels"]["app.kubernetes.io/component"] == "collector"
            assert pod["automountServiceAccountToken"] is wants_api, workload["metadata"]["name"]


def test_host_access_is_what_values_yaml_documents(installs: dict[str, Install]) -> None:
    """GPU monitor: no host path (the NVIDIA runtime injects the GPUs); NPU: the driver dirs, read-only."""
    gpu = installs["default"].named("DaemonSet", _name("hardware-monitor-gpu"))
    pod = gpu["spec"]["template"]["spec"]
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux", "nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert not [v for v in pod["volumes"] if "hostPath" in v]
    env = _env(pod["containers"][0])
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all" and env["NVIDIA_DRIVER_CAPABILITIES"] == "utility"
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"]  # takes no GPU from inference

    npu = installs["npu"].named("DaemonSet", _name("hardware-monitor-npu"))
    pod = npu["spec"]["template"]["spec"]
    host_paths = {v["name"]: v["hostPath"] for v in pod["volumes"] if "hostPath" in v}
    assert host_paths == {
        "ascend-driver": {"path": "/usr/local/Ascend/driver", "type": "Directory"},
        "ascend-dcmi": {"path": "/usr/local/dcmi", "type": "Directory"},
    }
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    for name in host_paths:
        assert mounts[name]["readOnly"] is True
    assert pod["nodeSelector"]["accelerator"] == "huawei-Ascend910"
    assert _env(pod["containers"][0])["LD_LIBRARY_PATH"] == (
        "/usr/local/Ascend/driver/lib64/driver:/usr/local/Ascend/driver/lib64/common:/usr/local/Ascend/driver/lib64"
        ":/usr/local/dcmi"
    )
    assert not installs["npu"].of_kind("DaemonSet")[0]["metadata"]["name"].endswith("-gpu")

    # kernelLog.mode=file: the host's kern.log, read-only, read as group adm by a non-root user.
    monitor = installs["external-nats"].named("DaemonSet", _name("hardware-monitor-gpu"))
    pod = monitor["spec"]["template"]["spec"]
    assert pod["securityContext"]["supplementalGroups"] == [4]
    assert {v["name"]: v["hostPath"] for v in pod["volumes"] if "hostPath" in v} == {
        "kernel-log": {"path": "/var/log/kern.log", "type": "File"}
    }
    assert _env(pod["containers"][0])["EAGLEEYE_KERNEL_LOG"] == "/host/var/log/kern.log"


def test_the_hardware_monitor_is_wired(installs: dict[str, Install]) -> None:
    monitor = installs["default"].named("DaemonSet", _name("hardware-monitor-gpu"))
    container = monitor["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "eagle-eye:0.1.0"
    assert container["args"] == ["hardware-monitor", "--prometheus-port=9465", "--interval=1"]
    env = _env(container)
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
    gpu = installs["gpu"].named("DaemonSet", _name("hardware-monitor-gpu"))
    assert (
        gpu["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example.com/ai-platform/eagle-eye:0.1.0"
    )
    assert gpu["spec"]["template"]["spec"]["priorityClassName"] == "system-node-critical"


def test_the_diagnosis_service_is_wired(installs: dict[str, Install]) -> None:
    install = installs["default"]
    deployment = install.named("Deployment", _name("diagnosis"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["diagnose"]
    env = _env(container)
    assert env["EAGLEEYE_DIAGNOSIS_HTTP"] == "0.0.0.0:9467"
    assert env["OTEL_EXPORTER_PROMETHEUS_HOST"] == "0.0.0.0"
    assert env["OTEL_EXPORTER_PROMETHEUS_PORT"] == "9466"
    assert env["EAGLEEYE_DIAGNOSIS_SUBJECT_PREFIX"] == "eagle_eye.diagnosis"
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    service = install.named("Service", _name("diagnosis"))
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"http": 9467, "metrics": 9466}
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]

    # User rules: a ConfigMap, mounted, passed with --rules; and they load into the real knowledge base.
    npu = installs["npu"]
    container = npu.named("Deployment", _name("diagnosis"))["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["diagnose", "--rules=/etc/eagle-eye/rules/site.yaml"]
    rules = npu.named("ConfigMap", _name("diagnosis-rules"))
    assert set(rules["data"]) == {"site.yaml"}


def test_the_example_rule_files_load_into_the_knowledge_base(installs: dict[str, Install], tmp_path: Path) -> None:
    rules = installs["npu"].named("ConfigMap", _name("diagnosis-rules"))
    paths = []
    for name, text in rules["data"].items():
        path = tmp_path / name
        path.write_text(text)
        paths.append(path)
    knowledge = load_knowledge_base(paths)  # a bad key or rule id raises ConfigError naming it
    assert any(name.endswith("site.yaml") for name in knowledge.files), knowledge.files
    assert knowledge.rule("npu_temperature_above_peers") is not None


NATS_CLIENTS = ("hardware-monitor-gpu", "hardware-monitor-npu", "diagnosis", "vllm-example")


NATS_USERS = {"hardware-monitor-gpu": "hardware", "hardware-monitor-npu": "hardware", "diagnosis": "diagnosis"}
NATS_USERS["vllm-example"] = "vllm"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_nats_client_gets_the_url_and_its_credentials_as_files(
    installs: dict[str, Install], scenario: str
) -> None:
    """Secrets reach every client as files of the mounted Secret, never as an environment value; with per-component
    users each client logs in as its own user and mounts only its own password."""
    install = installs[scenario]
    values = _merged(_chart_values(), SCENARIOS[scenario])
    nats = values["nats"]
    auth = nats["auth"]
    expected_url = f"nats://{_name('nats')}.{NAMESPACE}.svc:4222" if nats["bundled"]["enabled"] else nats["url"]
    clients = [w for w in install.workloads() if w["metadata"]["labels"]["app.kubernetes.io/component"] in NATS_CLIENTS]
    assert clients
    for workload in clients:
        component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
        pod = workload["spec"]["template"]["spec"]
        env = _env(pod["containers"][0])
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
        assert env["EAGLEEYE_NATS_URL"] == expected_url, workload["metadata"]["name"]
        assert not {"EAGLEEYE_NATS_PASSWORD", "EAGLEEYE_NATS_TOKEN"} & set(env)  # only the *_FILE variants
        if auth["perComponent"]["enabled"]:
            user = NATS_USERS[component]
            assert env["EAGLEEYE_NATS_USER"] == f"eagle-eye-{user}"
            assert env["EAGLEEYE_NATS_PASSWORD_FILE"] == "/etc/eagle-eye/nats-auth/password"
            secret = volumes["nats-auth"]["secret"]
            assert secret["secretName"] == auth["perComponent"]["existingSecret"]
            assert secret["items"] == [{"key": auth["perComponent"]["keys"][user], "path": "password"}]
        elif auth["userKey"]:
            assert env["EAGLEEYE_NATS_USER"] == {
                "secretKeyRef": {"name": auth["existingSecret"], "key": auth["userKey"]}
            }
            assert env["EAGLEEYE_NATS_PASSWORD_FILE"] == "/etc/eagle-eye/nats-auth/password"
            assert volumes["nats-auth"]["secret"]["items"] == [{"key": auth["passwordKey"], "path": "password"}]
        else:
            assert not {"EAGLEEYE_NATS_USER", "EAGLEEYE_NATS_PASSWORD_FILE", "EAGLEEYE_NATS_TOKEN_FILE"} & set(env)
            assert "nats-auth" not in volumes
        if "nats-auth" in volumes:
            assert mounts["nats-auth"] == {
                "name": "nats-auth",
                "mountPath": "/etc/eagle-eye/nats-auth",
                "readOnly": True,
            }
        if nats["tls"]["existingSecret"]:
            assert env["EAGLEEYE_NATS_TLS_CA"] == "/etc/eagle-eye/nats-tls/ca.crt"
            assert volumes["nats-tls"]["secret"]["secretName"] == nats["tls"]["existingSecret"]
            assert mounts["nats-tls"] == {"name": "nats-tls", "mountPath": "/etc/eagle-eye/nats-tls", "readOnly": True}
    bundled = [w for w in install.workloads() if w["metadata"]["name"] == _name("nats")]
    assert len(bundled) == int(nats["bundled"]["enabled"])
    if bundled:
        service = install.named("Service", _name("nats"))
        assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"client": 4222, "monitor": 8222}
        container = bundled[0]["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == "docker.io/nats:2.14.0"
        assert "--port=4222" in container["args"] and "--http_port=8222" in container["args"]


def test_the_bundled_nats_server_takes_the_token_from_the_secret(helm: Helm, tmp_path: Path) -> None:
    """The token is in neither the arguments nor the ConfigMap; the real server, run with the rendered config and
    env, accepts the diagnosis service's settings (token read from the mounted file) and refuses a wrong token."""
    port, monitor = free_port(), free_port()
    values = {"nats": {"bundled": {"port": port, "monitorPort": monitor}}}
    values["nats"]["auth"] = {"existingSecret": "nats-token", "tokenKey": "token"}
    install = helm.install(values)
    server = install.named("Deployment", _name("nats"))["spec"]["template"]["spec"]["containers"][0]
    assert not [a for a in server["args"] if "TOKEN" in a or "auth" in a or "pass" in a]
    assert _env(server)["NATS_TOKEN_VALUE"] == {"secretKeyRef": {"name": "nats-token", "key": "token"}}
    assert _env(server)["NATS_TOKEN"] == '"$(NATS_TOKEN_VALUE)"'
    assert "token: $NATS_TOKEN" in install.named("ConfigMap", _name("nats-config"))["data"]["nats.conf"]
    diagnosis = install.named("Deployment", _name("diagnosis"))
    assert _env(diagnosis["spec"]["template"]["spec"]["containers"][0])["EAGLEEYE_NATS_TOKEN_FILE"] == (
        "/etc/eagle-eye/nats-auth/token"
    )
    secrets = {("nats-token", "token"): "-1 a token; nats-server must not read it as a number"}
    with _bundled_server(install, secrets, tmp_path) as url:
        nats_settings = _client_settings(diagnosis, secrets, tmp_path / "diagnosis", url)
        assert nats_settings.token == secrets["nats-token", "token"]
        asyncio.run(_connects(nats_settings))
        wrong = dataclasses.replace(nats_settings, token="not-the-token")
        with pytest.raises(RouterConnectError, match="Authorization Violation"):
            asyncio.run(RouterClient(nats_settings=wrong).start())


def test_per_component_users_on_the_bundled_server(helm: Helm, tmp_path: Path) -> None:
    """nats.auth.perComponent: the bundled server runs deploy/nats/eagle-eye-auth.conf with the release's subjects;
    each component, with the env and Secret files the chart gives it, may publish and read its own subjects and
    nothing else."""
    assert (CHART / "files" / "nats" / "eagle-eye-auth.conf").read_text() == AUTH_CONF.read_text()
    port, monitor = free_port(), free_port()
    values: dict[str, Any] = _example("nats-per-component")
    values = _merged(values, {"nats": {"bundled": {"port": port, "monitorPort": monitor}}})
    values |= {"routing": {"subject": "fleet.load", "snapshotSubject": "fleet.who"}}
    values |= {"subjects": {"hardwarePrefix": "fleet.hw", "diagnosisPrefix": "fleet.diag"}}
    install = helm.install(values)
    config = install.named("ConfigMap", _name("nats-config"))["data"]["nats.conf"]
    assert '"fleet.load"' in config and '"fleet.hw.>"' in config and "eagle_eye.routing_metrics" not in config
    server = install.named("Deployment", _name("nats"))["spec"]["template"]["spec"]["containers"][0]
    assert _env(server)["EAGLE_EYE_HARDWARE_PASSWORD"] == '"$(EAGLE_EYE_HARDWARE_PASSWORD_VALUE)"'
    users = ("vllm", "router", "hardware", "diagnosis", "metrics-reader")
    secrets = {("eagle-eye-nats-users", user): f"-1{user}-{os.urandom(6).hex()}" for user in users}
    monitor_workload = install.named("DaemonSet", _name("hardware-monitor-gpu"))
    diagnosis = install.named("Deployment", _name("diagnosis"))
    vllm = install.named("Deployment", _name("vllm-example"))
    with _bundled_server(install, secrets, tmp_path) as url:
        settings = {
            "hardware": _client_settings(monitor_workload, secrets, tmp_path / "hardware", url),
            "diagnosis": _client_settings(diagnosis, secrets, tmp_path / "diagnosis", url),
            "vllm": _client_settings(vllm, secrets, tmp_path / "vllm", url),
        }
        settings["router"] = dataclasses.replace(
            settings["vllm"], user="eagle-eye-router", password=secrets["eagle-eye-nats-users", "router"]
        )
        assert {k: v.user for k, v in settings.items()} == {k: f"eagle-eye-{k}" for k in settings}
        outcome = asyncio.run(_exchange(settings))
    assert outcome["diagnosis"] == [("fleet.hw.node-a", b"batch")]
    assert outcome["router"] == [("fleet.load", b"load")]
    assert outcome["refused"] == ["fleet.load", "fleet.hw.node-a"]  # the monitor's, the router's forgery


async def _connects(nats_settings: NatsSettings) -> None:
    nc = await nats.connect(**connect_options(nats_settings, name="helm-test", background=False))
    await nc.close()


async def _exchange(settings: dict[str, NatsSettings]) -> dict[str, list[Any]]:
    """Each component does its job, then tries another's: what was received and which publishes were refused."""
    got: dict[str, list[Any]] = {"diagnosis": [], "router": [], "refused": []}
    clients = {}

    def sink(name: str) -> Any:
        async def on_message(msg: Any) -> None:
            got[name].append((msg.subject, msg.data))

        return on_message

    async def on_error(error: Exception) -> None:
        if "permissions violation for publish" in str(error):
            got["refused"].append(str(error).rsplit('"', 2)[1])

    for name, nats_settings in settings.items():
        options = connect_options(nats_settings, name=name, background=False)
        clients[name] = await nats.connect(**options, error_cb=on_error)
    try:
        await clients["diagnosis"].subscribe("fleet.hw.>", cb=sink("diagnosis"))
        await clients["router"].subscribe("fleet.load", cb=sink("router"))
        for nc in clients.values():
            await nc.flush()
        await clients["hardware"].publish("fleet.load", b"forged")
        await clients["hardware"].flush()
        await clients["router"].publish("fleet.hw.node-a", b"forged")
        await clients["router"].flush()
        await clients["hardware"].publish("fleet.hw.node-a", b"batch")
        await clients["vllm"].publish("fleet.load", b"load")
        for nc in clients.values():
            await nc.flush()
        await asyncio.sleep(0.5)
    finally:
        for nc in clients.values():
            await nc.close()
    return got


@contextlib.contextmanager
def _bundled_server(install: Install, secrets: dict[tuple[str, str], str], tmp_path: Path) -> Iterator[str]:
    """The bundled server's container run for real: its args, its env (Secret values and $(VAR) expanded as the
    kubelet does) and its ConfigMap; yields the client URL."""
    container = install.named("Deployment", _name("nats"))["spec"]["template"]["spec"]["containers"][0]
    config = tmp_path / "nats.conf"
    config.write_text(install.named("ConfigMap", _name("nats-config"))["data"]["nats.conf"])
    env: dict[str, str] = {"PATH": os.environ["PATH"]}
    for entry in container["env"]:
        source = entry.get("valueFrom", {})
        if "secretKeyRef" in source:
            env[entry["name"]] = secrets[source["secretKeyRef"]["name"], source["secretKeyRef"]["key"]]
        elif "fieldRef" in source:
            env[entry["name"]] = "nats-0"
        else:
            env[entry["name"]] = _expand([entry["value"]], env)[0]
    args = [a.replace("/etc/nats/nats.conf", str(config)) for a in _expand(container["args"], env)]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    log = tmp_path / "nats.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([str(find_nats_server()), "--addr=127.0.0.1", *args], env=env, stderr=sink)
    try:
        assert _get(f"http://127.0.0.1:{ports['monitor']}/healthz") == 200, log.read_text()
        yield f"nats://127.0.0.1:{ports['client']}"
    finally:
        process.terminate()
        process.wait(10)


def _client_settings(
    workload: dict[str, Any], secrets: dict[tuple[str, str], str], directory: Path, url: str
) -> NatsSettings:
    """What the component's first container reads: its env, with each mounted Secret item written to a file."""
    pod = workload["spec"]["template"]["spec"]
    container = pod["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
    env: dict[str, str] = {}
    for entry in container["env"]:
        source = entry.get("valueFrom", {})
        if "secretKeyRef" in source:
            env[entry["name"]] = secrets[source["secretKeyRef"]["name"], source["secretKeyRef"]["key"]]
        elif "value" in entry:
            env[entry["name"]] = entry["value"]
    for volume in pod["volumes"]:
        if "secret" not in volume or volume["name"] not in mounts:
            continue
        target = directory / volume["name"]
        target.mkdir(parents=True, exist_ok=True)
        for item in volume["secret"]["items"]:
            (target / item["path"]).write_text(secrets[volume["secret"]["secretName"], item["key"]])
        for name, value in env.items():
            env[name] = value.replace(mounts[volume["name"]], str(target))
    env["EAGLEEYE_NATS_URL"] = url
    return Settings.from_env(env).nats


def test_the_vllm_example_publishes_to_nats_with_the_plugin_installed(installs: dict[str, Install]) -> None:
    install = installs["gpu"]
    deployment = install.named("Deployment", _name("vllm-example"))
    pod = deployment["spec"]["template"]["spec"]
    vllm = pod["containers"][0]
    env = _env(vllm)
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
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://{_name('collector')}:4317"
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
    image_mode = installs["external-nats"].named("Deployment", _name("vllm-example"))["spec"]["template"]["spec"]
    assert "initContainers" not in image_mode
    assert "PYTHONPATH" not in _env(image_mode["containers"][0])
    assert (
        image_mode["containers"][0]["image"] == "registry.example.com/ai-platform/vllm-eagle-eye:v0.32.0-eagle-eye0.1.0"
    )
    assert _env(image_mode["containers"][0])["EAGLEEYE_ROUTING_SUBJECT"] == "eagle_eye.routing_metrics.prod"
    assert not installs["default"].of_kind("Deployment") or all(
        d["metadata"]["name"] != _name("vllm-example") for d in installs["default"].of_kind("Deployment")
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
        _name("hardware-monitor-gpu"),
        _name("diagnosis"),
        _name("vllm-example"),
    }
    for service in selected:
        assert "metrics" in {p["name"] for p in service["spec"]["ports"]}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_scrape_annotations_point_at_a_served_metrics_port(installs: dict[str, Install], scenario: str) -> None:
    enabled = _merged(_chart_values(), SCENARIOS[scenario])["prometheus"]["annotations"]
    for workload in installs[scenario].workloads():
        annotations = workload["spec"]["template"]["metadata"].get("annotations") or {}
        if not enabled or workload["metadata"]["labels"]["app.kubernetes.io/component"] in ("nats", "collector"):
            assert "prometheus.io/scrape" not in annotations
            continue
        ports = {
            p["containerPort"] for c in _containers(workload, init=False) for p in c["ports"] if p["name"] == "metrics"
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
    assert not [w for w in installs["default"].workloads() if w["metadata"]["name"] == _name("collector")]
    install = installs["gpu"]
    config = yaml.safe_load(install.named("ConfigMap", _name("collector"))["data"]["config.yaml"])
    shipped = yaml.safe_load((ROOT / "collector-config" / "k8s-attributes.yaml").read_text())
    # The shipped file, with remote write added to every pipeline since the example sets a URL.
    for pipeline in shipped["service"]["pipelines"].values():
        pipeline["exporters"] = ["prometheus", "debug", "prometheusremotewrite"]
    assert config == shipped
    deployment = install.named("Deployment", _name("collector"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = _env(container)
    assert env["K8S_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["PROMETHEUS_REMOTE_WRITE_URL"].endswith("/api/v1/write")
    assert container["image"] == "docker.io/otel/opentelemetry-collector-contrib:0.139.0"
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == _name("collector")
    role = install.named("Role", _name("collector"))
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
    config = yaml.safe_load(install.named("ConfigMap", _name("collector"))["data"]["config.yaml"])
    assert config["processors"]["batch"] == {"timeout": "5s", "send_batch_size": 8192, "send_batch_max_size": 16384}
    assert config["service"]["pipelines"]["metrics/otlp"]["exporters"] == ["prometheus", "debug"]


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
        jsonschema.validate(_merged(_chart_values(), values), schema), name


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

    walk(_chart_values(), schema, "")


# -- the probes hit endpoints the components really serve ------------------------------------------------------------


def _get(url: str, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return int(response.status)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _expand(args: list[str], env: dict[str, str]) -> list[str]:
    return [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in args]


def test_the_nats_probe_answers_on_the_rendered_command(helm: Helm, tmp_path: Path) -> None:
    """The bundled server's args, run by the nats-server Eagle Eye's tests use: /healthz answers on the probe's port."""
    port, monitor = free_port(), free_port()
    install = helm.install({"nats": {"bundled": {"port": port, "monitorPort": monitor}}})
    container = install.named("Deployment", _name("nats"))["spec"]["template"]["spec"]["containers"][0]
    # The image's entry point is nats-server; the chart only passes arguments and its ConfigMap.
    with _bundled_server(install, {}, tmp_path):
        probe = container["livenessProbe"]["httpGet"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert _get(f"http://127.0.0.1:{ports[probe['port']]}{probe['path']}") == 200


def test_the_hardware_monitor_probe_answers_on_the_rendered_command(helm: Helm, nats_server: Any) -> None:
    """`eagle-eye` run with the DaemonSet's args and env (off a GPU node): the probe's path answers 200."""
    port = free_port()
    install = helm.install({"hardwareMonitor": {"port": port, "kernelLog": {"mode": "off"}}})
    container = install.named("DaemonSet", _name("hardware-monitor-gpu"))["spec"]["template"]["spec"]["containers"][0]
    env = {k: v for k, v in _env(container).items() if isinstance(v, str)}
    env.update(EAGLEEYE_NATS_URL=nats_server.url, EAGLEEYE_NODE_NAME="node-a", PATH=os.environ["PATH"])
    executable = str(Path(sys.executable).with_name("eagle-eye"))
    process = subprocess.Popen(
        [executable, *container["args"]], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            path = container[probe]["httpGet"]["path"]
            assert _get(f"http://127.0.0.1:{port}{path}") == 200
    finally:
        process.terminate()
        process.wait(10)


def test_the_diagnosis_probes_answer_on_the_rendered_command(helm: Helm, nats_server: Any) -> None:
    """`eagle-eye diagnose` run with the Deployment's args and env: /healthz on the probes' port, /metrics on the
    port the scrape annotations name."""
    http, metrics = free_port(), free_port()
    install = helm.install({"diagnosis": {"httpPort": http, "metricsPort": metrics}})
    deployment = install.named("Deployment", _name("diagnosis"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {k: v for k, v in _env(container).items() if isinstance(v, str)}
    env.update(EAGLEEYE_NATS_URL=nats_server.url, PATH=os.environ["PATH"])
    executable = str(Path(sys.executable).with_name("eagle-eye"))
    process = subprocess.Popen(
        [executable, *container["args"]], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            get = container[probe]["httpGet"]
            assert _get(f"http://127.0.0.1:{ports[get['port']]}{get['path']}") == 200
        scrape = deployment["spec"]["template"]["metadata"]["annotations"]
        assert _get(f"http://127.0.0.1:{scrape['prometheus.io/port']}{scrape['prometheus.io/path']}") == 200
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert process.returncode in (0, -15), stderr.decode()[-2000:]


# -- docs ------------------------------------------------------------------------------------------------------------


def test_the_kubernetes_guide_names_real_values_and_files() -> None:
    text = DOCS.read_text()
    values = _chart_values()
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


# -- privileges: exactly the justified ones -------------------------------------------------------------------------


def _privileges(workload: dict[str, Any]) -> dict[str, Any]:
    """What a pod may do beyond the baseline, container by container, and what it mounts from the host."""
    pod = workload["spec"]["template"]["spec"]
    containers = {}
    for container in _containers(workload):
        security = container["securityContext"]
        user, non_root = _runs_as(workload, container)
        containers[container["name"]] = (
            "root" if user == 0 else "non-root",
            bool(non_root),
            security.get("allowPrivilegeEscalation"),
            tuple(security.get("capabilities", {}).get("drop", [])),
            tuple(security.get("capabilities", {}).get("add", [])),
            security.get("privileged", False),
        )
    host_paths = sorted(v["hostPath"]["path"] for v in pod.get("volumes", []) if "hostPath" in v)
    return {"containers": containers, "hostPaths": host_paths}


RESTRICTED = ("non-root", True, False, ("ALL",), (), False)
SYSLOG = ("root", False, False, ("ALL",), ("SYSLOG",), False)
PRIVILEGED = ("root", False, None, (), (), True)
# Per scenario, every workload's privileges beyond RESTRICTED, each justified in docs/kubernetes.md ("What the
# hardware monitor may do, and why"); a pod not named here must be RESTRICTED with no host path.
JUSTIFIED = {
    "default": {"hardware-monitor-gpu": {"containers": {"hardware-monitor": SYSLOG}, "hostPaths": []}},
    "gpu": {"hardware-monitor-gpu": {"containers": {"hardware-monitor": SYSLOG}, "hostPaths": []}},
    "nats-per-component": {"hardware-monitor-gpu": {"containers": {"hardware-monitor": SYSLOG}, "hostPaths": []}},
    "npu": {
        "hardware-monitor-npu": {
            "containers": {"hardware-monitor": PRIVILEGED},
            "hostPaths": ["/usr/local/Ascend/driver", "/usr/local/dcmi"],
        }
    },
    "external-nats": {
        "hardware-monitor-gpu": {"containers": {"hardware-monitor": RESTRICTED}, "hostPaths": ["/var/log/kern.log"]}
    },
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_each_pod_holds_exactly_the_justified_privileges(installs: dict[str, Install], scenario: str) -> None:
    """Non-root, no privilege escalation, every capability dropped, no host path: everywhere but where JUSTIFIED
    (and docs/kubernetes.md) says otherwise, and there exactly that."""
    for workload in installs[scenario].workloads():
        component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
        actual = _privileges(workload)
        expected = JUSTIFIED[scenario].get(component) or {
            "containers": dict.fromkeys(actual["containers"], RESTRICTED),
            "hostPaths": [],
        }
        assert actual == expected, f"{scenario}: {component}"


def test_the_docs_justify_every_privilege_and_host_path(installs: dict[str, Install]) -> None:
    text = DOCS.read_text()
    section = text[text.index("## What the hardware monitor may do, and why") :].split("\n## ", 1)[0]
    for install in installs.values():
        for workload in install.workloads():
            privileges = _privileges(workload)
            for profile in privileges["containers"].values():
                for capability in profile[4]:
                    assert f"`{capability}`" in section or f"CAP_{capability}" in section, capability
                if profile[5]:
                    assert "privileged" in section
                if profile[0] == "root":
                    assert "uid 0" in section
            for path in privileges["hostPaths"]:
                assert path in section or path.rsplit("/", 1)[-1] in section, path


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_mounted_secrets_are_readable_by_the_container_user_and_no_one_else(
    installs: dict[str, Install], scenario: str
) -> None:
    """Secret files are 0440: readable by their owner (root) and the pod's fsGroup, which a non-root container must
    then have; world-readable modes are refused."""
    for workload in installs[scenario].workloads():
        pod = workload["spec"]["template"]["spec"]
        secrets = {v["name"]: v["secret"] for v in pod.get("volumes", []) if "secret" in v}
        for container in _containers(workload):
            for mount in container.get("volumeMounts", []):
                if mount["name"] not in secrets:
                    continue
                mode = secrets[mount["name"]].get("defaultMode", 0o644)
                assert mode & 0o007 == 0 and mount["readOnly"] is True, workload["metadata"]["name"]
                user, _ = _runs_as(workload, container)
                if user != 0:
                    assert pod["securityContext"].get("fsGroup") is not None and mode & 0o040, workload["metadata"][
                        "name"
                    ]
