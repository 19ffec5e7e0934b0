"""The routing message and the router-side client."""

from eagleeye_otel.routing._message import MAX_MESSAGE_BYTES, RoutingMessage, routing_json_schema

__all__ = ["MAX_MESSAGE_BYTES", "RoutingMessage", "routing_json_schema"]
