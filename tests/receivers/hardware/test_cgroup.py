"""Container metrics read from cgroup v2 fixture trees through a real SDK pipeline."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from eagleeye_otel.receivers.hardware import CGROUP_METER_NAME, _cgroup, register_cgroup_metrics
from eagleeye_otel.semconv import _container as semconv

FIXTURES = Path(__file__).parent / "fixtures"
LOGGER = "eagleeye_otel.receivers.hardware._cgroup"

ALL_NAMES = {
    semconv.CONTAINER_MEMORY_USAGE,
    semconv.EAGLEEYE_CONTAINER_MEMORY_LIMIT,
    semconv.CONTAINER_CPU_TIME,
    semconv.EAGLEEYE_CONTAINER_CPU_LIMIT,
    semconv.EAGLEEYE_CONTAINER_CPU_PERIODS,
    semconv.EAGLEEYE_CONTAINER_CPU_THROTTLED_PERIODS,
    semconv.EAGLEEYE_CONTAINER_CPU_THROTTLED_TIME,
}


def collect(reader: InMemoryMetricReader) -> dict[str, tuple[str, float, bool]]:
    """One collection: name -> (unit, value, monotonic sum or not) of each metric's single point."""
    data = reader.get_metrics_data()
    if data is None:
        return {}
    result = {}
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            assert scope_metrics.scope.name == CGROUP_METER_NAME
            for metric in scope_metrics.metrics:
                (point,) = metric.data.data_points
                assert point.attributes == {}
                monotonic = bool(getattr(metric.data, "is_monotonic", False))
                result[metric.name] = (metric.unit, point.value, monotonic)
    return result


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def provider(reader: InMemoryMetricReader):
    provider = MeterProvider(metric_readers=[reader])
    yield provider
    provider.shutdown()


def test_container_with_limits(provider, reader):
    names = register_cgroup_metrics(provider, root_path=FIXTURES / "container_limited")

    assert set(names) == ALL_NAMES
    assert collect(reader) == {
        "container.memory.usage": ("By", 1073741824, False),
        "eagleeye.container.memory.limit": ("By", 4294967296, False),
        "container.cpu.time": ("s", 2.5, True),
        "eagleeye.container.cpu.limit": ("{cpu}", 2.5, False),
        "eagleeye.container.cpu.periods": ("{period}", 120, True),
        "eagleeye.container.cpu.throttled_periods": ("{period}", 30, True),
        "eagleeye.container.cpu.throttled_time": ("s", 1.5, True),
    }


def test_unlimited_container_reports_no_limit_points(provider, reader):
    """``max`` means no limit: the limit instruments exist but report nothing."""
    names = register_cgroup_metrics(provider, root_path=FIXTURES / "container_unlimited")

    assert set(names) == ALL_NAMES
    metrics = collect(reader)
    assert semconv.EAGLEEYE_CONTAINER_MEMORY_LIMIT not in metrics
    assert semconv.EAGLEEYE_CONTAINER_CPU_LIMIT not in metrics
    assert metrics[semconv.CONTAINER_MEMORY_USAGE] == ("By", 536870912, False)
    assert metrics[semconv.CONTAINER_CPU_TIME] == ("s", 0.75, True)
    assert metrics[semconv.EAGLEEYE_CONTAINER_CPU_THROTTLED_PERIODS] == ("{period}", 0, True)


def test_cgroup_path_resolves_inside_the_hierarchy(provider, reader, tmp_path):
    """The ``0::`` path is followed when the host's tree is visible (no cgroup namespace)."""
    root = tmp_path / "root"
    shutil.copytree(FIXTURES / "container_unlimited", root)
    (root / "sys/fs/cgroup/memory.current").write_text("999\n")  # the root cgroup's, not ours

    register_cgroup_metrics(provider, root_path=root)

    assert collect(reader)[semconv.CONTAINER_MEMORY_USAGE][1] == 536870912


def test_cgroup_path_falls_back_to_the_mount_point(provider, reader, tmp_path):
    """Without a cgroup namespace the runtime mounts the container's own cgroup at ``/sys/fs/cgroup``."""
    root = tmp_path / "root"
    shutil.copytree(FIXTURES / "container_limited", root)
    (root / "proc/self/cgroup").write_text("0::/kubepods.slice/cri-containerd-0123abcd.scope\n")

    register_cgroup_metrics(provider, root_path=str(root))

    assert collect(reader)[semconv.CONTAINER_MEMORY_USAGE][1] == 1073741824


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        pytest.param(lambda root: shutil.copytree(FIXTURES / "cgroup_v1", root), "only cgroup v1", id="v1"),
        pytest.param(lambda root: root.mkdir(), "cannot read", id="no-proc"),
        pytest.param(
            lambda root: (
                shutil.copytree(FIXTURES / "cgroup_v1", root),
                (root / "proc/self/cgroup").write_text("1:name=systemd:/\n0::/\n"),
                (root / "sys/fs/cgroup/unified").mkdir(),
            ),
            "no cgroup v2 hierarchy is mounted",
            id="hybrid",
        ),
        pytest.param(
            lambda root: (
                shutil.copytree(FIXTURES / "container_limited", root),
                [(root / "sys/fs/cgroup" / name).unlink() for name in _cgroup._FILES],
            ),
            "has none of memory.current",
            id="no-files",
        ),
    ],
)
def test_not_in_a_cgroup_v2_container_logs_one_note_and_registers_nothing(
    provider, reader, tmp_path, caplog, setup, reason
):
    root = tmp_path / "root"
    setup(root)
    caplog.set_level(logging.DEBUG, logger=LOGGER)

    assert register_cgroup_metrics(provider, root_path=root) == ()

    assert collect(reader) == {}
    records = [record for record in caplog.records if record.name == LOGGER]
    assert len(records) == 1
    assert records[0].levelno == logging.INFO
    assert "Container metrics are off" in records[0].getMessage()
    assert reason in records[0].getMessage()


