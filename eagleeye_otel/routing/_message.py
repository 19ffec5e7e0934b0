"""The routing message v1: its type, its JSON encoding and its JSON Schema.

One type serves both ends: the publisher encodes it, the router client decodes and validates it in one pass
with msgspec, so there is no second hand-written validator to drift from the schema.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta

__all__ = ["MAX_MESSAGE_BYTES", "RoutingMessage", "routing_json_schema"]

MAX_MESSAGE_BYTES: Final = 16 * 1024
"""Routers reject larger payloads before decoding; a real message is about 300 bytes."""

_NAME = Meta(min_length=1, max_length=256)
_COUNT = Meta(ge=0, le=2**63 - 1)
"""Integers beyond int64 are refused: JSON lets a message carry a 16,000-digit number, which no consumer can turn
into a float (a rate, a ratio) without OverflowError."""
_URL = Meta(max_length=2048)


class RoutingMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Load of one vLLM engine, sent after each engine step and at least once a second while idle.

    Counters ending in ``_total`` are cumulative since the publisher started (``started``), so a router that
    misses a message loses nothing: rates come from the difference of two messages. Unknown fields are ignored,
    so later minor additions do not break older routers.
    """

    version: Annotated[Literal[1], Meta(description="Message format version.")]
    instance: Annotated[str, _NAME, Meta(description="Serving instance (EAGLEEYE_INSTANCE_ID).")]
    model: Annotated[str, _NAME, Meta(description="Served model name.")]
    engine: Annotated[int, _COUNT, Meta(description="Data-parallel engine index inside the instance.")]
    timestamp: Annotated[
        float,
        Meta(gt=0, description="Unix time in seconds of the engine step (of sending, for a heartbeat)."),
    ]
    seq: Annotated[
        int,
        _COUNT,
        Meta(description="Strictly increasing per (instance, engine, started); order is (`started`, `seq`)."),
    ]
    num_requests_waiting: Annotated[
        int, _COUNT, Meta(description="Requests queued, including those deferred by transient constraints.")
    ]
    num_requests_running: Annotated[int, _COUNT, Meta(description="Requests in the running batch.")]
    kv_cache_usage: Annotated[float, Meta(ge=0.0, le=1.0, description="Fraction of KV-cache blocks in use.")]

    started: Annotated[
        float,
        Meta(
            gt=0,
            description="Unix time the publisher started. A new value means a restart: `seq` starts over, and "
            "messages are ordered by (`started`, `seq`), so a router keeps the newest `started` and ignores older "
            "processes' messages.",
        ),
    ]

    heartbeat: Annotated[bool, Meta(description="True when no engine step happened since the last message.")] = False
    last_step_at: (
        Annotated[
            float,
            Meta(
                gt=0,
                description="Unix time in seconds of the newest real engine step; heartbeats keep it. A router "
                "tells a hung engine whose API server still heartbeats (old `last_step_at`, requests running) from an "
                "idle one.",
            ),
        ]
        | None
    ) = None
    endpoint: Annotated[str, _URL, Meta(description="Where to send this instance's requests.")] | None = None
    node: (
        Annotated[
            str,
            Meta(
                max_length=256,
                description="Node the instance runs on (EAGLEEYE_NODE_NAME, NODE_NAME or the host name), as the "
                "hardware monitor and the diagnosis name it.",
            ),
        ]
        | None
    ) = None
    devices: Annotated[
        tuple[Annotated[str, Meta(max_length=128)], ...],
        Meta(
            max_length=64,
            description="Ids of the accelerators the instance uses, as the hardware monitor names them (GPU UUIDs, "
            "npu-<card>-<device>); a router avoids the instance while one has a critical diagnosis finding.",
        ),
    ] = ()
    prefix_cache_queries_total: Annotated[
        int, _COUNT, Meta(description="Prompt tokens looked up in the prefix cache.")
    ] = 0
    prefix_cache_hits_total: Annotated[int, _COUNT, Meta(description="Prompt tokens found in the prefix cache.")] = 0
    prompt_tokens_total: Annotated[int, _COUNT, Meta(description="Prompt tokens processed.")] = 0
    generation_tokens_total: Annotated[int, _COUNT, Meta(description="Tokens generated.")] = 0
    preemptions_total: Annotated[int, _COUNT, Meta(description="Requests preempted.")] = 0


def routing_json_schema() -> dict[str, Any]:
    """The JSON Schema of :class:`RoutingMessage`, as printed by ``eagle-eye schema routing``."""
    definitions = msgspec.json.schema(RoutingMessage)["$defs"]
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **definitions["RoutingMessage"],
        "title": "Eagle Eye routing message v1",
    }
    return schema
