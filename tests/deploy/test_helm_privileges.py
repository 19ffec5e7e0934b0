"""What each pod may do: root only for the hardware monitor and only as values.yaml documents, a Kubernetes API token
for the collector alone, host paths as documented, exactly the privileges docs/kubernetes.md justifies, and Secret
files readable by the container's user and no one else.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.helm_support import (
    DOCS,
    SCENARIOS,
    Install,
    chart_values,
    component_name,
    container_env,
    containers,
    merged,
)


def _runs_as(workload: dict[str, Any], container: dict[str, Any]) -> tuple[int | None, bool | None]:
    pod = workload["spec"]["template"]["spec"]["securityContext"]
    security = container.get("securityContext", {})
    return security.get("runAsUser", pod.get("runAsUser")), security.get("runAsNonRoot", pod.get("runAsNonRoot"))


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_only_the_hardware_monitor_may_run_as_root_and_only_as_documented(
    installs: dict[str, Install], scenario: str
) -> None:
    """Root only where values.yaml says why: CAP_SYSLOG for syslog(2), or the privileged NPU monitor."""
    values = merged(chart_values(), SCENARIOS[scenario])
    for workload in installs[scenario].workloads():
        component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
        for container in containers(workload):
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
    gpu = installs["default"].named("DaemonSet", component_name("hardware-monitor-gpu"))
    pod = gpu["spec"]["template"]["spec"]
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux", "nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert not [v for v in pod["volumes"] if "hostPath" in v]
    env = container_env(pod["containers"][0])
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all" and env["NVIDIA_DRIVER_CAPABILITIES"] == "utility"
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"]  # takes no GPU from inference

    npu = installs["npu"].named("DaemonSet", component_name("hardware-monitor-npu"))
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
    assert container_env(pod["containers"][0])["LD_LIBRARY_PATH"] == (
        "/usr/local/Ascend/driver/lib64/driver:/usr/local/Ascend/driver/lib64/common:/usr/local/Ascend/driver/lib64"
        ":/usr/local/dcmi"
    )
    assert not installs["npu"].of_kind("DaemonSet")[0]["metadata"]["name"].endswith("-gpu")

    # kernelLog.mode=file: the host's kern.log, read-only, read as group adm by a non-root user.
    monitor = installs["external-nats"].named("DaemonSet", component_name("hardware-monitor-gpu"))
    pod = monitor["spec"]["template"]["spec"]
    assert pod["securityContext"]["supplementalGroups"] == [4]
    assert {v["name"]: v["hostPath"] for v in pod["volumes"] if "hostPath" in v} == {
        "kernel-log": {"path": "/var/log/kern.log", "type": "File"}
    }
    assert container_env(pod["containers"][0])["EAGLEEYE_KERNEL_LOG"] == "/host/var/log/kern.log"


# -- privileges: exactly the justified ones -------------------------------------------------------------------------


def _privileges(workload: dict[str, Any]) -> dict[str, Any]:
    """What a pod may do beyond the baseline, container by container, and what it mounts from the host."""
    pod = workload["spec"]["template"]["spec"]
    profiles = {}
    for container in containers(workload):
        security = container["securityContext"]
        user, non_root = _runs_as(workload, container)
        profiles[container["name"]] = (
            "root" if user == 0 else "non-root",
            bool(non_root),
            security.get("allowPrivilegeEscalation"),
            tuple(security.get("capabilities", {}).get("drop", [])),
            tuple(security.get("capabilities", {}).get("add", [])),
            security.get("privileged", False),
        )
    host_paths = sorted(v["hostPath"]["path"] for v in pod.get("volumes", []) if "hostPath" in v)
    return {"containers": profiles, "hostPaths": host_paths}


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
        for container in containers(workload):
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
