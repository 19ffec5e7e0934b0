"""Container (cgroup v2) metric names and units.

``container.*`` names are copied from the OpenTelemetry semantic conventions
(``opentelemetry.semconv._incubating.metrics.container_metrics``; a test checks they still match). Upstream has no
names for CPU throttling or for the limits a container runs under, so those are ``eagleeye.container.*``, shaped
after upstream's ``k8s.container.*.limit`` and cAdvisor's ``container_cpu_cfs_*`` metrics.
"""

from typing import Final

CONTAINER_MEMORY_USAGE: Final = "container.memory.usage"
"""Memory the container's cgroup uses, page cache included (``memory.current``).

Instrument: observable updowncounter. Upstream name.
"""
CONTAINER_MEMORY_USAGE_UNIT: Final = "By"

EAGLEEYE_CONTAINER_MEMORY_LIMIT: Final = "eagleeye.container.memory.limit"
"""Hard memory limit of the container's cgroup (``memory.max``); past it the kernel OOM-kills.

Instrument: observable updowncounter. No point is reported while the limit is ``max`` (unlimited).
"""
EAGLEEYE_CONTAINER_MEMORY_LIMIT_UNIT: Final = "By"

CONTAINER_CPU_TIME: Final = "container.cpu.time"
"""CPU time the container consumed on all cores (``cpu.stat`` ``usage_usec``).

Instrument: observable counter. Upstream name.
"""
CONTAINER_CPU_TIME_UNIT: Final = "s"

EAGLEEYE_CONTAINER_CPU_LIMIT: Final = "eagleeye.container.cpu.limit"
"""CPU bandwidth limit in cores (``cpu.max`` quota divided by period).

Instrument: observable updowncounter. No point is reported while the quota is ``max`` (unlimited).
"""
EAGLEEYE_CONTAINER_CPU_LIMIT_UNIT: Final = "{cpu}"

EAGLEEYE_CONTAINER_CPU_PERIODS: Final = "eagleeye.container.cpu.periods"
"""Enforcement periods elapsed while the container had runnable tasks (``cpu.stat`` ``nr_periods``).

Instrument: observable counter.
"""
EAGLEEYE_CONTAINER_CPU_PERIODS_UNIT: Final = "{period}"

EAGLEEYE_CONTAINER_CPU_THROTTLED_PERIODS: Final = "eagleeye.container.cpu.throttled_periods"
"""Periods in which the container used up its quota and was throttled (``cpu.stat`` ``nr_throttled``).

Instrument: observable counter. Its rate over the periods rate is the throttled fraction.
"""
EAGLEEYE_CONTAINER_CPU_THROTTLED_PERIODS_UNIT: Final = "{period}"

EAGLEEYE_CONTAINER_CPU_THROTTLED_TIME: Final = "eagleeye.container.cpu.throttled_time"
"""Total time the container's tasks were held back by throttling (``cpu.stat`` ``throttled_usec``).

Instrument: observable counter.
"""
EAGLEEYE_CONTAINER_CPU_THROTTLED_TIME_UNIT: Final = "s"
