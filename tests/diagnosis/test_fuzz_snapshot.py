"""Hostile ``hardware-monitor --once`` snapshots (``eagle-eye diagnose --snapshot``): any JSON document is read
into the engine or refused with a ConfigError; entries that do not parse are skipped and counted in
``stats.malformed``; findings from what is read can always be published."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eagleeye_otel.cli._hardware_output import sweep_document
from eagleeye_otel.diagnosis import DiagnosisEngine, FindingChange, encode_message, load_knowledge_base
from eagleeye_otel.diagnosis._oneshot import diagnose_files
from eagleeye_otel.errors import ConfigError
from eagleeye_otel.receivers.hardware._model import Sweep

KB = load_knowledge_base()
FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()  # NaN and infinities: Python's json reads them
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=15,
)


def _ingest(document: Any) -> DiagnosisEngine:
    """Feed ``document``; a ConfigError is the only way to refuse it. Findings must be publishable."""
    engine = DiagnosisEngine(KB, hysteresis=False)
    try:
        engine.ingest_snapshot(document)
    except ConfigError:
        return engine
    engine.evaluate()
    assert engine.stats.rule_failures == 0
    for finding in engine.active():
        encode_message(finding, FindingChange.OPENED)
    return engine


def _snapshot(hw: Any) -> dict[str, Any]:
    sweep = Sweep(
        hw.node,
        1.8e9,
        gpus=(hw.gpu(0, temperature_c=95.0, xid_counts={79: 1}), hw.gpu(1)),
        npus=(hw.npu(0, health=2, error_codes=(0x80E18402,)),),
        kernel_log=hw.kernel_log({("xid", "48", "0000:3b:00.0"): 2}),
    )
    return sweep_document(sweep)


@FUZZ
@given(document=_json | st.dictionaries(st.sampled_from(["node", "gpus", "npus", "kernel_log", "taken_at"]), _json))
def test_any_json_document_is_read_or_refused(document: Any) -> None:
    _ingest(document)


@FUZZ
@given(
    top=st.dictionaries(st.sampled_from(["gpus", "npus", "kernel_log", "taken_at", "extra"]), _json, max_size=2),
    device=st.dictionaries(st.text(max_size=20), _json, max_size=3),
    event=st.dictionaries(st.sampled_from(["kind", "code", "device", "count", "last_message"]), _json, max_size=3),
)
def test_a_real_snapshot_with_parts_replaced_is_read_or_refused(
    hw: Any, top: dict[str, Any], device: dict[str, Any], event: dict[str, Any]
) -> None:
    document = _snapshot(hw)
    document["gpus"][0].update(device)
    document["npus"][0].update(device)
    document["kernel_log"]["events"][0].update(event)
    document.update(top)
    _ingest(json.loads(json.dumps(document)))  # what --snapshot would read


@pytest.mark.parametrize("taken_at", [10**400, math.nan, math.inf, -math.inf, True, "1.8e9", None])
def test_a_taken_at_that_is_not_a_finite_number_counts_as_unknown(hw: Any, taken_at: Any) -> None:
    """10**400 used to raise OverflowError out of the one-shot diagnosis."""
    document = _snapshot(hw)
    document["taken_at"] = taken_at
    engine = _ingest(document)
    assert engine.stats.snapshots == 1
    assert "gpu_temperature_slowdown" in {f.fault for f in engine.active()}


@pytest.mark.parametrize("events", [5, "xid", {"kind": "xid"}, 1.5])
def test_kernel_log_events_that_are_not_a_list_are_refused(hw: Any, events: Any) -> None:
    """An integer used to raise TypeError."""
    document = _snapshot(hw)
    document["kernel_log"]["events"] = events
    with pytest.raises(ConfigError) as raised:
        DiagnosisEngine(KB).ingest_snapshot(document)
    assert raised.value.setting == "snapshot.kernel_log.events"


@pytest.mark.parametrize("message", [["a", "list"], {"an": "object"}, 79, None])
def test_a_last_message_that_is_not_text_is_left_out(hw: Any, message: Any) -> None:
    document = _snapshot(hw)
    document["kernel_log"]["events"][0]["last_message"] = message
    engine = _ingest(document)
    assert engine.nodes[hw.node].events["xid", "48", "0000:3b:00.0"].message is None


def test_entries_of_every_wrong_shape_are_skipped_and_counted(hw: Any) -> None:
    document = _snapshot(hw)
    document["gpus"] += [None, 1, "x", [], {"identity": []}, {"error_codes": ["zz"]}]
    document["npus"] += [{"error_codes": ["not hex", 2**70]}, {"identity": None}]
    document["kernel_log"]["events"] += [None, [], {"kind": []}, {"kind": "xid", "code": "1", "count": -1}]
    engine = _ingest(document)
    assert engine.stats.malformed == 12
    assert "gpu_temperature_slowdown" in {f.fault for f in engine.active()}


@pytest.mark.parametrize(
    "content",
    [
        b'{"node": "n", "gpus": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"node": "\xff\xfe"}',
        b'{"node": "n"' + b" " * 1000,
        b"\x00" * 100,
        b'{"node": "n", "node": "m", "gpus": NaN}',
    ],
    ids=["nested-100k-deep", "invalid-utf8", "truncated", "nul-bytes", "nan-list"],
)
def test_a_hostile_snapshot_file_is_a_config_error(tmp_path: Path, content: bytes) -> None:
    """The nested one used to escape ``eagle-eye diagnose --snapshot`` as RecursionError."""
    path = tmp_path / "snapshot.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as raised:
        diagnose_files(snapshot=path)
    assert raised.value.setting.startswith(("--snapshot", "snapshot"))


def test_a_snapshot_file_read_end_to_end_names_what_it_skipped(tmp_path: Path, hw: Any) -> None:
    document = _snapshot(hw)
    document["gpus"].append({"identity": "nonsense"})
    document["taken_at"] = 1e999  # json.dumps writes Infinity, which json.loads reads back
    path = tmp_path / "snapshot.json"
    path.write_text(json.dumps(document))
    report = diagnose_files(snapshot=path)
    assert report.inputs["snapshot"]["skipped"] == 1
    assert "gpu_temperature_slowdown" in {f.fault for f in report.findings}
    msgspec.json.encode([msgspec.to_builtins(f) for f in report.findings])
