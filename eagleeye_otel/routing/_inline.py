"""A nats-py client that hands one subscription's payloads to a function straight from the protocol parser.

nats-py delivers every message by building a ``Msg``, putting it on the subscription's queue and awaiting the
callback coroutine from the subscription's task: about 2 µs a message here, four times what decoding and
validating a routing message costs. A router flooded by a thousand engines spends most of its core there. For the
routing subscription that bookkeeping buys nothing: the ingest is synchronous, never blocks and never raises, so
it can run where the parser would otherwise queue the message. Messages then reach the view in the order the
server sent them, and when the router falls behind, the socket and then the server push back (the server cuts
off a slow consumer) instead of nats-py's pending queue growing by up to 64 MiB.

This overrides ``Client._process_msg``, a private method whose signature has been stable throughout nats-py 2.
:data:`INLINE_DELIVERY` is ``False`` when the installed nats-py no longer has that exact signature; delivery then
falls back to the subscription's ordinary callback, which is always registered too.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable

from nats.aio.client import Client
from nats.aio.subscription import Subscription

from eagleeye_otel.log_limiter import LogLimiter

__all__ = ["INLINE_DELIVERY", "InlineDeliveryClient"]

_logger = logging.getLogger(__name__)

_EXPECTED_PARAMETERS = ("self", "sid", "subject", "reply", "data", "headers")
INLINE_DELIVERY = tuple(inspect.signature(Client._process_msg).parameters) == _EXPECTED_PARAMETERS
"""Whether this nats-py lets :class:`InlineDeliveryClient` deliver inline."""

Ingest = Callable[[bytes], object]


class InlineDeliveryClient(Client):
    """A ``nats.aio.client.Client`` where chosen subscriptions bypass the per-message queue and task."""

    def __init__(self) -> None:
        super().__init__()
        self._inline: dict[int, Ingest] = {}
        self._ingest_errors = LogLimiter(_logger)

    def deliver_inline(self, subscription: Subscription, ingest: Ingest) -> bool:
        """Hand ``subscription``'s payloads to ``ingest`` from the parser; ``False`` where nats-py does not allow it.

        ``ingest`` must be synchronous and quick: it runs on the connection's reading path. Messages with headers
        still go through the subscription's callback.
        """
        if not INLINE_DELIVERY:
            return False
        self._inline[subscription._id] = ingest
        return True

    def stop_inline(self, subscription: Subscription) -> None:
        """Stop inline delivery, before unsubscribing."""
        self._inline.pop(subscription._id, None)

    async def _process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes) -> None:
        ingest = self._inline.get(sid)
        if ingest is None or headers:
            await super()._process_msg(sid, subject, reply, data, headers)
            return
        stats = self.stats
        stats["in_msgs"] += 1
        stats["in_bytes"] += len(data)
        try:
            ingest(data)
        except Exception:  # an ingest bug must not take the connection's reader down
            self._ingest_errors.warning("routing ingest failed on a message", exc_info=True)