def test_missing_files_skip_their_instruments_quietly(provider, reader, tmp_path, caplog):
    root = tmp_path / "root"
    shutil.copytree(FIXTURES / "container_limited", root)
    cgroup = root / "sys/fs/cgroup"
    (cgroup / "memory.max").unlink()
    (cgroup / "cpu.max").unlink()
    (cgroup / "cpu.stat").write_text("usage_usec 42\nuser_usec 40\nsystem_usec 2\n")  # no cpu controller

    names = register_cgroup_metrics(provider, root_path=root)

    assert names == (semconv.CONTAINER_MEMORY_USAGE, semconv.CONTAINER_CPU_TIME)
    assert collect(reader) == {
        "container.memory.usage": ("By", 1073741824, False),
        "container.cpu.time": ("s", 42e-6, True),
    }
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


def test_malformed_files_are_skipped_with_a_rate_limited_warning(provider, reader, caplog):
    names = register_cgroup_metrics(provider, root_path=FIXTURES / "malformed")
    assert set(names) == ALL_NAMES

    for _ in range(3):
        metrics = collect(reader)
        assert set(metrics) == ALL_NAMES - {semconv.CONTAINER_MEMORY_USAGE, semconv.EAGLEEYE_CONTAINER_CPU_LIMIT}
        assert metrics[semconv.EAGLEEYE_CONTAINER_MEMORY_LIMIT][1] == 2147483648

    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert any("memory.current" in message for message in warnings)
    assert any("cpu.max" in message for message in warnings)


def test_a_file_that_breaks_later_is_skipped_then_recovers(provider, reader, tmp_path, caplog):
    root = tmp_path / "root"
    shutil.copytree(FIXTURES / "container_limited", root)
    cpu_stat = root / "sys/fs/cgroup/cpu.stat"
    good = cpu_stat.read_text()
    register_cgroup_metrics(provider, root_path=root)
    assert collect(reader)[semconv.CONTAINER_CPU_TIME][1] == 2.5

    cpu_stat.write_text("usage_usec\n")
    metrics = collect(reader)
    assert semconv.CONTAINER_CPU_TIME not in metrics
    assert semconv.EAGLEEYE_CONTAINER_CPU_THROTTLED_PERIODS not in metrics
    assert metrics[semconv.CONTAINER_MEMORY_USAGE][1] == 1073741824
    assert "cpu.stat" in caplog.records[-1].getMessage()

    cpu_stat.unlink()  # the cgroup went away: also a skip, not an error
    assert semconv.CONTAINER_CPU_TIME not in collect(reader)

    cpu_stat.write_text(good.replace("usage_usec 2500000", "usage_usec 3000000"))
    assert collect(reader)[semconv.CONTAINER_CPU_TIME][1] == 3.0


def test_files_are_read_once_per_collection(tmp_path, monkeypatch):
    """Seven callbacks, two readers: each reader's collection reads the files once."""
    reads = []
    real_read = _cgroup._CgroupFiles.read

    def counting_read(self):
        reads.append(None)
        return real_read(self)

    monkeypatch.setattr(_cgroup._CgroupFiles, "read", counting_read)
    first, second = InMemoryMetricReader(), InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[first, second])
    root = tmp_path / "root"
    shutil.copytree(FIXTURES / "container_limited", root)
    register_cgroup_metrics(provider, root_path=root)
    reads.clear()  # the setup probe's read

    assert len(collect(first)) == 7
    assert len(reads) == 1
    (root / "sys/fs/cgroup/memory.current").write_text("5\n")
    assert collect(second)[semconv.CONTAINER_MEMORY_USAGE][1] == 5
    assert collect(first)[semconv.CONTAINER_MEMORY_USAGE][1] == 5
    assert len(reads) == 3
    provider.shutdown()


@pytest.mark.parametrize(
    ("text", "cores"),
    [("max 100000", None), ("50000 100000", 0.5), ("400000 100000\n", 4.0)],
)
def test_cpu_max(text, cores):
    assert _cgroup._parse_cpu_max(text) == cores


@pytest.mark.parametrize("text", ["100000", "max", "1 2 3", "abc 100000", "100000 0"])
def test_cpu_max_rejects_malformed(text):
    with pytest.raises(ValueError):
        _cgroup._parse_cpu_max(text)
