"""The routing message and the router-side client."""

from eagleeye_otel.routing._client import DEFAULT_MAX_INSTANCES, InstanceState, RouterClient, RouterStats
from eagleeye_otel.routing._message import MAX_MESSAGE_BYTES, RoutingMessage, routing_json_schema

__all__ = [
    "DEFAULT_MAX_INSTANCES",
    "MAX_MESSAGE_BYTES",
    "InstanceState",
    "RouterClient",
    "RouterStats",
    "RoutingMessage",
    "routing_json_schema",
]
