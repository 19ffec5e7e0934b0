"""Container metrics from cgroup v2 files, exposed as OTel observable instruments.

The process's cgroup is ``<root_path>/sys/fs/cgroup/<path>``, ``<path>`` coming from the ``0::`` line of
``<root_path>/proc/self/cgroup``. ``root_path`` lets a DaemonSet read a host mounted at ``/hostfs`` and lets tests
read fixture trees (the collector's ``root_path``, client_python's ``proc=``).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple, TypeVar

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation, get_meter

from eagleeye_otel.log_limiter import LogLimiter
from eagleeye_otel.semconv._container import (
    CONTAINER_CPU_TIME,
    CONTAINER_CPU_TIME_UNIT,
    CONTAINER_MEMORY_USAGE,
    CONTAINER_MEMORY_USAGE_UNIT,
    EAGLEEYE_CONTAINER_CPU_LIMIT,
    EAGLEEYE_CONTAINER_CPU_LIMIT_UNIT,
    EAGLEEYE_CONTAINER_CPU_PERIODS,
    EAGLEEYE_CONTAINER_CPU_PERIODS_UNIT,
    EAGLEEYE_CONTAINER_CPU_THROTTLED_PERIODS,
    EAGLEEYE_CONTAINER_CPU_THROTTLED_PERIODS_UNIT,
    EAGLEEYE_CONTAINER_CPU_THROTTLED_TIME,
    EAGLEEYE_CONTAINER_CPU_THROTTLED_TIME_UNIT,
    EAGLEEYE_CONTAINER_MEMORY_LIMIT,
    EAGLEEYE_CONTAINER_MEMORY_LIMIT_UNIT,
)
from eagleeye_otel.version import __version__

__all__ = ["CGROUP_METER_NAME", "register_cgroup_metrics"]

_logger = logging.getLogger(__name__)

CGROUP_METER_NAME = "eagleeye_otel.receivers.hardware.cgroup"
"""Instrumentation scope of the container metrics."""

_MEMORY_CURRENT = "memory.current"
_MEMORY_MAX = "memory.max"
_CPU_STAT = "cpu.stat"
_CPU_MAX = "cpu.max"
_FILES = (_MEMORY_CURRENT, _MEMORY_MAX, _CPU_STAT, _CPU_MAX)

_T = TypeVar("_T")


def _parse_int(text: str) -> int:
    return int(text.strip())


def _parse_limit(text: str) -> int | None:
    """``memory.max``: bytes, or ``max`` for no limit (None)."""
    value = text.strip()
    return None if value == "max" else int(value)


def _parse_cpu_stat(text: str) -> dict[str, int]:
    """``cpu.stat``: one ``key value`` pair a line."""
    stat: dict[str, int] = {}
    for line in text.splitlines():
        if line.strip():
            key, value = line.split()
            stat[key] = int(value)
    return stat


def _parse_cpu_max(text: str) -> float | None:
    """``cpu.max``: ``quota period`` in microseconds, quota ``max`` for no limit; returns cores (or None)."""
    quota, period = text.split()
    period_us = int(period)
    if period_us <= 0:
        raise ValueError(f"period {period_us} is not positive")
    return None if quota == "max" else int(quota) / period_us


@dataclass(frozen=True)
class _Snapshot:
    """Every file's parsed value from one collection; None (or a missing key) where it could not be read."""

    memory_current: int | None = None
    memory_max: int | None = None
    cpu_stat: Mapping[str, int] = field(default_factory=dict)
    cpu_max_cores: float | None = None


class _Spec(NamedTuple):
    name: str
    unit: str
    kind: Literal["counter", "updowncounter"]
    file: str
    value: Callable[[_Snapshot], float | None]
    description: str
    stat_key: str | None = None
    """The ``cpu.stat`` key the instrument needs; probed at setup because it depends on the cpu controller."""


def _usec(key: str) -> Callable[[_Snapshot], float | None]:
    def seconds(snapshot: _Snapshot) -> float | None:
        value = snapshot.cpu_stat.get(key)
        return None if value is None else value / 1e6

    return seconds


def _count(key: str) -> Callable[[_Snapshot], float | None]:
    return lambda snapshot: snapshot.cpu_stat.get(key)


_SPECS = (
    _Spec(
        CONTAINER_MEMORY_USAGE,
        CONTAINER_MEMORY_USAGE_UNIT,
        "updowncounter",
        _MEMORY_CURRENT,
        lambda s: s.memory_current,
        "Memory usage of the container.",
    ),
    _Spec(
        EAGLEEYE_CONTAINER_MEMORY_LIMIT,
        EAGLEEYE_CONTAINER_MEMORY_LIMIT_UNIT,
        "updowncounter",
        _MEMORY_MAX,
        lambda s: s.memory_max,
        "Memory limit of the container; absent when unlimited.",
    ),
    _Spec(
        CONTAINER_CPU_TIME,
        CONTAINER_CPU_TIME_UNIT,
        "counter",
        _CPU_STAT,
        _usec("usage_usec"),
        "Total CPU time consumed.",
        "usage_usec",
    ),
    _Spec(
        EAGLEEYE_CONTAINER_CPU_LIMIT,
        EAGLEEYE_CONTAINER_CPU_LIMIT_UNIT,
        "updowncounter",
        _CPU_MAX,
        lambda s: s.cpu_max_cores,
        "CPU limit of the container in cores; absent when unlimited.",
    ),
    _Spec(
        EAGLEEYE_CONTAINER_CPU_PERIODS,
        EAGLEEYE_CONTAINER_CPU_PERIODS_UNIT,
        "counter",
        _CPU_STAT,
        _count("nr_periods"),
        "CPU bandwidth enforcement periods elapsed.",
        "nr_periods",
    ),
    _Spec(
        EAGLEEYE_CONTAINER_CPU_THROTTLED_PERIODS,
        EAGLEEYE_CONTAINER_CPU_THROTTLED_PERIODS_UNIT,
        "counter",
        _CPU_STAT,
        _count("nr_throttled"),
        "CPU bandwidth periods in which the container was throttled.",
        "nr_throttled",
    ),
    _Spec(
        EAGLEEYE_CONTAINER_CPU_THROTTLED_TIME,
        EAGLEEYE_CONTAINER_CPU_THROTTLED_TIME_UNIT,
        "counter",
        _CPU_STAT,
        _usec("throttled_usec"),
        "Time the container was throttled.",
        "throttled_usec",
    ),
)


