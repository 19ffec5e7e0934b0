"""The kernel-log reader on files (once and followed), a fake /dev/kmsg, the dmesg fallback, and its memory bounds."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest

from eagleeye_otel.errors import ConfigError, HardwareUnavailable
from eagleeye_otel.receivers.hardware import _kmsg_sources
from eagleeye_otel.receivers.hardware._kmsg import KernelLogReader, open_kernel_log
from eagleeye_otel.receivers.hardware._kmsg_sources import DmesgSource, FileSource, KmsgSource
from eagleeye_otel.receivers.hardware._model import KernelEventKind

FIXTURES = Path(__file__).parent / "fixtures" / "kmsg"
LOGGER = "eagleeye_otel.receivers.hardware._kmsg"
XID, SXID, FALLEN, ASCEND = (
    KernelEventKind.XID,
    KernelEventKind.SXID,
    KernelEventKind.FALLEN_OFF_BUS,
    KernelEventKind.ASCEND,
)

XID_13 = "[  812.004523] NVRM: Xid (PCI:0000:3b:00): 13, pid=2411, name=python3, Graphics SM Warp Exception\n"
XID_79 = "[ 1843.308101] NVRM: Xid (PCI:0000:d8:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.\n"
NOISE = "[    6.220871] nvidia-uvm: Loaded the UVM driver, major device number 509.\n"


@pytest.fixture
def reader_of() -> Iterator[list[KernelLogReader]]:
    """Readers made by a test, closed after it."""
    readers: list[KernelLogReader] = []
    yield readers
    for reader in readers:
        reader.close()


def append(path: Path, text: str) -> None:
    with path.open("a") as file:
        file.write(text)


def dmesg_printing(path: Path) -> list[str]:
    """A stand-in for ``dmesg``: prints the file, like dmesg prints the ring buffer."""
    return [sys.executable, "-c", "import sys; sys.stdout.write(open(sys.argv[1]).read())", str(path)]


# --- a file ------------------------------------------------------------------------------------------------------


def test_a_file_read_once(reader_of: list[KernelLogReader]) -> None:
    reader = KernelLogReader(FileSource(FIXTURES / "dmesg.txt"))
    reader_of.append(reader)

    assert reader.poll() == 20
    summary = reader.summary()
    assert summary.counts == {
        (XID, "13", "0000:3b:00.0"): 2,
        (XID, "43", "0000:3b:00.0"): 1,
        (XID, "45", "0000:3b:00.0"): 1,
        (XID, "31", "0000:5e:00.0"): 1,
        (XID, "92", "0000:5e:00.0"): 1,
        (XID, "48", "0000:86:00.0"): 1,
        (XID, "63", "0000:86:00.0"): 1,
        (XID, "64", "0000:86:00.0"): 1,
        (XID, "94", "0000:18:00.0"): 1,
        (XID, "95", "0000:18:00.0"): 1,
        (XID, "74", "0000:af:00.0"): 1,
        (XID, "119", "0000:af:00.0"): 1,
        (XID, "79", "0000:d8:00.0"): 1,
        (XID, "154", "0000:d8:00.0"): 1,
        (FALLEN, "79", "0000:d8:00.0"): 1,
        (FALLEN, "79", None): 1,
        (SXID, "20009", "0000:c3:00.0"): 1,
        (ASCEND, "0x40F84E00", "1"): 1,
        (ASCEND, "irq_not_responding", "1"): 1,
    }
    assert summary.last_messages[(XID, "13", "0000:3b:00.0")].startswith("NVRM: Xid (PCI:0000:3b:00): 13, pid=2411")
    assert "Graphics Exception: ESR" in summary.last_messages[(XID, "13", "0000:3b:00.0")]
    assert (summary.lines, summary.malformed, summary.overflow, summary.lost) == (34, 1, 0, 0)

    assert reader.poll() == 0  # read once: nothing more, the file is closed
    assert reader.summary() == summary


def test_a_syslog_file(reader_of: list[KernelLogReader]) -> None:
    reader = KernelLogReader(FileSource(FIXTURES / "syslog.txt"))
    reader_of.append(reader)
    reader.poll()
    assert reader.summary().counts == {
        (XID, "79", "0000:d8:00.0"): 1,
        (XID, "48", "0000:3b:00.0"): 1,
        (SXID, "24007", "0000:89:00.0"): 1,
        (XID, "149", "0018:01:00.0"): 1,
        (ASCEND, "0x40F84E00", "3"): 1,
    }


def test_a_followed_file_counts_what_is_appended(tmp_path: Path, reader_of: list[KernelLogReader]) -> None:
    log = tmp_path / "kern.log"
    log.write_text(NOISE + XID_13)
    reader = KernelLogReader(FileSource(log, follow=True))
    reader_of.append(reader)

    assert reader.poll() == 1
    assert reader.poll() == 0
    append(log, XID_79[:40])  # a line still being written waits for its end
    assert reader.poll() == 0
    append(log, XID_79[40:] + XID_13)
    assert reader.poll() == 2
    summary = reader.summary()
    assert summary.counts == {(XID, "13", "0000:3b:00.0"): 2, (XID, "79", "0000:d8:00.0"): 1}
    assert summary.lines == 4


def test_a_followed_file_from_its_end(tmp_path: Path, reader_of: list[KernelLogReader]) -> None:
    log = tmp_path / "kern.log"
    log.write_text(XID_13 * 3)
    reader = KernelLogReader(FileSource(log, follow=True, from_start=False))
    reader_of.append(reader)
    assert reader.poll() == 0
    append(log, XID_79)
    assert reader.poll() == 1
    assert reader.summary().counts == {(XID, "79", "0000:d8:00.0"): 1}


def test_a_followed_file_across_truncation_and_rotation(tmp_path: Path, reader_of: list[KernelLogReader]) -> None:
    log = tmp_path / "kern.log"
    log.write_text(XID_13 + NOISE + NOISE)
    reader = KernelLogReader(FileSource(log, follow=True))
    reader_of.append(reader)
    assert reader.poll() == 1

    log.write_text(XID_79)  # truncated (copytruncate), then written again, shorter than before
    assert reader.poll() == 1

    append(log, XID_13)
    log.rename(tmp_path / "kern.log.1")  # rotated: the rest of the old file, then the new one
    assert reader.poll() == 1
    assert reader.poll() == 0  # the new file is not there yet
    log.write_text(XID_79)
    assert reader.poll() == 1
    assert reader.summary().counts == {(XID, "13", "0000:3b:00.0"): 2, (XID, "79", "0000:d8:00.0"): 2}


def test_a_missing_file() -> None:
    with pytest.raises(HardwareUnavailable, match="no-such-file"):
        FileSource("/no-such-file")


# --- /dev/kmsg -----------------------------------------------------------------------------------------------------


def test_kmsg_records_from_the_start(tmp_path: Path, reader_of: list[KernelLogReader]) -> None:
    reader = KernelLogReader(KmsgSource(FIXTURES / "kmsg.txt", from_start=True))
    reader_of.append(reader)
    assert reader.poll() == 5
    summary = reader.summary()
    assert summary.counts == {
        (XID, "13", "0000:3b:00.0"): 1,
        (XID, "79", "0000:d8:00.0"): 1,
        (FALLEN, "79", "0000:b3:00.0"): 1,
        (SXID, "20009", "0000:c3:00.0"): 1,
        (ASCEND, "0x40F84E00", "1"): 1,
    }
    assert summary.lines == 7  # the dictionary lines of record 1003 are part of it
    assert summary.lost == 3  # records 1004 to 1006 were overwritten before they were read


def test_kmsg_from_the_end_reads_only_new_records(tmp_path: Path, reader_of: list[KernelLogReader]) -> None:
    kmsg = tmp_path / "kmsg"
    shutil.copy(FIXTURES / "kmsg.txt", kmsg)
    reader = KernelLogReader(KmsgSource(kmsg))
    reader_of.append(reader)
    assert reader.poll() == 0
    append(kmsg, "4,1011,2400000000,-;NVRM: Xid (PCI:0000:18:00): 95, pid='<unknown>', name=<unknown>, Uncontained\n")
    assert reader.poll() == 1
    summary = reader.summary()
    assert summary.counts == {(XID, "95", "0000:18:00.0"): 1}
    assert (summary.lines, summary.lost) == (1, 0)


def test_kmsg_epipe_skips_to_the_oldest_record_kept(tmp_path: Path, reader_of: list[KernelLogReader]) -> None:
    records = iter(
        [
            b"4,10,1000000,-;" + XID_13.split("] ", 1)[1].encode(),
            BrokenPipeError(errno.EPIPE, "Broken pipe"),  # records 11 to 19 were overwritten
            b"4,20,2000000,-;" + XID_79.split("] ", 1)[1].encode(),
            BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable"),
        ]
    )

    def read(fd: int, size: int) -> bytes:
        item = next(records)
        if isinstance(item, Exception):
            raise item
        return item

    kmsg = tmp_path / "kmsg"
    kmsg.touch()
    reader = KernelLogReader(KmsgSource(kmsg))
    reader_of.append(reader)
    with mock.patch.object(_kmsg_sources.os, "read", side_effect=read):
        assert reader.poll() == 2
    summary = reader.summary()
    assert summary.lost == 9
    assert summary.counts == {(XID, "13", "0000:3b:00.0"): 1, (XID, "79", "0000:d8:00.0"): 1}


def test_kmsg_that_keeps_failing_is_logged_not_raised(
    tmp_path: Path, reader_of: list[KernelLogReader], caplog: pytest.LogCaptureFixture
) -> None:
    kmsg = tmp_path / "kmsg"
    kmsg.touch()
    reader = KernelLogReader(KmsgSource(kmsg))
    reader_of.append(reader)
    with (
        caplog.at_level(logging.WARNING, LOGGER),
        mock.patch.object(_kmsg_sources.os, "read", side_effect=BrokenPipeError(errno.EPIPE, "Broken pipe")),
    ):
        assert reader.poll() == 0
        assert reader.poll() == 0
    assert [record.getMessage() for record in caplog.records] == [
        f"kernel log: cannot read {kmsg}: [Errno 32] Broken pipe"
    ]


def test_kmsg_that_cannot_be_opened(tmp_path: Path) -> None:
    with pytest.raises(HardwareUnavailable, match="No such file"):
        KmsgSource(tmp_path / "kmsg")


# --- dmesg -----------------------------------------------------------------------------------------------------


def test_dmesg_counts_the_lines_printed_since_the_last_run(tmp_path: Path, reader_of: list[KernelLogReader]) -> None:
    ring = tmp_path / "ring"
    ring.write_text(NOISE + XID_13)
    reader = KernelLogReader(DmesgSource(dmesg_printing(ring)))
    reader_of.append(reader)
    assert reader.poll() == 0  # what the buffer held at start is history
    append(ring, XID_79 + NOISE)
    assert reader.poll() == 1
    assert reader.poll() == 0
    ring.write_text(XID_13)  # the last line seen has left the buffer: everything there is new
    assert reader.poll() == 1
    summary = reader.summary()
    assert summary.counts == {(XID, "13", "0000:3b:00.0"): 1, (XID, "79", "0000:d8:00.0"): 1}
    assert summary.lines == 3


def test_dmesg_from_the_start(tmp_path: Path, reader_of: list[KernelLogReader]) -> None:
    reader = KernelLogReader(DmesgSource(dmesg_printing(FIXTURES / "dmesg.txt"), from_start=True))
    reader_of.append(reader)
    assert reader.poll() == 20
    assert reader.poll() == 0
    assert reader.summary().lines == 34


def test_dmesg_that_fails(tmp_path: Path, reader_of: list[KernelLogReader], caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(HardwareUnavailable, match="exit status 1: dmesg: read kernel buffer failed"):
        DmesgSource(
            [sys.executable, "-c", "import sys; sys.exit('dmesg: read kernel buffer failed: Operation not permitted')"]
        )
    with pytest.raises(HardwareUnavailable, match="no-such-dmesg"):
        DmesgSource([str(tmp_path / "no-such-dmesg")])

    ring = tmp_path / "ring"
    ring.write_text(XID_13)
    reader = KernelLogReader(DmesgSource(dmesg_printing(ring)))
    reader_of.append(reader)
    ring.unlink()  # the stand-in now fails at the next run
    with caplog.at_level(logging.WARNING, LOGGER):
        assert reader.poll() == 0
    assert "kernel log: cannot read" in caplog.text
    assert "exit status 1" in caplog.text


# --- choosing the source ------------------------------------------------------------------------------------------


def test_open_kernel_log_prefers_kmsg_under_root_path(tmp_path: Path, reader_of: list[KernelLogReader]) -> None:
    (tmp_path / "dev").mkdir()
    shutil.copy(FIXTURES / "kmsg.txt", tmp_path / "dev" / "kmsg")
    reader = open_kernel_log(root_path=tmp_path, from_start=True, dmesg_command=["false"])
    reader_of.append(reader)
    assert isinstance(reader.source, KmsgSource)
    assert reader.source.name == str(tmp_path / "dev" / "kmsg")
    assert reader.poll() == 5


def test_open_kernel_log_falls_back_to_dmesg(tmp_path: Path, reader_of: list[KernelLogReader]) -> None:
    reader = open_kernel_log(root_path=tmp_path, from_start=True, dmesg_command=dmesg_printing(FIXTURES / "syslog.txt"))
    reader_of.append(reader)
    assert isinstance(reader.source, DmesgSource)
    assert reader.poll() == 5


def test_open_kernel_log_says_what_it_tried(tmp_path: Path) -> None:
    with pytest.raises(HardwareUnavailable) as raised:
        open_kernel_log(root_path=tmp_path, dmesg_command=[str(tmp_path / "no-such-dmesg")])
    assert raised.value.reason.startswith(f"{tmp_path / 'dev' / 'kmsg'}: No such file or directory; ")
    assert "no-such-dmesg" in raised.value.reason


def test_open_kernel_log_on_a_file_tries_nothing_else(tmp_path: Path, reader_of: list[KernelLogReader]) -> None:
    reader = open_kernel_log(file=FIXTURES / "syslog.txt", root_path="/no-such-root", dmesg_command=["false"])
    reader_of.append(reader)
    assert isinstance(reader.source, FileSource)
    assert reader.poll() == 5
    with pytest.raises(HardwareUnavailable):
        open_kernel_log(file=tmp_path / "missing.log")


@pytest.mark.parametrize(("max_keys", "max_message_chars"), [(0, 512), (512, 1)])
def test_limits_must_be_positive(tmp_path: Path, max_keys: int, max_message_chars: int) -> None:
    with pytest.raises(ConfigError):
        open_kernel_log(file=FIXTURES / "dmesg.txt", max_keys=max_keys, max_message_chars=max_message_chars)


# --- bounds -------------------------------------------------------------------------------------------------------


def test_keys_beyond_the_limit_are_counted_as_overflow(tmp_path: Path, reader_of: list[KernelLogReader]) -> None:
    log = tmp_path / "kern.log"
    log.write_text(
        "".join(f"NVRM: Xid (PCI:0000:{bus:02x}:00): 13, pid=1, name=a, {'x' * 100}\n" for bus in range(5)) * 2
    )
    reader = open_kernel_log(file=log, max_keys=3, max_message_chars=25)
    reader_of.append(reader)
    assert reader.poll() == 10
    summary = reader.summary()
    assert summary.counts == {(XID, "13", f"0000:{bus:02x}:00.0"): 2 for bus in range(3)}
    assert summary.overflow == 4
    assert set(summary.last_messages.values()) == {f"NVRM: Xid (PCI:0000:{bus:02x}:0\u2026" for bus in range(3)}


def test_a_line_without_end_does_not_grow_memory(tmp_path: Path, reader_of: list[KernelLogReader]) -> None:
    log = tmp_path / "kern.log"
    log.write_text("x" * 100_000 + "\n" + XID_13)
    reader = KernelLogReader(FileSource(log, follow=True))
    reader_of.append(reader)
    assert reader.poll() == 1
    # read in 64 KiB chunks: the unfinished line outgrew the parser's limit in the first, its start became a line
    # and the rest was dropped; the second chunk held the end of it (a line too) and the Xid
    assert reader.summary().lines == 3


def test_the_summary_is_a_copy(reader_of: list[KernelLogReader]) -> None:
    reader = KernelLogReader(FileSource(FIXTURES / "dmesg.txt"))
    reader_of.append(reader)
    reader.poll()
    summary = reader.summary()
    summary.counts.clear()
    assert reader.summary().counts


def test_closing_stops_reading(tmp_path: Path) -> None:
    kmsg = tmp_path / "kmsg"
    kmsg.write_text("4,1,1,-;" + XID_13.split("] ", 1)[1])
    reader = KernelLogReader(KmsgSource(kmsg, from_start=True))
    reader.close()
    assert reader.poll() == 0
    reader.close()
    assert os.path.exists(kmsg)
