"""Encode SDK metrics as OTLP ``ExportMetricsServiceRequest`` messages for NATS.

Pure functions, no I/O. The OTLP mapping itself is the SDK's own (``encode_metrics`` from
``opentelemetry-exporter-otlp-proto-common``, the code behind the OTLP exporters), so a consumer can decode a NATS
message with any OTLP library and gets exactly what a collector would receive over OTLP/gRPC or OTLP/HTTP.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics.export import MetricsData

__all__ = ["OTLP_JSON", "OTLP_PROTOBUF", "MetricsEncoding", "encode_otlp_json", "encode_otlp_protobuf"]

_ID_FIELDS = frozenset({"traceId", "spanId"})
"""Exemplar fields that OTLP/JSON writes as hex, where the generic protobuf JSON mapping would write base64."""


@dataclass(frozen=True)
class MetricsEncoding:
    """A wire format for metrics: its encoder and the ``Content-Type`` header that announces it.

    Attributes:
        name: short name for logs and docs.
        content_type: value of the NATS message's ``Content-Type`` header, so one subscriber can tell formats apart.
        encode: turns one export batch into a message payload.
    """

    name: str
    content_type: str
    encode: Callable[[MetricsData], bytes]


def encode_otlp_protobuf(metrics_data: MetricsData) -> bytes:
    """Serialize an export batch as a binary OTLP ``ExportMetricsServiceRequest`` (the OTLP/HTTP body format).

    Args:
        metrics_data: what a metric reader collected.

    Returns:
        The protobuf bytes.
    """
    return encode_metrics(metrics_data).SerializeToString()


def encode_otlp_json(metrics_data: MetricsData) -> bytes:
    """Serialize an export batch as compact OTLP/JSON, for consumers without protobuf (shell tools, browsers).

    OTLP/JSON is the proto3 JSON mapping with two changes, both applied here: enums are integers, and trace and span
    ids are hex strings. 64-bit integers stay decimal strings, which OTLP/JSON receivers must accept.

    Args:
        metrics_data: what a metric reader collected.

    Returns:
        UTF-8 JSON without insignificant whitespace.
    """
    document = MessageToDict(encode_metrics(metrics_data), use_integers_for_enums=True)
    _hex_ids(document)
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def _hex_ids(node: object) -> None:
    """Rewrite base64 ``traceId``/``spanId`` values (exemplars only, in metrics) as hex, in place."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_FIELDS and isinstance(value, str):
                node[key] = base64.b64decode(value).hex()
            else:
                _hex_ids(value)
    elif isinstance(node, list):
        for item in node:
            _hex_ids(item)


OTLP_PROTOBUF = MetricsEncoding("otlp_proto", "application/x-protobuf", encode_otlp_protobuf)
"""The default: what the diagnosis service and ``ExportMetricsServiceRequest.FromString`` read."""

OTLP_JSON = MetricsEncoding("otlp_json", "application/json", encode_otlp_json)
"""The compact JSON form of the same request."""
