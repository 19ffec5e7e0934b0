"""A real vLLM server on CPU, scraped by a real Prometheus: the plugin's metrics as PromQL sees them.

Two ways in, one server each (they are heavy on a 2-core machine):

- the plugin alone: installing Eagle Eye is enough; with no meter provider configured, the plugin builds one from
  the ``OTEL_*`` variables and serves Prometheus on its own port;
- ``opentelemetry-instrument``: the launcher puts its ``sitecustomize`` directory on ``PYTHONPATH`` and execs
  the command, so that Python runs the distro, the configurator and the instrumentors at start-up, in every
  Python process the server starts. The fixture launches the interpreter itself, so the test sets that
  ``PYTHONPATH``, which is all the launcher does besides turning flags into ``OTEL_*`` variables (and putting the
  working directory on the path for Django-style apps); ``tests/sdk/test_distro.py`` runs the CLI itself.
  vLLM's engine core is started with ``spawn`` here, so that it runs the whole auto-instrumentation again, as it
  does once CUDA is initialised.

Completions use ``ignore_eos`` so that each one generates exactly ``max_tokens`` tokens.
"""

from __future__ import annotations

import http.client
import os
from pathlib import Path
from typing import Any

import opentelemetry.instrumentation.auto_instrumentation as auto_instrumentation
import psutil
import pytest

from eagleeye_otel.nats_server import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

INSTANCE_ID = "e2e-vllm"
SERVED_MODEL = "tiny"
REQUESTS = 3
MAX_TOKENS = 8
_ENGINE = f'{{gen_ai_request_model="{SERVED_MODEL}",eagleeye_instance_id="{INSTANCE_ID}",vllm_engine="0"}}'
_LOG_ERRORS = (
    "Address already in use",
    "Cannot call collect",
    "Eagle Eye metrics are disabled",
    "Eagle Eye failed",
    "Eagle Eye could not",
    "Failed to auto initialize OpenTelemetry",
)
"""What the server's log must not contain (vLLM's own shutdown tracebacks are expected: the group gets SIGTERM)."""


def _metrics_env(port: int) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
        "OTEL_EXPORTER_PROMETHEUS_PORT": str(port),
        "OTEL_SERVICE_NAME": "vllm-e2e",
        "EAGLEEYE_ROUTING_ENABLED": "false",
    }


def _vllm_metrics(server: Any) -> str:
    """vLLM's own ``/metrics`` on its API port."""
    connection = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        body = response.read().decode()
    finally:
        connection.close()
    assert response.status == 200
    return body


def _vllm_sample(body: str, name: str) -> float:
    """The value of vLLM's single-engine sample ``name`` (``vllm:...{labels} value``)."""
    values = [float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith(name + "{")]
    assert len(values) == 1, f"{name}: {values}"
    return values[0]


def _one(prometheus: Any, promql: str, expected: float) -> dict[str, str]:
    """Wait until ``promql`` gives exactly one sample equal to ``expected``; return its labels."""
    samples = prometheus.wait_for(promql, lambda s: len(s) == 1 and s[0][1] == expected, timeout=30)
    labels: dict[str, str] = samples[0][0]
    return labels


