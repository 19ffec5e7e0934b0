"""Eagle Eye's semantic conventions: every subject, metric name, unit and attribute in one place."""

from eagleeye_otel.semconv._subjects import (
    DEFAULT_DIAGNOSIS_SUBJECT_PREFIX,
    DEFAULT_HARDWARE_SUBJECT_PREFIX,
    DEFAULT_ROUTING_SNAPSHOT_SUBJECT,
    DEFAULT_ROUTING_SUBJECT,
    ROUTING_MESSAGE_VERSION,
)

__all__ = [
    "DEFAULT_DIAGNOSIS_SUBJECT_PREFIX",
    "DEFAULT_HARDWARE_SUBJECT_PREFIX",
    "DEFAULT_ROUTING_SNAPSHOT_SUBJECT",
    "DEFAULT_ROUTING_SUBJECT",
    "ROUTING_MESSAGE_VERSION",
]
