"""The routing message, the router-side client and the instance health it can follow."""

from eagleeye_otel.routing._client import DEFAULT_MAX_INSTANCES, RouterClient
from eagleeye_otel.routing._health import DEFAULT_HEALTH_TTL, InstanceHealth
from eagleeye_otel.routing._message import MAX_MESSAGE_BYTES, RoutingMessage, routing_json_schema
from eagleeye_otel.routing._state import InstanceState, RouterStats

__all__ = [
    "DEFAULT_HEALTH_TTL",
    "DEFAULT_MAX_INSTANCES",
    "MAX_MESSAGE_BYTES",
    "InstanceHealth",
    "InstanceState",
    "RouterClient",
    "RouterStats",
    "RoutingMessage",
    "routing_json_schema",
]
