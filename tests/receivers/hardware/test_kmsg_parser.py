"""Kernel-log lines of every documented variant parsed to events; fuzzing shows no input breaks the parser."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from eagleeye_otel.receivers.hardware._kmsg_parser import (
    FALLEN_OFF_BUS_XID,
    MalformedLine,
    parse_line,
)
from eagleeye_otel.receivers.hardware._model import KernelEvent, KernelEventKind
from eagleeye_otel.receivers.hardware._pci import normalize_pci_bus_id

FIXTURES = Path(__file__).parent / "fixtures" / "kmsg"
XID, SXID, FALLEN, ASCEND = (
    KernelEventKind.XID,
    KernelEventKind.SXID,
    KernelEventKind.FALLEN_OFF_BUS,
    KernelEventKind.ASCEND,
)
NORMALISED = re.compile(r"[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]")

XID_79 = "NVRM: Xid (PCI:0000:3b:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus."


def event(line: str) -> KernelEvent:
    parsed = parse_line(line)
    assert parsed is not None, line
    return parsed


@pytest.mark.parametrize(
    ("line", "timestamp"),
    [
        (XID_79, None),
        (f"{XID_79}\n", None),
        (f"[  123.456789] {XID_79}", 123.456789),
        (f"[    0.000001] {XID_79}", 0.000001),
        (f"6,1234,5678901,-;{XID_79}", 5.678901),
        (f"4,1234,5678901,-,caller=T2411;{XID_79}", 5.678901),
        (f"<4>[  123.456789] {XID_79}", 123.456789),
        (f"kern  :warn  : [  123.456789] {XID_79}", 123.456789),
        (f"[Fri Nov 28 10:00:00 2026] {XID_79}", None),
        (f"Nov 28 10:00:00 gpu-node-7 kernel: {XID_79}", None),
        (f"Nov  8 10:00:00 gpu-node-7 kernel: [  123.456789] {XID_79}", 123.456789),
        (f"Nov 28 10:00:00.123456 gpu-node-7 kernel: {XID_79}", None),
        (f"2026-11-28T10:00:00.123456+00:00 gpu-node-7 kernel: {XID_79}", None),
        (f"2026-11-28T10:00:00+0000 gpu-node-7 kernel: {XID_79}", None),
        (f"[  123.456789] gpu-node-7 kernel: {XID_79}", 123.456789),
    ],
)
def test_every_transport_prefix_gives_the_same_event(line: str, timestamp: float | None) -> None:
    assert event(line) == KernelEvent(XID, "79", "0000:3b:00.0", XID_79, timestamp)


@pytest.mark.parametrize(
    ("line", "code", "device"),
    [
        # krcReportXid with a process
        ("NVRM: Xid (PCI:0000:3b:00): 13, pid=2411, name=python3, Graphics SM Warp Exception", "13", "0000:3b:00.0"),
        # without a process: pid and name are left out
        ("NVRM: Xid (PCI:0000:d8:00): 154, GPU recovery action changed from 0x0 (None) to 0x2", "154", "0000:d8:00.0"),
        ("NVRM: Xid (PCI:0000:01:00): 79, GPU has fallen off the bus.", "79", "0000:01:00.0"),
        # an empty driver message
        ("NVRM: Xid (PCI:0000:01:00): 45, ", "45", "0000:01:00.0"),
        ("NVRM: Xid (PCI:0000:01:00): 45", "45", "0000:01:00.0"),
        # MIG attribution
        ("NVRM: Xid (PCI:0000:3b:00 GPU-I:01): 31, pid=1234, name=python3, Ch 00000008", "31", "0000:3b:00.0"),
        ("NVRM: Xid (PCI:0000:3b:00 GPU-I:02 GPU-CI:00): 94, pid=5512, name=python, Contained", "94", "0000:3b:00.0"),
        # very old drivers: no "PCI:"
        ("NVRM: Xid (0000:03:00): 14, Channel 00000001", "14", "0000:03:00.0"),
        # NVLink5 unit errors
        (
            "NVRM: Xid (PCI:0018:01:00): 149, NETIR_LINK_EVT Fatal XC0 i0 Link 08 (0x004505c6 0x0)",
            "149",
            "0018:01:00.0",
        ),
        # domains: 2 digits, 8 digits (NVML style, upper case, with a function), none
        ("NVRM: Xid (PCI:00:3b:00): 48, pid=1, name=a, DBE", "48", "0000:3b:00.0"),
        ("NVRM: Xid (PCI:00000000:3B:00.0): 48, pid=1, name=a, DBE", "48", "0000:3b:00.0"),
        ("NVRM: Xid (PCI:00010000:3B:00.0): 48, pid=1, name=a, DBE", "48", "10000:3b:00.0"),
        ("NVRM: Xid (PCI:3b:00): 48, pid=1, name=a, DBE", "48", "0000:3b:00.0"),
        ("NVRM: Xid (PCI:0000:3B:1F): 074, NVLink", "74", "0000:3b:1f.0"),
    ],
)
def test_xid_variants(line: str, code: str, device: str) -> None:
    parsed = event(f"[ 10.5] {line}")
    assert (parsed.kind, parsed.code, parsed.device, parsed.message) == (XID, code, device, line.rstrip())


@pytest.mark.parametrize(
    ("line", "device"),
    [
        ("NVRM: GPU 0000:18:00.0: GPU has fallen off the bus.", "0000:18:00.0"),
        ("NVRM: GPU at PCI:0000:18:00: GPU has fallen off the bus.", "0000:18:00.0"),
        (
            "NVRM: The NVIDIA GPU 0000:05:00.0 installed in this system has fallen off the bus and is not responding "
            "to commands.",
            "0000:05:00.0",
        ),
        # dmesg and syslog split the three-line record: its last line names no GPU
        ("               NVRM: fallen off the bus and is not responding to commands.", None),
    ],
)
def test_fallen_off_the_bus_without_an_xid_counts_as_xid_79(line: str, device: str | None) -> None:
    parsed = event(line)
    assert (parsed.kind, parsed.code, parsed.device, parsed.message) == (
        FALLEN,
        FALLEN_OFF_BUS_XID,
        device,
        line.strip(),
    )


def test_the_three_line_fallen_off_the_bus_record_from_kmsg_keeps_its_gpu() -> None:
    record = (
        r"3,1007,1843412000,-;NVRM: The NVIDIA GPU 0000:b3:00.0\x0aNVRM: (PCI ID: 10de:26b5) installed in this "
        r"system has\x0aNVRM: fallen off the bus and is not responding to commands."
    )
    parsed = event(record)
    assert (parsed.kind, parsed.device, parsed.timestamp) == (FALLEN, "0000:b3:00.0", 1843.412)
    assert parsed.message.splitlines() == [
        "NVRM: The NVIDIA GPU 0000:b3:00.0",
        "NVRM: (PCI ID: 10de:26b5) installed in this system has",
        "NVRM: fallen off the bus and is not responding to commands.",
    ]


def test_kmsg_escapes_are_undone_including_utf8() -> None:
    parsed = event(r"4,1,2,-;NVRM: Xid (PCI:0000:3b:00): 13, pid=1, name=caf\xc3\xa9, back\x5cslash")
    assert parsed.message == "NVRM: Xid (PCI:0000:3b:00): 13, pid=1, name=café, back\\slash"


@pytest.mark.parametrize(
    ("line", "code", "device", "message"),
    [
        (
            "[ 2134.573233] nvidia-nvswitch3: SXid (PCI:0000:c3:00.0): 20009, Non-fatal, Link 14 RX Short Error Rate",
            "20009",
            "0000:c3:00.0",
            "nvidia-nvswitch3: SXid (PCI:0000:c3:00.0): 20009, Non-fatal, Link 14 RX Short Error Rate",
        ),
        (
            "kernel: [123.456789] nvidia-nvswitch0: SXid (PCI:0000:89:00.0): 01004, Fatal, Link 30 sourcetrack",
            "1004",
            "0000:89:00.0",
            "nvidia-nvswitch0: SXid (PCI:0000:89:00.0): 01004, Fatal, Link 30 sourcetrack",
        ),
        (
            "[2026-07-15T04:18:55.513286+00:00] nvidia-nvswitch0: SXid (PCI:0000:59:00.0): 23001, Fatal, Link 12",
            "23001",
            "0000:59:00.0",
            "nvidia-nvswitch0: SXid (PCI:0000:59:00.0): 23001, Fatal, Link 12",
        ),
    ],
)
def test_sxid(line: str, code: str, device: str, message: str) -> None:
    parsed = event(line)
    assert (parsed.kind, parsed.code, parsed.device, parsed.message) == (SXID, code, device, message)


@pytest.mark.parametrize(
    "detail",
    ["Severity 0 Engine instance 14 Sub-engine instance 00", "Data {0x00000000, 0x00000000, 0x00000000}"],
)
def test_the_lines_after_an_sxid_are_part_of_it(detail: str) -> None:
    assert parse_line(f"nvidia-nvswitch3: SXid (PCI:0000:c3:00.0): 20009, {detail}") is None


@pytest.mark.parametrize(
    ("line", "code", "device", "message"),
    [
        (
            "Nov 28 10:00:05 npu-node-2 kernel: [ 1197.58] [ascend] [ERROR] [drv_soft_fault] [heart_beat_judge 318] "
            "<kworker/5:1H:39365> Heartbeat lost! (device=1; old_count=1104; new_count=1104; lost_count=4)",
            "0x40F84E00",
            "1",
            "[ascend] [ERROR] [drv_soft_fault] [heart_beat_judge 318] <kworker/5:1H:39365> Heartbeat lost! "
            "(device=1; old_count=1104; new_count=1104; lost_count=4)",
        ),
        (
            "[ 10.0] [ascend] [ERROR] [drv_pcie] [devdrv_sync_non_trans_msg_send 1487] <kworker/u386:2:8812> "
            'Device irq not resp. (dev_id=3; msg_type="devmng"; status=1; retry_cnt=3)',
            "irq_not_responding",
            "3",
            "[ascend] [ERROR] [drv_pcie] [devdrv_sync_non_trans_msg_send 1487] <kworker/u386:2:8812> "
            'Device irq not resp. (dev_id=3; msg_type="devmng"; status=1; retry_cnt=3)',
        ),
        (
            "[ 10.0] [ascend] [WARN] [pcivnic] [pcivnic_pciedev_send 402] <swapper:0> device 5 is dead",
            "device_dead",
            "5",
            "[ascend] [WARN] [pcivnic] [pcivnic_pciedev_send 402] <swapper:0> device 5 is dead",
        ),
        (
            '[ 10.0] [ascend] [INFO] [drv_pcie] [devdrv_sync_msg 88] <a:1> Device is abnormal. (msg_type="x")',
            "device_abnormal",
            None,
            '[ascend] [INFO] [drv_pcie] [devdrv_sync_msg 88] <a:1> Device is abnormal. (msg_type="x")',
        ),
        (
            "[ 10.0] hdcdrv_connect 1203: devid:2, pcie not ready",
            "pcie_not_ready",
            "2",
            "hdcdrv_connect 1203: devid:2, pcie not ready",
        ),
        (
            "[ 10.0] [ascend] [ERROR] [drv_pcie] [devdrv_dma_copy 77] <k:1> Dma copy failed. (dev_id=0)",
            "dma_copy_failed",
            "0",
            "[ascend] [ERROR] [drv_pcie] [devdrv_dma_copy 77] <k:1> Dma copy failed. (dev_id=0)",
        ),
        (
            "[ascend] [ERROR] [drv_pcie] [devdrv_dma_wait 91] <k:1> DMA timeout. (dev_id=4)",
            "dma_timeout",
            "4",
            "[ascend] [ERROR] [drv_pcie] [devdrv_dma_wait 91] <k:1> DMA timeout. (dev_id=4)",
        ),
        (
            "[ascend] [ERROR] [drv_pcie] [devdrv_hot_reset 12] <k:1> Pcie bridge bus reset fail. (dev_id=6)",
            "pcie_bridge_reset_failed",
            "6",
            "[ascend] [ERROR] [drv_pcie] [devdrv_hot_reset 12] <k:1> Pcie bridge bus reset fail. (dev_id=6)",
        ),
        (
            "[fault_manager] event_id: [0x80c98000], AI Core iCache data verify fail",
            "0x80C98000",
            None,
            "[fault_manager] event_id: [0x80c98000], AI Core iCache data verify fail",
        ),
    ],
)
def test_ascend_driver_faults(line: str, code: str, device: str | None, message: str) -> None:
    parsed = event(line)
    assert (parsed.kind, parsed.code, parsed.device, parsed.message) == (ASCEND, code, device, message)


@pytest.mark.parametrize(
    "line",
    [
        "",
        "\n",
        "[    0.000000] Linux version 5.15.0-119-generic",
        "NVRM: loading NVIDIA UNIX x86_64 Kernel Module  550.54.15",
        "NVRM: GPU at PCI:0000:3b:00: GPU-5a0d9a43-2b1c-8e4f-1d2a-9c7b3e6f0a11",
        "NVRM: The NVIDIA GPU 0000:b3:00.0",
        "pcieport 0000:00:03.0: AER: Corrected error received: 0000:3b:00.0",
        "Unable to determine the device handle for GPU0000:01:00.0: GPU has fallen off the bus.",
        "[ascend] [INFO] [drv_pcie] [devdrv_init_dev_num 250] <insmod:1234> device number initialised. (dev_num=8)",
        " SUBSYSTEM=pci",
        "systemd[1]: Started nvidia-persistenced.service - NVIDIA Persistence Daemon.",
    ],
)
def test_unrelated_lines(line: str) -> None:
    assert parse_line(line) is None


@pytest.mark.parametrize(
    "line",
    [
        "NVRM: Xid (PCI:zzz",
        "[ 2200.000100] NVRM: Xid (PCI:0000:3b",
        "NVRM: Xid 79, GPU has fallen off the bus",
        "NVRM: Xid (PCI:0000:3b:00): GPU has fallen off the bus",
        "NVRM: Xid (PCI:0000:3b:00) 79, pid=1",
        "NVRM: Xid (PCI:0000:3b:40): 79, device 0x40 is not a PCI device number",
        "NVRM: Xid (PCI:0000:3b:00.9): 79, function 9",
        "NVRM: Xid (PCI:0000:3b:00): 79x",
        "nvidia-nvswitch3: SXid (PCI:0000:c1:00.0): garbled, Fatal",
        "nvidia-nvswitch3: SXid",
    ],
)
def test_malformed_markers_are_reported_not_dropped(line: str) -> None:
    with pytest.raises(MalformedLine) as raised:
        parse_line(line)
    assert raised.value.line == line
    assert isinstance(raised.value, ValueError)


def test_the_fixture_log() -> None:
    """A day of dmesg on a mixed node: each line's outcome, in order."""
    outcomes: list[tuple[KernelEventKind, str, str | None] | str | None] = []
    for line in (FIXTURES / "dmesg.txt").read_text().splitlines():
        try:
            parsed = parse_line(line)
        except MalformedLine:
            outcomes.append("malformed")
            continue
        outcomes.append(None if parsed is None else (parsed.kind, parsed.code, parsed.device))
    assert [outcome for outcome in outcomes if outcome is not None] == [
        (XID, "13", "0000:3b:00.0"),
        (XID, "13", "0000:3b:00.0"),
        (XID, "43", "0000:3b:00.0"),
        (XID, "45", "0000:3b:00.0"),
        (XID, "31", "0000:5e:00.0"),
        (XID, "92", "0000:5e:00.0"),
        (XID, "48", "0000:86:00.0"),
        (XID, "63", "0000:86:00.0"),
        (XID, "64", "0000:86:00.0"),
        (XID, "94", "0000:18:00.0"),
        (XID, "95", "0000:18:00.0"),
        (XID, "74", "0000:af:00.0"),
        (XID, "119", "0000:af:00.0"),
        (XID, "79", "0000:d8:00.0"),
        (FALLEN, "79", "0000:d8:00.0"),
        (XID, "154", "0000:d8:00.0"),
        (FALLEN, "79", None),
        (SXID, "20009", "0000:c3:00.0"),
        "malformed",
        (ASCEND, "0x40F84E00", "1"),
        (ASCEND, "irq_not_responding", "1"),
    ]
    assert len(outcomes) == 34


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("00000000:3B:00.0", "0000:3b:00.0"),
        ("0000:3b:00", "0000:3b:00.0"),
        ("PCI:0000:3b:00", "0000:3b:00.0"),
        ("00:3b:00.1", "0000:3b:00.1"),
        ("3b:00", "0000:3b:00.0"),
        (" 0001:C3:1f.7 ", "0001:c3:1f.7"),
        ("0000:3b:20", None),
        ("0000:3b:00.8", None),
        ("0000:3b", None),
        ("GPU-5a0d9a43", None),
        ("", None),
    ],
)
def test_normalize_pci_bus_id(text: str, normalised: str | None) -> None:
    assert normalize_pci_bus_id(text) == normalised


