"""NATS exporters: the OTLP metric exporter and the latest-value routing publisher."""

from eagleeye_otel.exporters.nats._encoding import OTLP_JSON, OTLP_PROTOBUF, MetricsEncoding
from eagleeye_otel.exporters.nats._routing_publisher import PublisherStats, RoutingPublisher
from eagleeye_otel.exporters.nats.exporter import ExportStats, NatsMetricExporter

__all__ = [
    "OTLP_JSON",
    "OTLP_PROTOBUF",
    "ExportStats",
    "MetricsEncoding",
    "NatsMetricExporter",
    "PublisherStats",
    "RoutingPublisher",
]
