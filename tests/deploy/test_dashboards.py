"""The Grafana dashboards: generated, well formed, and every name they query defined by the semantic conventions.

Each dashboard file is ``scripts/generate_dashboards.py``'s output. Every panel query and variable query is read
back from the JSON, its Grafana variables substituted, and its metric and label names checked against the series
the real Prometheus exporter writes for ``eagleeye_otel.semconv``'s instruments (``tests/helpers/promql.py``): a
typo'd or renamed metric fails here rather than leaving a panel empty. ``tests/e2e/test_promql_live.py`` evaluates
the same queries on a real scrape.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from tests.helpers import promql

GENERATOR = promql.ROOT / "scripts" / "generate_dashboards.py"
FILES = promql.dashboard_files()


def _generator():
    spec = importlib.util.spec_from_file_location("generate_dashboards", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_the_dashboards_are_the_generators_output():
    rendered = _generator().render()
    assert sorted(rendered) == [path.name for path in FILES]
    for path in FILES:
        assert path.read_text() == rendered[path.name], f"{path.name}: run scripts/generate_dashboards.py"


@pytest.mark.parametrize("path", FILES, ids=[path.stem for path in FILES])
def test_a_dashboard_is_well_formed(path: Path):
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"] == path.stem and len(dashboard["uid"]) <= 40
    assert dashboard["title"].startswith("Eagle Eye / ")
    assert "eagle-eye" in dashboard["tags"]
    variables = dashboard["templating"]["list"]
    assert variables[0]["type"] == "datasource" and variables[0]["query"] == "prometheus"
    for variable in variables[1:]:
        if variable["type"] == "query":
            assert variable["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    ids = [panel["id"] for panel in promql.panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells: set[tuple[int, int]] = set()
    for panel in promql.panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        covered = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not covered & cells, f"{panel['title']} overlaps another panel"
        cells |= covered
        if panel["type"] == "row":
            continue
        assert panel["description"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"] == panel["datasource"]


QUERIES = [query for path in FILES for query in promql.dashboard_queries(path)]


@pytest.mark.parametrize("query", QUERIES, ids=[query.where for query in QUERIES])
def test_a_dashboard_query_uses_only_names_the_semantic_conventions_define(query: promql.Query):
    path = promql.DASHBOARDS / query.where.split(":")[0]
    expr = promql.grafana_to_promql(query.expr, promql.all_values(path))
    names = promql.referenced_names(expr, query.legend)
    assert names.metrics, f"{query.where}: no metric in {expr!r}"
    assert promql.undefined_names(expr, query.legend) == promql.Names(frozenset(), frozenset()), query.expr


def test_the_name_check_catches_a_misspelt_metric_or_label():
    assert promql.undefined_names("sum(rate(vllm_generation_token_total[1m]))").metrics == {
        "vllm_generation_token_total"
    }
    assert promql.undefined_names('vllm_num_requests_waiting{eagleeye_instance="a"}').labels == {"eagleeye_instance"}
    assert promql.undefined_names("sum by (hw_uuid) (hw_power_watts)").labels == {"hw_uuid"}
    assert promql.undefined_names("hw_power_watts", "{{node}}").labels == {"node"}
    # What vLLM itself calls it is not Eagle Eye's name.
    assert promql.undefined_names("vllm:num_requests_waiting").metrics == {"vllm:num_requests_waiting"}
    assert promql.undefined_names("vllm_kv_cache_usage_perc").metrics == {"vllm_kv_cache_usage_perc"}
    # Strings, functions, keywords, ranges and durations are not names.
    clean = (
        'label_replace(max_over_time(hw_status{hw_state="failed"}[5m] offset 1m), "x", "$1", "hw_id", "(.*)") > bool 0'
    )
    assert promql.undefined_names(clean) == promql.Names(frozenset(), frozenset())


def _metrics_of(stem: str) -> set[str]:
    path = promql.DASHBOARDS / f"{stem}.json"
    return {
        name
        for query in promql.dashboard_queries(path)
        for name in promql.referenced_names(promql.grafana_to_promql(query.expr, promql.all_values(path))).metrics
    }


def test_the_dashboards_show_what_the_issue_asks_for():
    overview = _metrics_of("eagle-eye-inference-overview")
    assert {
        "vllm_num_requests_waiting",
        "vllm_num_requests_running",
        "vllm_kv_cache_usage",
        "gen_ai_server_time_to_first_token_seconds_bucket",
        "gen_ai_server_time_per_output_token_seconds_bucket",
        "gen_ai_server_request_duration_seconds_bucket",
        "vllm_generation_tokens_total",
        "vllm_prompt_tokens_total",
    } <= overview
    assert {"vllm_num_requests_waiting", "vllm_kv_cache_usage"} <= _metrics_of("eagle-eye-instances")
    hardware = _metrics_of("eagle-eye-hardware-health")
    assert {
        "hw_temperature_celsius",
        "hw_temperature_limit_celsius",
        "hw_power_watts",
        "eagleeye_hw_power_limit_watts",
        "hw_gpu_utilization",
        "hw_gpu_memory_utilization",
        "hw_errors_total",
        "eagleeye_hw_gpu_xid_total",
        "eagleeye_hw_gpu_clock_event_active",
        "eagleeye_hw_kernel_log_events_total",
        "eagleeye_hw_npu_health",
    } <= hardware
    assert "eagleeye_diagnosis_findings" in _metrics_of("eagle-eye-diagnosis")


def test_the_per_instance_view_splits_by_instance_and_engine():
    path = promql.DASHBOARDS / "eagle-eye-instances.json"
    labels = {label for query in promql.dashboard_queries(path) for label in promql.referenced_names(query.expr).labels}
    assert {"eagleeye_instance_id", "vllm_engine"} <= labels
