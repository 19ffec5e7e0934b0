"""DeadlineCaller: a read that hangs costs one parked thread and one deadline, once; other keys are read on time."""

from __future__ import annotations

import functools
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


def test_a_batch_comes_back_in_order_with_each_read_s_result_or_error(caller):
    outcomes = caller.call_all([("a", lambda: 1), ("b", lambda: 1 / 0), ("c", lambda: 3)])
    assert outcomes[0] == 1 and isinstance(outcomes[1], ZeroDivisionError) and outcomes[2] == 3
    assert caller.threads == 1 and caller.stuck() == {}


def test_a_read_that_hangs_in_a_batch_holds_up_the_reads_behind_it_once(caller):
    release = threading.Event()
    ran: list[str] = []

    def read(key: str) -> str:
        ran.append(key)
        if key == "gpu-1":
            DeadlineCaller.note("nvmlDeviceGetPowerUsage")
            release.wait()
        return f"{key} read"

    keys = ["gpu-0", "gpu-1", "gpu-2", "gpu-3"]
    first = caller.call_all([(key, functools.partial(read, key)) for key in keys])
    assert first[0] == "gpu-0 read" and first[2:] == ["gpu-2 read", "gpu-3 read"]
    assert isinstance(first[1], CallTimedOut) and first[1].call == "nvmlDeviceGetPowerUsage"

    for _ in range(5):  # later sweeps: the hung GPU fails at once, the others are read, no thread is added
        again = caller.call_all([(key, functools.partial(read, key)) for key in keys])
        assert isinstance(again[1], CallTimedOut)
        assert [again[0], *again[2:]] == ["gpu-0 read", "gpu-2 read", "gpu-3 read"]
    assert ran.count("gpu-1") == 1 and ran.count("gpu-3") == 6
    assert caller.threads == 2

    release.set()
    for _ in range(200):
        if not caller.stuck():
            break
        time.sleep(0.01)
    assert caller.call_all([("gpu-1", functools.partial(read, "gpu-1"))]) == ["gpu-1 read"]