class _Probe(NamedTuple):
    directory: Path | None
    """The process's cgroup directory, or None when container metrics are off."""
    detail: str
    """Why they are off, or where they come from."""


def _probe(root: Path) -> _Probe:
    """Find the process's cgroup v2 directory under ``root`` and say why not when there is none."""
    cgroup_file = root / "proc" / "self" / "cgroup"
    try:
        lines = cgroup_file.read_text().splitlines()
    except OSError as exc:
        return _Probe(None, f"cannot read {cgroup_file} ({exc.strerror or exc})")
    path = next((line[3:] for line in lines if line.startswith("0::")), None)
    if path is None:
        return _Probe(None, f"{cgroup_file} has no cgroup v2 ('0::') entry, only cgroup v1")
    mount = root / "sys" / "fs" / "cgroup"
    if not (mount / "cgroup.controllers").is_file():
        return _Probe(None, f"no cgroup v2 hierarchy is mounted at {mount} (cgroup v1 or hybrid)")
    directory = mount / path.strip().lstrip("/")
    if not (directory / "cgroup.controllers").is_file():
        # Without a cgroup namespace the path names the cgroup in the host's tree, while the runtime mounts the
        # container's own cgroup at the mount point.
        directory = mount
    if not any((directory / name).is_file() for name in _FILES):
        return _Probe(None, f"{directory} has none of {', '.join(_FILES)}")
    return _Probe(directory, f"cgroup {directory}")


class _CgroupFiles:
    """Reads the cgroup's files once per collection and hands every instrument's callback the same snapshot.

    A new snapshot is read when an instrument asks a second time: that happens only in the next collection (of
    any reader), whatever order the SDK calls the callbacks in.
    """

    def __init__(self, directory: Path, files: frozenset[str]) -> None:
        self._directory = directory
        self._files = files
        self._limiters = {name: LogLimiter(_logger) for name in files}
        self._lock = threading.Lock()
        self._snapshot: _Snapshot | None = None
        self._served: set[str] = set()

    def snapshot(self, instrument: str) -> _Snapshot:
        """The current collection's snapshot for ``instrument``."""
        with self._lock:
            if self._snapshot is None or instrument in self._served:
                self._snapshot = self.read()
                self._served.clear()
            self._served.add(instrument)
            return self._snapshot

    def read(self) -> _Snapshot:
        """Read and parse every present file; a failing one is logged (rate-limited) and left out."""
        return _Snapshot(
            memory_current=self._parse(_MEMORY_CURRENT, _parse_int),
            memory_max=self._parse(_MEMORY_MAX, _parse_limit),
            cpu_stat=self._parse(_CPU_STAT, _parse_cpu_stat) or {},
            cpu_max_cores=self._parse(_CPU_MAX, _parse_cpu_max),
        )

    def _parse(self, name: str, parse: Callable[[str], _T]) -> _T | None:
        if name not in self._files:
            return None
        path = self._directory / name
        try:
            return parse(path.read_text())
        except (OSError, ValueError) as exc:
            self._limiters[name].warning("Skipping cgroup file %s this collection: %r", path, exc)
            return None


def _observe(files: _CgroupFiles, spec: _Spec) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(_options: CallbackOptions) -> Iterable[Observation]:
        value = spec.value(files.snapshot(spec.name))
        return () if value is None else (Observation(value),)

    return callback


def register_cgroup_metrics(
    meter_provider: MeterProvider | None = None, *, root_path: str | os.PathLike[str] = "/"
) -> tuple[str, ...]:
    """Register the container's cgroup v2 memory and CPU metrics as observable instruments.

    When there is no cgroup v2 hierarchy (cgroup v1, no ``0::`` entry, no cgroup files) one info message says why
    and nothing is registered. Instruments whose file (or ``cpu.stat`` key) is missing at setup are skipped.

    Args:
        meter_provider: where to register; the global provider when None.
        root_path: the filesystem root to read ``proc/`` and ``sys/fs/cgroup/`` under.

    Returns:
        The names of the instruments registered; empty when container metrics are off.
    """
    probe = _probe(Path(root_path))
    if probe.directory is None:
        _logger.info("Container metrics are off: %s", probe.detail)
        return ()
    present = frozenset(name for name in _FILES if (probe.directory / name).is_file())
    files = _CgroupFiles(probe.directory, present)
    stat_keys = files.read().cpu_stat.keys()
    specs = [spec for spec in _SPECS if spec.file in present and (spec.stat_key is None or spec.stat_key in stat_keys)]
    meter = get_meter(CGROUP_METER_NAME, __version__, meter_provider)
    for spec in specs:
        create = meter.create_observable_counter if spec.kind == "counter" else meter.create_observable_up_down_counter
        create(spec.name, [_observe(files, spec)], unit=spec.unit, description=spec.description)
    names = tuple(spec.name for spec in specs)
    _logger.info("Container metrics from %s: %s", probe.detail, ", ".join(names))
    return names
