"""The knowledge base: rules as YAML data, the shipped defaults merged with the user's files.

Files are read in order, the shipped ones (``knowledge/*.yaml``, by name) first. A rule whose ``id`` is new is added;
a rule whose ``id`` exists patches it: each key it gives replaces the earlier one, except the tables ``codes``,
``values`` and ``levels``, which are merged entry by entry (so one Xid's action can be changed without copying the
catalog), and a different ``kind``, which replaces the rule whole. ``enabled: false`` turns a rule off. Every error
names the file and the key (``rules[3].limit.metric``) and raises :class:`~eagleeye_otel.errors.ConfigError`.

A rule file is data from outside: one over 4 MiB, nested deeper than YAML's limit, or whose aliases expand to more
than 100,000 values (a "billion laughs" document) is refused before anything walks it, so no file can exhaust
memory or time.
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec
import yaml

from eagleeye_otel.diagnosis._rules import RateRule, Rule, StateRule, ThresholdRule
from eagleeye_otel.diagnosis._rules_anomaly import AnomalyRule
from eagleeye_otel.diagnosis._rules_events import ErrorCodeRule, EventRule, normalize_code
from eagleeye_otel.diagnosis._spec import RuleSpec
from eagleeye_otel.errors import ConfigError

__all__ = ["KnowledgeBase", "default_knowledge_files", "load_knowledge_base"]

_KINDS: Final[Mapping[str, type[Rule]]] = {
    rule.kind: rule for rule in (ThresholdRule, RateRule, StateRule, EventRule, ErrorCodeRule, AnomalyRule)
}
_TABLES: Final = frozenset({"codes", "values", "levels"})
_FILE_KEYS: Final = frozenset({"version", "rules"})
_VERSION: Final = 1
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MAX_FILE_BYTES: Final = 4 * 1024 * 1024
"""The shipped files are under 40 KiB."""
_MAX_VALUES: Final = 100_000
"""Values a file may hold once its aliases are expanded; the largest shipped file holds under 2,000."""


@dataclass(frozen=True)
class KnowledgeBase:
    """Validated rules, ready to evaluate.

    Attributes:
        rules: the enabled rules, in file order.
        files: the files read, shipped ones first.
        history_metrics: metrics some rule needs the recent history of.
        longest_window_s: the longest window a rate rule looks back over.
    """

    rules: tuple[Rule, ...]
    files: tuple[str, ...]
    history_metrics: frozenset[str]
    longest_window_s: float

    def rule(self, rule_id: str) -> Rule | None:
        """The enabled rule with this id."""
        return next((rule for rule in self.rules if rule.id == rule_id), None)


def default_knowledge_files() -> list[Any]:
    """The shipped rule files (package data ``eagleeye_otel/diagnosis/knowledge/*.yaml``), by name."""
    folder = importlib.resources.files("eagleeye_otel.diagnosis") / "knowledge"
    return sorted((entry for entry in folder.iterdir() if entry.name.endswith(".yaml")), key=lambda e: e.name)


def load_knowledge_base(extra: Sequence[Path] = ()) -> KnowledgeBase:
    """The shipped rules with ``extra`` files merged over them, in order.

    Args:
        extra: the user's rule files.

    Raises:
        ConfigError: a file cannot be read or is invalid; names the file and the key.
    """
    files = [*default_knowledge_files(), *extra]
    merged: dict[str, tuple[dict[str, Any], str]] = {}
    for file in files:
        for where, given in _rules_of(file):
            base = merged[given["id"]][0] if given["id"] in merged else {}
            keyed = _normalized(given, where, given.get("kind", base.get("kind")))
            merged[given["id"]] = (_patch(base, keyed) if base else keyed, where)
    rules: dict[str, Rule] = {}
    for raw, where in merged.values():
        if raw.get("enabled", True) is not False:
            rule = _compile(raw, where)
            rules[rule.id] = rule
    for rule in rules.values():
        if isinstance(rule, EventRule):
            rule.link(rules)
    windows = [rule.window for rule in rules.values() if isinstance(rule, RateRule)]
    return KnowledgeBase(
        rules=tuple(rules.values()),
        files=tuple(str(file) for file in files),
        history_metrics=frozenset().union(*(rule.history_metrics for rule in rules.values())),
        longest_window_s=max(windows, default=0.0),
    )


def _rules_of(file: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each rule of a file as (file and key, raw mapping)."""
    try:
        with file.open("rb") as stream:
            data = stream.read(_MAX_FILE_BYTES + 1)
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(str(file), "", f"cannot read the rule file: {error}") from error
    if len(data) > _MAX_FILE_BYTES:
        raise ConfigError(str(file), "", f"over {_MAX_FILE_BYTES >> 20} MiB; a rule file is a few KiB")
    try:
        document = yaml.load(text, Loader=_Loader)
    except (yaml.YAMLError, RecursionError) as error:
        raise ConfigError(str(file), "", f"not valid YAML: {_yaml_problem(error)}") from error
    if not _within(document, _MAX_VALUES):
        raise ConfigError(str(file), "", f"more than {_MAX_VALUES} values once its aliases are expanded")
    if not isinstance(document, dict) or not isinstance(document.get("rules"), list):
        raise ConfigError(str(file), "", "expected a mapping with a 'rules' list")
    for key in document:
        if key not in _FILE_KEYS:
            raise ConfigError(f"{file}: {key}", document[key], "unknown key; a rule file has 'version' and 'rules'")
    if document.get("version", _VERSION) != _VERSION:
        raise ConfigError(f"{file}: version", document["version"], f"this Eagle Eye reads version {_VERSION}")
    seen: dict[str, int] = {}
    for index, raw in enumerate(document["rules"]):
        where = f"{file}: rules[{index}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
            raise ConfigError(f"{where}.id", raw.get("id") if isinstance(raw, dict) else raw, "every rule needs an id")
        if raw["id"] in seen:
            raise ConfigError(f"{where}.id", raw["id"], f"already given by rules[{seen[raw['id']]}] of this file")
        seen[raw["id"]] = index
        yield where, raw


def _within(document: object, budget: int) -> bool:
    """Whether ``document`` holds at most ``budget`` values, counting a value each time an alias repeats it."""
    pending = [document]
    while pending:
        budget -= 1
        if budget < 0:
            return False
        value = pending.pop()
        if isinstance(value, dict):
            pending += value.keys()
            pending += value.values()
        elif isinstance(value, list):
            pending += value
    return True


def _normalized(raw: dict[str, Any], where: str, kind: object) -> dict[str, Any]:
    """Table keys as text: Xids and state values as written (``79``), Ascend codes as ``0x80E18402``.

    YAML reads an unquoted ``0x80E18402`` as a number; that number is the code, so it is written back in hex.
    """
    normalized = dict(raw)
    for key in _TABLES & raw.keys():
        table = raw[key]
        if not isinstance(table, dict):
            raise ConfigError(f"{where}.{key}", table, "expected a mapping")
        if kind == "error_code" and key == "codes":
            normalized[key] = {
                f"0x{code:08X}" if isinstance(code, int) else normalize_code(str(code)): entry
                for code, entry in table.items()
            }
        else:
            normalized[key] = {_text_key(code): entry for code, entry in table.items()}
    return normalized


def _text_key(key: object) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


def _patch(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """``patch`` over ``base``: keys replaced, tables merged entry by entry; another kind replaces the rule."""
    if "kind" in patch and patch["kind"] != base.get("kind"):
        return patch
    merged = dict(base)
    for key, value in patch.items():
        if key in _TABLES and isinstance(base.get(key), dict):
            merged[key] = {**base[key], **value}
        else:
            merged[key] = value
    return merged


def _compile(raw: dict[str, Any], where: str) -> Rule:
    kind = raw.get("kind")
    rule_class = _KINDS.get(kind) if isinstance(kind, str) else None
    if rule_class is None:
        raise ConfigError(f"{where}.kind", kind, f"expected one of {', '.join(_KINDS)}")
    try:
        spec = msgspec.convert(raw, RuleSpec)
    except msgspec.ValidationError as error:
        message = str(error)
        found = re.search(r" - at `\$(?P<path>[^`]*)`$", message)
        path = "" if found is None else _entry_path(raw, found["path"])
        unknown = re.search(r"unknown field `(?P<field>[^`]+)`", message)
        if unknown:
            path = f"{path}.{unknown['field']}"
        reason = message if found is None else message[: found.start()]
        raise ConfigError(where + path, _at(raw, path), reason) from error
    return rule_class(spec, where)


def _entry_path(raw: dict[str, Any], path: str) -> str:
    """msgspec writes a table entry as ``[...]``: name the entry (``.values.lost``) by finding the one that fails."""
    table = re.match(r"\.(?P<table>\w+)\[\.\.\.\]", path)
    entries = None if table is None else raw.get(table["table"])
    if table is None or not isinstance(entries, dict):
        return path
    others: dict[str, Any] = {name: {} for name in _TABLES & raw.keys()}  # each try then costs one entry
    for key, entry in entries.items():
        try:
            msgspec.convert({**raw, **others, table["table"]: {key: entry}}, RuleSpec)
        except msgspec.ValidationError:
            return path.replace("[...]", f".{key}", 1)
    return path


def _at(raw: Any, path: str) -> Any:
    """The value at a msgspec error path (``.limit.metric``, ``[2]``), for the error message."""
    for part in re.findall(r"\.([^.\[]+)|\[(\d+)\]", path):
        name, index = part
        try:
            raw = raw[int(index)] if index else raw[name]
        except (KeyError, IndexError, TypeError):
            return None
    return raw


def _yaml_problem(error: yaml.YAMLError | RecursionError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    return problem if mark is None else f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
