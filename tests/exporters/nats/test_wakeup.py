"""LoopWakeup: wakes an asyncio loop running on another thread."""

from __future__ import annotations

import asyncio
import threading

from eagleeye_otel.exporters.nats._wakeup import LoopWakeup


def test_wakes_run_the_callback_on_the_loop_thread() -> None:
    loop = asyncio.new_event_loop()
    calls: list[str] = []
    done = threading.Event()

    def callback() -> None:
        calls.append(threading.current_thread().name)
        done.set()

    thread = threading.Thread(target=loop.run_forever, name="loop-thread", daemon=True)
    wakeup = LoopWakeup(loop, callback)
    thread.start()
    try:
        for _ in range(3):
            done.clear()
            wakeup.wake()
            assert done.wait(5)
        assert set(calls) == {"loop-thread"}
    finally:
        loop.call_soon_threadsafe(wakeup.detach)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_wakes_before_the_callback_runs_may_merge_but_are_never_lost() -> None:
    loop = asyncio.new_event_loop()
    calls = 0

    def callback() -> None:
        nonlocal calls
        calls += 1

    wakeup = LoopWakeup(loop, callback)
    for _ in range(10):
        wakeup.wake()  # the loop is not running yet
    loop.run_until_complete(asyncio.sleep(0.05))
    assert 1 <= calls <= 10
    wakeup.detach()
    loop.close()
