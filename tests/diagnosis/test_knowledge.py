"""The knowledge base: the shipped files, user files that patch or add rules, and errors that name file and key."""

from __future__ import annotations

import contextlib
import textwrap

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eagleeye_otel.diagnosis import default_knowledge_files, load_knowledge_base
from eagleeye_otel.errors import ConfigError, EagleEyeError
from eagleeye_otel.semconv import _hardware as semconv


def _file(tmp_path, text: str, name: str = "site.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_the_shipped_knowledge_base_loads():
    kb = load_knowledge_base()
    kinds = {rule.kind for rule in kb.rules}
    assert kinds == {"threshold", "rate", "state", "event", "error_code", "anomaly"}
    files = [path.rsplit("/", 1)[-1] for path in kb.files]
    assert files == ["anomaly.yaml", "ascend.yaml", "monitor.yaml", "nvidia.yaml", "xid.yaml"]
    assert kb.longest_window_s == 60
    node_level = {rule.id for rule in kb.rules if getattr(rule, "node_level", False)}
    assert node_level == {"nvml_unavailable", "dcmi_unavailable", "dcmi_hung", "kernel_log_unavailable"}


def test_every_metric_the_rules_read_is_a_hardware_metric():
    names = {metric.name for metric in semconv.HARDWARE_METRICS}
    for file in default_knowledge_files():
        for rule in yaml.safe_load(file.read_text())["rules"]:
            for key in ("signal", "limit", "load"):
                value = rule.get(key)
                if isinstance(value, dict) and "metric" in value:
                    assert value["metric"] in names, (file.name, rule["id"])


def test_a_user_file_patches_one_xid_and_keeps_the_catalog(tmp_path):
    site = _file(
        tmp_path,
        """
        rules:
          - id: xid
            codes:
              13: {severity: critical, conclusion: "{device_name} hit Xid 13.", action: Page the on-call.}
        """,
    )
    xid = load_knowledge_base([site]).rule("xid")
    assert xid.codes["13"].severity.value == "critical"
    assert xid.codes["13"].action.text == "Page the on-call."
    assert xid.codes["79"].severity.value == "critical"  # the rest of the catalog stays
    assert xid.where.startswith(str(site))


def test_a_user_file_turns_a_rule_off_and_adds_one(tmp_path):
    site = _file(
        tmp_path,
        """
        version: 1
        rules:
          - {id: gpu_power_at_limit, enabled: false}
          - id: gpu_hot_memory
            kind: threshold
            severity: warning
            signal: {metric: hw.temperature, attributes: {hw.sensor_location: memory}}
            op: ">"
            limit: 95
            conclusion: "{device_name} memory at {value:.0f} °C."
            action: Cool it.
        """,
    )
    kb = load_knowledge_base([site])
    assert kb.rule("gpu_power_at_limit") is None
    assert kb.rule("gpu_hot_memory").kind == "threshold"


def test_a_different_kind_replaces_the_rule(tmp_path):
    site = _file(
        tmp_path,
        """
        rules:
          - id: gpu_temperature_slowdown
            kind: threshold
            severity: warning
            signal: {metric: hw.temperature, attributes: {hw.sensor_location: die}}
            op: ">="
            limit: 80
            conclusion: hot
            action: cool
        """,
    )
    rule = load_knowledge_base([site]).rule("gpu_temperature_slowdown")
    assert rule.severity.value == "warning" and rule.limit.value(None, None) == 80.0


def test_later_files_win(tmp_path):
    first = _file(tmp_path, "rules: [{id: gpu_row_remap_pending, for: 5}]", "a.yaml")
    second = _file(tmp_path, "rules: [{id: gpu_row_remap_pending, for: 7}]", "b.yaml")
    assert load_knowledge_base([first, second]).rule("gpu_row_remap_pending").open_after == 7


def test_model_and_driver_conditions(make_run, hw, tmp_path):
    site = _file(
        tmp_path,
        """
        rules:
          - id: h100_old_driver
            kind: threshold
            severity: warning
            when: {model: "H100*", driver: ">=550,<560"}
            signal: {metric: hw.gpu.utilization}
            op: ">="
            limit: 0
            for: 1
            conclusion: "{model} on driver {driver}"
            action: Upgrade the driver.
        """,
    )
    run = make_run([site])
    old = hw.gpu_identity(0, driver_version="550.54.15")
    new = hw.gpu_identity(1, driver_version="570.124.06")
    a100 = hw.gpu_identity(2, driver_version="550.54.15", model="NVIDIA A100-SXM4-80GB")
    unknown = hw.gpu_identity(3, driver_version=None)
    gpus = [hw.gpu(identity=identity) for identity in (old, new, a100, unknown)]
    assert run.step(*gpus) == {"h100_old_driver"}
    finding = run.finding("h100_old_driver")
    assert finding.device == old.id
    assert finding.conclusion == "NVIDIA H100 80GB HBM3 on driver 550.54.15"


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("rules: [\n  - id: x\n    kind: [", "site.yaml", "not valid YAML"),
        ("rules: {}", "site.yaml", "expected a mapping with a 'rules' list"),
        ("version: 2\nrules: []", "site.yaml: version", "reads version 1"),
        ("rule: []\nrules: []", "site.yaml: rule", "unknown key"),
        ("rules: [{kind: threshold}]", "site.yaml: rules[0].id", "every rule needs an id"),
        ("rules: [{id: a, kind: magic}]", "site.yaml: rules[0].kind", "expected one of threshold"),
        (
            "rules: [{id: a, kind: threshold, signal: {metric: hw.power}, op: '>', limit: 1,"
            " conclusion: c, action: d}]",
            "site.yaml: rules[0]",
            "missing required field `severity`",
        ),
        (
            "rules: [{id: a, kind: threshold, severity: bad, signal: {metric: hw.power}, op: '>', limit: 1}]",
            "site.yaml: rules[0].severity",
            "Invalid enum value 'bad'",
        ),
        (
            "rules: [{id: gpu_temperature_slowdown, treshold: 3}]",
            "site.yaml: rules[0].treshold",
            "unknown field",
        ),
        (
            "rules: [{id: a, kind: threshold, severity: info, signal: {metric: hw.temp}, op: '>', limit: 1}]",
            "site.yaml: rules[0].signal.metric",
            "not a hardware metric",
        ),
        (
            "rules: [{id: a, kind: threshold, severity: info, signal: {metric: hw.power, attributes: {x: y}},"
            " op: '>', limit: 1, conclusion: c, action: d}]",
            "site.yaml: rules[0].signal.attributes",
            "hw.power carries no attribute",
        ),
        (
            "rules: [{id: a, kind: threshold, severity: info, signal: {metric: hw.power}, op: '>', limit: 1,"
            " conclusion: '{watts} W', action: d}]",
            "site.yaml: rules[0].conclusion",
            "unknown placeholder {watts}",
        ),
        (
            "rules: [{id: a, kind: threshold, severity: info, signal: {metric: hw.power}, op: '>', limit: 1,"
            " conclusion: c}]",
            "site.yaml: rules[0].action",
            "missing",
        ),
        (
            "rules: [{id: a, kind: threshold, severity: info, when: {driver: newest}, signal: {metric: hw.power},"
            " op: '>', limit: 1, conclusion: c, action: d}]",
            "site.yaml: rules[0].when.driver",
            "expected comparisons",
        ),
        ("rules: [{id: a, kind: rate, severity: info, signal: {metric: hw.errors}, window: 0}]", "rules[0].window", ""),
        ("rules: [{id: Bad-Id, kind: state, property: status, values: {}}]", "site.yaml: rules[0].id", "lower-case"),
        ("rules: [{id: a}, {id: a}]", "site.yaml: rules[1].id", "already given by rules[0]"),
        ("rules: [{id: xid, codes: {79: {severity: info, follow: gpu_status_nope}}}]", "codes.79.follow", "names no"),
        ("rules: [{id: ascend, codes: {'0x1': NoSuchLevel}}]", "codes.0x00000001", "not one of the levels"),
        ("rules: [{id: ascend, codes: {0x80E18402: NoSuchLevel}}]", "codes.0x80E18402", "not one of the levels"),
        ("rules: [{id: ascend, fault_code_file: /nonexistent.json}]", "fault_code_file", "cannot read it"),
        ("rules: [{id: gpu_status, values: {lost: {severity: fatal}}}]", "values.lost.severity", "Invalid enum"),
    ],
)
def test_invalid_rule_files_name_the_file_and_the_key(tmp_path, text, key, reason):
    site = _file(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load_knowledge_base([site])
    assert key in raised.value.setting
    assert str(tmp_path) in raised.value.setting
    assert reason in str(raised.value)


def test_an_unreadable_rule_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the rule file"):
        load_knowledge_base([tmp_path / "missing.yaml"])


_yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
_rule_keys = st.sampled_from(
    ["id", "kind", "severity", "signal", "op", "limit", "when", "for", "clear", "codes", "values", "levels", "and"]
)
_rules = st.dictionaries(_rule_keys, _yaml_values, max_size=8) | st.fixed_dictionaries(
    {"id": st.sampled_from(["xid", "ascend", "gpu_status", "gpu_pcie_replay_rate", "new_rule"])},
    optional={key: _yaml_values for key in ["kind", "codes", "values", "limit", "when", "signal", "for"]},
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=st.one_of(_yaml_values, st.fixed_dictionaries({"rules": st.lists(_rules, max_size=3)})))
def test_any_rule_file_loads_or_raises_config_error(tmp_path, document):
    site = tmp_path / "fuzz.yaml"
    site.write_text(yaml.safe_dump(document))
    try:
        load_knowledge_base([site])
    except EagleEyeError as error:
        assert isinstance(error, ConfigError)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=300))
def test_any_text_loads_or_raises_config_error(tmp_path, text):
    site = tmp_path / "fuzz.yaml"
    site.write_text(text)
    with contextlib.suppress(ConfigError):
        load_knowledge_base([site])


def test_a_rule_on_a_node_level_metric_takes_no_when(tmp_path):
    rules = _file(
        tmp_path,
        """
        version: 1
        rules:
          - id: kmsg_down
            kind: threshold
            severity: warning
            when: {type: gpu}
            signal: {metric: eagleeye.hw.source.status, attributes: {eagleeye.hw.source.state: unavailable}}
            op: "=="
            limit: 1
            conclusion: "{node} is blind."
            action: Fix it.
        """,
    )
    with pytest.raises(ConfigError) as raised:
        load_knowledge_base([rules])
    assert raised.value.setting.endswith(".when")
