"""A stand-in Kubernetes API server for the Helm chart's tests.

It answers discovery as a Kubernetes 1.33 cluster with the Prometheus Operator's CRDs, 404 for every object, and 201
for every create, recording what was posted so that a test sees exactly the objects Helm sent.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import yaml

KUBERNETES_VERSION = "1.33.0"


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
