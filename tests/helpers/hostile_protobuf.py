"""Protobuf written byte by byte, for hostile payloads the protobuf library refuses to encode (nesting past its
depth limit, unknown groups, lengths past the end)."""

from __future__ import annotations


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(tag: int, payload: bytes) -> bytes:
    return bytes([tag]) + varint(len(payload)) + payload


def deep_attribute_export(depth: int) -> bytes:
    """An export whose resource has one attribute: arrays nested ``depth`` deep around a string."""
    inner = field(0x0A, b"x")  # AnyValue.string_value
    size, prefixes = len(inner), []
    for _ in range(depth):  # AnyValue.array_value (5) -> ArrayValue.values (1) -> AnyValue
        values = b"\x0a" + varint(size)
        array = b"\x2a" + varint(size + len(values))
        size += len(values) + len(array)
        prefixes.append(array + values)
    value = b"".join(reversed(prefixes)) + inner
    key_value = field(0x0A, b"deep") + field(0x12, value)
    return field(0x0A, field(0x0A, field(0x0A, key_value)))  # request -> resource_metrics -> resource


HOSTILE_OTLP = {
    "attribute-nested-100k-deep": deep_attribute_export(100_000),
    "attribute-nested-past-the-decoder-limit": deep_attribute_export(60),
    "unknown-groups-nested-100k-deep": b"\x7b" * 100_000 + b"\x7c" * 100_000,
    "100-MB-of-garbage": b"\xff" * 100_000_000,
    "truncated": field(0x0A, b"\x0a" * 50)[:20],
    "length-past-the-end": b"\x0a\xff\xff\xff\xff\x0f",
    "invalid-utf8-in-a-string": field(0x0A, field(0x0A, field(0x0A, field(0x0A, b"\xff\xfe")))),
}
"""Payloads no OTLP decoder may accept: each must be counted as malformed."""
