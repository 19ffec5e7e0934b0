#!/usr/bin/env python3
"""Write Eagle Eye's Grafana dashboards to ``deploy/helm/eagle-eye/dashboards/*.json``.

The dashboards are generated so that their panels share one layout, one data-source variable and the same label
filters; edit this file and run it (``.venv/bin/python scripts/generate_dashboards.py``), never the JSON.
``tests/deploy/test_dashboards.py`` fails when the JSON differs from what this script writes, when a query names a
metric or label that ``eagleeye_otel.semconv`` does not define, and ``tests/e2e/test_promql_live.py`` evaluates
every query on a real scrape of vLLM, the hardware monitor and the diagnosis service.

Hardware series carry the device (``hw_id``, ``hw_name``) but not the node: the node is the monitor's resource,
which the exporter writes on ``target_info``. Hardware queries join it in by ``(job, instance)`` (:func:`on_node`),
which also filters by the ``$node`` variable.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "deploy" / "helm" / "eagle-eye" / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
TAGS = ["eagle-eye"]

# -- selectors --------------------------------------------------------------------------------------------------

VLLM = 'namespace=~"$namespace", gen_ai_request_model=~"$model"'
"""The vLLM panels' filter: the namespace and model variables."""
VLLM_INSTANCES = VLLM + ', eagleeye_instance_id=~"$instance_id"'
"""The per-instance view's filter: also the instance variable."""
MONITOR = 'otel_scope_name="eagleeye_otel.receivers.hardware"'
"""The hardware monitor's own series where the diagnosis service reports the same name (``hw_status``)."""
DIAGNOSIS = 'otel_scope_name="eagleeye_otel.diagnosis"'
NODE_INFO = 'max by (job, instance, eagleeye_node_name) (target_info{eagleeye_node_name=~"$node"})'


def on_node(series: str) -> str:
    """``series`` with the monitor's node name joined in, keeping only the selected nodes."""
    return f"({series}) * on (job, instance) group_left (eagleeye_node_name) {NODE_INFO}"


def quantile(q: float, histogram: str, selector: str, by: str) -> str:
    return f"histogram_quantile({q}, sum by ({by}, le) (rate({histogram}_bucket{{{selector}}}[$__rate_interval])))"


# -- dashboard model --------------------------------------------------------------------------------------------


@dataclass
class Target:
    expr: str
    legend: str = ""
    instant: bool = False
    table: bool = False

    def json(self, ref: str) -> dict[str, Any]:
        target: dict[str, Any] = {
            "datasource": DS,
            "refId": ref,
            "expr": self.expr,
            "legendFormat": self.legend or "__auto",
            "range": not self.instant,
            "instant": self.instant,
        }
        if self.table:
            target["format"] = "table"
        return target


@dataclass
class Panel:
    title: str
    description: str
    targets: list[Target]
    kind: str = "timeseries"
    unit: str = "short"
    width: int = 8
    height: int = 8
    min: float | None = None
    max: float | None = None
    thresholds: list[tuple[float | None, str]] = field(default_factory=lambda: [(None, "green")])
    no_value: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    transformations: list[dict[str, Any]] = field(default_factory=list)
    overrides: list[dict[str, Any]] = field(default_factory=list)

    def json(self, panel_id: int, x: int, y: int) -> dict[str, Any]:
        defaults: dict[str, Any] = {
            "unit": self.unit,
            "thresholds": {
                "mode": "absolute",
                "steps": [{"color": color, "value": value} for value, color in self.thresholds],
            },
        }
        if self.min is not None:
            defaults["min"] = self.min
        if self.max is not None:
            defaults["max"] = self.max
        if self.no_value is not None:
            defaults["noValue"] = self.no_value
        if self.kind == "timeseries":
            defaults["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never"}
            defaults["color"] = {"mode": "palette-classic"}
        elif self.kind in ("stat", "gauge", "bargauge"):
            defaults["color"] = {"mode": "thresholds"}
        options = dict(self.options)
        if self.kind == "timeseries":
            options.setdefault("legend", {"displayMode": "list", "placement": "bottom", "showLegend": True})
            options.setdefault("tooltip", {"mode": "multi", "sort": "desc"})
        elif self.kind == "stat":
            options.setdefault("reduceOptions", {"calcs": ["lastNotNull"], "fields": "", "values": False})
            options.setdefault("colorMode", "value")
            options.setdefault("graphMode", "area")
        elif self.kind == "table":
            options.setdefault("showHeader", True)
        panel: dict[str, Any] = {
            "id": panel_id,
            "type": self.kind,
            "title": self.title,
            "description": self.description,
            "datasource": DS,
            "gridPos": {"h": self.height, "w": self.width, "x": x, "y": y},
            "targets": [target.json(chr(ord("A") + i)) for i, target in enumerate(self.targets)],
            "fieldConfig": {"defaults": defaults, "overrides": self.overrides},
            "options": options,
        }
        if self.transformations:
            panel["transformations"] = self.transformations
        return panel


