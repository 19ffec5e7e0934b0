"""The Helm chart's test harness: real Helm installs into a stand-in API server, and what the tests share.

``helm-sdkpy`` bundles Helm itself (a Go shared library). It has no ``helm template``, so each values set is
installed for real, ``wait=False``, into :class:`~tests.deploy.fake_kubernetes.FakeKubernetes` on a loopback port.
Helm keeps the release in memory (``HELM_DRIVER=memory``), so the objects it posts are exactly the chart's.

Values sets (:data:`SCENARIOS`): the chart's defaults and the examples in deploy/helm/examples/ (GPU, NPU, external
NATS, per-component NATS users).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from eagleeye_otel.nats_server import find_nats_server
from tests.deploy.fake_kubernetes import FakeKubernetes

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "eagle-eye"
EXAMPLES = ROOT / "deploy" / "helm" / "examples"
DOCS = ROOT / "docs" / "kubernetes.md"
AUTH_CONF = ROOT / "deploy" / "nats" / "eagle-eye-auth.conf"
NAMESPACE = "eagle-eye"
RELEASE = "eagle-eye"

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
    """`helm lint` and `helm install`, each in a child process, against the stand-in cluster."""

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


# -- values and what the tests look up in the objects ------------------------------------------------------------


def example(name: str) -> dict[str, Any]:
    """deploy/helm/examples/<name>.yaml."""
    loaded = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


SCENARIOS = {
    "default": {},
    "gpu": example("gpu"),
    "npu": example("npu"),
    "external-nats": example("external-nats"),
    "nats-per-component": example("nats-per-component"),
}


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of a values file over the chart's: maps merge key by key, anything else replaces."""
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def chart_values() -> dict[str, Any]:
    """The chart's own values.yaml."""
    loaded = yaml.safe_load((CHART / "values.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def containers(workload: dict[str, Any], *, init: bool = True) -> list[dict[str, Any]]:
    """The pod template's containers, its init containers first unless `init` is false."""
    spec = workload["spec"]["template"]["spec"]
    return [*(spec.get("initContainers", []) if init else []), *spec["containers"]]


def container_env(container: dict[str, Any]) -> dict[str, Any]:
    """name -> value, or the valueFrom mapping."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def component_name(component: str) -> str:
    """The name the chart gives a component's objects."""
    return f"{RELEASE}-{component}"


# -- running a rendered container for real -----------------------------------------------------------------------


def http_status(url: str, timeout: float = 20.0) -> int:
    """The status of a GET of `url`, retried while nothing answers yet (up to `timeout` seconds)."""
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


@contextlib.contextmanager
def bundled_server(install: Install, secrets: dict[tuple[str, str], str], tmp_path: Path) -> Iterator[str]:
    """The bundled server's container run for real: its args, its env (Secret values and $(VAR) expanded as the
    kubelet does) and its ConfigMap; yields the client URL."""
    container = install.named("Deployment", component_name("nats"))["spec"]["template"]["spec"]["containers"][0]
    config = tmp_path / "nats.conf"
    config.write_text(install.named("ConfigMap", component_name("nats-config"))["data"]["nats.conf"])
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
        assert http_status(f"http://127.0.0.1:{ports['monitor']}/healthz") == 200, log.read_text()
        yield f"nats://127.0.0.1:{ports['client']}"
    finally:
        process.terminate()
        process.wait(10)
