"""The Prometheus rules and the autoscaling examples built on them.

``promtool check rules`` and ``promtool test rules`` pass, every alert is unit-tested both ways (it fires, and it
stays quiet in a case next to it), every recording rule's value is tested, every name the rules query is one the
semantic conventions define (or a recording rule of ours). The KEDA ScaledObject and the HPA read only recording
rules, the HPA is a valid Kubernetes 1.33 object, and prometheus-adapter serves every metric it asks for.
``tests/e2e/test_promql_live.py`` evaluates the same queries on a real scrape."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.helpers import promql

PROMTOOL = "/usr/bin/promtool"
TESTS = sorted((promql.ROOT / "deploy" / "prometheus" / "tests").glob("*.test.yaml"))


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    if not os.access(PROMTOOL, os.X_OK):
        pytest.fail(f"{PROMTOOL} is missing; scripts/bootstrap.sh installs Debian's prometheus package")
    return subprocess.run([PROMTOOL, *map(str, args)], capture_output=True, text=True, timeout=120, check=False)


def test_promtool_check_rules():
    files = promql.rule_files()
    assert [path.name for path in files] == ["eagle-eye-alerts.yaml", "eagle-eye-recording.yaml"]
    result = promtool("check", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stdout + result.stderr


def test_promtool_test_rules():
    assert TESTS
    result = promtool("test", "rules", *TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(TESTS), result.stdout


def _unit_tests() -> list[dict]:
    return [case for path in TESTS for case in yaml.safe_load(path.read_text())["tests"]]


def test_every_alert_is_tested_firing_and_quiet():
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in _unit_tests():
        for check in case.get("alert_rule_test", []):
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    alerts = promql.alert_names()
    assert alerts == {
        "EagleEyeVllmInstanceStale",
        "EagleEyeVllmQueueGrowing",
        "EagleEyeHardwareMonitorStale",
        "EagleEyeGpuThermalThrottling",
        "EagleEyeAcceleratorFailed",
        "EagleEyeHardwareCriticalFinding",
    }
    assert alerts - fired == set(), "alerts no unit test sees firing"
    assert alerts - quiet == set(), "alerts no unit test sees quiet"


def test_every_recording_rule_has_a_tested_value():
    tested = {
        promql.referenced_names(check["expr"]).metrics
        for case in _unit_tests()
        for check in case.get("promql_expr_test", [])
        if check["exp_samples"]
    }
    names = set().union(*tested)
    assert promql.recording_rule_names() - names == set()


def test_alerts_carry_severity_summary_and_description():
    for path in promql.rule_files():
        for group in promql.rule_groups(path):
            for rule in group["rules"]:
                if "alert" in rule:
                    assert rule["alert"].startswith("EagleEye"), rule["alert"]
                    assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
                    assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
                else:
                    assert rule["record"].count(":") == 2, rule["record"]  # level:metric:operations


RULES = promql.rule_queries()


@pytest.mark.parametrize("query", RULES, ids=[query.where for query in RULES])
def test_a_rule_uses_only_names_the_semantic_conventions_define(query: promql.Query):
    assert promql.referenced_names(query.expr).metrics, query.expr
    assert promql.undefined_names(query.expr) == promql.Names(frozenset(), frozenset()), query.expr


# -- autoscaling ---------------------------------------------------------------------------------------------------

AUTOSCALING = promql.autoscaling_queries()


@pytest.mark.parametrize("query", AUTOSCALING, ids=[query.where for query in AUTOSCALING])
def test_autoscaling_reads_only_recording_rules(query: promql.Query):
    metrics = promql.referenced_names(query.expr).metrics
    assert metrics and metrics <= promql.recording_rule_names(), query.expr
    assert promql.undefined_names(query.expr) == promql.Names(frozenset(), frozenset()), query.expr


def _yaml(name: str) -> dict:
    document: dict = yaml.safe_load((promql.AUTOSCALING / name).read_text())
    return document


def test_the_keda_scaled_object_scales_a_deployment_on_prometheus_triggers():
    scaled = _yaml("keda-scaledobject.yaml")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1" and scaled["kind"] == "ScaledObject"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["kind"] == "Deployment" and spec["scaleTargetRef"]["name"]
    assert 1 <= spec["minReplicaCount"] < spec["maxReplicaCount"]
    assert {trigger["name"] for trigger in spec["triggers"]} == {"queue", "ttft", "kv-cache"}
    for trigger in spec["triggers"]:
        assert trigger["type"] == "prometheus"
        assert trigger["metricType"] in ("AverageValue", "Value")
        metadata = trigger["metadata"]
        assert metadata["serverAddress"].startswith("http")
        assert float(metadata["threshold"]) > 0
        assert set(metadata) <= {"serverAddress", "query", "threshold", "ignoreNullValues", "activationThreshold"}
    # The policy is the HPA example's.
    hpa = _yaml("hpa-prometheus-adapter.yaml")
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == hpa["spec"]["behavior"]


def test_the_hpa_is_valid_kubernetes_1_33_and_the_adapter_serves_its_metrics():
    hpa = _yaml("hpa-prometheus-adapter.yaml")
    kubernetes_validate.validate(hpa, "1.33", strict=True)
    adapter = _yaml("prometheus-adapter-values.yaml")
    assert adapter["rules"]["default"] is False
    served = {rule["name"]["as"] for rule in adapter["rules"]["external"]}
    for metric in hpa["spec"]["metrics"]:
        assert metric["type"] == "External"
        assert metric["external"]["metric"]["name"] in served
        # The selector picks a model by a label the recorded series keep.
        assert set(metric["external"]["metric"]["selector"]["matchLabels"]) == {"gen_ai_request_model"}
    for rule in adapter["rules"]["external"]:
        assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}}
        assert "<<.Series>>" in rule["metricsQuery"] and "<<.LabelMatchers>>" in rule["metricsQuery"]
        assert "by (namespace, gen_ai_request_model)" in rule["metricsQuery"]


DOCS = promql.ROOT / "docs" / "dashboards-and-alerts.md"


def test_the_docs_list_every_alert_rule_dashboard_and_external_metric():
    docs = DOCS.read_text()
    for alert in promql.alert_names():
        assert f"| `{alert}` |" in docs, alert
    for rule in promql.recording_rule_names():
        level, metric, operation = rule.split(":")
        assert f"`{rule}`" in docs or (f"`:{operation}`" in docs and f"`{level}:{metric}:" in docs), rule
    for path in promql.dashboard_files():
        dashboard = promql.load_dashboard(path)
        assert f"### {dashboard['title']} (`{dashboard['uid']}`)" in docs, dashboard["title"]
    for rule in _yaml("prometheus-adapter-values.yaml")["rules"]["external"]:
        assert f"`{rule['name']['as']}`" in docs