@dataclass
class Row:
    title: str
    panels: list[Panel]


def variable(name: str, label: str, query: str, *, all_value: str = ".*", hide: int = 0) -> dict[str, Any]:
    """A multi-value query variable whose "All" is the regex ``all_value``."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "definition": query,
        "query": {"query": query, "refId": f"{name}-variable"},
        "refresh": 2,
        "sort": 1,
        "multi": True,
        "includeAll": True,
        "allValue": all_value,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "hide": hide,
        "options": [],
        "regex": "",
        "skipUrlSync": False,
    }


DATASOURCE_VARIABLE = {
    "name": "datasource",
    "label": "Data source",
    "type": "datasource",
    "query": "prometheus",
    "current": {},
    "hide": 0,
    "options": [],
    "refresh": 1,
    "regex": "",
    "skipUrlSync": False,
}
NAMESPACE_VARIABLE = variable("namespace", "Namespace", "label_values(vllm_num_requests_running, namespace)")
MODEL_VARIABLE = variable(
    "model", "Model", 'label_values(vllm_num_requests_running{namespace=~"$namespace"}, gen_ai_request_model)'
)


def dashboard(uid: str, title: str, description: str, variables: list[dict[str, Any]], rows: list[Row]) -> dict:
    panels: list[dict[str, Any]] = []
    next_id = 1
    y = 0
    for row in rows:
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id += 1
        y += 1
        x = 0
        line_height = 0
        for panel in row.panels:
            if x + panel.width > 24:
                x, y, line_height = 0, y + line_height, 0
            panels.append(panel.json(next_id, x, y))
            next_id += 1
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": TAGS,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "annotations": {"list": []},
        "links": [
            {
                "title": "Eagle Eye",
                "type": "dashboards",
                "tags": TAGS,
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
                "icon": "external link",
                "targetBlank": False,
                "tooltip": "",
                "url": "",
            }
        ],
        "templating": {"list": [DATASOURCE_VARIABLE, *variables]},
        "panels": panels,
    }


def percentiles(histogram: str, selector: str, by: str, legend: str) -> list[Target]:
    return [Target(quantile(q, histogram, selector, by), f"p{round(q * 100)} {legend}") for q in (0.5, 0.95, 0.99)]


# -- inference overview -----------------------------------------------------------------------------------------


def inference_overview() -> dict[str, Any]:
    replicas = f"count(count by (namespace, eagleeye_instance_id) (vllm_num_requests_running{{{VLLM}}}))"
    load = Row(
        "Load",
        [
            Panel(
                "Replicas",
                "vLLM servers reporting (distinct eagleeye_instance_id).",
                [Target(replicas)],
                kind="stat",
                width=4,
                height=4,
            ),
            Panel(
                "Waiting",
                "Requests waiting to be scheduled, all replicas.",
                [Target(f"sum(vllm_num_requests_waiting{{{VLLM}}})")],
                kind="stat",
                width=4,
                height=4,
                thresholds=[(None, "green"), (1, "yellow"), (20, "red")],
            ),
            Panel(
                "Running",
                "Requests in the running batches, all replicas.",
                [Target(f"sum(vllm_num_requests_running{{{VLLM}}})")],
                kind="stat",
                width=4,
                height=4,
            ),
            Panel(
                "KV cache (fullest engine)",
                "The highest KV-cache usage of any engine.",
                [Target(f"max(vllm_kv_cache_usage{{{VLLM}}})")],
                kind="stat",
                unit="percentunit",
                width=4,
                height=4,
                min=0,
                max=1,
                thresholds=[(None, "green"), (0.8, "yellow"), (0.95, "red")],
            ),
            Panel(
                "Generated tokens/s",
                "Output tokens per second, all replicas.",
                [Target(f"sum(rate(vllm_generation_tokens_total{{{VLLM}}}[$__rate_interval]))")],
                kind="stat",
                unit="short",
                width=4,
                height=4,
            ),
            Panel(
                "Finished requests/s",
                "Requests finished per second, whatever the reason.",
                [Target(f"sum(rate(vllm_request_success_total{{{VLLM}}}[$__rate_interval]))")],
                kind="stat",
                unit="reqps",
                width=4,
                height=4,
            ),
            Panel(
                "Queue",
                "Requests waiting and running, per model.",
                [
                    Target(
                        f"sum by (gen_ai_request_model) (vllm_num_requests_waiting{{{VLLM}}})",
                        "waiting {{gen_ai_request_model}}",
                    ),
                    Target(
                        f"sum by (gen_ai_request_model) (vllm_num_requests_running{{{VLLM}}})",
                        "running {{gen_ai_request_model}}",
                    ),
                ],
                width=12,
            ),
            Panel(
                "KV cache usage",
                "Average and fullest engine per model (fraction of KV-cache blocks in use).",
                [
                    Target(
                        f"avg by (gen_ai_request_model) (vllm_kv_cache_usage{{{VLLM}}})",
                        "average {{gen_ai_request_model}}",
                    ),
                    Target(
                        f"max by (gen_ai_request_model) (vllm_kv_cache_usage{{{VLLM}}})",
                        "fullest {{gen_ai_request_model}}",
                    ),
                ],
                unit="percentunit",
                min=0,
                max=1,
                width=12,
            ),
        ],
    )
    by = "gen_ai_request_model"
    latency = Row(
        "Latency",
        [
            Panel(
                "Time to first token",
                "p50, p95 and p99 per model: arrival to first output token.",
                percentiles("gen_ai_server_time_to_first_token_seconds", VLLM, by, "{{gen_ai_request_model}}"),
                unit="s",
            ),
            Panel(
                "Inter-token latency (time per output token)",
                "p50, p95 and p99 per model of each finished request's decode time over its output tokens "
                "after the first (vLLM's request_time_per_output_token). The per-token histogram "
                "vllm_inter_token_latency_seconds is off by default (EAGLEEYE_METRICS_ENABLE turns it on).",
                percentiles("gen_ai_server_time_per_output_token_seconds", VLLM, by, "{{gen_ai_request_model}}"),
                unit="s",
            ),
            Panel(
                "End-to-end request latency",
                "p50, p95 and p99 per model: arrival to last output token.",
                percentiles("gen_ai_server_request_duration_seconds", VLLM, by, "{{gen_ai_request_model}}"),
                unit="s",
            ),
            Panel(
                "Request phases (p95)",
                "Where the time goes: waiting in the queue, prefill, decode.",
                [
                    Target(
                        quantile(0.95, "vllm_request_queue_time_seconds", VLLM, by), "queue {{gen_ai_request_model}}"
                    ),
                    Target(
                        quantile(0.95, "vllm_request_prefill_time_seconds", VLLM, by),
                        "prefill {{gen_ai_request_model}}",
                    ),
                    Target(
                        quantile(0.95, "vllm_request_decode_time_seconds", VLLM, by), "decode {{gen_ai_request_model}}"
                    ),
                ],
                unit="s",
                width=12,
            ),
            Panel(
                "Tokens per engine step (p50, p95)",
                "Batch size in tokens (prefill and decode) per engine step.",
                [
                    Target(quantile(0.5, "vllm_iteration_tokens", VLLM, by), "p50 {{gen_ai_request_model}}"),
                    Target(quantile(0.95, "vllm_iteration_tokens", VLLM, by), "p95 {{gen_ai_request_model}}"),
                ],
                width=12,
            ),
        ],
    )
    throughput = Row(
        "Throughput",
        [
            Panel(
                "Tokens per second",
                "Prompt tokens prefilled and tokens generated per second, per model.",
                [
                    Target(
                        f"sum by (gen_ai_request_model) (rate(vllm_prompt_tokens_total{{{VLLM}}}[$__rate_interval]))",
                        "prompt {{gen_ai_request_model}}",
                    ),
                    Target(
                        f"sum by (gen_ai_request_model) (rate(vllm_generation_tokens_total{{{VLLM}}}"
                        "[$__rate_interval]))",
                        "generated {{gen_ai_request_model}}",
                    ),
                ],
            ),
            Panel(
                "Finished requests by reason",
                "Requests per second by finish reason (stop, length, abort...).",
                [
                    Target(
                        f"sum by (vllm_finished_reason) (rate(vllm_request_success_total{{{VLLM}}}[$__rate_interval]))",
                        "{{vllm_finished_reason}}",
                    )
                ],
                unit="reqps",
            ),
            Panel(
                "Prefix cache hit rate",
                "Prompt tokens found in the prefix cache over those looked up.",
                [
                    Target(
                        f"sum by (gen_ai_request_model) (rate(vllm_prefix_cache_hits_total{{{VLLM}}}"
                        f"[$__rate_interval])) / sum by (gen_ai_request_model) "
                        f"(rate(vllm_prefix_cache_queries_total{{{VLLM}}}[$__rate_interval]))",
                        "{{gen_ai_request_model}}",
                    )
                ],
                unit="percentunit",
                min=0,
                max=1,
            ),
            Panel(
                "Preemptions",
                "Requests preempted per second (the KV cache ran out).",
                [
                    Target(
                        f"sum by (gen_ai_request_model) (rate(vllm_num_preemptions_total{{{VLLM}}}[$__rate_interval]))",
                        "{{gen_ai_request_model}}",
                    )
                ],
            ),
            Panel(
                "Prompt and output length (p50)",
                "Tokens per finished request.",
                [
                    Target(quantile(0.5, "vllm_request_prompt_tokens", VLLM, by), "prompt {{gen_ai_request_model}}"),
                    Target(
                        quantile(0.5, "vllm_request_generation_tokens", VLLM, by), "output {{gen_ai_request_model}}"
                    ),
                ],
                width=16,
            ),
        ],
    )
    return dashboard(
        "eagle-eye-inference-overview",
        "Eagle Eye / Inference overview",
        "vLLM serving through Eagle Eye: queue, batch, KV cache, latency percentiles and throughput per model.",
        [NAMESPACE_VARIABLE, MODEL_VARIABLE],
        [load, latency, throughput],
    )


# -- per-instance routing view ----------------------------------------------------------------------------------


def instances() -> dict[str, Any]:
    per = "eagleeye_instance_id, vllm_engine"
    legend = "{{eagleeye_instance_id}} engine {{vllm_engine}}"
    table_targets = [
        Target(
            f"sum by (eagleeye_instance_id) (vllm_num_requests_waiting{{{VLLM_INSTANCES}}})", instant=True, table=True
        ),
        Target(
            f"sum by (eagleeye_instance_id) (vllm_num_requests_running{{{VLLM_INSTANCES}}})", instant=True, table=True
        ),
        Target(f"max by (eagleeye_instance_id) (vllm_kv_cache_usage{{{VLLM_INSTANCES}}})", instant=True, table=True),
        Target(
            f"sum by (eagleeye_instance_id) (rate(vllm_generation_tokens_total{{{VLLM_INSTANCES}}}[$__rate_interval]))",
            instant=True,
            table=True,
        ),
        Target(
            quantile(0.95, "gen_ai_server_time_to_first_token_seconds", VLLM_INSTANCES, "eagleeye_instance_id"),
            instant=True,
            table=True,
        ),
    ]
    renames = {
        "Value #A": "waiting",
        "Value #B": "running",
        "Value #C": "KV cache",
        "Value #D": "tokens/s",
        "Value #E": "TTFT p95",
        "eagleeye_instance_id": "instance",
    }
    table = Panel(
        "Instances now",
        "What a router weighs, per instance: queue, batch, fullest engine's KV cache, output tokens/s and TTFT p95. "
        "Routers get the same state pushed on NATS (eagle_eye.routing_metrics) at every engine step; "
        "`eagle-eye top` shows it live.",
        table_targets,
        kind="table",
        width=24,
        height=8,
        transformations=[
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {"excludeByName": {"Time": True}, "renameByName": renames}},
        ],
        overrides=[
            {
                "matcher": {"id": "byName", "options": "KV cache"},
                "properties": [{"id": "unit", "value": "percentunit"}],
            },
            {"matcher": {"id": "byName", "options": "TTFT p95"}, "properties": [{"id": "unit", "value": "s"}]},
        ],
    )
    skew = (
        f"max(sum by (eagleeye_instance_id) (vllm_num_requests_waiting{{{VLLM_INSTANCES}}})) - "
        f"min(sum by (eagleeye_instance_id) (vllm_num_requests_waiting{{{VLLM_INSTANCES}}}))"
    )
    kv_skew = (
        f"max(max by (eagleeye_instance_id) (vllm_kv_cache_usage{{{VLLM_INSTANCES}}})) - "
        f"min(max by (eagleeye_instance_id) (vllm_kv_cache_usage{{{VLLM_INSTANCES}}}))"
    )
    now = Row(
        "Routing state",
        [
            table,
            Panel(
                "Queue imbalance",
                "Longest minus shortest queue across the selected instances: a router that "
                "balances well keeps it near 0.",
                [Target(skew, "waiting, longest - shortest")],
                width=12,
            ),
            Panel(
                "KV cache imbalance",
                "Fullest minus emptiest instance's KV cache.",
                [Target(kv_skew, "KV cache, fullest - emptiest")],
                unit="percentunit",
                width=12,
            ),
        ],
    )
    engines = Row(
        "Per instance and engine",
        [
            Panel(
                "Waiting",
                "Requests waiting per engine.",
                [Target(f"sum by ({per}) (vllm_num_requests_waiting{{{VLLM_INSTANCES}}})", legend)],
            ),
            Panel(
                "Running",
                "Requests running per engine.",
                [Target(f"sum by ({per}) (vllm_num_requests_running{{{VLLM_INSTANCES}}})", legend)],
            ),
            Panel(
                "KV cache usage",
                "Fraction of KV-cache blocks in use per engine.",
                [Target(f"max by ({per}) (vllm_kv_cache_usage{{{VLLM_INSTANCES}}})", legend)],
                unit="percentunit",
                min=0,
                max=1,
            ),
            Panel(
                "Generated tokens/s",
                "Output tokens per second per engine.",
                [
                    Target(
                        f"sum by ({per}) (rate(vllm_generation_tokens_total{{{VLLM_INSTANCES}}}[$__rate_interval]))",
                        legend,
                    )
                ],
            ),
            Panel(
                "Time to first token p95",
                "Per instance.",
                [
                    Target(
                        quantile(
                            0.95, "gen_ai_server_time_to_first_token_seconds", VLLM_INSTANCES, "eagleeye_instance_id"
                        ),
                        "{{eagleeye_instance_id}}",
                    )
                ],
                unit="s",
            ),
            Panel(
                "End-to-end latency p95",
                "Per instance.",
                [
                    Target(
                        quantile(
                            0.95, "gen_ai_server_request_duration_seconds", VLLM_INSTANCES, "eagleeye_instance_id"
                        ),
                        "{{eagleeye_instance_id}}",
                    )
                ],
                unit="s",
            ),
            Panel(
                "Queue time p95",
                "Time requests waited before they were first scheduled, per instance.",
                [
                    Target(
                        quantile(0.95, "vllm_request_queue_time_seconds", VLLM_INSTANCES, "eagleeye_instance_id"),
                        "{{eagleeye_instance_id}}",
                    )
                ],
                unit="s",
            ),
            Panel(
                "Preemptions",
                "Requests preempted per second per engine.",
                [
                    Target(
                        f"sum by ({per}) (rate(vllm_num_preemptions_total{{{VLLM_INSTANCES}}}[$__rate_interval]))",
                        legend,
                    )
                ],
            ),
            Panel(
                "Finished requests/s",
                "Per instance.",
                [
                    Target(
                        f"sum by (eagleeye_instance_id) (rate(vllm_request_success_total{{{VLLM_INSTANCES}}}"
                        "[$__rate_interval]))",
                        "{{eagleeye_instance_id}}",
                    )
                ],
                unit="reqps",
            ),
        ],
    )
    instance_variable = variable(
        "instance_id",
        "Instance",
        'label_values(vllm_num_requests_running{namespace=~"$namespace", gen_ai_request_model=~"$model"}, '
        "eagleeye_instance_id)",
    )
    return dashboard(
        "eagle-eye-instances",
        "Eagle Eye / Instances (routing view)",
        "Per vLLM instance and data-parallel engine (eagleeye_instance_id, vllm_engine): the load a router balances.",
        [NAMESPACE_VARIABLE, MODEL_VARIABLE, instance_variable],
        [now, engines],
    )


# -- hardware health --------------------------------------------------------------------------------------------


def hardware_health() -> dict[str, Any]:
    device = "{{eagleeye_node_name}} {{hw_name}}"
    status_now = f"hw_status{{{MONITOR}}} == 1"
    devices = Row(
        "Devices",
        [
            Panel(
                "Accelerators",
                "GPUs and NPUs found on the selected nodes, lost ones included.",
                [Target(f"sum by (hw_type) ({on_node('eagleeye_hw_devices')})", "{{hw_type}}")],
                kind="stat",
                width=6,
                height=5,
            ),
            Panel(
                "Devices not ok",
                "Devices whose own state (hw_status) is degraded, failed or predicted_failure.",
                [
                    Target(
                        "count(" + on_node(f'hw_status{{{MONITOR}, hw_state!="ok"}} == 1') + ") or vector(0)", "not ok"
                    )
                ],
                kind="stat",
                width=6,
                height=5,
                thresholds=[(None, "green"), (1, "red")],
            ),
            Panel(
                "Thermally throttling",
                "GPUs whose clocks are held down for heat now.",
                [
                    Target(
                        "count("
                        + on_node(
                            "max by (job, instance, hw_id) (eagleeye_hw_gpu_clock_event_active"
                            '{eagleeye_hw_gpu_clock_event_reason=~"sw_thermal_slowdown|hw_thermal_slowdown"}) == 1'
                        )
                        + ") or vector(0)",
                        "throttling",
                    )
                ],
                kind="stat",
                width=6,
                height=5,
                thresholds=[(None, "green"), (1, "orange")],
            ),
            Panel(
                "Xid events",
                "NVML Xid events on the selected GPUs since their monitors started (a counter's first value is "
                "invisible to increase(), so this is the count itself; the table below splits it by GPU and Xid).",
                [Target("sum(" + on_node("eagleeye_hw_gpu_xid_total") + ") or vector(0)", "Xids")],
                kind="stat",
                width=6,
                height=5,
                thresholds=[(None, "green"), (1, "red")],
            ),
            Panel(
                "Device state",
                "Each device's own state and description (the monitor's hw_status).",
                [
                    Target(
                        "max by (eagleeye_node_name, hw_name, hw_id, hw_type, hw_model, hw_driver_version, "
                        f"hw_state) ({on_node(status_now)})",
                        instant=True,
                        table=True,
                    )
                ],
                kind="table",
                width=24,
                height=7,
                transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True}}}],
            ),
        ],
    )
    temperature = Row(
        "Temperature",
        [
            Panel(
                "Die temperature vs limits",
                "Die temperature, and NVML's slowdown (throttled) and shutdown (high.critical) thresholds.",
                [
                    Target(on_node('hw_temperature_celsius{hw_sensor_location="die"}'), device),
                    Target(on_node('hw_temperature_limit_celsius{hw_limit_type="throttled"}'), device + " slowdown"),
                    Target(
                        on_node('hw_temperature_limit_celsius{hw_limit_type="high.critical"}'), device + " shutdown"
                    ),
                ],
                unit="celsius",
                width=12,
            ),
            Panel(
                "Headroom to slowdown",
                "Degrees below the slowdown threshold; at 0 the GPU throttles.",
                [
                    Target(
                        on_node(
                            'hw_temperature_limit_celsius{hw_sensor_location="die", hw_limit_type="throttled"}'
                            ' - ignoring (hw_limit_type) hw_temperature_celsius{hw_sensor_location="die"}'
                        ),
                        device,
                    )
                ],
                unit="celsius",
                width=6,
                thresholds=[(None, "red"), (5, "yellow"), (10, "green")],
            ),
            Panel(
                "Memory temperature",
                "HBM temperature.",
                [Target(on_node('hw_temperature_celsius{hw_sensor_location="memory"}'), device)],
                unit="celsius",
                width=6,
            ),
        ],
    )
    power = Row(
        "Power and clocks",
        [
            Panel(
                "Power vs limit",
                "Power drawn and the limit the driver enforces.",
                [
                    Target(on_node("hw_power_watts"), device),
                    Target(on_node("eagleeye_hw_power_limit_watts"), device + " limit"),
                ],
                unit="watt",
                width=12,
            ),
            Panel(
                "Power / limit",
                "Power drawn as a fraction of the enforced limit.",
                [Target(on_node("hw_power_watts / eagleeye_hw_power_limit_watts"), device)],
                unit="percentunit",
                width=6,
                min=0,
                max=1,
            ),
            Panel(
                "Clocks",
                "SM (GPU) and AI Core (NPU) clocks.",
                [
                    Target(
                        on_node('eagleeye_hw_clock_frequency_hertz{eagleeye_hw_clock_domain=~"sm|aicore"}'),
                        device + " {{eagleeye_hw_clock_domain}}",
                    )
                ],
                unit="hertz",
                width=6,
            ),
        ],
    )
    usage = Row(
        "Utilisation and memory",
        [
            Panel(
                "Utilisation",
                "GPU: fraction of time a kernel ran. NPU: AI Core busy.",
                [
                    Target(on_node("hw_gpu_utilization"), device),
                    Target(on_node('eagleeye_hw_npu_utilization{eagleeye_hw_npu_component="aicore"}'), device),
                ],
                unit="percentunit",
                min=0,
                max=1,
            ),
            Panel(
                "Memory used",
                "Fraction of GPU memory and NPU HBM in use.",
                [
                    Target(on_node("hw_gpu_memory_utilization"), device),
                    Target(on_node("eagleeye_hw_npu_memory_usage_bytes / eagleeye_hw_npu_memory_limit_bytes"), device),
                ],
                unit="percentunit",
                min=0,
                max=1,
            ),
            Panel(
                "Memory used (bytes)",
                "GPU memory and NPU HBM in use.",
                [
                    Target(on_node("hw_gpu_memory_usage_bytes"), device),
                    Target(on_node("eagleeye_hw_npu_memory_usage_bytes"), device),
                ],
                unit="bytes",
            ),
            Panel(
                "Memory controller busy",
                "Fraction of time GPU memory was read or written.",
                [Target(on_node("eagleeye_hw_gpu_memory_controller_utilization"), device)],
                unit="percentunit",
                min=0,
                max=1,
                width=12,
            ),
            Panel(
                "PCIe throughput",
                "Bytes per second over NVML's last 20 ms window.",
                [
                    Target(
                        on_node("eagleeye_hw_gpu_pcie_throughput_bytes_per_second"),
                        device + " {{network_io_direction}}",
                    )
                ],
                unit="Bps",
                width=12,
            ),
        ],
    )
    events = Row(
        "Errors and events",
        [
            Panel(
                "Clock-event (throttle) reasons active",
                "Reasons holding the clocks down now (idle excluded).",
                [
                    Target(
                        on_node(
                            "max by (job, instance, hw_id, hw_name, eagleeye_hw_gpu_clock_event_reason) "
                            "(eagleeye_hw_gpu_clock_event_active{eagleeye_hw_gpu_clock_event_reason!="
                            '"gpu_idle"}) == 1'
                        ),
                        device + " {{eagleeye_hw_gpu_clock_event_reason}}",
                    )
                ],
                no_value="none",
                options={"legend": {"displayMode": "table", "placement": "right", "showLegend": True}},
                width=12,
            ),
            Panel(
                "ECC errors (since driver load)",
                "Corrected and uncorrected ECC errors (NVML volatile counts).",
                [Target(on_node('hw_errors_total{error_type=~"corrected|uncorrected"}'), device + " {{error_type}}")],
                width=12,
            ),
            Panel(
                "Xid events",
                "NVML Xid events per GPU and Xid since the monitor started.",
                [
                    Target(
                        "sum by (eagleeye_node_name, hw_name, hw_id, eagleeye_hw_gpu_xid_code) ("
                        + on_node("eagleeye_hw_gpu_xid_total")
                        + ")",
                        instant=True,
                        table=True,
                    )
                ],
                kind="table",
                width=12,
                transformations=[
                    {
                        "id": "organize",
                        "options": {"excludeByName": {"Time": True}, "renameByName": {"Value": "events"}},
                    }
                ],
            ),
            Panel(
                "Kernel-log hardware events",
                "Xid, SXid, fallen-off-the-bus and Ascend lines in the kernel log "
                "since the monitor started; device is the PCI bus id the line names.",
                [
                    Target(
                        "sum by (eagleeye_node_name, eagleeye_hw_kernel_log_kind, eagleeye_hw_kernel_log_code, "
                        "eagleeye_hw_kernel_log_device) (" + on_node("eagleeye_hw_kernel_log_events_total") + ")",
                        instant=True,
                        table=True,
                    )
                ],
                kind="table",
                width=12,
                transformations=[
                    {
                        "id": "organize",
                        "options": {"excludeByName": {"Time": True}, "renameByName": {"Value": "events"}},
                    }
                ],
            ),
            Panel(
                "Row remapping",
                "Rows remapped (corrected, uncorrected), and remaps pending a reset or failed.",
                [
                    Target(on_node("eagleeye_hw_gpu_remapped_rows_total"), device + " remapped {{error_type}}"),
                    Target(on_node("eagleeye_hw_gpu_remapped_rows_pending"), device + " pending"),
                    Target(on_node("eagleeye_hw_gpu_remapped_rows_failure"), device + " failed"),
                ],
            ),
            Panel(
                "PCIe link and replays",
                "Link generation and width, and PCIe replays per second.",
                [
                    Target(on_node("eagleeye_hw_gpu_pcie_link_generation"), device + " gen"),
                    Target(on_node("eagleeye_hw_gpu_pcie_link_width"), device + " width"),
                    Target(
                        on_node('rate(hw_errors_total{error_type="pcie_replay"}[$__rate_interval])'),
                        device + " replays/s",
                    ),
                ],
            ),
            Panel(
                "Recovery action",
                "NVML's recovery action: 0 none, 1 GPU reset, 2 node reboot, 3 drain P2P, 4 drain and reset.",
                [Target(on_node("eagleeye_hw_gpu_recovery_action"), device)],
                thresholds=[(None, "green"), (1, "red")],
            ),
            Panel(
                "NPU health",
                "DCMI health: 0 ok, 1 minor, 2 major, 3 critical alarm.",
                [Target(on_node("eagleeye_hw_npu_health"), device)],
                thresholds=[(None, "green"), (1, "yellow"), (2, "red")],
                width=12,
            ),
            Panel(
                "NPU error codes active",
                "Ascend error codes each chip reports now.",
                [
                    Target(
                        "max by (eagleeye_node_name, hw_name, hw_id, eagleeye_hw_npu_error_code) ("
                        + on_node("eagleeye_hw_npu_error_code_active == 1")
                        + ")",
                        instant=True,
                        table=True,
                    )
                ],
                kind="table",
                width=12,
                no_value="none",
                transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True}}}],
            ),
            Panel(
                "Kernel-log records not counted",
                "Malformed hardware lines, events past the reader's bound, records lost from the ring buffer.",
                [
                    Target(
                        on_node("eagleeye_hw_kernel_log_uncounted_total"),
                        "{{eagleeye_node_name}} {{eagleeye_hw_kernel_log_reason}}",
                    )
                ],
                width=24,
                height=6,
            ),
        ],
    )
    node_variable = variable(
        "node", "Node", 'label_values(target_info{eagleeye_node_name!=""}, eagleeye_node_name)', all_value=".+"
    )
    return dashboard(
        "eagle-eye-hardware-health",
        "Eagle Eye / Hardware health",
        "GPUs and NPUs as the Eagle Eye hardware monitor reads them: state, temperature vs limits, power vs limit, "
        "utilisation, memory, and ECC, Xid, throttle and kernel-log events.",
        [node_variable],
        [devices, temperature, power, usage, events],
    )


# -- diagnosis findings -----------------------------------------------------------------------------------------


def diagnosis_findings() -> dict[str, Any]:
    findings = 'eagleeye_diagnosis_findings{eagleeye_node_name=~"$node", eagleeye_diagnosis_severity=~"$severity"}'
    severity_colours = {"critical": "red", "warning": "orange", "info": "blue"}
    counts = [
        Panel(
            f"{severity.capitalize()} findings",
            f"Active {severity} findings on the selected nodes.",
            [
                Target(
                    f'count(eagleeye_diagnosis_findings{{eagleeye_node_name=~"$node", '
                    f'eagleeye_diagnosis_severity="{severity}"}}) or vector(0)',
                    severity,
                )
            ],
            kind="stat",
            width=6,
            height=5,
            thresholds=[(None, "green"), (1, colour)],
        )
        for severity, colour in severity_colours.items()
    ]
    counts.append(
        Panel(
            "Devices judged failed or degraded",
            "Devices whose worst active finding is critical (failed) or a "
            "warning (degraded), as the diagnosis service reports hw_status.",
            [
                Target(
                    f'count(hw_status{{{DIAGNOSIS}, eagleeye_node_name=~"$node", hw_state!="ok"}} == 1) or vector(0)',
                    "devices",
                )
            ],
            kind="stat",
            width=6,
            height=5,
            thresholds=[(None, "green"), (1, "red")],
        )
    )
    active = Row(
        "Active findings",
        [
            *counts,
            Panel(
                "Findings",
                "Every active finding: node, device (hw_id; empty for a node-wide finding), fault and "
                "severity. The conclusion and the action are in the finding itself (NATS "
                "eagle_eye.diagnosis.<node>, the diagnosis report page, `eagle-eye top`).",
                [
                    Target(
                        "max by (eagleeye_node_name, hw_id, eagleeye_diagnosis_fault, eagleeye_diagnosis_severity) "
                        f"({findings})",
                        instant=True,
                        table=True,
                    )
                ],
                kind="table",
                width=24,
                height=9,
                no_value="no active finding",
                transformations=[
                    {
                        "id": "organize",
                        "options": {
                            "excludeByName": {"Time": True, "Value": True},
                            "renameByName": {
                                "eagleeye_node_name": "node",
                                "hw_id": "device",
                                "eagleeye_diagnosis_fault": "fault",
                                "eagleeye_diagnosis_severity": "severity",
                            },
                        },
                    }
                ],
            ),
            Panel(
                "Findings over time",
                "Active findings by severity.",
                [Target(f"sum by (eagleeye_diagnosis_severity) ({findings})", "{{eagleeye_diagnosis_severity}}")],
                width=12,
                no_value="0",
            ),
            Panel(
                "Findings by fault",
                "Active findings by fault, all nodes selected.",
                [Target(f"sum by (eagleeye_diagnosis_fault) ({findings})", "{{eagleeye_diagnosis_fault}}")],
                width=12,
                no_value="0",
            ),
            Panel(
                "Device state (diagnosis)",
                "Each device's state by its worst active finding.",
                [
                    Target(
                        f"max by (eagleeye_node_name, hw_id, hw_type, hw_state) (hw_status{{{DIAGNOSIS}, "
                        'eagleeye_node_name=~"$node"} == 1)',
                        instant=True,
                        table=True,
                    )
                ],
                kind="table",
                width=24,
                height=8,
                transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True}}}],
            ),
        ],
    )
    node_variable = variable("node", "Node", "label_values(hw_status{" + DIAGNOSIS + "}, eagleeye_node_name)")
    severity_variable = {
        "name": "severity",
        "label": "Severity",
        "type": "custom",
        "query": "critical,warning,info",
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "hide": 0,
        "skipUrlSync": False,
    }
    return dashboard(
        "eagle-eye-diagnosis",
        "Eagle Eye / Diagnosis findings",
        "Findings of the Eagle Eye diagnosis service: the fault, its severity, the device and its state.",
        [node_variable, severity_variable],
        [active],
    )


DASHBOARDS = {
    "eagle-eye-inference-overview.json": inference_overview,
    "eagle-eye-instances.json": instances,
    "eagle-eye-hardware-health.json": hardware_health,
    "eagle-eye-diagnosis.json": diagnosis_findings,
}


def render() -> dict[str, str]:
    """Every dashboard file's name and text."""
    return {name: json.dumps(build(), indent=2, ensure_ascii=False) + "\n" for name, build in DASHBOARDS.items()}


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
