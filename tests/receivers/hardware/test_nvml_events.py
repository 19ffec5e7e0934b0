"""NvmlEventWatcher against the C double of libnvidia-ml.so.1, through the real pynvml."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pytest

from eagleeye_otel.errors import HardwareUnavailable
from eagleeye_otel.receivers.hardware import NvmlEvent, NvmlEventWatcher

XID, GPU_UNAVAILABLE, RECOVERY_ACTION = 0x8, 0x4000, 0x8000


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_xid_events_are_counted_per_gpu_and_handed_to_the_callback(nvml):
    nvml.write(nvml.node(4))
    source = nvml.open()
    seen: list[NvmlEvent] = []
    watcher = NvmlEventWatcher(source, on_event=seen.append, wait_ms=50)
    watcher.start()
    try:
        assert watcher.registered == {nvml.uuid(i) for i in range(4)}
        nvml.write(nvml.node(4, f"event 1 2 {XID} 79\nevent 2 2 {XID} 48\nevent 3 0 {GPU_UNAVAILABLE} 0\n"))
        wait_for(lambda: len(seen) == 3)
        nvml.write(
            nvml.node(
                4,
                f"event 1 2 {XID} 79\nevent 2 2 {XID} 48\nevent 3 0 {GPU_UNAVAILABLE} 0\n"
                f"event 4 2 {XID} 79\nevent 5 1 {RECOVERY_ACTION} 2\n",
            )
        )
        wait_for(lambda: len(seen) == 5)
    finally:
        watcher.stop()
    assert seen == [
        NvmlEvent(nvml.uuid(2), "xid", XID, 79),
        NvmlEvent(nvml.uuid(2), "xid", XID, 48),
        NvmlEvent(nvml.uuid(0), "gpu_unavailable", GPU_UNAVAILABLE, 0),
        NvmlEvent(nvml.uuid(2), "xid", XID, 79),
        NvmlEvent(nvml.uuid(1), "recovery_action", RECOVERY_ACTION, 2),
    ]
    readings = {reading.identity.id: reading for reading in source.sweep()}
    assert readings[nvml.uuid(2)].xid_counts == {79: 2, 48: 1}
    assert readings[nvml.uuid(0)].xid_counts == {} and readings[nvml.uuid(1)].xid_counts == {}


def test_a_failing_callback_is_logged_and_the_watcher_goes_on(nvml, caplog):
    nvml.write(nvml.node(1, f"event 1 0 {XID} 13\nevent 2 0 {XID} 31\n"))
    source = nvml.open()

    def explode(event: NvmlEvent) -> None:
        raise ValueError("boom")

    watcher = NvmlEventWatcher(source, on_event=explode, wait_ms=50)
    with caplog.at_level(logging.ERROR):
        watcher.start()
        try:
            wait_for(lambda: source.sweep()[0].xid_counts == {13: 1, 31: 1})
        finally:
            watcher.stop()
    assert caplog.text.count("NVML event callback failed") == 2


def test_the_watcher_stops_promptly_and_releases_nvml(nvml):
    nvml.write(nvml.node(2))
    source = nvml.open()
    before = nvml.init_count()
    watcher = NvmlEventWatcher(source, wait_ms=100)
    watcher.start()
    assert nvml.init_count() == before + 1
    started = time.monotonic()
    watcher.stop()
    assert time.monotonic() - started < 2.0
    assert nvml.init_count() == before
    watcher.stop()  # a second stop does nothing
    assert not [t for t in threading.enumerate() if t.name == "eagleeye-nvml-events"]


def test_a_watcher_outliving_its_source_keeps_nvml_initialised(nvml):
    nvml.write(nvml.node(1))
    source = nvml.open()
    seen: list[NvmlEvent] = []
    watcher = NvmlEventWatcher(source, on_event=seen.append, wait_ms=50)
    watcher.start()
    try:
        source.close()
        nvml.write(nvml.node(1, f"event 1 0 {XID} 94\n"))
        wait_for(lambda: len(seen) == 1)
    finally:
        watcher.stop()


def test_no_gpu_accepting_events_is_unavailable_and_releases_nvml(nvml):
    nvml.write(nvml.node(2, "gpu 0 supported_events 0x3\ngpu 1 fail nvmlDeviceGetSupportedEventTypes 3\n"))
    source = nvml.open()
    before = nvml.init_count()
    with pytest.raises(HardwareUnavailable, match="Xid event"):
        NvmlEventWatcher(source).start()
    assert nvml.init_count() == before
    assert nvml.calls("nvmlEventSetFree") == 1
