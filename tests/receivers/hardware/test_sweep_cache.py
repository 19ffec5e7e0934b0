"""One sweep per collection: every instrument's callback shares it, and readers collecting close together too."""

from __future__ import annotations

import threading
from collections.abc import Callable

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from eagleeye_otel.receivers.hardware._instruments import SweepCache, register_hardware_metrics
from eagleeye_otel.receivers.hardware._model import DeviceIdentity, GpuReading, Sweep
from eagleeye_otel.semconv import _hardware as hw

SWEEP = Sweep(
    node="n",
    taken_at=1.0,
    gpus=(GpuReading(identity=DeviceIdentity(id="GPU-1", type="gpu", vendor="nvidia", index=0), power_w=1.0),),
)


class _Counting:
    """A ``take_sweep`` that counts its calls."""

    def __init__(self, take: Callable[[], Sweep] = lambda: SWEEP) -> None:
        self.calls = 0
        self._take = take

    def __call__(self) -> Sweep:
        self.calls += 1
        return self._take()


def _readers(count: int, take: Callable[[], Sweep], max_age_s: float) -> list[InMemoryMetricReader]:
    readers = [InMemoryMetricReader() for _ in range(count)]
    register_hardware_metrics(MeterProvider(metric_readers=readers, shutdown_on_exit=False), take, max_age_s=max_age_s)
    return readers


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_sweep_per_collection_however_many_instruments():
    take = _Counting()
    (reader,) = _readers(1, take, max_age_s=0.0)
    for expected in (1, 2, 3):
        reader.get_metrics_data()
        assert take.calls == expected
    assert len(hw.HARDWARE_METRICS) > 30


def test_two_readers_within_max_age_share_one_sweep():
    take = _Counting()
    first, second = _readers(2, take, max_age_s=60.0)
    first.get_metrics_data()
    second.get_metrics_data()
    assert take.calls == 1


def test_sweep_cache_shares_within_max_age_and_renews_after():
    clock, take = _Clock(), _Counting()
    cache = SweepCache(take, max_age_s=0.5, clock=clock)
    for name in ("a", "b", "c"):  # one collection
        assert cache.get(name) is SWEEP
    clock.now += 0.2
    for name in ("a", "b", "c"):  # another reader, 0.2 s later: shared
        cache.get(name)
    assert take.calls == 1
    clock.now += 0.5
    cache.get("a")  # a collection 0.7 s after the sweep: renewed
    cache.get("b")
    assert take.calls == 2 and cache.sweeps == 2


def test_a_collection_slower_than_max_age_still_sees_one_sweep():
    clock, take = _Clock(), _Counting()
    cache = SweepCache(take, max_age_s=0.5, clock=clock)
    for name in ("a", "b", "c"):
        cache.get(name)
        clock.now += 1.0
    assert take.calls == 1


def test_a_failing_sweep_reports_nothing_and_the_next_collection_retries(caplog):
    outcomes = [SWEEP, None]

    def take() -> Sweep:
        outcome = outcomes.pop()
        if outcome is None:
            raise RuntimeError("driver exploded")
        return outcome

    (reader,) = _readers(1, take, max_age_s=0.0)
    assert reader.get_metrics_data() is None
    assert "hardware sweep failed" in caplog.text
    assert reader.get_metrics_data() is not None


def test_concurrent_collections_take_one_sweep():
    take = _Counting()
    threads = [threading.Thread(target=reader.get_metrics_data) for reader in _readers(4, take, max_age_s=60.0)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert take.calls == 1
