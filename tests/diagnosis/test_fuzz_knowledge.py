"""Hostile rule files: whatever a user's YAML (or the MindCluster JSON it names) holds, loading ends in a
knowledge base or a ConfigError naming the file, and neither memory nor time explode on the way.

tests/diagnosis/test_knowledge.py fuzzes plain documents; here: aliases, bytes, and the classic bombs."""

from __future__ import annotations

import contextlib
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eagleeye_otel.diagnosis import load_knowledge_base
from eagleeye_otel.errors import ConfigError

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _load(path: Path) -> ConfigError | None:
    """Load ``path`` over the shipped rules; the ConfigError it raised, if any (anything else fails the test)."""
    try:
        load_knowledge_base([path])
    except ConfigError as error:
        assert str(path) in error.setting
        return error
    return None


def _peak_bytes(path: Path) -> tuple[ConfigError | None, int]:
    tracemalloc.start()
    try:
        return _load(path), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _laughs(levels: int, where: str) -> str:
    """A rule file whose anchors expand to 10**``levels`` strings, used at ``where``."""
    anchors = "".join(f", x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels + 1))
    holder = f"{{id: holder, x0: &a0 [x, x, x, x, x, x, x, x, x, x]{anchors}}}"
    bomb = f"*a{levels}"
    uses = {
        "id": f"rules: [{holder}, {{id: {bomb}}}]",
        "version": f"rules: [{holder}]\nversion: {bomb}",
        "unknown-file-key": f"rules: [{holder}]\nextra: {bomb}",
        "table": f"rules: [{holder}, {{id: xid, codes: {{'79': {bomb}}}}}]",
        "kind": f"rules: [{holder}, {{id: new, kind: {bomb}}}]",
    }
    return uses[where] + "\n"


@pytest.mark.parametrize("where", ["id", "version", "unknown-file-key", "table", "kind"])
def test_a_billion_laughs_is_refused_before_it_expands(tmp_path: Path, where: str) -> None:
    """It used to build its 10**9-item error message until memory ran out."""
    site = tmp_path / "laughs.yaml"
    site.write_text(_laughs(9, where))
    error, peak = _peak_bytes(site)
    assert error is not None and "aliases are expanded" in error.reason
    assert peak < 32 * 1024 * 1024


def test_aliases_that_expand_modestly_still_work(tmp_path: Path) -> None:
    site = tmp_path / "aliases.yaml"
    site.write_text(
        "rules:\n"
        "- {id: hot, kind: threshold, severity: warning, signal: &die {metric: hw.temperature}, op: '>', limit: 90,\n"
        "   conclusion: &says Hot., action: &do Cool it.}\n"
        "- {id: hotter, kind: threshold, severity: critical, signal: *die, op: '>', limit: 95,\n"
        "   conclusion: *says, action: *do}\n"
    )
    assert _load(site) is None


@pytest.mark.parametrize(
    "text",
    [
        "rules: " + "[" * 100_000,
        "rules: [{id: x, limit: " + "{a: " * 100_000 + "}" * 100_000 + "}]",
        "rules:\n" + "".join(" " * i + "- \n" for i in range(3000)),
        "rules: [{id: x, kind: threshold, signal: " + "[" * 900 + "]" * 900 + "}]",
    ],
    ids=["flow-list-100k-deep", "flow-map-100k-deep", "block-list-3000-deep", "deep-within-the-yaml-limit"],
)
def test_deeply_nested_files_are_refused(tmp_path: Path, text: str) -> None:
    site = tmp_path / "deep.yaml"
    site.write_text(text)
    assert _load(site) is not None


def test_a_100_mb_file_is_refused_unread(tmp_path: Path) -> None:
    site = tmp_path / "huge.yaml"
    with site.open("wb") as file:
        file.write(b"rules: []\n#")
        file.truncate(100 * 1024 * 1024)  # sparse: the test writes nothing to disk
    error, peak = _peak_bytes(site)
    assert error is not None and "MiB" in error.reason
    assert peak < 16 * 1024 * 1024


@pytest.mark.parametrize(
    "data",
    [b"rules: [{id: \xff}]", b"\xfe\xff\x00r", b"rules: []\n# \xed\xa0\x80 (a UTF-8 surrogate)", b"\x00" * 1000],
    ids=["invalid-utf8", "utf16-bom", "encoded-surrogate", "nul-bytes"],
)
def test_bytes_that_are_not_utf8_text_are_refused(tmp_path: Path, data: bytes) -> None:
    site = tmp_path / "bytes.yaml"
    site.write_bytes(data)
    assert _load(site) is not None


def test_finding_the_bad_entry_of_a_large_table_does_not_revalidate_the_others(tmp_path: Path) -> None:
    """The error names ``levels.zz``; finding it tried each entry with every other table in full (quadratic)."""
    n = 5000
    rule = {
        "id": "big",
        "kind": "error_code",
        "unknown_level": "L0",
        "unknown_level_major": "L0",
        "codes": {f"0x{i:08X}": "L0" for i in range(n)},
        "levels": {
            **{f"L{i}": {"severity": "warning", "conclusion": "c", "action": "a"} for i in range(n)},
            "zz": {"severity": "fatal", "conclusion": "c", "action": "a"},
        },
    }
    site = tmp_path / "big.yaml"
    site.write_text(yaml.safe_dump({"rules": [rule]}))
    error = _load(site)
    assert error is not None and error.setting.endswith("rules[0].levels.zz.severity")


@pytest.mark.parametrize(
    "content",
    ['{"RestartNPUCodes": ' + "[" * 100_000 + "]" * 100_000 + "}", "\xff", '{"RestartNPUCodes": "80E18005"}', "[]"],
    ids=["nested-100k-deep", "not-json", "codes-not-a-list", "not-an-object"],
)
def test_a_hostile_fault_code_file_is_a_config_error(tmp_path: Path, content: str) -> None:
    """A JSON file nested too deep used to escape as RecursionError."""
    codes = tmp_path / "faultCode.json"
    codes.write_text(content, encoding="latin-1")
    site = tmp_path / "site.yaml"
    site.write_text(f"rules: [{{id: ascend, fault_code_file: {codes}}}]\n")
    assert _load(site) is not None


# -- fuzzing -------------------------------------------------------------------------------------------------

_scalars = st.sampled_from(["x", "79", "0x80E18402", "critical", "threshold", "state", "event", "error_code", "true"])
_keys = st.sampled_from(["id", "kind", "severity", "codes", "values", "levels", "signal", "limit", "metric", "79"])


@st.composite
def aliased_documents(draw: st.DrawFn) -> str:
    """Flow-style YAML with anchors on some values and aliases to them later, as text."""
    anchors: list[str] = []

    def value(depth: int) -> str:
        choice = draw(st.integers(0, 4 if depth < 4 else 1))
        if choice == 1 and anchors:
            return "*" + draw(st.sampled_from(anchors))
        if choice == 2:
            text = "[" + ", ".join(value(depth + 1) for _ in range(draw(st.integers(0, 3)))) + "]"
        elif choice >= 3:
            items = [f"{draw(_keys)}: {value(depth + 1)}" for _ in range(draw(st.integers(0, 3)))]
            text = "{" + ", ".join(items) + "}"
        else:
            return draw(_scalars)
        if draw(st.booleans()):
            anchors.append(f"a{len(anchors)}")
            return f"&{anchors[-1]} {text}"
        return text

    rules = []
    for _ in range(draw(st.integers(1, 3))):
        fields = [f"{draw(_keys.filter(lambda k: k != 'id'))}: {value(1)}" for _ in range(draw(st.integers(0, 4)))]
        rules.append("{" + ", ".join([f"id: {draw(st.sampled_from(['xid', 'gpu_status', 'new']))}", *fields]) + "}")
    return "rules: [" + ", ".join(rules) + "]\n"


@FUZZ
@given(text=aliased_documents())
def test_any_aliased_document_loads_or_is_a_config_error(tmp_path: Path, text: str) -> None:
    site = tmp_path / "aliased.yaml"
    site.write_text(text)
    with contextlib.suppress(yaml.YAMLError):
        yaml.safe_load(text)  # only to keep documents hypothesis finds readable in a failure report
    _load(site)


@FUZZ
@given(data=st.binary(max_size=300), prefix=st.sampled_from([b"", b"rules:\n- id: xid\n  codes: ", b"rules: ["]))
def test_any_bytes_load_or_are_a_config_error(tmp_path: Path, data: bytes, prefix: bytes) -> None:
    site = tmp_path / "bytes.yaml"
    site.write_bytes(prefix + data)
    _load(site)


def test_the_document_checks_cost_the_shipped_files_nothing(tmp_path: Path) -> None:
    """The budget is far above what real files hold: every shipped file loads with room to spare."""
    base = load_knowledge_base()
    assert base.rules
    copy: Any = [Path(name).read_text(encoding="utf-8") for name in base.files if Path(name).exists()]
    for index, text in enumerate(copy):
        site = tmp_path / f"copy{index}.yaml"
        site.write_text(text)
        assert _load(site) is None
