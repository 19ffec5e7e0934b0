"""The view behind ``RouterClient``: each engine's newest state, in ``(started, seq)`` order.

:meth:`EngineView.ingest` takes the payloads the transport read together and does, per payload, one typed
decode (which is also the whole validation), one dict lookup, two comparisons and one store; the clock is read
once per batch. The slow paths (a restart, a reordering, a full view) live in their own methods.

A publisher that restarts keeps its ``instance`` (``POD_NAME-pid`` with vLLM as PID 1) and starts ``seq`` over,
with a new ``started``. The view keeps the state of the newest ``started`` and ignores an older process's late
messages whatever their ``seq``. So that such a message cannot come back once the newer state has expired, the
view also remembers, for :data:`RESTART_MEMORY_S` after an engine expired, the ``started`` it last held.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Final

import msgspec

from eagleeye_otel.log_limiter import LogLimiter
from eagleeye_otel.routing._message import MAX_MESSAGE_BYTES, RoutingMessage

__all__ = ["RESTART_MEMORY_S", "EngineView", "Entry"]

_logger = logging.getLogger("eagleeye_otel.routing._client")  # what routers configure: the client's logger

RESTART_MEMORY_S: Final = 30.0
"""Seconds an expired engine's ``started`` is remembered. A late message crosses NATS within the server's write
deadline (10 s by default) plus the buffers on the way; a publisher whose clock stepped back across a restart
stays out of the view at most this long after its predecessor expired."""

Entry = tuple[RoutingMessage, float]
"""What the view stores per (instance, engine): the message and the client clock when it was accepted."""
_Key = tuple[str, int]


class EngineView:
    """Each (instance, engine)'s newest accepted message, bounded, with the counts of what was refused.

    Args:
        stale_after: seconds without a message after which an engine leaves the view.
        max_instances: bound on the (instance, engine) pairs held, and on those remembered after expiring.
        clock: monotonic seconds.
    """

    def __init__(self, *, stale_after: float, max_instances: int, clock: Callable[[], float]) -> None:
        self.stale_after = stale_after
        self._max_instances = max_instances
        self._clock = clock
        self._decode = msgspec.json.Decoder(RoutingMessage).decode
        self.states: dict[_Key, Entry] = {}
        self._retired: OrderedDict[_Key, tuple[float, float]] = OrderedDict()  # key -> (started, expired at)
        self._next_room_check = -math.inf
        self._bad_input_log = LogLimiter(_logger)
        self._overflow_log = LogLimiter(_logger)
        self.accepted = self.invalid = self.oversized = self.out_of_order = 0
        self.duplicates = self.superseded = self.overflow = self.expired = 0

    # -- ingest ----------------------------------------------------------------------------------------------

    def ingest(self, payloads: Iterable[bytes]) -> int:
        """Decode, validate and apply payloads read together; never raises on bad input.

        Returns:
            How many updated the view.
        """
        now = self._clock()
        decode, states = self._decode, self.states
        accepted = 0
        for data in payloads:
            if len(data) > MAX_MESSAGE_BYTES:
                self._oversize(len(data))
                continue
            try:
                message = decode(data)
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as error:  # msgspec's error for bad UTF-8
                self.invalid += 1
                self._bad_input_log.warning("invalid routing message dropped: %s", error)
                continue
            key = (message.instance, message.engine)
            held = states.get(key)
            if held is None:
                if not self._admit(key, message, now):
                    continue
            elif (message.started != held[0].started or message.seq <= held[0].seq) and not self._follows(
                message, held, now
            ):
                continue
            states[key] = (message, now)
            accepted += 1
        self.accepted += accepted
        return accepted

    def _oversize(self, size: int) -> None:
        self.oversized += 1
        self._bad_input_log.warning("routing message of %d bytes dropped (limit %d)", size, MAX_MESSAGE_BYTES)

    def _follows(self, message: RoutingMessage, held: Entry, now: float) -> bool:
        """Whether ``message`` replaces ``held`` although it is not the next ``seq`` of the same process.

        A newer ``started`` (a restart) replaces it whatever its ``seq``; an older one never does. Within one
        process, a lower or equal ``seq`` replaces it only once it is stale (a snapshot reply after an outage
        resends the last message, which the router should take as the current state).
        """
        previous = held[0]
        if message.started != previous.started:
            if message.started > previous.started:
                return True
            self.superseded += 1
            return False
        if now - held[1] > self.stale_after:
            return True
        if message.seq == previous.seq:
            self.duplicates += 1
        else:
            self.out_of_order += 1
        return False

    def _admit(self, key: _Key, message: RoutingMessage, now: float) -> bool:
        """Whether a message of an engine not in the view may enter: not from an older process, and room."""
        retired = self._retired.get(key)
        if retired is not None:
            started, expired_at = retired
            if message.started < started and now - expired_at <= RESTART_MEMORY_S:
                self.superseded += 1
                return False
            del self._retired[key]
        if len(self.states) >= self._max_instances and not self._make_room(now):
            self.overflow += 1
            self._overflow_log.warning(
                "routing view full (%d engines); message from %r dropped", self._max_instances, key
            )
            return False
        return True

    def _make_room(self, now: float) -> bool:
        """Expire stale entries at most once per ``stale_after`` while full: a flood costs O(1) a message."""
        if now >= self._next_room_check:
            self._next_room_check = now + self.stale_after
            self.expire(now)
        return len(self.states) < self._max_instances

    # -- expiry ----------------------------------------------------------------------------------------------

    def expire(self, now: float) -> None:
        """Remove the engines not heard from within ``stale_after``."""
        cutoff = now - self.stale_after
        for key in [key for key, (_, received_at) in self.states.items() if received_at < cutoff]:
            self._retire(key, now)

    def get(self, key: _Key) -> Entry | None:
        """The entry of one engine, or ``None`` when unknown or stale (it is then removed)."""
        entry = self.states.get(key)
        if entry is not None and self._clock() - entry[1] > self.stale_after:
            self._retire(key, self._clock())
            return None
        return entry

    def _retire(self, key: _Key, now: float) -> None:
        """Drop an expired engine, remembering its ``started`` within the same bound as the view."""
        message = self.states.pop(key)[0]
        self.expired += 1
        retired = self._retired
        retired.pop(key, None)
        while retired and (
            len(retired) >= self._max_instances or now - next(iter(retired.values()))[1] > RESTART_MEMORY_S
        ):
            retired.popitem(last=False)
        retired[key] = (message.started, now)