# --- fuzzing ------------------------------------------------------------------------------------------------------

PREFIXES = st.sampled_from(
    ["", "[  123.456789] ", "6,1234,5678901,-;", "Nov 28 10:00:00 host kernel: ", "<4>", "kern  :err   : "]
)


def check(line: str) -> KernelEvent | None:
    """Parse; anything but an event, None or MalformedLine fails the test. Events must be well formed."""
    try:
        parsed = parse_line(line)
    except MalformedLine:
        return None
    if parsed is not None:
        assert parsed.code
        if parsed.kind is not ASCEND:
            assert parsed.device is None or NORMALISED.fullmatch(parsed.device), parsed
            assert parsed.code.isdigit()
    return parsed


@given(st.text())
@example("\x00" * 10)
@example("6,1,2,-;\\x")
@example("\ud800NVRM: Xid (")
def test_no_text_breaks_the_parser(line: str) -> None:
    check(line)


@given(PREFIXES, st.text())
def test_no_text_after_a_transport_prefix_breaks_the_parser(prefix: str, rest: str) -> None:
    check(prefix + rest)


@given(
    PREFIXES,
    st.sampled_from(["NVRM: Xid", "NVRM: Xid (", "NVRM: Xid (PCI:", "NVRM: Xid (PCI:0000:3b:00): "]),
    st.text(),
)
@example("", "NVRM: Xid (PCI:", "0000:3b:00): 79, ")
def test_an_xid_marker_is_an_xid_or_malformed(prefix: str, marker: str, suffix: str) -> None:
    try:
        parsed = parse_line(prefix + marker + suffix)
    except MalformedLine:
        return
    assert parsed is not None
    assert parsed.kind is XID
    assert parsed.device is not None
    assert NORMALISED.fullmatch(parsed.device)


