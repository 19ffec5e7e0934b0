"""The probes hit endpoints the components really serve: nats-server and ``eagle-eye`` run with the rendered args
and env, and every probe's path answers 200.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from eagleeye_otel.nats_server import free_port
from tests.deploy.helm_support import (
    Helm,
    bundled_server,
    component_name,
    container_env,
    http_status,
)


def test_the_nats_probe_answers_on_the_rendered_command(helm: Helm, tmp_path: Path) -> None:
    """The bundled server's args, run by the nats-server Eagle Eye's tests use: /healthz answers on the probe's port."""
    port, monitor = free_port(), free_port()
    install = helm.install({"nats": {"bundled": {"port": port, "monitorPort": monitor}}})
    container = install.named("Deployment", component_name("nats"))["spec"]["template"]["spec"]["containers"][0]
    # The image's entry point is nats-server; the chart only passes arguments and its ConfigMap.
    with bundled_server(install, {}, tmp_path):
        probe = container["livenessProbe"]["httpGet"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert http_status(f"http://127.0.0.1:{ports[probe['port']]}{probe['path']}") == 200


def test_the_hardware_monitor_probe_answers_on_the_rendered_command(helm: Helm, nats_server: Any) -> None:
    """`eagle-eye` run with the DaemonSet's args and env (off a GPU node): the probe's path answers 200."""
    port = free_port()
    install = helm.install({"hardwareMonitor": {"port": port, "kernelLog": {"mode": "off"}}})
    monitor = install.named("DaemonSet", component_name("hardware-monitor-gpu"))
    container = monitor["spec"]["template"]["spec"]["containers"][0]
    env = {k: v for k, v in container_env(container).items() if isinstance(v, str)}
    env.update(EAGLEEYE_NATS_URL=nats_server.url, EAGLEEYE_NODE_NAME="node-a", PATH=os.environ["PATH"])
    executable = str(Path(sys.executable).with_name("eagle-eye"))
    process = subprocess.Popen(
        [executable, *container["args"]], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            path = container[probe]["httpGet"]["path"]
            assert http_status(f"http://127.0.0.1:{port}{path}") == 200
    finally:
        process.terminate()
        process.wait(10)


def test_the_diagnosis_probes_answer_on_the_rendered_command(helm: Helm, nats_server: Any) -> None:
    """`eagle-eye diagnose` run with the Deployment's args and env: /healthz on the probes' port, /metrics on the
    port the scrape annotations name."""
    http, metrics = free_port(), free_port()
    install = helm.install({"diagnosis": {"httpPort": http, "metricsPort": metrics}})
    deployment = install.named("Deployment", component_name("diagnosis"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {k: v for k, v in container_env(container).items() if isinstance(v, str)}
    env.update(EAGLEEYE_NATS_URL=nats_server.url, PATH=os.environ["PATH"])
    executable = str(Path(sys.executable).with_name("eagle-eye"))
    process = subprocess.Popen(
        [executable, *container["args"]], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            get = container[probe]["httpGet"]
            assert http_status(f"http://127.0.0.1:{ports[get['port']]}{get['path']}") == 200
        scrape = deployment["spec"]["template"]["metadata"]["annotations"]
        assert http_status(f"http://127.0.0.1:{scrape['prometheus.io/port']}{scrape['prometheus.io/path']}") == 200
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert process.returncode in (0, -15), stderr.decode()[-2000:]
