"""The vLLM plugin's own health as OTel instruments: the routing publisher's counters and recording failures.

The instruments are observable: each collection reads the counts the publisher and the stat loggers keep anyway,
so watching the push costs nothing per engine step. Names and units come from
:data:`~eagleeye_otel.semconv.PLUGIN_HEALTH_METRICS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from eagleeye_otel import semconv as sc
from eagleeye_otel.exporters.nats import PublisherStats, RoutingPublisher
from eagleeye_otel.instrumentation.vllm._metrics_recorder import METER_NAME
from eagleeye_otel.log_limiter import LogLimiter
from eagleeye_otel.version import __version__

__all__ = ["register_health_metrics"]

_PUBLISHER_FIELDS: dict[str, Callable[[PublisherStats], float]] = {
    sc.EAGLEEYE_ROUTING_OFFERED: lambda stats: stats.offered,
    sc.EAGLEEYE_ROUTING_PUBLISHED: lambda stats: stats.published,
    sc.EAGLEEYE_ROUTING_HEARTBEATS: lambda stats: stats.heartbeats,
    sc.EAGLEEYE_ROUTING_COALESCED: lambda stats: stats.coalesced,
    sc.EAGLEEYE_ROUTING_DROPPED: lambda stats: stats.dropped,
    sc.EAGLEEYE_ROUTING_ERRORS: lambda stats: stats.errors,
    sc.EAGLEEYE_ROUTING_RECONNECTS: lambda stats: stats.reconnects,
    sc.EAGLEEYE_ROUTING_CONNECTED: lambda stats: int(stats.connected),
}


def register_health_metrics(
    meter_provider: MeterProvider, *, instance: str, publisher: RoutingPublisher | None, failures: LogLimiter
) -> None:
    """Create the health instruments on ``meter_provider``; the routing ones only when the push is on.

    Args:
        meter_provider: where the plugin's other instruments live.
        instance: the ``eagleeye.instance.id`` of this process.
        publisher: the process's routing publisher, or ``None`` when the push is off.
        failures: the limiter every stat logger of the process counts its failures in.
    """
    meter = meter_provider.get_meter(METER_NAME, __version__)
    attributes = {sc.EAGLEEYE_INSTANCE_ID: instance}
    for spec in sc.PLUGIN_HEALTH_METRICS:
        if spec.name == sc.EAGLEEYE_VLLM_RECORD_FAILURES:
            read: Callable[[], float] = lambda: failures.count  # noqa: E731 - one reader per instrument
        elif publisher is not None:
            read = _publisher_reader(publisher, _PUBLISHER_FIELDS[spec.name])
        else:
            continue
        callback = _callback(read, attributes)
        if spec.kind is sc.InstrumentKind.OBSERVABLE_GAUGE:
            meter.create_observable_gauge(spec.name, [callback], spec.unit, spec.description)
        else:
            meter.create_observable_counter(spec.name, [callback], spec.unit, spec.description)


def _publisher_reader(publisher: RoutingPublisher, field: Callable[[PublisherStats], float]) -> Callable[[], float]:
    return lambda: field(publisher.stats)


def _callback(
    read: Callable[[], float], attributes: dict[str, str]
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        return (Observation(read(), attributes),)

    return observe
