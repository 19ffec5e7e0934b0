"""The ``eagle_eye`` distro and configurator, in process and under the real ``opentelemetry-instrument`` CLI."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from unittest.mock import patch

import pytest
from opentelemetry.util._importlib_metadata import entry_points

from eagleeye_otel.errors import ConfigError
from eagleeye_otel.nats_server import free_port
from eagleeye_otel.sdk import EagleEyeConfigurator, EagleEyeDistro, _distro

_BIN = Path(sys.executable).parent


def _load(group: str, name: str) -> object:
    (entry_point,) = entry_points(group=group, name=name)
    return entry_point.load()


def test_entry_points_load_by_name() -> None:
    assert _load("opentelemetry_distro", "eagle_eye") is EagleEyeDistro
    assert _load("opentelemetry_configurator", "eagle_eye") is EagleEyeConfigurator


def test_the_distro_sets_defaults_only() -> None:
    with patch.dict(os.environ, clear=True):
        EagleEyeDistro().configure()
        assert os.environ["OTEL_METRICS_EXPORTER"] == "prometheus"
        assert os.environ["OTEL_PYTHON_CONFIGURATOR"] == "eagle_eye"
    user = {"OTEL_METRICS_EXPORTER": "otlp", "OTEL_PYTHON_CONFIGURATOR": "other"}
    with patch.dict(os.environ, user, clear=True):
        EagleEyeDistro().configure()
        assert dict(os.environ) == user


def test_the_configurator_logs_a_bad_setting_and_carries_on(caplog: pytest.LogCaptureFixture) -> None:
    error = ConfigError("OTEL_EXPORTER_PROMETHEUS_PORT", "x", "must be a port number")
    with (
        patch.object(_distro, "configure_global_meter_provider", side_effect=error),
        caplog.at_level(logging.ERROR),
    ):
        EagleEyeConfigurator().configure(auto_instrumentation_version="0.66b2")
    assert "OTEL_EXPORTER_PROMETHEUS_PORT='x'" in caplog.text


# -- under opentelemetry-instrument ------------------------------------------------------------------------

_APP = """
import json, multiprocessing, os, sys, urllib.request
from opentelemetry import metrics
from eagleeye_otel.sdk import configure_global_meter_provider

def child_view():
    return type(metrics.get_meter_provider()).__name__, os.environ.get("EAGLEEYE_OWNER_PID")

if __name__ == "__main__":
    metrics.get_meter("probe").create_counter("probe.requests").add(3, {"model": "tiny"})
    report = {"pid": os.getpid(), "provider": type(metrics.get_meter_provider()).__name__}
    try:
        report["again_same"] = configure_global_meter_provider() is metrics.get_meter_provider()
    except ValueError as error:
        report["again_error"] = str(error)
    for method in ("spawn", "fork"):
        with multiprocessing.get_context(method).Pool(1) as pool:
            report[method] = pool.apply(child_view)
    port = os.environ.get("OTEL_EXPORTER_PROMETHEUS_PORT")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            report["scrape"] = response.read().decode()
    except OSError as error:
        report["scrape_error"] = str(error)
    print(json.dumps(report))
"""


def _instrumented(tmp_path: Path, **env: str) -> tuple[dict[str, object], str]:
    app = tmp_path / "app.py"
    app.write_text(_APP)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "EAGLEEYE_"))}
    result = subprocess.run(
        [str(_BIN / "opentelemetry-instrument"), sys.executable, str(app)],
        env={**clean, "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return report, result.stderr


def test_one_pipeline_in_the_main_process_and_none_in_its_children(tmp_path: Path) -> None:
    port = free_port()
    report, stderr = _instrumented(tmp_path, OTEL_EXPORTER_PROMETHEUS_PORT=str(port))
    assert report["provider"] == "MeterProvider"
    assert report["again_same"], "a second configure must reuse the provider, not build another"
    # The spawned child ran the distro and configurator again (contrib >= 0.63b0) and set nothing up.
    assert report["spawn"] == ["_ProxyMeterProvider", str(report["pid"])]
    # The forked child inherits the provider object, whose readers stay silent there (see test_pipeline).
    assert report["fork"] == ["MeterProvider", str(report["pid"])]
    assert "Address already in use" not in stderr
    assert "Traceback" not in stderr
    lines = str(report["scrape"]).splitlines()
    samples = [line for line in lines if line.startswith("probe_requests_total")]
    assert len(samples) == 1 and 'model="tiny"' in samples[0] and samples[0].endswith(" 3.0")
    assert sum(line.startswith("target_info{") for line in lines) == 1


def test_the_user_choice_wins_over_the_distro_default(tmp_path: Path) -> None:
    port = free_port()
    report, _ = _instrumented(tmp_path, OTEL_METRICS_EXPORTER="none", OTEL_EXPORTER_PROMETHEUS_PORT=str(port))
    assert report["provider"] == "MeterProvider"
    assert "scrape_error" in report, "no exporter was asked for, so nothing may listen"


def test_a_taken_port_logs_one_error_naming_the_variable_and_the_app_runs(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        report, stderr = _instrumented(tmp_path, OTEL_EXPORTER_PROMETHEUS_PORT=str(held.getsockname()[1]))
    assert report["provider"] == "_ProxyMeterProvider"
    assert "OTEL_EXPORTER_PROMETHEUS_PORT" in str(report["again_error"]), "a direct call raises the error"
    assert stderr.count("Eagle Eye metrics are disabled: OTEL_EXPORTER_PROMETHEUS_PORT=") == 1, stderr
    assert "Traceback" not in stderr
