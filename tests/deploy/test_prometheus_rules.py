"""The Prometheus rules: ``promtool check rules`` and ``promtool test rules`` pass, every alert is unit-tested both
ways (it fires, and it stays quiet in a case next to it), every recording rule's value is tested, and every name
the rules query is one the semantic conventions define (or a recording rule of ours)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

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
