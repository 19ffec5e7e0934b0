"""NATS exporters: the latest-value routing publisher."""

from eagleeye_otel.exporters.nats._routing_publisher import PublisherStats, RoutingPublisher

__all__ = ["PublisherStats", "RoutingPublisher"]
