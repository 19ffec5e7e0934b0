"""Every PromQL expression of the dashboards and rules, evaluated by a real Prometheus that scraped a real run.

One run, one of each: a real vLLM server on the tiny model (the Eagle Eye plugin serving Prometheus), the
``eagle-eye hardware-monitor`` process on the NVML and DCMI C doubles, and the ``eagle-eye diagnose`` service reading
the monitor over a real nats-server. The doubles play a node in trouble, so that the event series exist: GPU 1 runs
at 91 °C with its thermal-slowdown reasons active, has uncorrected ECC errors and reports Xid 79 through NVML and the
kernel log; GPU 0 logs Xid 43 (an application's fault: an info finding); the NPU has a major alarm and an error
code. Prometheus scrapes the three every second and loads ``deploy/prometheus/rules`` (their groups evaluated every
second instead of every 15 s, nothing else changed).

After a few completions, every expression must return at least one series:

- dashboard queries with Grafana's variables set to "All" and ``$__rate_interval`` and friends to a minute
  (``tests/helpers/promql.py``); a stat's ``or vector(0)`` fallback is cut off first, since it would answer even
  for a misspelt metric;
- recording rules as written, and their recorded series as Prometheus stored them;
- the KEDA triggers' and prometheus-adapter's queries, without the label matchers that pick the examples'
  namespace and model;
- alert conditions with their comparisons made ``bool`` comparisons (``x > 0`` becomes ``x > bool 0``): the same
  series, 0 or 1, where the bare condition would return nothing for an alert that is quiet by design in this run
  (the queue does not grow for 10 minutes here). The alerts that should hold in this scenario must also be
  pending or firing as written: thermal throttling, an accelerator failed, a critical finding. Then the monitor and
  vLLM are stopped, and both stale-instance conditions must hold as written.

Prometheus is started here rather than with the shared ``start_prometheus`` fixture, which has no rule files:
this one loads the rules and evaluates them. No timing is asserted: every wait polls for the data and fails only at
a generous deadline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from eagleeye_otel.nats_server import free_port
from tests.helpers import promql

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

EAGLE_EYE = str(Path(sys.executable).parent / "eagle-eye")
DOUBLES = promql.ROOT / "tests" / "receivers" / "hardware" / "doubles"
NODE = "gpu-node-live"
DEADLINE_S = 120.0
REQUESTS = 3

Samples = list[tuple[dict[str, str], float]]


# -- the node in trouble ----------------------------------------------------------------------------------------


def _gpu(i: int, **changes: object) -> list[str]:
    values: dict[str, object] = {
        "uuid": f"GPU-0000000{i}-aaaa-bbbb-cccc-00000000000{i}",
        "name": "NVIDIA H100 80GB HBM3",
        "serial": f"16501234567{i}",
        "vbios": "96.00.99.00.01",
        "pci_bus_id": f"00000000:{0x3B + i:02X}:00.0",
        "util_gpu": 80,
        "util_mem": 40,
        "mem_total": 85899345920,
        "mem_used": 10737418240,
        "temp": 60,
        "temp_slowdown": 87,
        "temp_shutdown": 92,
        "power_mw": 350000,
        "power_limit_mw": 700000,
        "energy_mj": 123456789,
        "clock_sm_mhz": 1980,
        "clock_mem_mhz": 2619,
        "clock_reasons": 0,
        "pcie_gen": 5,
        "pcie_width": 16,
        "pcie_tx_kbps": 1000,
        "pcie_rx_kbps": 2000,
        "supported_events": 0xC008,
        **changes,
    }
    # Field values: memory temperature, ECC (volatile and lifetime), remapped rows, PCIe replays, recovery action.
    fields = {82: "70 ui", 3: 0, 4: 0, 5: 0, 6: 0, 142: "0 ui", 143: "0 ui", 144: "0 ui", 145: "0 ui"}
    fields |= {94: "0 ui", 230: "0 ui"}
    if i == 1:
        fields |= {3: 12, 4: 2, 5: 40, 6: 2}
    return [f"gpu {i} {key} {value}" for key, value in values.items()] + [
        f"gpu {i} field {field} {value}" for field, value in fields.items()
    ]


NVML_SCENARIO = "\n".join(
    [
        "driver_version 570.124.06",
        "nvml_version 12.570.124.06",
        "event 1 1 0x8 79",  # GPU 1: Xid 79 (fallen off the bus) through NVML's events
        *_gpu(0),
        *_gpu(1, temp=91, clock_reasons=0x64),  # sw_power_cap, sw and hw thermal slowdown
    ]
)
DCMI_SCENARIO = """\
driver_version 24.1.rc2
chip 0 0 logic_id 0
chip 0 0 health 2
chip 0 0 errorcode 0x80E01801
chip 0 0 temperature 45
chip 0 0 power 905
chip 0 0 utilization 2 50
chip 0 0 utilization 6 25
chip 0 0 utilization 13 60
chip 0 0 hbm 65536 16384
chip 0 0 frequency 7 1800
chip 0 0 chip_info Ascend 910B3 V1 20
"""
KERNEL_LOG = (
    "[  700.000000] NVRM: Xid (PCI:0000:3b:00): 43, pid=2300, name=vllm, Ch 00000010\n"  # info: an app's fault
    "[  812.004523] NVRM: Xid (PCI:0000:3c:00): 79, pid=2411, name=python3, GPU has fallen off the bus.\n"
    "[  950.000000] NVRM: Xid (PCI:0000:3c:00): truncated\n"
)


def _build(source: str, target: Path, *flags: str) -> Path:
    gcc = shutil.which("gcc")
    assert gcc, "gcc is needed to build the C test doubles"
    subprocess.run([gcc, "-shared", "-fPIC", "-O1", "-o", str(target), str(DOUBLES / source), *flags], check=True)
    return target


# -- processes --------------------------------------------------------------------------------------------------


class Process:
    """A subprocess logging to a file, stopped with SIGTERM (then SIGKILL) at the end."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "wb") as output:
            self.popen = subprocess.Popen(args, env=env, stdout=output, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_bytes().decode(errors="replace")

    def wait_for_log(self, pattern: str) -> re.Match[str]:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text())
            if found:
                return found
            assert self.popen.poll() is None, f"{self.popen.args[:2]} exited:\n{self.text()[-4000:]}"
            time.sleep(0.1)
        raise AssertionError(f"{pattern!r} not in the log of {self.popen.args[:2]}:\n{self.text()[-4000:]}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


class Prometheus:
    """``/usr/bin/prometheus`` scraping ``targets`` (job name: address) every second, with the rules loaded."""

    BINARY = "/usr/bin/prometheus"

    def __init__(self, workdir: Path, targets: dict[str, str], rule_files: list[Path]) -> None:
        self.port = free_port("127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [address]}]} for job, address in targets.items()
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.process = Process(
            [
                self.BINARY,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            dict(os.environ),
            workdir / "prometheus.log",
        )
        self.wait(self._ready, "Prometheus ready")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            assert self.process.popen.poll() is None, self.process.text()
            return False

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> Samples:
        try:
            data = self.api("query", query=expr)
        except urllib.error.HTTPError as error:
            raise AssertionError(f"{expr!r}: {error.read().decode(errors='replace')}") from None
        assert data["resultType"] == "vector", (expr, data)
        return [(sample["metric"], float(sample["value"][1])) for sample in data["result"]]

    def wait(self, predicate: Callable[[], object], what: str) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {DEADLINE_S:g} s; targets: {self.api('targets')}")
            time.sleep(0.5)

    def returns_data(self, expr: str, within_s: float = 10.0) -> bool:
        """Whether ``expr`` returns a series, polled for ``within_s`` seconds."""
        deadline = time.monotonic() + within_s
        while not self.query(expr):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        return True

    def wait_for(self, expr: str, predicate: Callable[[Samples], bool] = bool) -> Samples:
        samples: Samples = []

        def holds() -> bool:
            nonlocal samples
            samples = self.query(expr)
            return predicate(samples)

        self.wait(holds, repr(expr))
        return samples


def _fast_rules(workdir: Path) -> list[Path]:
    """The rule files as shipped, each group evaluated every second."""
    files = []
    for path in promql.rule_files():
        document = yaml.safe_load(path.read_text())
        for group in document["groups"]:
            group["interval"] = "1s"
        (workdir / path.name).write_text(yaml.safe_dump(document))
        files.append(workdir / path.name)
    return files


# -- the test ---------------------------------------------------------------------------------------------------


def test_every_dashboard_and_rule_expression_returns_data(start_vllm, nats_server, tmp_path):
    nvml = _build("nvml_double.c", tmp_path / "libnvidia-ml.so.1", "-Wl,-soname,libnvidia-ml.so.1")
    dcmi = _build("dcmi_double.c", tmp_path / "libdcmi.so")
    (tmp_path / "nvml.txt").write_text(NVML_SCENARIO)
    (tmp_path / "dcmi.txt").write_text(DCMI_SCENARIO)
    (tmp_path / "kern.log").write_text(KERNEL_LOG)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("EAGLEEYE_", "OTEL_"))}
    base["EAGLEEYE_NATS_URL"] = nats_server.url
    processes: list[Process] = []
    try:
        diagnosis_port = free_port("127.0.0.1")
        diagnosis_env = {
            **base,
            "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
            "OTEL_EXPORTER_PROMETHEUS_PORT": str(diagnosis_port),
            "EAGLEEYE_DIAGNOSIS_HTTP": "off",
        }
        diagnosis = Process([EAGLE_EYE, "diagnose"], diagnosis_env, tmp_path / "diagnosis.log")
        processes.append(diagnosis)
        monitor_env = {
            **base,
            "EAGLEEYE_NODE_NAME": NODE,
            "EAGLEEYE_NVML_LIBRARY": str(nvml),
            "EAGLEEYE_DCMI_LIBRARY": str(dcmi),
            "EAGLEEYE_KERNEL_LOG": str(tmp_path / "kern.log"),
            "EAGLEEYE_NVML_DOUBLE_SCENARIO": str(tmp_path / "nvml.txt"),
            "EAGLEEYE_DCMI_DOUBLE_SCENARIO": str(tmp_path / "dcmi.txt"),
        }
        monitor_args = ["hardware-monitor", "--prometheus-host", "127.0.0.1", "--prometheus-port", "0"]
        monitor = Process([EAGLE_EYE, *monitor_args], monitor_env, tmp_path / "monitor.log")
        processes.append(monitor)
        monitor_port = int(monitor.wait_for_log(r"http://127\.0\.0\.1:(\d+)/metrics").group(1))

        vllm_port = free_port("127.0.0.1")
        vllm = start_vllm(
            "promql-live",
            OTEL_EXPORTER_PROMETHEUS_HOST="127.0.0.1",
            OTEL_EXPORTER_PROMETHEUS_PORT=str(vllm_port),
            OTEL_SERVICE_NAME="vllm-promql-live",
            EAGLEEYE_ROUTING_ENABLED="false",
        )
        prometheus_dir = tmp_path / "prometheus"
        prometheus_dir.mkdir()
        targets = {
            "vllm": f"127.0.0.1:{vllm_port}",
            "eagle-eye-hardware-monitor": f"127.0.0.1:{monitor_port}",
            "eagle-eye-diagnosis": f"127.0.0.1:{diagnosis_port}",
        }
        prometheus = Prometheus(prometheus_dir, targets, _fast_rules(prometheus_dir))
        processes.append(prometheus.process)

        for i in range(REQUESTS):
            vllm.complete(f"Request {i}: tell the tiny model a story", max_tokens=8)
        # Everything the queries read is in: the requests, the NVML Xid, a finding; and history for rate() and
        # deriv(): every target scraped 5 times, the token counter and the per-replica queue rule recorded 3 times.
        prometheus.wait_for(
            "gen_ai_server_time_to_first_token_seconds_count", lambda s: [v for _, v in s] == [REQUESTS]
        )
        prometheus.wait_for("eagleeye_hw_gpu_xid_total")
        prometheus.wait_for("eagleeye_diagnosis_findings")
        prometheus.wait_for("min(count_over_time(up[1m]))", lambda s: bool(s) and s[0][1] >= 5)
        prometheus.wait_for("count_over_time(vllm_generation_tokens_total[1m])", lambda s: bool(s) and s[0][1] >= 3)
        prometheus.wait_for(
            "count_over_time(model:vllm_num_requests_waiting:avg_per_replica[1m])", lambda s: bool(s) and s[0][1] >= 3
        )

        expressions: list[tuple[str, str]] = []
        for path in promql.dashboard_files():
            variables = promql.all_values(path)
            for query in promql.dashboard_queries(path):
                expr = promql.grafana_to_promql(query.expr, variables).replace(" or vector(0)", "")
                expressions.append((query.where, expr))
        for query in promql.rule_queries():
            expressions.append((query.where, promql.without_comparisons(query.expr) if query.alert else query.expr))
        for query in promql.autoscaling_queries(label_matchers=""):
            # The examples select their own namespace and model; this run has no namespace label and another model.
            expressions.append((query.where, re.sub(r"\{[^{}]*\}", "", query.expr)))
        expressions += [(f"recorded series {name}", name) for name in sorted(promql.recording_rule_names())]
        # A rule's first evaluation over fresh data may lag a second behind the scrape: each expression gets a few
        # seconds to answer; a wrong name never does.
        empty = [f"{where}: {expr}" for where, expr in expressions if not prometheus.returns_data(expr)]
        assert not empty, "expressions that returned no series:\n" + "\n".join(empty)

        rules = [rule for group in prometheus.api("rules")["groups"] for rule in group["rules"]]
        assert len(rules) == len(promql.rule_queries())
        assert [rule["name"] for rule in rules if rule["health"] != "ok"] == []
        for alert in ("EagleEyeGpuThermalThrottling", "EagleEyeAcceleratorFailed", "EagleEyeHardwareCriticalFinding"):
            prometheus.wait_for(f'ALERTS{{alertname="{alert}"}}')
        (throttling,) = prometheus.query('ALERTS{alertname="EagleEyeGpuThermalThrottling"}')
        assert throttling[0]["hw_name"] == "GPU 1" and throttling[0]["eagleeye_node_name"] == NODE
        failed = prometheus.query('ALERTS{alertname="EagleEyeAcceleratorFailed"}')
        assert {labels["hw_id"] for labels, _ in failed} >= {"npu-0-0"}

        # Stale: the monitor, then vLLM, stop answering while their targets stay configured.
        alerts = {query.where.split(": ")[1]: query.expr for query in promql.rule_queries() if query.alert}
        monitor.stop()
        (stale,) = prometheus.wait_for(alerts["EagleEyeHardwareMonitorStale"])
        assert stale[0]["eagleeye_node_name"] == NODE
        vllm.stop()
        (stale,) = prometheus.wait_for(alerts["EagleEyeVllmInstanceStale"])
        assert stale[0]["instance"] == targets["vllm"]
    finally:
        for process in reversed(processes):
            process.stop()
