"""The chart's NATS wiring: every client gets the URL and its credentials as files of a mounted Secret, the bundled
server takes its token from the Secret, and per-component users may publish and read their own subjects only, all
checked against a real nats-server run with the rendered args, env and ConfigMap.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path
from typing import Any

import nats
import pytest

from eagleeye_otel.errors import RouterConnectError
from eagleeye_otel.nats_flush import flush
from eagleeye_otel.nats_options import connect_options
from eagleeye_otel.nats_server import free_port
from eagleeye_otel.routing import RouterClient
from eagleeye_otel.settings import NatsSettings, Settings
from tests.deploy.helm_support import (
    AUTH_CONF,
    CHART,
    NAMESPACE,
    SCENARIOS,
    Helm,
    Install,
    bundled_server,
    chart_values,
    component_name,
    container_env,
    example,
    merged,
)

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
    values = merged(chart_values(), SCENARIOS[scenario])
    nats = values["nats"]
    auth = nats["auth"]
    expected_url = (
        f"nats://{component_name('nats')}.{NAMESPACE}.svc:4222" if nats["bundled"]["enabled"] else nats["url"]
    )
    clients = [w for w in install.workloads() if w["metadata"]["labels"]["app.kubernetes.io/component"] in NATS_CLIENTS]
    assert clients
    for workload in clients:
        component = workload["metadata"]["labels"]["app.kubernetes.io/component"]
        pod = workload["spec"]["template"]["spec"]
        env = container_env(pod["containers"][0])
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
    bundled = [w for w in install.workloads() if w["metadata"]["name"] == component_name("nats")]
    assert len(bundled) == int(nats["bundled"]["enabled"])
    if bundled:
        service = install.named("Service", component_name("nats"))
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
    server = install.named("Deployment", component_name("nats"))["spec"]["template"]["spec"]["containers"][0]
    assert not [a for a in server["args"] if "TOKEN" in a or "auth" in a or "pass" in a]
    assert container_env(server)["NATS_TOKEN_VALUE"] == {"secretKeyRef": {"name": "nats-token", "key": "token"}}
    assert container_env(server)["NATS_TOKEN"] == '"$(NATS_TOKEN_VALUE)"'
    assert "token: $NATS_TOKEN" in install.named("ConfigMap", component_name("nats-config"))["data"]["nats.conf"]
    diagnosis = install.named("Deployment", component_name("diagnosis"))
    assert container_env(diagnosis["spec"]["template"]["spec"]["containers"][0])["EAGLEEYE_NATS_TOKEN_FILE"] == (
        "/etc/eagle-eye/nats-auth/token"
    )
    secrets = {("nats-token", "token"): "-1 a token; nats-server must not read it as a number"}
    with bundled_server(install, secrets, tmp_path) as url:
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
    values: dict[str, Any] = example("nats-per-component")
    values = merged(values, {"nats": {"bundled": {"port": port, "monitorPort": monitor}}})
    values |= {"routing": {"subject": "fleet.load", "snapshotSubject": "fleet.who"}}
    values |= {"subjects": {"hardwarePrefix": "fleet.hw", "diagnosisPrefix": "fleet.diag"}}
    install = helm.install(values)
    config = install.named("ConfigMap", component_name("nats-config"))["data"]["nats.conf"]
    assert '"fleet.load"' in config and '"fleet.hw.>"' in config and "eagle_eye.routing_metrics" not in config
    server = install.named("Deployment", component_name("nats"))["spec"]["template"]["spec"]["containers"][0]
    assert container_env(server)["EAGLE_EYE_HARDWARE_PASSWORD"] == '"$(EAGLE_EYE_HARDWARE_PASSWORD_VALUE)"'
    users = ("vllm", "router", "hardware", "diagnosis", "metrics-reader")
    secrets = {("eagle-eye-nats-users", user): f"-1{user}-{os.urandom(6).hex()}" for user in users}
    monitor_workload = install.named("DaemonSet", component_name("hardware-monitor-gpu"))
    diagnosis = install.named("Deployment", component_name("diagnosis"))
    vllm = install.named("Deployment", component_name("vllm-example"))
    with bundled_server(install, secrets, tmp_path) as url:
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
            await flush(nc)
        await clients["hardware"].publish("fleet.load", b"forged")
        await flush(clients["hardware"])
        await clients["router"].publish("fleet.hw.node-a", b"forged")
        await flush(clients["router"])
        await clients["hardware"].publish("fleet.hw.node-a", b"batch")
        await clients["vllm"].publish("fleet.load", b"load")
        for nc in clients.values():
            await flush(nc)
        # Each genuine message follows its sender's forgery, so once both arrived a forgery would have too.
        for _ in range(500):
            if len(got["refused"]) >= 2 and got["diagnosis"] and got["router"]:
                break
            await asyncio.sleep(0.02)
    finally:
        for nc in clients.values():
            await nc.close()
    return got


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
