"""Hostile kernel logs: any bytes through the monitor's file source and reader, any text through the parser, a
100 MB line, invalid UTF-8 and floods of distinct events. Nothing raises, malformed lines are counted, memory stays
within the reader's caps, and every event can be encoded (as JSON and OTLP do) wherever it goes next.

tests/receivers/hardware/test_kmsg_parser.py fuzzes the parser's formats; here the bytes, sizes and volumes."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import msgspec
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from eagleeye_otel.diagnosis import DiagnosisEngine, FindingChange, encode_message, load_knowledge_base
from eagleeye_otel.receivers.hardware._kmsg import KernelLogReader
from eagleeye_otel.receivers.hardware._kmsg_parser import MAX_LINE_CHARS, MalformedLine, parse_line
from eagleeye_otel.receivers.hardware._kmsg_sources import FileSource
from eagleeye_otel.receivers.hardware._model import KernelEvent

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
XID = b"NVRM: Xid (PCI:0000:3b:00): 79, pid=1, GPU has fallen off the bus.\n"
MARKERS = st.sampled_from(
    [
        "NVRM: Xid (PCI:0000:3b:00): 79, ",
        "nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 12028, ",
        "NVRM: GPU 0000:3b:00.0: GPU has fallen off the bus. ",
        "[ascend] devdrv_heartbeat: device 3 Heartbeat lost ",
        "6,1,2,-;NVRM: Xid (PCI:0000:3b:00): 48, ",
    ]
)


def _check_encodable(event: KernelEvent) -> None:
    """Events become OTLP attributes and JSON findings: every text field must encode as UTF-8."""
    msgspec.json.encode([event.message, event.code, event.device])
    event.message.encode("utf-8")


def _reader(path: Path) -> KernelLogReader:
    return KernelLogReader(FileSource(path), max_keys=64, max_message_chars=512)


@FUZZ
@given(marker=MARKERS, text=st.text(), prefix=st.text(max_size=10))
@example(marker="NVRM: Xid (PCI:0000:3b:00): 79, ", text="\udcff\udcfe from surrogateescape", prefix="")
def test_every_event_is_encodable_whatever_text_it_carries(marker: str, text: str, prefix: str) -> None:
    """A lone surrogate (text decoded with surrogateescape) used to reach the event, then broke every encoder."""
    try:
        event = parse_line(prefix + marker + text)
    except MalformedLine:
        return
    if event is not None:
        _check_encodable(event)


def test_a_finding_quoting_a_line_with_a_lone_surrogate_can_be_published() -> None:
    engine = DiagnosisEngine(load_knowledge_base(), hysteresis=False)
    engine.ingest_kernel_log("node-1", ["NVRM: Xid (PCI:0000:3b:00): 79, pid=1, name=\udcff\udcfe"])
    engine.evaluate()
    (finding,) = engine.active()
    assert finding.fault == "xid_79"
    encode_message(finding, FindingChange.OPENED)


@FUZZ
@given(data=st.binary(max_size=4096), lines=st.lists(st.sampled_from([XID, b"\xff\xfe" + XID, b"\r\n"]), max_size=5))
def test_any_bytes_in_a_log_file_are_read_without_raising(tmp_path: Path, data: bytes, lines: list[bytes]) -> None:
    path = tmp_path / "kern.log"
    path.write_bytes(data + b"".join(lines))
    reader = _reader(path)
    reader.poll()
    summary = reader.summary()
    assert summary.lines >= sum(line == XID or line.endswith(XID) for line in lines)
    assert sum(summary.counts.values()) + summary.overflow <= summary.lines
    for message in summary.last_messages.values():
        message.encode("utf-8")


def test_a_100_mb_line_is_cut_and_the_next_line_still_counts(tmp_path: Path) -> None:
    """A line with no end in sight is taken in 8 KiB pieces: memory never holds it whole."""
    path = tmp_path / "kern.log"
    with path.open("wb") as file:
        file.write(b"NVRM: Xid (PCI:0000:3b:00): 48, ")
        file.truncate(100 * 1024 * 1024)  # sparse: 100 MB of NUL bytes without a newline
        file.seek(0, 2)
        file.write(b"\n" + XID)
    reader = _reader(path)
    tracemalloc.start()
    try:
        reader.poll()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024
    summary = reader.summary()
    assert {key[1]: count for key, count in summary.counts.items()} == {"48": 1, "79": 1}
    assert all(len(message) <= 512 for message in summary.last_messages.values())
    assert summary.lines > 100 * 1024 * 1024 // (64 * 1024)  # each 64 KiB read gave one cut piece


def test_invalid_utf8_in_event_lines_is_replaced_not_raised(tmp_path: Path) -> None:
    path = tmp_path / "kern.log"
    path.write_bytes(
        b"NVRM: Xid (PCI:0000:3b:00): 79, name=\xff\xfe\xc0\x80\n"
        b"6,7,8,-;NVRM: Xid (PCI:0000:3c:00): 79, name=\\xff\\xed\\xa0\\x80\n"  # kmsg-escaped invalid bytes
        b"NVRM: Xid (PCI:\xff\n"
    )
    reader = _reader(path)
    assert reader.poll() == 2
    summary = reader.summary()
    assert (summary.lines, summary.malformed) == (3, 1)
    for message in summary.last_messages.values():
        assert "\ufffd" in message
        message.encode("utf-8")


def _flood(count: int) -> bytes:
    """``count`` lines, each an event the reader has not seen (a new code, a new device) or a malformed one."""
    lines = []
    for i in range(count):
        if i % 3 == 0:
            lines.append(f"NVRM: Xid (PCI:0000:{i % 256:02x}:{i // 256 % 32:02x}): {i}, {'x' * 600}")
        elif i % 3 == 1:
            lines.append(f"[ascend] device {i % 100000} event_id: 0x{i:08X} {'y' * 600}")
        else:
            lines.append(f"NVRM: Xid (PCI:garbage-{i}): ")
    return "\n".join(lines).encode() + b"\n"


def test_a_flood_of_distinct_events_is_capped_and_counted(tmp_path: Path) -> None:
    """30,000 events and malformed lines after the key cap is reached: what is held stays the same size."""
    path = tmp_path / "kern.log"
    path.write_bytes(_flood(30_000))
    reader = KernelLogReader(FileSource(path, follow=True, from_start=True), max_keys=64, max_message_chars=512)
    reader.poll()  # the first 30,000: the cap fills
    with path.open("ab") as file:
        file.write(_flood(30_000))
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        reader.poll()
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    reader.close()
    assert retained < 256 * 1024  # the 64 last messages, renewed (about 1 KiB each); the lines were 20 MB
    summary = reader.summary()
    assert len(summary.counts) == 64
    assert summary.lines == 60_000
    assert summary.malformed == 20_000
    assert sum(summary.counts.values()) + summary.overflow == 40_000
    assert all(len(message) <= 512 for message in summary.last_messages.values())


@FUZZ
@given(
    width=st.integers(MAX_LINE_CHARS - 60, MAX_LINE_CHARS + 60),
    fill=st.sampled_from([" ", "x", "0", ":", "\u00e9", "\udcff"]),
    marker=MARKERS,
    tail=st.text(max_size=20),
)
def test_lines_around_the_length_limit_parse_or_are_malformed(width: int, fill: str, marker: str, tail: str) -> None:
    for text in (marker + fill * width + tail, fill * width + marker + tail):
        try:
            event = parse_line(text)
        except MalformedLine:
            continue
        if event is not None:
            _check_encodable(event)
            assert len(event.message) <= MAX_LINE_CHARS
