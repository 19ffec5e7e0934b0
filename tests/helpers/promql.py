"""The PromQL of Eagle Eye's dashboards and rules, and the names ``eagleeye_otel.semconv`` defines for it.

Shared by the static checks (``tests/deploy``) and the live evaluation (``tests/e2e/test_promql_live.py``).

- :func:`dashboard_queries` and :func:`rule_queries` list every expression with where it comes from.
- :func:`grafana_to_promql` turns a Grafana query into plain PromQL (variables, ``$__rate_interval``...).
- :func:`referenced_names` finds the metric and label names an expression uses, without a PromQL parser: string
  literals, label matchers, ranges and grouping clauses are cut out first, so what is left is functions (an
  identifier before ``(``), keywords and metric names.
- :func:`defined_series` asks the real Prometheus exporter which series names the semantic conventions' instruments
  become (the way the docs tests derive them): a name in a query must be one of them, a recording rule, or a name
  Prometheus itself writes.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "deploy" / "helm" / "eagle-eye" / "dashboards"
RULES = ROOT / "deploy" / "prometheus" / "rules"
CGROUP_FIXTURE = ROOT / "tests" / "receivers" / "hardware" / "fixtures" / "container_limited"

BUILTIN_SERIES = frozenset({"up", "target_info"})
"""Series Prometheus (``up``) or the OTel Prometheus exporter (``target_info``: the resource) write themselves."""
BUILTIN_LABELS = frozenset({"job", "instance", "le", "otel_scope_name", "otel_scope_version", "service_name"})
"""Labels Prometheus adds to every target, bucket labels, the exporter's scope labels and target_info's
``service.name``."""
SCRAPE_LABELS = frozenset({"namespace"})
"""Labels a Kubernetes scrape configuration attaches (the pod role's ``namespace``); absent elsewhere, which the
queries tolerate (``=~".*"`` matches a missing label, ``by (namespace)`` keeps none)."""

_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right", "inf",
     "nan", "atan2"}
)  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{([^{}]*)\}")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_IDENTIFIER = re.compile(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(\s*\()?")
_LEGEND_LABEL = re.compile(r"\{\{\s*([a-zA-Z_]\w*)\s*\}\}")
_LABEL_VALUES = re.compile(r"^\s*label_values\((.*),\s*([a-zA-Z_]\w*)\s*\)\s*$", re.S)


@dataclass(frozen=True)
class Query:
    """One expression and where it is."""

    where: str
    """``file: panel title [refId]``, ``file: variable name`` or ``file: rule name``."""
    expr: str
    """As written (Grafana variables included)."""
    legend: str = ""
    alert: bool = False
    """An alerting rule's condition."""


# -- where the expressions are ----------------------------------------------------------------------------------


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def rule_files() -> list[Path]:
    return sorted(RULES.glob("*.yaml"))


def load_dashboard(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those nested in collapsed rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries(path: Path) -> list[Query]:
    """Every panel target's expression and every query variable's metric selector in one dashboard file."""
    dashboard = load_dashboard(path)
    queries = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            where = f"{path.name}: {panel['title']} [{target['refId']}]"
            queries.append(Query(where, target["expr"], target.get("legendFormat", "")))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            found = _LABEL_VALUES.match(query)
            assert found, f"{path.name}: variable {variable['name']}: only label_values(selector, label) is used"
            queries.append(Query(f"{path.name}: variable {variable['name']}", found.group(1), f"{{{{{found[2]}}}}}"))
    return queries


def all_dashboard_queries() -> list[Query]:
    return [query for path in dashboard_files() for query in dashboard_queries(path)]


def rule_groups(path: Path) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(path.read_text())["groups"]
    return groups


def rule_queries() -> list[Query]:
    """Every recording and alerting rule's expression."""
    return [
        Query(f"{path.name}: {rule.get('record') or rule['alert']}", rule["expr"], alert="alert" in rule)
        for path in rule_files()
        for group in rule_groups(path)
        for rule in group["rules"]
    ]


def recording_rule_names() -> set[str]:
    return {
        rule["record"] for path in rule_files() for g in rule_groups(path) for rule in g["rules"] if "record" in rule
    }


def alert_names() -> set[str]:
    return {rule["alert"] for path in rule_files() for g in rule_groups(path) for rule in g["rules"] if "alert" in rule}


AUTOSCALING = ROOT / "deploy" / "autoscaling"
EXAMPLE_MATCHERS = 'namespace="llm", gen_ai_request_model="qwen"'
"""What the autoscaling examples select: their namespace and served model."""


def autoscaling_queries(label_matchers: str = EXAMPLE_MATCHERS) -> list[Query]:
    """The KEDA triggers' queries and prometheus-adapter's series and metrics queries (the adapter's template
    filled in: ``<<.Series>>`` with the series, ``<<.LabelMatchers>>`` with ``label_matchers``)."""
    keda = yaml.safe_load((AUTOSCALING / "keda-scaledobject.yaml").read_text())
    queries = [
        Query(f"keda-scaledobject.yaml: trigger {trigger['name']}", trigger["metadata"]["query"])
        for trigger in keda["spec"]["triggers"]
    ]
    adapter = yaml.safe_load((AUTOSCALING / "prometheus-adapter-values.yaml").read_text())
    for rule in adapter["rules"]["external"]:
        where = f"prometheus-adapter-values.yaml: {rule['name']['as']}"
        series = rule["seriesQuery"].split("{")[0]
        metrics = rule["metricsQuery"].replace("<<.Series>>", series).replace("<<.LabelMatchers>>", label_matchers)
        queries += [Query(f"{where} (seriesQuery)", rule["seriesQuery"]), Query(f"{where} (metricsQuery)", metrics)]
    return queries


# -- Grafana to PromQL ------------------------------------------------------------------------------------------

GRAFANA_INTERVALS = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m"}
"""What the live test gives Grafana's interval variables: windows that hold a few scrapes at any scrape interval
it uses, and that reach back before the requests it sent."""


def all_values(path: Path) -> dict[str, str]:
    """Each variable of a dashboard and the regex its "All" stands for."""
    return {
        variable["name"]: variable.get("allValue") or ".*"
        for variable in load_dashboard(path)["templating"]["list"]
        if variable["type"] != "datasource"
    }


def grafana_to_promql(expr: str, variables: dict[str, str]) -> str:
    """``expr`` with Grafana's interval variables and the dashboard's variables ("All") substituted."""
    for name, value in GRAFANA_INTERVALS.items():
        expr = expr.replace(name, value)
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", variables[name]).replace("$" + name, variables[name])
    assert "$" not in expr, f"unsubstituted variable in {expr!r}"
    return expr


# -- names in an expression -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Names:
    metrics: frozenset[str]
    labels: frozenset[str]


def referenced_names(expr: str, legend: str = "") -> Names:
    """The metric names and label names ``expr`` (plain PromQL) and its legend refer to."""
    text = _STRING.sub('""', expr)
    labels: set[str] = set(_LEGEND_LABEL.findall(legend))
    for block in _MATCHERS.findall(text):
        labels.update(_MATCHER_LABEL.findall(block))
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    for _, grouped in _GROUPING.findall(text):
        labels.update(label.strip() for label in grouped.split(",") if label.strip())
    text = _GROUPING.sub(" ", text)
    metrics = {
        name
        for name, call in _IDENTIFIER.findall(text)
        if not call and name.lower() not in _KEYWORDS and not re.fullmatch(r"\d.*", name)
    }
    return Names(frozenset(metrics), frozenset(labels))


def without_comparisons(expr: str) -> str:
    """``expr`` with every comparison made a ``bool`` one: the same series, 0 or 1 instead of filtered out.

    An alert's condition (``x > 0``) returns nothing while all is well; as ``x > bool 0`` it returns every series
    the condition looks at, so a live Prometheus shows whether the names and labels match anything. Comparisons are
    found outside label matchers, ranges and strings, where PromQL has no other use for ``==``, ``!=``, ``<``, ``>``.
    """
    out: list[str] = []
    i, depth = 0, 0
    while i < len(expr):
        char = expr[i]
        if char in "\"'`":
            end = _STRING.match(expr, i)
            assert end, f"unterminated string in {expr!r}"
            out.append(end.group(0))
            i = end.end()
            continue
        if char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
        operator = None
        if depth == 0:
            two = expr[i : i + 2]
            if two in ("==", "!=", ">=", "<="):
                operator = two
            elif char in "<>":
                operator = char
        if operator is None:
            out.append(char)
            i += 1
            continue
        out.append(operator)
        i += len(operator)
        if not re.match(r"\s*bool\b", expr[i:]):
            out.append(" bool")
    return "".join(out)


# -- names the semantic conventions define ----------------------------------------------------------------------


def _sanitize(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def _diagnosis_semconv() -> ModuleType | None:
    """The diagnosis service's names, or None where the module does not exist (then the queries that use them
    fail the name check, and only they)."""
    try:
        return importlib.import_module("eagleeye_otel.semconv._diagnosis")
    except ModuleNotFoundError:
        return None


@cache
def defined_series() -> frozenset[str]:
    """Every series name (``_total``, ``_bucket``, ``_sum``, ``_count`` included) the exporter writes for the
    instruments ``eagleeye_otel.semconv`` defines: vLLM, hardware, container and diagnosis metrics."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader  # noqa: PLC0415
    from opentelemetry.metrics import Observation  # noqa: PLC0415
    from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
    from prometheus_client import CollectorRegistry, generate_latest  # noqa: PLC0415

    from eagleeye_otel.receivers.hardware import register_cgroup_metrics  # noqa: PLC0415
    from eagleeye_otel.semconv import VLLM_METRICS, InstrumentKind  # noqa: PLC0415
    from eagleeye_otel.semconv import _hardware as hw  # noqa: PLC0415

    dx = _diagnosis_semconv()
    registry = CollectorRegistry()
    provider = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)], shutdown_on_exit=False)
    meter = provider.get_meter("eagleeye-semconv-names")

    def observe(_: object) -> list[Observation]:
        return [Observation(1)]

    for spec in VLLM_METRICS:
        if spec.kind is InstrumentKind.COUNTER:
            meter.create_counter(spec.name, unit=spec.unit).add(1)
        elif spec.kind is InstrumentKind.HISTOGRAM:
            meter.create_histogram(spec.name, unit=spec.unit).record(1)
        else:
            meter.create_observable_gauge(spec.name, [observe], unit=spec.unit)
    for metric in hw.HARDWARE_METRICS:
        create = {
            hw.HwInstrument.GAUGE: meter.create_observable_gauge,
            hw.HwInstrument.COUNTER: meter.create_observable_counter,
            hw.HwInstrument.UP_DOWN_COUNTER: meter.create_observable_up_down_counter,
        }[metric.instrument]
        create(metric.name, [observe], unit=metric.unit)
    # The diagnosis service's instruments, as its docstrings in semconv/_diagnosis.py describe them (hw.status is
    # the hardware table's).
    if dx is not None:
        meter.create_observable_gauge(dx.EAGLEEYE_DIAGNOSIS_FINDINGS, [observe], unit="{finding}")
    # Container metrics: the real registration, on a fixture cgroup tree that has every file.
    assert register_cgroup_metrics(provider, root_path=CGROUP_FIXTURE)
    try:
        text = generate_latest(registry).decode()
    finally:
        provider.shutdown()
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    return frozenset(names - {"target_info"})


@cache
def defined_labels() -> frozenset[str]:
    """The Prometheus label of every attribute the semantic conventions put on Eagle Eye's points and resources."""
    from eagleeye_otel.semconv import ENGINE_ATTRIBUTES, VLLM_FINISHED_REASON  # noqa: PLC0415
    from eagleeye_otel.semconv import _hardware as hw  # noqa: PLC0415

    dx = _diagnosis_semconv()
    attributes = {
        *ENGINE_ATTRIBUTES,
        VLLM_FINISHED_REASON,
        *hw.DEVICE_ATTRIBUTES,
        *hw.DEVICE_DESCRIPTION_ATTRIBUTES,
        hw.EAGLEEYE_NODE_NAME,
        *(attribute for metric in hw.HARDWARE_METRICS for attribute in metric.attributes),
    }
    if dx is not None:
        attributes |= {dx.EAGLEEYE_DIAGNOSIS_FAULT, dx.EAGLEEYE_DIAGNOSIS_SEVERITY}
    return frozenset(_sanitize(attribute) for attribute in attributes)


def undefined_names(expr: str, legend: str = "") -> Names:
    """The metric and label names of ``expr`` (plain PromQL) that nothing defines: not the semantic conventions
    (through the exporter), not a recording rule of ours, not Prometheus itself."""
    names = referenced_names(expr, legend)
    metrics = names.metrics - defined_series() - recording_rule_names() - BUILTIN_SERIES
    labels = names.labels - defined_labels() - BUILTIN_LABELS - SCRAPE_LABELS
    return Names(frozenset(metrics), frozenset(labels))
