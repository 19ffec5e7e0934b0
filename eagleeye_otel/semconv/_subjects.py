"""NATS subjects and message versions (contracts in ARCHITECTURE.md)."""

from typing import Final

DEFAULT_ROUTING_SUBJECT: Final = "eagle_eye.routing_metrics"
"""Routing message v1, one per engine step plus idle heartbeats."""

DEFAULT_ROUTING_SNAPSHOT_SUBJECT: Final = "eagle_eye.routing_snapshot"
"""A router publishes here (with a reply subject) to get every publisher's current state at once."""

DEFAULT_METRICS_SUBJECT: Final = "eagle_eye.metrics"
"""The NATS metric exporter's OTLP ``ExportMetricsServiceRequest`` messages (protobuf unless configured as JSON)."""

DEFAULT_HARDWARE_SUBJECT_PREFIX: Final = "eagle_eye.hardware"
"""Hardware telemetry, ``<prefix>.<node>``, OTLP protobuf."""

DEFAULT_DIAGNOSIS_SUBJECT_PREFIX: Final = "eagle_eye.diagnosis"
"""Diagnosis findings, ``<prefix>.<node>``, JSON."""

ROUTING_MESSAGE_VERSION: Final = 1
"""The ``version`` field of the routing messages this package writes and reads."""

ROUTING_STALE_AFTER_S: Final = 3.0
"""How long a router keeps an engine it hears nothing from (``RouterClient``'s default ``stale_after``); a
publisher's heartbeat interval must stay below it, or idle engines would blink out of routers' views."""