@given(PREFIXES, st.text(alphabet=st.characters(blacklist_characters="0123456789abcdefABCDEF")))
def test_an_xid_without_an_address_is_malformed(prefix: str, suffix: str) -> None:
    with pytest.raises(MalformedLine):
        parse_line(f"{prefix}NVRM: Xid (PCI:{suffix}")


@given(PREFIXES, st.text())
def test_an_sxid_marker_is_an_sxid_a_detail_line_or_malformed(prefix: str, suffix: str) -> None:
    try:
        parsed = parse_line(f"{prefix}nvidia-nvswitch1: SXid {suffix}")
    except MalformedLine:
        return
    assert parsed is None or parsed.kind is SXID


@given(
    PREFIXES,
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFF),
    st.integers(0, 0x1F),
    st.integers(0, 999),
    st.sampled_from(["", " GPU-I:01", " GPU-I:02 GPU-CI:00"]),
    st.text(alphabet=st.characters(blacklist_categories=["Cc", "Cs"])),
)
def test_every_well_formed_xid_is_read_back(
    prefix: str, domain: int, bus: int, device: int, code: int, mig: str, detail: str
) -> None:
    line = f"{prefix}NVRM: Xid (PCI:{domain:04x}:{bus:02x}:{device:02x}{mig}): {code}, pid=1, name=x, {detail}"
    parsed = event(line)
    assert (parsed.kind, parsed.code) == (XID, str(code))
    assert parsed.device == f"{domain:04x}:{bus:02x}:{device:02x}.0"
    nvml = normalize_pci_bus_id(f"{domain:08X}:{bus:02X}:{device:02X}.0")
    assert parsed.device == nvml