def _serve_and_check(server: Any, prometheus: Any, port: int) -> None:
    """Send the requests, then compare the scraped series with the completions' usage and with vLLM's own."""
    prompt_tokens = completion_tokens = 0
    for i in range(REQUESTS):
        usage = server.complete(f"Request {i}: tell the tiny model a story", max_tokens=MAX_TOKENS)["usage"]
        prompt_tokens += usage["prompt_tokens"]
        completion_tokens += usage["completion_tokens"]
    assert completion_tokens == REQUESTS * MAX_TOKENS

    _one(prometheus, f"gen_ai_server_time_to_first_token_seconds_count{_ENGINE}", REQUESTS)
    _one(prometheus, f"gen_ai_server_request_duration_seconds_count{_ENGINE}", REQUESTS)
    _one(prometheus, f"vllm_request_generation_tokens_count{_ENGINE}", REQUESTS)
    _one(prometheus, f"vllm_prompt_tokens_total{_ENGINE}", prompt_tokens)
    _one(prometheus, f"vllm_generation_tokens_total{_ENGINE}", completion_tokens)
    _one(prometheus, 'vllm_request_success_total{vllm_finished_reason="length"}', REQUESTS)
    for gauge in ("vllm_num_requests_waiting", "vllm_num_requests_running"):
        labels = _one(prometheus, f"{gauge}{_ENGINE}", 0)  # idle again after the requests
        assert labels["gen_ai_provider_name"] == "vllm"
        assert labels["otel_scope_name"] == "eagleeye_otel.instrumentation.vllm"
        assert labels["instance"] == f"127.0.0.1:{port}" and labels["job"] == "eagle_eye"
    # One process exports: every series exactly once, one target_info, the target up.
    _one(prometheus, "count(gen_ai_server_time_to_first_token_seconds_count)", 1)
    info = _one(prometheus, "target_info", 1)
    assert info["service_name"] == "vllm-e2e"
    _one(prometheus, 'up{job="eagle_eye"}', 1)

    # vLLM's own endpoint agrees, and does not carry Eagle Eye's series (the private registry).
    native = _vllm_metrics(server)
    assert _vllm_sample(native, "vllm:time_to_first_token_seconds_count") == REQUESTS
    assert _vllm_sample(native, "vllm:prompt_tokens_total") == prompt_tokens
    assert _vllm_sample(native, "vllm:generation_tokens_total") == completion_tokens
    assert "gen_ai_server_time_to_first_token" not in native
    assert "target_info" not in native


def _listeners(leader: int, port: int) -> list[int]:
    """The pids, among the vLLM server and its descendants, that listen on ``port``."""
    root = psutil.Process(leader)
    return [
        process.pid
        for process in (root, *root.children(recursive=True))
        for connection in process.net_connections(kind="tcp")
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port
    ]


def test_the_plugin_alone_serves_prometheus(start_vllm: Any, start_prometheus: Any) -> None:
    port = free_port()
    server = start_vllm("metrics-plugin", **_metrics_env(port))
    try:
        prometheus = start_prometheus([f"127.0.0.1:{port}"])
        _serve_and_check(server, prometheus, port)
        assert _listeners(server.pid, port) == [server.pid]
    finally:
        server.stop()
    log = server.log_text()
    assert not [e for e in _LOG_ERRORS if e in log], server.log_tail()


def test_opentelemetry_instrument_exports_from_the_api_server_only(start_vllm: Any, start_prometheus: Any) -> None:
    port = free_port()
    sitecustomize_dir = str(Path(auto_instrumentation.__file__).parent)
    server = start_vllm(
        "metrics-instrumented",
        **_metrics_env(port),
        PYTHONPATH=sitecustomize_dir,
        VLLM_WORKER_MULTIPROC_METHOD="spawn",
    )
    try:
        prometheus = start_prometheus([f"127.0.0.1:{port}"])
        _serve_and_check(server, prometheus, port)
        assert _listeners(server.pid, port) == [server.pid]
        # Every child inherits the launcher's PYTHONPATH, so it ran sitecustomize again, and the owner mark, so
        # the configurator there set nothing up (had it tried, binding the port would have logged an error).
        # vLLM retitles its engine core and workers, which blanks their /proc environ; the others show it.
        children = psutil.Process(server.pid).children(recursive=True)
        readable = [child.environ() for child in children if child.environ()]
        assert len(readable) < len(children), "expected vLLM's retitled engine core among the children"
        assert readable, "no child with a readable environment (multiprocessing's resource tracker has one)"
        for environ in readable:
            assert sitecustomize_dir in environ.get("PYTHONPATH", "").split(os.pathsep), environ
            assert environ.get("EAGLEEYE_OWNER_PID") == str(server.pid), environ
    finally:
        server.stop()
    log = server.log_text()
    assert not [e for e in _LOG_ERRORS if e in log], server.log_tail()
