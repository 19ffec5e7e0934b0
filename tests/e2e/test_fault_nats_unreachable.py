"""NATS never reachable: ``vllm serve`` with Eagle Eye becomes ready no later than without it, in the same run.

Two real vLLM servers on CPU, one after the other: first without Eagle Eye (``VLLM_PLUGINS`` leaves the
``eagle_eye`` stat-logger plugin out, everything else as usual), then with the plugin pointed at two NATS
servers that never answer, each in its own way: a closed port (the connect is refused at once) and a socket
that accepts TCP connections but never speaks (nats-py waits for the server's INFO until its connect timeout,
and the whole attempt up to ``CONNECT_ATTEMPT_DEADLINE_S``). Anything on vLLM's start-up path that waited for
NATS would show as seconds of delay; the margin allowed is well below one such wait. The precise comparison,
with the run-to-run noise, is ``bench/bench_nats_outage.py``.
"""

from __future__ import annotations

import http.client
import socket
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Any

import pytest

from eagleeye_otel.nats_options import CONNECT_ATTEMPT_DEADLINE_S
from eagleeye_otel.nats_server import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

READY_MARGIN_S = 4.0
"""How much later the server with Eagle Eye may become ready: start-up noise on a shared 2-core machine, and
well below a single NATS connect attempt (``CONNECT_ATTEMPT_DEADLINE_S``) that anything blocking would cost."""
MAX_TOKENS = 16


def _plugins_without_eagle_eye() -> str:
    """``VLLM_PLUGINS`` naming every installed vLLM plugin but ours (empty would also drop vLLM's own)."""
    names = {
        ep.name
        for group in ("vllm.general_plugins", "vllm.platform_plugins", "vllm.stat_logger_plugins")
        for ep in entry_points(group=group)
    }
    names.discard("eagle_eye")
    return ",".join(sorted(names)) or "none"


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    """A port whose listener accepts connections (the kernel's backlog) and never sends a byte."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


@pytest.fixture(scope="module")
def ready_times(start_vllm: Callable[..., Any], silent_port: int) -> dict[str, Any]:
    """Start vLLM without Eagle Eye, then with it and NATS unreachable; each serves one completion."""
    assert READY_MARGIN_S < CONNECT_ATTEMPT_DEADLINE_S / 2
    result: dict[str, Any] = {}
    for name, env in (
        ("without_eagle_eye", {"VLLM_PLUGINS": _plugins_without_eagle_eye()}),
        (
            "nats_unreachable",
            {
                "EAGLEEYE_NATS_URL": f"nats://127.0.0.1:{free_port()},nats://127.0.0.1:{silent_port}",
                "OTEL_METRICS_EXPORTER": "prometheus,eagle_eye_nats",
            },
        ),
    ):
        eagle_eye_port = free_port()
        server = start_vllm(
            f"ready-{name}",
            OTEL_EXPORTER_PROMETHEUS_HOST="127.0.0.1",
            OTEL_EXPORTER_PROMETHEUS_PORT=str(eagle_eye_port),
            **env,
        )
        try:
            completion = server.complete("Does anybody hear me?", max_tokens=MAX_TOKENS)
            result[name] = server.ready_after_s
            result[f"{name}_tokens"] = completion["usage"]["completion_tokens"]
            result[f"{name}_eagle_eye_metrics"] = _scrape(eagle_eye_port)
            result[f"{name}_log"] = server.log_text()
        finally:
            server.stop()
    print(
        f"\nready after: without Eagle Eye {result['without_eagle_eye']:.1f} s, "
        f"with Eagle Eye and NATS unreachable {result['nats_unreachable']:.1f} s"
    )
    return result


def test_ready_no_later_than_without_eagle_eye(ready_times: dict[str, Any]) -> None:
    assert ready_times["nats_unreachable"] <= ready_times["without_eagle_eye"] + READY_MARGIN_S, ready_times


def test_both_serve(ready_times: dict[str, Any]) -> None:
    assert ready_times["without_eagle_eye_tokens"] == MAX_TOKENS
    assert ready_times["nats_unreachable_tokens"] == MAX_TOKENS


def _scrape(port: int) -> str | None:
    """Eagle Eye's own Prometheus endpoint, or ``None`` when nothing listens there."""
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request("GET", "/metrics")
            return connection.getresponse().read().decode()
        finally:
            connection.close()
    except OSError:
        return None


def test_plugin_ran_only_where_meant(ready_times: dict[str, Any]) -> None:
    """The baseline really ran without Eagle Eye (its endpoint never opened), the other with it, without errors."""
    assert ready_times["without_eagle_eye_eagle_eye_metrics"] is None
    served = ready_times["nats_unreachable_eagle_eye_metrics"]
    assert served is not None and "gen_ai_" in served, (served or "")[:2000]
    with_plugin = ready_times["nats_unreachable_log"]
    assert "Failed to load plugin eagle_eye" not in with_plugin
    assert "Eagle Eye is disabled" not in with_plugin
    assert "Traceback" not in with_plugin, with_plugin[-6000:]
