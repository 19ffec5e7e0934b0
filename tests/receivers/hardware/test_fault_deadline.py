"""DeadlineCaller: a read that hangs costs one parked thread and one deadline, once; other keys are read on time."""

from __future__ import annotations

import threading
import time

import pytest

from eagleeye_otel.receivers.hardware._deadline import CallTimedOut, DeadlineCaller

DEADLINE_S = 0.2


@pytest.fixture
def caller():
    deadline_caller = DeadlineCaller("TEST", deadline_s=DEADLINE_S)
    yield deadline_caller
    deadline_caller.close()


def test_results_and_errors_come_back_from_the_worker(caller):
    assert caller.call("a", lambda: 42) == 42
    with pytest.raises(ZeroDivisionError):
        caller.call("a", lambda: 1 / 0)
    assert caller.call("b", threading.current_thread) is not threading.current_thread()
    assert caller.threads == 1 and caller.stuck() == {}


def test_a_hung_read_parks_one_thread_and_its_key_fails_at_once_until_it_returns(caller):
    release = threading.Event()
    calls = []

    def hang() -> str:
        calls.append(1)
        DeadlineCaller.note("vendor_get_temperature")
        release.wait()
        return "late"

    with pytest.raises(CallTimedOut) as first:
        caller.call("chip-1", hang)
    assert first.value.key == "chip-1" and first.value.call == "vendor_get_temperature"
    assert "vendor_get_temperature has not returned" in str(first.value)
    assert caller.stuck() == {"chip-1": "vendor_get_temperature"}

    for _ in range(5):  # asked again: fails at once, runs nothing, starts no thread
        with pytest.raises(CallTimedOut):
            caller.call("chip-1", hang)
        assert caller.call("chip-2", lambda: "on time") == "on time"  # the other keys on a fresh worker
    assert len(calls) == 1
    assert caller.threads == 2  # the parked one and the live one, however many sweeps went by

    release.set()
    for _ in range(200):
        if not caller.stuck():
            break
        time.sleep(0.01)
    assert caller.stuck() == {}
    assert caller.call("chip-1", lambda: "back") == "back"
    for _ in range(200):
        if caller.threads == 1:
            break
        time.sleep(0.01)
    assert caller.threads == 1  # the parked thread left once its call returned


def test_the_deadline_must_be_positive():
    with pytest.raises(ValueError, match="deadline_s"):
        DeadlineCaller("TEST", deadline_s=0)
